//! Zeroing blocks of an existing image: holes are punched where the file system can
//! (the space is freed), and zeroes are written where it cannot; either way the
//! blocks read as zero.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use roaring::RoaringBitmap;
use tidemark_format::BLOCK_SIZE;

use crate::placement::Runs;
use crate::resume::io_err;
use crate::{RestoreError, Result};

/// Largest piece of zeroes written at once where holes cannot be punched.
const ZERO_PIECE: u64 = 1 << 20;

/// Makes `blocks` of the image `file` at `path` read as zero, a run of consecutive
/// blocks at a time; stops as cancelled between runs once `cancelled` is set.
pub(crate) fn zero_blocks(
    file: &File,
    path: &Path,
    blocks: &RoaringBitmap,
    cancelled: &AtomicBool,
) -> Result<()> {
    let bs = BLOCK_SIZE as u64;
    // Once the file system refuses a punch it refuses them all: no point asking again.
    let mut punch = true;
    for (first, count) in Runs::new(blocks.iter()) {
        if cancelled.load(Ordering::Relaxed) {
            return Err(RestoreError::Cancelled);
        }
        let (offset, len) = (first as u64 * bs, count as u64 * bs);
        if punch {
            punch = punch_hole(file, offset, len).map_err(io_err(path))?;
            if punch {
                continue;
            }
        }
        write_zeroes(file, offset, len).map_err(io_err(path))?;
    }
    Ok(())
}

/// Punches `len` bytes at `offset` out of `file`, keeping its size; false where the
/// file system cannot.
#[cfg(target_os = "linux")]
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;

    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Ok(false);
    };
    loop {
        // SAFETY: fallocate reads only its integer arguments; the descriptor is open
        // for as long as `file` is borrowed.
        let r = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<bool> {
    Ok(false)
}

fn write_zeroes(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeroes = vec![0u8; len.min(ZERO_PIECE) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZERO_PIECE);
        file.write_all_at(&zeroes[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_blocks_read_as_zero_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        let bs = BLOCK_SIZE as usize;
        let mut data = vec![0xabu8; 16 * bs];
        std::fs::write(&path, &data).expect("write");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let blocks: RoaringBitmap = [1, 2, 3, 7, 15].into_iter().collect();
        zero_blocks(&file, &path, &blocks, &AtomicBool::new(false)).expect("zero");
        for b in &blocks {
            data[b as usize * bs..(b as usize + 1) * bs].fill(0);
        }
        assert!(std::fs::read(&path).expect("read") == data);
        // The fallback writes the same zeroes.
        write_zeroes(&file, 4 * bs as u64, 2 * bs as u64).expect("zeroes");
        data[4 * bs..6 * bs].fill(0);
        assert!(std::fs::read(&path).expect("read") == data);
        assert_eq!(file.metadata().expect("meta").len(), 16 * bs as u64);
        let cancelled = AtomicBool::new(true);
        assert!(matches!(
            zero_blocks(&file, &path, &blocks, &cancelled),
            Err(RestoreError::Cancelled)
        ));
    }
}
