//! `quantlab serve`: a small static file server for the playground (native only).
//!
//! It serves the repository root (index.html, www/, models/) on the loopback interface. It is a
//! development server, not a web server for the internet, but it still treats request paths as
//! hostile: only plain path segments are accepted (no `..`, no hidden names such as `.git`, no
//! backslashes or NUL bytes), so nothing outside the root and nothing hidden can be read.
//!
//! It also treats connections as hostile (a hostile-input review found each of these):
//! - a symlink under the root that points outside it is not followed out: the resolved path must
//!   stay under the canonical root, or under the canonical `models/` directory (downloaded models
//!   are often a symlink to a shared folder; that one place is allowed, and printed at start);
//! - only `Host: localhost`, `127.0.0.1`, `[::1]` or the bound address (with or without the port)
//!   is answered (421 otherwise), so a DNS-rebinding page on another name cannot read it;
//! - the request head is read to at most `MAX_HEAD` bytes (431 and close beyond), with a read
//!   timeout, so an endless header costs 64 KiB, not memory without bound;
//! - every connection has its own thread (up to `MAX_CONNECTIONS`, then 503) and a write
//!   timeout, so clients that do not read cannot stall the others.
//!   tiny_http (used before) offered neither a bound on the head nor timeouts, so the server is
//!   a small HTTP/1.1 subset on `std::net`: GET and HEAD, one request per connection.
//!
//! Two headers matter to the page:
//! - `Content-Type: application/wasm` lets the browser compile the module while it streams.
//! - `Cross-Origin-Opener-Policy` / `Cross-Origin-Embedder-Policy` make the page "cross-origin
//!   isolated", which is what enables `SharedArrayBuffer`; the page uses one to cancel a running
//!   evaluation inside the worker (see www/worker.js).
//! - `Service-Worker-Allowed: /` on www/sw.js lets that service worker control the page at the
//!   root, so the page works offline after its first load.

