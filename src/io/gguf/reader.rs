//! The bounds-checked cursor under the GGUF reader: every read says which field it was for, and
//! every count is checked against the bytes left before anyone allocates for it.

use crate::{Error, Result};

/// A bounds-checked little-endian cursor. Errors say what was being read and where.
pub(super) struct Reader<'a, 'l> {
    label: &'l str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a, 'l> Reader<'a, 'l> {
    pub(super) fn new(label: &'l str, bytes: &'a [u8]) -> Self {
        Reader {
            label,
            bytes,
            pos: 0,
        }
    }

    pub(super) fn label(&self) -> &'l str {
        self.label
    }

    /// Offset of the next byte to read.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end.and_then(|e| self.bytes.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Error::format(
                self.label,
                field,
                format!(
                    "truncated: needs {n} bytes at offset {}, but the file ends at {}",
                    self.pos,
                    self.bytes.len()
                ),
            )),
        }
    }

    pub(super) fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(super) fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(super) fn u16(&mut self, field: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(super) fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(super) fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A count or length `n` checked against `max` and against the bytes left, given that each
    /// counted item occupies at least `min_item_bytes` in the file. Only then may a caller
    /// allocate `n` items.
    pub(super) fn bounded(
        &self,
        n: u64,
        max: u64,
        min_item_bytes: usize,
        field: &str,
        what: &str,
    ) -> Result<usize> {
        if n > max {
            return Err(Error::format(
                self.label,
                field,
                format!("{what} {n} exceeds the limit {max}"),
            ));
        }
        let fits = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > fits {
            return Err(Error::format(
                self.label,
                field,
                format!(
                    "{what} {n} cannot fit in the {} bytes left at offset {} \
                     (at least {min_item_bytes} bytes each): truncated or corrupt file",
                    self.remaining(),
                    self.pos
                ),
            ));
        }
        // n <= remaining bytes, so it fits in usize.
        Ok(n as usize)
    }

    /// A GGUF string's raw bytes, at most `max` long.
    pub(super) fn string_bytes(&mut self, max: u64, field: &str) -> Result<&'a [u8]> {
        let n = self.u64(field)?;
        let n = self.bounded(n, max, 1, field, "string length")?;
        self.take(n, field)
    }

    /// A GGUF string that must be UTF-8.
    pub(super) fn string(&mut self, max: u64, field: &str) -> Result<&'a str> {
        let at = self.pos;
        let b = self.string_bytes(max, field)?;
        std::str::from_utf8(b).map_err(|e| {
            Error::format(
                self.label,
                field,
                format!(
                    "string at offset {at} is not valid UTF-8 (error at byte {})",
                    e.valid_up_to()
                ),
            )
        })
    }
}
