//! Early writeback of a restored image. The kernel starts writing dirty pages back only
//! once many gigabytes are dirty or 30 s have passed, so without a nudge a restore
//! fills the page cache at memory speed and then waits for the whole image in its
//! final fsync. Asking for writeback as the image is written overlaps the disk's work
//! with fetching and decompressing, and leaves the fsync only the last pieces.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes written between two requests for writeback.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Starts writeback of an image on a thread of its own, every [`WRITEBACK_EVERY`]
/// bytes written; a request only queues I/O, but queueing may block on a busy disk,
/// and the workers that decompress must not wait for that. Dropping it stops the
/// thread once its last request is queued.
pub(crate) struct Writeback {
    written: AtomicU64,
    /// The thread and how to nudge it; None if it could not be spawned, which costs
    /// only the overlap, not correctness.
    thread: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Writeback {
    /// Writeback of `file`, which the caller goes on writing.
    pub(crate) fn start(file: Arc<File>) -> Arc<Writeback> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tidemark-writeback".into())
            .spawn(move || write_back(&file, rx))
            .ok()
            .map(|t| (tx, t));
        Arc::new(Writeback {
            written: AtomicU64::new(0),
            thread,
        })
    }

    /// Counts `n` bytes just written, asking for writeback each time another
    /// [`WRITEBACK_EVERY`] bytes are.
    pub(crate) fn wrote(&self, n: u64) {
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        if before / WRITEBACK_EVERY != (before + n) / WRITEBACK_EVERY {
            if let Some((tx, _)) = &self.thread {
                let _ = tx.send(());
            }
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        if let Some((tx, t)) = self.thread.take() {
            // Hanging up ends the thread's loop after the request it is on.
            drop(tx);
            let _ = t.join();
        }
    }
}

fn write_back(file: &File, nudges: Receiver<()>) {
    while nudges.recv().is_ok() {
        // Requests that piled up while one was queued are served by the next one.
        while nudges.try_recv().is_ok() {}
        start_writeback(file);
    }
}

/// Queues the file's dirty pages for writing, without waiting for them; pages already
/// being written are left alone. Failure is not reported here: the final fsync sees
/// any error of the writes themselves.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;

    // SAFETY: sync_file_range reads only its integer arguments; the descriptor is open
    // while `file` is borrowed. Offset 0 and length 0 mean the whole file.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot start writeback");
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) {}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn writeback_leaves_the_content_and_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("img");
        let file = Arc::new(File::create(&path).expect("create"));
        let wb = Writeback::start(file.clone());
        let piece = vec![7u8; 1 << 20];
        for i in 0..40u64 {
            file.write_all_at(&piece, i << 20).expect("write");
            wb.wrote(1 << 20);
        }
        // The drop stops the thread and waits for it.
        drop(wb);
        let back = std::fs::read(&path).expect("read");
        assert_eq!(back.len(), 40 << 20);
        assert!(back.iter().all(|&b| b == 7));
    }
}