use crate::{Error, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most connections served at once (each has a thread); more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;

/// Longest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 64 << 10;

/// Longest request path accepted (bytes, before decoding).
const MAX_PATH_LEN: usize = 1024;

/// How long a client may take to send its request head once it has begun, and to accept each
/// write.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay open before its first byte. Browsers open sockets ahead of
/// need (Chromium keeps an unused one 10 s) and send the next request on them: if the server
/// closed first, that request fails outright (an unused socket is not retried). Waiting longer
/// than the browser leaves the closing to it; an idle connection costs one thread meanwhile.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The page's service worker (offline use). A worker may only control pages under its own
/// directory unless the server allows a wider scope with `Service-Worker-Allowed`.
const SERVICE_WORKER: &str = "www/sw.js";

/// A bound, not yet running server.
pub struct Server {
    /// Canonical (symlinks resolved): every served file must lie under it or under `models`.
    root: PathBuf,
    /// Canonical `root/models` when it resolves outside the root (a symlinked model folder).
    models: Option<PathBuf>,
    listener: TcpListener,
    addr: SocketAddr,
    write_timeout: Duration,
}

impl Server {
    /// Bind to `127.0.0.1:port` (0 picks a free port).
    pub fn bind(root: &Path, port: u16) -> Result<Server> {
        let meta = std::fs::metadata(root).map_err(|e| Error::io(root.display(), e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                root.display(),
                std::io::Error::other("the root to serve is not a directory"),
            ));
        }
        let root = std::fs::canonicalize(root).map_err(|e| Error::io(root.display(), e))?;
        let models = std::fs::canonicalize(root.join("models"))
            .ok()
            .filter(|m| m.is_dir() && !m.starts_with(&root));
        let want = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(want).map_err(|e| Error::io(want, e))?;
        let addr = listener.local_addr().map_err(|e| Error::io(want, e))?;
        Ok(Server {
            root,
            models,
            listener,
            addr,
            write_timeout: WRITE_TIMEOUT,
        })
    }

    /// How long one write to a client may block before the connection is dropped (tests use a
    /// short one).
    pub fn with_write_timeout(mut self, t: Duration) -> Self {
        self.write_timeout = t;
        self
    }

    /// Where `models/` really is, when it is a symlink out of the root.
    pub fn models_dir(&self) -> Option<&Path> {
        self.models.as_deref()
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Serve until the process ends.
    pub fn run(self) {
        let ctx = Arc::new(Ctx {
            root: self.root,
            models: self.models,
            addr: self.addr,
            write_timeout: self.write_timeout,
            active: AtomicUsize::new(0),
        });
        for stream in self.listener.incoming() {
            // A failed accept (the client gave up, too many open files) loses that one client.
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_write_timeout(Some(ctx.write_timeout));
            if ctx.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                ctx.active.fetch_sub(1, Ordering::SeqCst);
                let _ = write_reply(&mut stream, text(503, "too many connections\n"), false);
                continue;
            }
            let spawned = std::thread::Builder::new().spawn({
                let ctx = Arc::clone(&ctx);
                move || {
                    handle(&ctx, stream);
                    ctx.active.fetch_sub(1, Ordering::SeqCst);
                }
            });
            if spawned.is_err() {
                ctx.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// What every connection's thread shares.
struct Ctx {
    root: PathBuf,
    models: Option<PathBuf>,
    addr: SocketAddr,
    write_timeout: Duration,
    active: AtomicUsize,
}

/// Bind, print the URL and serve `root` until the process ends.
pub fn serve(root: &Path, port: u16) -> Result<()> {
    let server = Server::bind(root, port)?;
    println!("serving {} at {}", root.display(), server.url());
    if let Some(m) = server.models_dir() {
        println!("models/ is served from {}", m.display());
    }
    server.run();
    Ok(())
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    http10: bool,
    host: Option<String>,
}

/// Why a head could not be read.
enum HeadError {
    /// Over `MAX_HEAD`: answer 431.
    TooLarge,
    /// Not HTTP: answer 400.
    Malformed,
    /// Timeout, reset or EOF: just close.
    Gone,
}

/// Parse a request head from bytes as the server reads one from a connection: `Ok((method,
/// target, HTTP/1.0?, Host))`, or `Err(status)`: 431 over `MAX_HEAD`, 400 not HTTP, 0 when the
/// bytes end before the head does (the server closes). For fuzz/fuzz_targets/serve_head.rs.
#[doc(hidden)]
pub fn parse_head(
    bytes: &[u8],
) -> std::result::Result<(String, String, bool, Option<String>), u16> {
    read_head(bytes)
        .map(|h| (h.method, h.target, h.http10, h.host))
        .map_err(|e| match e {
            HeadError::TooLarge => 431,
            HeadError::Malformed => 400,
            HeadError::Gone => 0,
        })
}

/// Read the request head, at most `MAX_HEAD` bytes.
fn read_head(stream: impl Read) -> std::result::Result<Head, HeadError> {
    let mut r = BufReader::new(stream.take(MAX_HEAD as u64 + 1));
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|_| HeadError::Gone)?;
        total += n;
        if total > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if n == 0 || !line.ends_with(b"\n") {
            return Err(HeadError::Gone);
        }
        let line = String::from_utf8(line).map_err(|_| HeadError::Malformed)?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerated: blank lines before the request line
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Malformed);
    }
    let host = lines[1..].iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("host")
            .then(|| value.trim().to_string())
    });
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        http10: version == "HTTP/1.0",
        host,
    })
}

/// Is `host` (a Host header) one of the names this loopback server answers to?
pub fn host_allowed(host: &str, addr: SocketAddr) -> bool {
    let port = addr.port().to_string();
    let name = match host.rsplit_once(':') {
        // `[::1]:8080`, `localhost:8080`; a bare `[::1]` has its last colon inside brackets.
        Some((name, p)) if !p.contains(']') => {
            if p != port {
                return false;
            }
            name
        }
        _ => host,
    };
    let bound = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    name.eq_ignore_ascii_case("localhost")
        || name == "127.0.0.1"
        || name == "[::1]"
        || name == bound
}

