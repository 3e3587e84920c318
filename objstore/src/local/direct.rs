//! Writing a new object's file, large ones past the page cache.
//!
//! A buffered write copies every byte into freshly allocated page-cache pages and
//! leaves them to the fsync; on the VMs this runs on, that copy alone took a quarter of
//! a protect's CPU time, and it varied threefold from run to run. Packs are written
//! once and read back, if ever, much later, so caching them buys nothing: their
//! aligned body goes to the disk directly (`O_DIRECT`) through a small reused buffer.
//! Where the file system cannot do that, the write is buffered as before.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Objects smaller than this are written buffered: the direct path would not pay off.
const DIRECT_MIN: usize = 1 << 20;

/// Alignment of direct writes' buffers, offsets and lengths; a multiple of every
/// logical block size in use.
const ALIGN: usize = 4096;

/// Bytes written per direct write, through the bounce buffer.
const PIECE: usize = 8 << 20;

thread_local! {
    /// The bounce buffer of this thread: allocated once, so that its pages are not
    /// faulted in again for every object.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Creates `path` (which must not exist), writes `data` into it and syncs it.
pub(super) fn write_new_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    if data.len() < DIRECT_MIN || !write_direct(path, &file, data)? {
        file.write_all(data)?;
    }
    file.sync_all()
}

/// Writes `data` into the empty `file` at `path` through a second, direct descriptor;
/// false (nothing written) where the file system does not take direct writes.
#[cfg(target_os = "linux")]
fn write_direct(path: &Path, file: &File, data: &[u8]) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;

    let direct = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
        Err(e) => return Err(e),
    };
    let written = BOUNCE.with(|bounce| {
        let mut bounce = bounce.borrow_mut();
        if bounce.is_empty() {
            *bounce = vec![0u8; PIECE + ALIGN];
        }
        let skew = bounce.as_ptr().align_offset(ALIGN);
        let buf = &mut bounce[skew..skew + PIECE];
        for (i, piece) in data.chunks(PIECE).enumerate() {
            // The last piece is padded with zeroes to the alignment and the file cut
            // back to its length below.
            let padded = piece.len().next_multiple_of(ALIGN);
            buf[..piece.len()].copy_from_slice(piece);
            buf[piece.len()..padded].fill(0);
            match direct.write_all_at(&buf[..padded], (i * PIECE) as u64) {
                Ok(()) => {}
                // Some file systems accept the open but not the write.
                Err(e) if i == 0 && e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    })?;
    if written {
        file.set_len(data.len() as u64)?;
    }
    Ok(written)
}

#[cfg(not(target_os = "linux"))]
fn write_direct(_path: &Path, _file: &File, _data: &[u8]) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sizes = [
            0,
            1,
            ALIGN,
            DIRECT_MIN - 1,
            DIRECT_MIN,
            DIRECT_MIN + 1,
            PIECE,
            PIECE + ALIGN + 17,
            2 * PIECE + 5,
        ];
        for (n, size) in sizes.into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 + n) as u8).collect();
            let path = dir.path().join(format!("o{n}"));
            write_new_file(&path, &data).expect("write");
            assert_eq!(std::fs::read(&path).expect("read"), data, "size {size}");
        }
    }

    #[test]
    fn an_existing_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o");
        std::fs::write(&path, b"keep").expect("write");
        let err = write_new_file(&path, &vec![1u8; DIRECT_MIN]).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"keep");
    }
}
