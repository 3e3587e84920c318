//! Where a disk image holds data, so that the holes of a sparse image are not read.
//!
//! A thin VM image is largely holes. Reading one makes the kernel copy zero pages that
//! we then scan only to find them zero; `SEEK_DATA`/`SEEK_HOLE` name the holes
//! instead. Where they are not supported (other systems, some file systems) the whole
//! disk counts as data, which is only slower.

use std::fs::File;
use std::ops::Range;

/// The next range of `file` that may hold data at or after `pos` (a multiple of
/// `block`), widened to whole blocks and clipped to `size`; `None` if only holes
/// remain. Bytes outside the ranges it returns read as zero.
pub(crate) fn next_data(file: &File, pos: u64, size: u64, block: u64) -> Option<Range<u64>> {
    if pos >= size {
        return None;
    }
    let Some((data, hole)) = sys::data_at(file, pos) else {
        return Some(pos..size);
    };
    let data = data?;
    let start = (data / block * block).max(pos);
    let end = hole
        .unwrap_or(size)
        .div_ceil(block)
        .saturating_mul(block)
        .min(size);
    (start < end).then_some(start..end)
}

/// Turns the kernel's own readahead off for `file`: it reads past the end of a data
/// range into the hole after it, and ext4 then zeroes a fresh page-cache page for every
/// block of that hole (a cold full protect of the benchmark's image spent 2.0 – 2.4 s
/// of system time, against 1.2 – 1.4 s without). The scan asks for exactly the data it
/// will read instead (`ReadAhead`).
pub(crate) fn advise_random(file: &File) {
    sys::advise(file, 0..0, sys::RANDOM)
}

/// The scan's own readahead: the data ranges (never the holes) of a file, asked for
/// ahead of the reads (`posix_fadvise(WILLNEED)`), across holes too, so that the disk
/// works while the blocks already read are hashed.
#[derive(Default)]
pub(crate) struct ReadAhead {
    /// Everything before this was asked for, or is a hole.
    asked: u64,
}

impl ReadAhead {
    /// Asks for the data of `file` before `until` that was not asked for yet.
    pub fn ask(&mut self, file: &File, until: u64, size: u64, block: u64) {
        self.ask_with(file, until, size, block, |range| {
            sys::advise(file, range, sys::WILL_NEED)
        })
    }

    /// `ask`, with `advise` taking each range asked for.
    fn ask_with(
        &mut self,
        file: &File,
        until: u64,
        size: u64,
        block: u64,
        mut advise: impl FnMut(Range<u64>),
    ) {
        while self.asked < until.min(size) {
            let Some(data) = next_data(file, self.asked, size, block) else {
                self.asked = size;
                return;
            };
            if data.start >= until {
                return;
            }
            let end = data.end.min(until);
            advise(data.start..end);
            self.asked = end;
        }
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::fs::File;
    use std::io;
    use std::os::unix::io::AsRawFd;

    fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<u64> {
        let pos = libc::off_t::try_from(pos).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: lseek only reads its arguments; the descriptor is open for as long as
        // `file` is borrowed. Moving the file offset is harmless: disks are read with
        // positioned reads.
        let r = unsafe { libc::lseek(file.as_raw_fd(), pos, whence) };
        u64::try_from(r).map_err(|_| io::Error::last_os_error())
    }

    /// `Some((start of the next data or None if none, start of the hole after it))`,
    /// or `None` if the file cannot say.
    pub fn data_at(file: &File, pos: u64) -> Option<(Option<u64>, Option<u64>)> {
        match seek(file, pos, libc::SEEK_DATA) {
            Ok(data) => Some((Some(data), seek(file, data, libc::SEEK_HOLE).ok())),
            // ENXIO: no data at or after `pos`.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Some((None, None)),
            Err(_) => None,
        }
    }

    pub const RANDOM: libc::c_int = libc::POSIX_FADV_RANDOM;
    pub const WILL_NEED: libc::c_int = libc::POSIX_FADV_WILLNEED;

    /// `posix_fadvise` of `range` (`0..0`: the whole file).
    pub fn advise(file: &File, range: std::ops::Range<u64>, advice: libc::c_int) {
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(range.start),
            libc::off_t::try_from(range.end - range.start),
        ) else {
            return;
        };
        // SAFETY: as in `seek`. The advice is only a hint, so a failure is ignored.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, advice);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::fs::File;

    pub fn data_at(_: &File, _: u64) -> Option<(Option<u64>, Option<u64>)> {
        None
    }

    pub const RANDOM: i32 = 0;
    pub const WILL_NEED: i32 = 0;

    pub fn advise(_: &File, _: std::ops::Range<u64>, _: i32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const MB: u64 = 1 << 20;

    /// A sparse file of 16 MiB holding `data` (offset, bytes) and holes elsewhere, open
    /// for reading; the directory holds it.
    fn sparse_file(data: &[(u64, &[u8])]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        let f = File::create(&path).expect("create");
        for (at, bytes) in data {
            f.write_all_at(bytes, *at).expect("write");
        }
        f.set_len(16 * MB).expect("set_len");
        (dir, File::open(&path).expect("open"))
    }

    /// Holes are skipped where the file system reports them; either way, the ranges
    /// cover every byte that is not zero.
    #[test]
    fn ranges_cover_all_data() {
        let mb = MB;
        let (_dir, f) = sparse_file(&[(0, &[1u8; 4096]), (5 * mb, &[2u8; 8192])]);
        let mut pos = 0;
        let mut ranges = Vec::new();
        while let Some(r) = next_data(&f, pos, 16 * mb, 4096) {
            assert!(r.start >= pos && r.start % 4096 == 0 && r.end % 4096 == 0);
            pos = r.end;
            ranges.push(r);
        }
        let covered = |a: u64, b: u64| ranges.iter().any(|r| r.start <= a && b <= r.end);
        assert!(covered(0, 4096));
        assert!(covered(5 * mb, 5 * mb + 8192));
        assert!(ranges.last().is_some_and(|r| r.end <= 16 * mb));
        assert_eq!(next_data(&f, 16 * mb, 16 * mb, 4096), None);
    }

    /// The readahead asks for each byte of data once, in order, never past `until`, and
    /// (where the file system reports holes) never for a hole.
    #[test]
    fn read_ahead_asks_for_data_once() {
        let mb = MB;
        let first = vec![1u8; 2 * mb as usize];
        let (_dir, f) =
            sparse_file(&[(0, &first), (5 * mb, &[2u8; 8192]), (12 * mb, &[3u8; 4096])]);
        let holes_reported = next_data(&f, 0, 16 * mb, 4096) == Some(0..2 * mb);

        let mut ahead = ReadAhead::default();
        let mut asked = Vec::new();
        for until in [mb, mb, 6 * mb, 20 * mb, 20 * mb] {
            let before = asked.len();
            ahead.ask_with(&f, until, 16 * mb, 4096, |r| asked.push(r));
            assert!(asked[before..].iter().all(|r| r.end <= until));
        }
        assert!(
            asked.windows(2).all(|w| w[0].end <= w[1].start),
            "{asked:?}"
        );
        let covered = |a: u64, b: u64| asked.iter().any(|r| r.start <= a && b <= r.end);
        assert!(covered(0, mb) && covered(mb, 2 * mb));
        assert!(covered(5 * mb, 5 * mb + 8192) && covered(12 * mb, 12 * mb + 4096));
        if holes_reported {
            assert_eq!(
                asked,
                [
                    0..mb,
                    mb..2 * mb,
                    5 * mb..5 * mb + 8192,
                    12 * mb..12 * mb + 4096
                ]
            );
        }
    }
}