fn handle(ctx: &Ctx, mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(ctx.write_timeout));
    // The first byte may be long in coming (an idle socket the browser opened ahead); the rest
    // of the head must follow within READ_TIMEOUT.
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    if !matches!(stream.peek(&mut [0u8; 1]), Ok(1)) {
        return;
    }
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let (reply, head_only) = match read_head(&stream) {
        Err(HeadError::Gone) => return,
        Err(HeadError::TooLarge) => (
            text(431, &format!("request head over {MAX_HEAD} bytes\n")),
            false,
        ),
        Err(HeadError::Malformed) => (text(400, "bad request\n"), false),
        Ok(h) => match &h.host {
            None if !h.http10 => (text(400, "Host header required\n"), false),
            Some(host) if !host_allowed(host, ctx.addr) => {
                (text(421, "this server answers only to localhost\n"), false)
            }
            _ => (
                respond(&ctx.root, ctx.models.as_deref(), &h.method, &h.target),
                h.method == "HEAD",
            ),
        },
    };
    // The client may have gone away or stopped reading (the write timeout ends that).
    let _ = write_reply(&mut stream, reply, head_only);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A response: status, headers and a body of known length.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    body: Box<dyn Read + Send>,
    len: u64,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_reply(stream: &mut TcpStream, r: Reply, head_only: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.len
    ));
    stream.write_all(head.as_bytes())?;
    if !head_only {
        std::io::copy(&mut r.body.take(r.len), stream)?;
    }
    stream.flush()
}

fn respond(root: &Path, models: Option<&Path>, method: &str, url: &str) -> Reply {
    if method != "GET" && method != "HEAD" {
        return with(
            text(405, "only GET and HEAD are served\n"),
            "Allow",
            "GET, HEAD",
        );
    }
    let Some(rel) = resolve(url) else {
        return text(400, "bad path\n");
    };
    let mut path = root.join(&rel);
    if path.is_dir() {
        path.push("index.html");
    }
    // Symlinks are resolved, and what they resolve to must stay under the (canonical) root.
    let Ok(real) = std::fs::canonicalize(&path) else {
        return text(404, "not found\n");
    };
    let in_models = rel.starts_with("models") && models.is_some_and(|m| real.starts_with(m));
    if !real.starts_with(root) && !in_models {
        return text(403, "outside the served directory\n");
    }
    // Only regular files: opening a FIFO would block this thread.
    let len = match std::fs::metadata(&real) {
        Ok(m) if m.is_file() => m.len(),
        _ => return text(404, "not found\n"),
    };
    match File::open(&real) {
        Ok(file) => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let mut r = Reply {
                status: 200,
                headers: Vec::new(),
                body: Box::new(file),
                len,
            };
            r = with(r, "Content-Type", mime_type(name));
            r = with(r, "Cache-Control", cache_control(&rel));
            r = with(r, "X-Content-Type-Options", "nosniff");
            if rel == Path::new(SERVICE_WORKER) {
                // The worker lives in www/ but must control the page at the root.
                r = with(r, "Service-Worker-Allowed", "/");
            }
            r = with(r, "Cross-Origin-Opener-Policy", "same-origin");
            with(r, "Cross-Origin-Embedder-Policy", "require-corp")
        }
        Err(_) => text(404, "not found\n"),
    }
}

/// Turn a request target into a relative path under the root, or `None` if it is not a plain
/// path: query and fragment are dropped, `%XX` escapes decoded, and every segment must be a
/// plain name (no `.`/`..`, nothing hidden, no separators or NUL after decoding).
pub fn resolve(url: &str) -> Option<PathBuf> {
    if url.len() > MAX_PATH_LEN || !url.starts_with('/') {
        return None;
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    let mut rel = PathBuf::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw)?;
        let plain = !seg.starts_with('.')
            && !seg.contains(['/', '\\', '\0', ':'])
            && !seg.chars().any(char::is_control);
        if !plain {
            return None;
        }
        rel.push(seg);
    }
    Some(rel)
}

/// Decode `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// MIME type by extension. `application/wasm` is required for streaming compilation.
pub fn mime_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "txt" | "md" | "wgsl" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Model files are large and never change under the same name (fetch-model.sh checks their
/// checksum), so the browser may keep them; everything else is revalidated so an edit or a
/// rebuild shows on the next reload.
fn cache_control(rel: &Path) -> &'static str {
    if rel.starts_with("models") {
        "public, max-age=86400"
    } else {
        "no-cache"
    }
}

/// Add a header (names and values are ASCII constants or MIME types from the table above).
fn with(mut response: Reply, name: &'static str, value: &str) -> Reply {
    response.headers.push((name, value.to_string()));
    response
}

