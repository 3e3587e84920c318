//! Copies of images, e.g. an isolated test copy of a warm replica: a reflink clone
//! where the file system shares extents, else a copy of the data regions only, so a
//! mostly-empty image costs little time and space either way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::resume::{io_err, sync_parent};
use crate::{RestoreError, Result};

/// Largest piece copied at once by a sparse copy.
const COPY_PIECE: u64 = 1 << 20;

/// How [`clone_image`] made its copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneMethod {
    /// The file system shares the extents (FICLONE): instant, no space until written.
    Reflink,
    /// The data regions were copied into a sparse file; holes stay holes.
    SparseCopy,
}

/// Copies the image `src` into a new file `dst` (which must not exist) and syncs it:
/// a reflink clone where the file system allows, else a sparse copy of the data
/// regions. `src` must not change meanwhile. On failure `dst` is removed.
pub fn clone_image(src: &Path, dst: &Path) -> Result<CloneMethod> {
    let from = File::open(src).map_err(io_err(src))?;
    if !from.metadata().map_err(io_err(src))?.is_file() {
        return Err(RestoreError::Invalid(format!(
            "image {} is not a regular file",
            src.display()
        )));
    }
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io_err(dst))?;
    let result = copy_into(&from, &to, src, dst).and_then(|method| {
        to.sync_all().map_err(io_err(dst))?;
        sync_parent(dst)?;
        Ok(method)
    });
    if result.is_err() {
        // Ours since `create_new`: a half-made copy must not pass for a clone.
        if let Err(e) = std::fs::remove_file(dst) {
            tracing::warn!(path = %dst.display(), error = %e, "cannot remove a failed clone");
        }
    }
    result
}

fn copy_into(from: &File, to: &File, src: &Path, dst: &Path) -> Result<CloneMethod> {
    if reflink(from, to).map_err(io_err(dst))? {
        return Ok(CloneMethod::Reflink);
    }
    sparse_copy(from, to, src, dst)?;
    Ok(CloneMethod::SparseCopy)
}

/// Clones `from` into `to` with FICLONE; false where the file system (or the pair of
/// them) cannot.
#[cfg(target_os = "linux")]
fn reflink(from: &File, to: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;

    /// `_IOW(0x94, 9, int)`.
    const FICLONE: u32 = 0x4004_9409;
    loop {
        // SAFETY: FICLONE takes the source descriptor as its argument and touches no
        // memory of ours; both descriptors are open while the files are borrowed.
        let r = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY) => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn reflink(_from: &File, _to: &File) -> io::Result<bool> {
    Ok(false)
}

/// Makes `to` as long as `from` (all holes) and copies the data regions of `from`
/// into it; pieces that read as zero are skipped, so they stay holes too.
fn sparse_copy(from: &File, to: &File, src: &Path, dst: &Path) -> Result<()> {
    let len = from.metadata().map_err(io_err(src))?.len();
    to.set_len(len).map_err(io_err(dst))?;
    let mut buf = vec![0u8; COPY_PIECE as usize];
    let mut pos = 0;
    while let Some((start, end)) = next_data(from, pos, len).map_err(io_err(src))? {
        let mut at = start;
        while at < end {
            let piece = &mut buf[..(end - at).min(COPY_PIECE) as usize];
            from.read_exact_at(piece, at).map_err(io_err(src))?;
            if piece.iter().any(|&b| b != 0) {
                to.write_all_at(piece, at).map_err(io_err(dst))?;
            }
            at += piece.len() as u64;
        }
        pos = end;
    }
    Ok(())
}

/// The next data region `[start, end)` of `file` at or after `pos` (below `len`), or
/// None once only holes are left.
#[cfg(target_os = "linux")]
fn next_data(file: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    use std::os::fd::AsRawFd;

    if pos >= len {
        return Ok(None);
    }
    let seek = |from: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        let Ok(from) = libc::off_t::try_from(from) else {
            return Ok(None);
        };
        // SAFETY: lseek reads only its integer arguments. It moves the descriptor's
        // offset, which the positional reads of the copy do not use.
        let r = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // No data after `from`.
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        }
    };
    let start = match seek(pos, libc::SEEK_DATA) {
        Ok(Some(start)) => start,
        Ok(None) => return Ok(None),
        // A file system without SEEK_DATA: all of it is data (the zero pieces are still
        // skipped).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
            return Ok(Some((pos, len)))
        }
        Err(e) => return Err(e),
    };
    if start >= len {
        return Ok(None);
    }
    let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
    Ok(Some((start, end)))
}

#[cfg(not(target_os = "linux"))]
fn next_data(_file: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    Ok((pos < len).then_some((pos, len)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const SIZE: u64 = 64 << 20;

    /// A 64 MiB image with three small data regions, the rest holes.
    fn sparse_image(path: &Path) -> Vec<u8> {
        let f = File::create(path).expect("create");
        f.set_len(SIZE).expect("size");
        let mut expect = vec![0u8; SIZE as usize];
        for (i, at) in [0u64, 5 << 20, SIZE - (100 << 10)].into_iter().enumerate() {
            let data: Vec<u8> = (0..100u32 << 10)
                .map(|n| (n as u8) ^ (i as u8 + 1))
                .collect();
            f.write_all_at(&data, at).expect("write");
            expect[at as usize..at as usize + data.len()].copy_from_slice(&data);
        }
        f.sync_all().expect("sync");
        expect
    }

    fn assert_sparse_copy_of(dst: &Path, expect: &[u8]) {
        let meta = std::fs::metadata(dst).expect("meta");
        assert_eq!(meta.len(), SIZE);
        assert!(
            std::fs::read(dst).expect("read") == expect,
            "content differs"
        );
        // `blocks()` counts 512-byte units; 300 KiB of data in 64 MiB.
        let allocated = meta.blocks() * 512;
        assert!(allocated < SIZE / 16, "{allocated} bytes allocated");
    }

    #[test]
    fn a_clone_is_equal_and_keeps_its_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
        let expect = sparse_image(&src);
        let method = clone_image(&src, &dst).expect("clone");
        assert!(matches!(
            method,
            CloneMethod::Reflink | CloneMethod::SparseCopy
        ));
        assert_sparse_copy_of(&dst, &expect);
    }

    #[test]
    fn a_sparse_copy_is_equal_and_keeps_its_holes() {
        // The fallback itself, whatever the file system here supports.
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
        let expect = sparse_image(&src);
        let from = File::open(&src).expect("open");
        let to = File::create(&dst).expect("create");
        sparse_copy(&from, &to, &src, &dst).expect("copy");
        assert_sparse_copy_of(&dst, &expect);
    }

    #[test]
    fn an_existing_destination_or_a_missing_source_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
        std::fs::write(&src, b"image").expect("src");
        std::fs::write(&dst, b"keep me").expect("dst");
        let err = clone_image(&src, &dst).expect_err("dst exists");
        assert!(
            matches!(&err, RestoreError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read(&dst).expect("dst"), b"keep me");
        let other = dir.path().join("other.img");
        clone_image(&dir.path().join("missing.img"), &other).expect_err("no source");
        assert!(!other.exists());
    }
}
