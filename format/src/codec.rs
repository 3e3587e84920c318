//! Bounds-checked little-endian reader and writer for the binary objects.

use crate::{FormatError, Result};

pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A length-prefixed (u32) byte string.
    pub fn blob(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.bytes(v);
    }
    pub fn str(&mut self, v: &str) {
        self.blob(v.as_bytes());
    }
}

pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, pos: 0, what }
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn err(&self, reason: &str) -> FormatError {
        FormatError::corrupt(self.what, format!("{reason} at byte {}", self.pos))
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.err("truncated"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    pub fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_le_bytes(self.arr()?))
    }
    pub fn hash(&mut self) -> Result<[u8; 32]> {
        self.arr()
    }
    pub fn blob(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<String> {
        let b = self.blob()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("invalid UTF-8"))
    }
    /// A count of items each at least `min_item` bytes long; rejects counts the
    /// remaining bytes cannot hold, so corrupt input never triggers huge allocations.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(self.err("count larger than the object"));
        }
        Ok(n)
    }
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.err("trailing bytes"));
        }
        Ok(())
    }
}

/// Splits `data` into body and its trailing 32-byte BLAKE3 checksum and verifies it.
pub(crate) fn verify_trailer<'a>(data: &'a [u8], what: &'static str) -> Result<&'a [u8]> {
    if data.len() < 32 {
        return Err(FormatError::corrupt(
            what,
            "truncated: shorter than its checksum",
        ));
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err(FormatError::corrupt(what, "checksum mismatch"));
    }
    Ok(body)
}

/// Checks magic and version at the start of a verified body.
pub(crate) fn check_header(
    r: &mut Reader<'_>,
    magic: &[u8; 8],
    version: u16,
    what: &str,
) -> Result<()> {
    if r.take(8)? != magic {
        return Err(FormatError::corrupt(what, "bad magic"));
    }
    let found = r.u16()?;
    if found != version {
        return Err(FormatError::UnsupportedVersion {
            what: what.to_owned(),
            found,
            supported: version,
        });
    }
    Ok(())
}