fn text(status: u16, body: &str) -> Reply {
    let data = body.as_bytes().to_vec();
    let len = data.len() as u64;
    let r = Reply {
        status,
        headers: Vec::new(),
        body: Box::new(std::io::Cursor::new(data)),
        len,
    };
    with(r, "Content-Type", "text/plain; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn resolve_accepts_plain_paths() {
        assert_eq!(resolve("/"), Some(PathBuf::new()));
        assert_eq!(
            resolve("/www/pkg/quantlab_bg.wasm?v=1"),
            Some(PathBuf::from("www/pkg/quantlab_bg.wasm"))
        );
        assert_eq!(
            resolve("/www/texts/my%20text.txt"),
            Some(PathBuf::from("www/texts/my text.txt"))
        );
    }

    #[test]
    fn resolve_refuses_traversal_and_hidden_names() {
        for bad in [
            "/../etc/passwd",
            "/www/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/www/%2E%2E/%2e%2e/x",
            "/.git/config",
            "/www/%2fetc",
            "/www/..%5c..%5cx",
            "/a%00b",
            "/a%zz",
            "/a%2",
            "relative",
            "/C:/x",
        ] {
            assert_eq!(resolve(bad), None, "{bad}");
        }
        assert_eq!(resolve(&format!("/{}", "a".repeat(MAX_PATH_LEN))), None);
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_type("quantlab_bg.wasm"), "application/wasm");
        assert_eq!(mime_type("worker.js"), "text/javascript; charset=utf-8");
        assert_eq!(mime_type("index.HTML"), "text/html; charset=utf-8");
        assert_eq!(mime_type("m.gguf"), "application/octet-stream");
        assert_eq!(mime_type("noext"), "application/octet-stream");
    }

    /// One raw HTTP/1.0 exchange; returns (status line, headers + body as text).
    fn get(addr: &str, target: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let status = out.lines().next().unwrap_or("").to_string();
        (status, out)
    }

    /// Start a server on `root` (ephemeral port on 127.0.0.1); returns "127.0.0.1:port".
    fn start(root: &Path, write_timeout: Duration) -> String {
        let server = Server::bind(root, 0)
            .expect("bind")
            .with_write_timeout(write_timeout);
        let addr = server
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        std::thread::spawn(move || server.run());
        addr
    }

    /// One raw exchange with a given Host header, with a deadline on the answer.
    fn get_host(addr: &str, target: &str, host: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    fn temp_root(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("quantlab-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("index.html"), "<p>hi</p>").expect("write");
        (dir, root)
    }

    #[test]
    fn host_names_other_than_loopback_are_refused() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(host_allowed(ok, addr), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1:9999",
            "localhost.evil.example",
            "",
            "[::1]:1",
        ] {
            assert!(!host_allowed(bad, addr), "{bad}");
        }
        let (dir, root) = temp_root("host");
        let a = start(&root, WRITE_TIMEOUT);
        let port = a.rsplit(':').next().unwrap_or("");
        assert!(get_host(&a, "/", &format!("localhost:{port}")).starts_with("HTTP/1.1 200"));
        assert!(get_host(&a, "/", &a).starts_with("HTTP/1.1 200"));
        // DNS rebinding: a page on another name that resolves to 127.0.0.1.
        let out = get_host(&a, "/", &format!("rebind.example:{port}"));
        assert!(out.starts_with("HTTP/1.1 421"), "{out}");
        assert!(!out.contains("<p>hi</p>"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn symlinks_out_of_the_root_are_not_followed() {
        let (dir, root) = temp_root("symlink");
        std::fs::write(dir.join("secret.txt"), "secret").expect("write");
        std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("leak.txt")).expect("ln");
        std::os::unix::fs::symlink(&dir, root.join("up")).expect("ln");
        std::fs::write(root.join("inside.txt"), "inside").expect("write");
        std::os::unix::fs::symlink(root.join("inside.txt"), root.join("alias.txt")).expect("ln");
        let a = start(&root, WRITE_TIMEOUT);
        for bad in ["/leak.txt", "/up/secret.txt"] {
            let out = get_host(&a, bad, "localhost");
            assert!(out.starts_with("HTTP/1.1 403"), "{bad}: {out}");
            assert!(
                !out.contains("secret\n") && !out.ends_with("secret"),
                "{bad} leaked"
            );
        }
        // `models/` may be a symlink to a folder elsewhere (a shared download); that folder,
        // and only it, is served under models/.
        std::fs::create_dir_all(dir.join("shared-models")).expect("mkdir");
        std::fs::write(dir.join("shared-models/m.gguf"), "GGUF").expect("write");
        std::os::unix::fs::symlink(dir.join("shared-models"), root.join("models")).expect("ln");
        let a = start(&root, WRITE_TIMEOUT);
        let out = get_host(&a, "/models/m.gguf", "localhost");
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("GGUF"),
            "{out}"
        );
        std::os::unix::fs::symlink(dir.join("secret.txt"), dir.join("shared-models/s.txt"))
            .expect("ln");
        let out = get_host(&a, "/models/s.txt", "localhost");
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        // A link that stays inside is served.
        let out = get_host(&a, "/alias.txt", "localhost");
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("inside"),
            "{out}"
        );
        // A FIFO is not opened (that would block the thread).
        let st = std::process::Command::new("mkfifo")
            .arg(root.join("pipe.txt"))
            .status()
            .expect("mkfifo");
        assert!(st.success());
        let out = get_host(&a, "/pipe.txt", "localhost");
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_endless_request_head_is_cut_at_the_limit() {
        let (dir, root) = temp_root("head");
        let a = start(&root, WRITE_TIMEOUT);
        let mut s = TcpStream::connect(&a).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET / HTTP/1.1\r\nHost: localhost\r\n").expect("write");
        // Up to 16 MiB of one header line; the server stops reading after 64 KiB.
        let chunk = vec![b'a'; 64 << 10];
        let mut sent = 0usize;
        for _ in 0..256 {
            match s.write_all(&chunk) {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with("HTTP/1.1 431") || sent < (16 << 20),
            "no 431 and all {sent} bytes accepted: {out}"
        );
        // The server still answers.
        assert!(get_host(&a, "/", "localhost").starts_with("HTTP/1.1 200"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn clients_that_do_not_read_do_not_stall_the_server() {
        let (dir, root) = temp_root("slow");
        // 64 MiB (sparse): far more than the socket buffers hold.
        let f = File::create(root.join("big.bin")).expect("create");
        f.set_len(64 << 20).expect("set_len");
        let a = start(&root, Duration::from_secs(2));
        let stuck: Vec<TcpStream> = (0..8)
            .map(|_| {
                let mut s = TcpStream::connect(&a).expect("connect");
                write!(s, "GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("write");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let t = std::time::Instant::now();
        let out = get_host(&a, "/", "localhost");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        drop(stuck);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn serves_files_with_headers_and_refuses_escapes() {
        let dir = std::env::temp_dir().join(format!("quantlab-serve-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("www")).expect("mkdir");
        std::fs::write(root.join("index.html"), "<p>hi</p>").expect("write");
        std::fs::write(root.join("www/m.wasm"), [0u8, 97, 115, 109]).expect("write");
        std::fs::write(root.join("www/sw.js"), "self.x = 1;").expect("write");
        std::fs::write(dir.join("secret.txt"), "secret").expect("write");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::write(root.join(".git/config"), "secret").expect("write");

        let server = Server::bind(&root, 0).expect("bind");
        let addr = server
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        std::thread::spawn(move || server.run());

        let (status, all) = get(&addr, "/");
        assert!(status.contains("200"), "{status}");
        assert!(all.contains("<p>hi</p>"));
        assert!(all.to_ascii_lowercase().contains("content-type: text/html"));
        assert!(all.contains("Cross-Origin-Embedder-Policy: require-corp"));

        let (status, all) = get(&addr, "/www/sw.js");
        assert!(status.contains("200"), "{status}");
        assert!(all.contains("Content-Type: text/javascript"), "{all}");
        assert!(all.contains("Service-Worker-Allowed: /"), "{all}");
        let (_, all) = get(&addr, "/www/m.wasm");
        assert!(!all.contains("Service-Worker-Allowed"), "{all}");

        let (status, all) = get(&addr, "/www/m.wasm");
        assert!(status.contains("200"), "{status}");
        assert!(all.contains("Content-Type: application/wasm"), "{all}");

        for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/.git/config"] {
            let (status, all) = get(&addr, bad);
            assert!(status.contains("400"), "{bad}: {status}");
            assert!(!all.contains("secret"), "{bad} leaked");
        }
        let (status, _) = get(&addr, "/missing.js");
        assert!(status.contains("404"), "{status}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
