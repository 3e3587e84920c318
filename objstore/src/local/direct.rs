//! Writing a new object's file, and reading large ranges, past the page cache.
//!
//! A buffered write copies every byte into freshly allocated page-cache pages and
//! leaves them to the fsync; on the VMs this runs on, that copy alone took a quarter of
//! a protect's CPU time, and it varied threefold from run to run. Packs are written
//! once and read back, if ever, much later, so caching them buys nothing: their
//! aligned body goes to the disk directly (`O_DIRECT`) through a small reused buffer.
//! Where the file system cannot do that, the write is buffered as before.
//!
//! Large ranged reads (a restore's) go past the page cache too: reading a cold pack
//! through it cost the first restore after a protect 3 – 5 s of kernel time in
//! allocating cache pages, against 1 – 1.3 s once the packs were cached. A direct read
//! fetches the aligned span around the range into an aligned buffer and hands out the
//! range of it, without a copy.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

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

/// Opens the file at `path` for reading ranges of `len` bytes: large ones past the
/// page cache where the file system allows. Returns the file and whether it is direct.
pub(super) fn open_for_range(path: &Path, len: usize) -> io::Result<(File, bool)> {
    if len >= DIRECT_MIN {
        if let Some(f) = open_direct_read(path)? {
            return Ok((f, true));
        }
    }
    Ok((File::open(path)?, false))
}

#[cfg(target_os = "linux")]
fn open_direct_read(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;

    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct_read(_path: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// Reads `len` bytes at `start` of `file`, a direct descriptor of a file of `size`
/// bytes (the range lies within it); None (nothing read) where the file system
/// refuses the direct read, after which `file` reads through the page cache.
pub(super) fn read_direct(
    file: &File,
    start: u64,
    len: usize,
    size: u64,
) -> io::Result<Option<Bytes>> {
    let align = ALIGN as u64;
    let first = start - start % align;
    let end = (start + len as u64)
        .next_multiple_of(align)
        .min(size.next_multiple_of(align));
    let span = (end - first) as usize;
    let mut buf = vec![0u8; span + ALIGN];
    let skew = buf.as_ptr().align_offset(ALIGN);
    let want = (start - first) as usize + len;
    let mut got = 0;
    while got < want {
        // Each read is of whole aligned blocks at an aligned offset; the last one may
        // come back short at the end of the file.
        let into = &mut buf[skew + got..skew + span];
        match file.read_at(into, first + got as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if got == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                stop_direct(file)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        if got % ALIGN != 0 && got < want {
            // A short read inside the file: the next offset would not be aligned.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let from = skew + (start - first) as usize;
    Ok(Some(Bytes::from(buf).slice(from..from + len)))
}

/// Turns `O_DIRECT` off on `file`.
#[cfg(target_os = "linux")]
fn stop_direct(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    // SAFETY: fcntl with F_GETFL/F_SETFL reads and sets the descriptor's flags only;
    // the descriptor is open while `file` is borrowed.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn stop_direct(_file: &File) -> io::Result<()> {
    Ok(())
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
    fn direct_ranges_read_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o");
        let size = 3 * DIRECT_MIN + 1234;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
        write_new_file(&path, &data).expect("write");
        let ranges = [
            (0, DIRECT_MIN),
            (1, DIRECT_MIN),
            (4095, DIRECT_MIN + 2),
            (ALIGN as u64 * 3, size - ALIGN * 3),
            (size as u64 - DIRECT_MIN as u64, DIRECT_MIN),
            (17, size - 17),
        ];
        for (start, len) in ranges {
            let (file, _direct) = open_for_range(&path, len).expect("open");
            let got = match read_direct(&file, start, len, size as u64).expect("read") {
                Some(b) => b.to_vec(),
                None => {
                    let mut b = vec![0u8; len];
                    file.read_exact_at(&mut b, start).expect("buffered read");
                    b
                }
            };
            let start = start as usize;
            assert!(got == data[start..start + len], "range {start} + {len}");
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
