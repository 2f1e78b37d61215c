//! Reading a file from disk with a bound (native only; the browser hands the library buffers).
//!
//! Every file the CLI and the loaders read goes through `read_file`, which refuses what is not a
//! regular file after following symlinks (a FIFO would block forever, `/dev/zero` never ends, a
//! directory is not data), checks the length against a limit named after what the file is, and
//! reads at most `limit + 1` bytes, so a file that grows while it is read is still bounded.

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Largest `config.json` of a checkpoint (real ones are a few kB).
pub const MAX_CONFIG_JSON: u64 = crate::io::MAX_CONFIG_JSON_BYTES as u64;
/// Largest `tokenizer.json` (the tokenizer's own limit).
pub const MAX_TOKENIZER_JSON: u64 = crate::io::tokenizer::MAX_TOKENIZER_JSON_BYTES as u64;
/// Largest text to evaluate or calibrate on (the tokenizer's own limit).
pub const MAX_TEXT: u64 = crate::io::tokenizer::MAX_ENCODE_BYTES as u64;
/// Largest model file (one GGUF file or one safetensors shard). The file is held in memory
/// while it loads, so this is a bound on that memory, not on what a model may be.
pub const MAX_WEIGHTS: u64 = 64 << 30;
/// Largest small JSON input: a QuantConfig, a sweep grid.
pub const MAX_SMALL_JSON: u64 = 1 << 20;
/// Largest sweep journal (`results.jsonl`).
pub const MAX_JOURNAL: u64 = 256 << 20;

/// `O_NONBLOCK` on Linux (asm-generic value): opening a FIFO that replaced the checked file
/// between the check and the open then returns at once instead of waiting for a writer.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    )
))]
const O_NONBLOCK: i32 = 0o4000;

/// Metadata after following symlinks, refusing anything but a regular file of at most `limit`
/// bytes. `what` names the file's role in the error (`config.json`, `text`, `weights`).
pub fn check_regular(path: &Path, what: &str, limit: u64) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path.display(), e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else {
            special_kind(&ft)
        };
        return Err(Error::format(
            path.display(),
            what,
            format!("is {kind}, not a regular file"),
        ));
    }
    too_big(path, what, meta.len(), limit)?;
    Ok(meta.len())
}

fn too_big(path: &Path, what: &str, len: u64, limit: u64) -> Result<()> {
    if len > limit {
        return Err(Error::format(
            path.display(),
            what,
            format!("{len} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    Ok(())
}

#[cfg(unix)]
fn special_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// The whole file at `path`, if it is a regular file (after following symlinks) of at most
/// `limit` bytes. Errors name the path, `what` and the limit.
pub fn read_file(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let len = check_regular(path, what, limit)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(all(
        target_os = "linux",
        any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "riscv64"
        )
    ))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| Error::io(path.display(), e))?;
    // The path may have been replaced between the check and the open: check what was opened.
    let meta = file.metadata().map_err(|e| Error::io(path.display(), e))?;
    if !meta.is_file() {
        return Err(Error::format(
            path.display(),
            what,
            "was replaced by something that is not a regular file while opening",
        ));
    }
    too_big(path, what, meta.len(), limit)?;
    // `len` ≤ limit, and on a 32-bit host a length over usize fails the allocation cleanly.
    let mut out = Vec::new();
    out.try_reserve_exact(usize::try_from(len.max(meta.len())).unwrap_or(usize::MAX))
        .map_err(|_| {
            Error::format(
                path.display(),
                what,
                format!("{len} bytes do not fit in memory"),
            )
        })?;
    file.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path.display(), e))?;
    too_big(path, what, out.len() as u64, limit)?;
    Ok(out)
}

/// `read_file` as UTF-8 text.
pub fn read_text(path: &Path, what: &str, limit: u64) -> Result<String> {
    String::from_utf8(read_file(path, what, limit)?)
        .map_err(|e| Error::format(path.display(), what, format!("not UTF-8 ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quantlab-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn reads_a_small_regular_file_and_refuses_a_large_one() {
        let d = dir("size");
        let p = d.join("config.json");
        std::fs::write(&p, b"{}").expect("write");
        assert_eq!(read_file(&p, "config.json", 2).expect("fits"), b"{}");
        std::fs::write(&p, vec![b' '; 4097]).expect("write");
        let e = read_file(&p, "config.json", 4096).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("4097") && e.contains("limit of 4096"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_a_symlink_to_dev_zero_and_a_directory() {
        let d = dir("zero");
        let p = d.join("model.safetensors");
        std::os::unix::fs::symlink("/dev/zero", &p).expect("symlink");
        let e = read_file(&p, "weights", MAX_WEIGHTS)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors")
                && e.contains("weights")
                && e.contains("character device"),
            "{e}"
        );
        let e = read_file(&d, "text", MAX_TEXT).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_a_fifo_without_blocking() {
        let d = dir("fifo");
        let p = d.join("model.safetensors");
        let st = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .expect("mkfifo runs");
        assert!(st.success(), "mkfifo failed");
        // If this blocked, the test would hang: nothing ever writes to the FIFO.
        let e = read_file(&p, "weights", MAX_WEIGHTS)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a FIFO") && e.contains("model.safetensors"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
