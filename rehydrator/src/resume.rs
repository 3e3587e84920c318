//! Resumable restores: a journal beside the partial image records which of its blocks
//! are written and durable, so that a restore interrupted (crash, restart, cancel,
//! failure) fetches only the rest when it runs again.
//!
//! The journal `<out>.tidemark-resume` holds a magic, the identity of the restore
//! (domain and its creation time, disk, point, size), the done blocks as a serialized
//! roaring bitmap, and a BLAKE3 of all of that. It is replaced atomically (temporary
//! file, fsync, rename, fsync of the directory). A journal that is torn, garbled, or
//! names another restore is ignored and the restore starts over: it is never trusted.
//!
//! Two invariants make a trusted journal true:
//! - it names a block only after the partial image was synced with that block;
//! - a journal of identity I lies only beside a partial image that was created empty
//!   (all holes) for I and since then only written with I's bytes: a fresh start
//!   removes the old journal before it replaces the image, and writes the new journal
//!   only once the new empty image is durable.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roaring::RoaringBitmap;
use tidemark_format::ChunkHash;

use crate::written::{Coverage, Written};
use crate::{RestoreError, Result};

/// Checkpoints are at most about this frequent: each one syncs the partial image.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// A checkpoint is due, whatever the time, once this many more bytes were written:
/// bounds what an interruption costs and how much an fdatasync has to flush.
pub(crate) const CHECKPOINT_BYTES: u64 = 256 << 20;

const MAGIC: &[u8; 8] = b"TMRESUM1";
const CHECKSUM_LEN: usize = 32;

/// The partial image restored into `out` (renamed to `out` once complete).
pub(crate) fn partial_path(out: &Path) -> PathBuf {
    sibling(out, ".tidemark-partial")
}

/// The journal of a resumable restore into `out`.
pub(crate) fn journal_path(out: &Path) -> PathBuf {
    sibling(out, ".tidemark-resume")
}

fn journal_tmp_path(out: &Path) -> PathBuf {
    sibling(out, ".tidemark-resume.tmp")
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    out.with_file_name(name)
}

/// Removes, best effort, the partial image and the journal of a restore into `out`:
/// for a caller that gives up a resumable restore (cancelled or failed for good).
pub fn discard_partial(out: &Path) {
    for path in [partial_path(out), journal_path(out), journal_tmp_path(out)] {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove");
            }
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a rename or removal in the directory of `path` durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir)),
        None => File::open(".")
            .and_then(|d| d.sync_all())
            .map_err(io_err(Path::new("."))),
    }
}

/// Removes `path` if it exists; true if it did.
fn remove_if_present(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Removes a journal left beside `out` by an earlier resumable restore, before a
/// restore that keeps none overwrites the partial image it describes.
pub(crate) fn remove_stale_journal(out: &Path) -> Result<()> {
    let path = journal_path(out);
    if remove_if_present(&path)? {
        sync_parent(&path)?;
    }
    Ok(())
}

/// What a journal must name to be trusted: one restore of one disk at one point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub domain: String,
    /// Tells a domain from a later one of the same name.
    pub domain_created: i64,
    pub disk: String,
    pub seq: u64,
    pub disk_size: u64,
}

/// The journal of one restore: where it lies and whose it is.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    tmp: PathBuf,
    identity: Identity,
}

impl Journal {
    /// The journal of the restore `identity` into `out`.
    pub fn new(out: &Path, identity: Identity) -> Self {
        Journal {
            path: journal_path(out),
            tmp: journal_tmp_path(out),
            identity,
        }
    }

    /// The done blocks it records, or None if it is absent, unreadable, damaged, or
    /// of another restore.
    fn load(&self) -> Option<RoaringBitmap> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "ignoring an unreadable restore journal");
                }
                return None;
            }
        };
        match decode(&bytes) {
            Some((identity, done)) if identity == self.identity => Some(done),
            Some((identity, _)) => {
                tracing::info!(path = %self.path.display(), ?identity, "ignoring the restore journal of another restore");
                None
            }
            None => {
                tracing::warn!(path = %self.path.display(), "ignoring a damaged restore journal");
                None
            }
        }
    }

    /// Replaces the journal atomically with one recording `done`.
    fn save(&self, done: &RoaringBitmap) -> Result<()> {
        let bytes = encode(&self.identity, done).map_err(io_err(&self.tmp))?;
        let mut f = File::create(&self.tmp).map_err(io_err(&self.tmp))?;
        f.write_all(&bytes).map_err(io_err(&self.tmp))?;
        f.sync_all().map_err(io_err(&self.tmp))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        sync_parent(&self.path)
    }
}

fn encode(id: &Identity, done: &RoaringBitmap) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + done.serialized_size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&id.domain_created.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
    out.extend_from_slice(&id.disk_size.to_le_bytes());
    for s in [&id.domain, &id.disk] {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&(done.serialized_size() as u64).to_le_bytes());
    done.serialize_into(&mut out)?;
    let sum = ChunkHash::of(&out);
    out.extend_from_slice(&sum.0);
    Ok(out)
}

/// Reads fields off the front of a checked journal.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn decode(bytes: &[u8]) -> Option<(Identity, RoaringBitmap)> {
    let body_len = bytes.len().checked_sub(CHECKSUM_LEN)?;
    let (body, sum) = bytes.split_at(body_len);
    if ChunkHash::of(body).0[..] != *sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let domain_created = r.u64()? as i64;
    let seq = r.u64()?;
    let disk_size = r.u64()?;
    let domain = r.string()?;
    let disk = r.string()?;
    let done = RoaringBitmap::deserialize_from(r.bytes()?).ok()?;
    if !r.0.is_empty() {
        return None;
    }
    let identity = Identity {
        domain,
        domain_created,
        disk,
        seq,
        disk_size,
    };
    Some((identity, done))
}

/// Opens the partial image of a resumable restore: the one the journal describes,
/// with the blocks it records as done (only those among `data`, the plan's data
/// blocks), or else a new empty one with a new journal and nothing done.
pub(crate) fn open_partial(
    journal: &Journal,
    partial: &Path,
    data: &RoaringBitmap,
) -> Result<(File, RoaringBitmap)> {
    let size = journal.identity.disk_size;
    // A partial image of another size was not left by this restore, whatever the
    // journal says.
    let intact = std::fs::metadata(partial).is_ok_and(|m| m.is_file() && m.len() == size);
    if intact {
        if let Some(mut done) = journal.load() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(partial)
                .map_err(io_err(partial))?;
            file.set_len(size).map_err(io_err(partial))?;
            done &= data;
            return Ok((file, done));
        }
    }
    // The old journal goes first: it must never describe the new image.
    if remove_if_present(&journal.path)? {
        sync_parent(&journal.path)?;
    }
    // A new inode rather than a truncated one: writes still in flight from an earlier
    // restore of another point into the old file cannot reach the new image.
    remove_if_present(partial)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(partial)
        .map_err(io_err(partial))?;
    // A fresh file of the disk's size is all holes: zero blocks cost nothing. It is
    // durable before the journal that vouches for it exists.
    file.set_len(size).map_err(io_err(partial))?;
    file.sync_all().map_err(io_err(partial))?;
    sync_parent(partial)?;
    let done = RoaringBitmap::new();
    journal.save(&done)?;
    Ok((file, done))
}

/// Records the blocks written into the partial image and, now and then, syncs the
/// image and then saves them to the journal. One checkpoint runs at a time, off the
/// async threads, while the restore goes on.
pub(crate) struct Checkpointer {
    journal: Arc<Journal>,
    file: Arc<File>,
    partial: Arc<Path>,
    /// Every block written whole, recorded or loaded from the journal.
    coverage: Coverage,
    /// Bytes written since the last checkpoint started.
    unsaved_bytes: u64,
    last: Instant,
    running: Option<tokio::task::JoinHandle<Result<()>>>,
    /// A checkpoint failed: after a failed fsync the kernel may have dropped dirty
    /// pages, so no later sync proves anything and no journal is saved any more.
    failed: bool,
}

impl Checkpointer {
    /// Tracks the image `file` at `partial` whose blocks `done` are already durable.
    pub fn new(journal: Journal, file: Arc<File>, partial: &Path, done: RoaringBitmap) -> Self {
        Checkpointer {
            journal: Arc::new(journal),
            file,
            partial: partial.into(),
            coverage: Coverage::new(done),
            unsaved_bytes: 0,
            last: Instant::now(),
            running: None,
            failed: false,
        }
    }

    /// Records what a range wrote (`bytes` in all), once its bytes are written.
    pub fn record(&mut self, written: &Written, bytes: u64) {
        self.coverage.add(written);
        self.unsaved_bytes += bytes;
    }

    /// Starts a checkpoint if one is due. A checkpoint due by time waits for no
    /// running one; one due by volume does (the disk is then the bottleneck).
    pub async fn tick(&mut self) -> Result<()> {
        if self.unsaved_bytes == 0 {
            return Ok(());
        }
        let by_volume = self.unsaved_bytes >= CHECKPOINT_BYTES;
        if !by_volume {
            let busy = self.running.as_ref().is_some_and(|h| !h.is_finished());
            if busy || self.last.elapsed() < CHECKPOINT_INTERVAL {
                return Ok(());
            }
        }
        self.wait().await?;
        self.start();
        Ok(())
    }

    /// Saves everything recorded so far: a restore that stops keeps its progress.
    pub async fn flush(&mut self) -> Result<()> {
        self.wait().await?;
        if self.unsaved_bytes > 0 {
            self.start();
        }
        self.wait().await
    }

    /// Waits for the running checkpoint, so that none outlives the restore.
    pub async fn wait(&mut self) -> Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let result = running
            .await
            .unwrap_or_else(|_| Err(RestoreError::Invalid("a checkpoint panicked".into())));
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn start(&mut self) {
        if self.failed {
            return;
        }
        // The set as of before the sync: every block in it was written already.
        let done = self.coverage.done.clone();
        let (file, journal, partial) = (
            self.file.clone(),
            self.journal.clone(),
            self.partial.clone(),
        );
        self.unsaved_bytes = 0;
        self.last = Instant::now();
        self.running = Some(tokio::task::spawn_blocking(move || {
            file.sync_data().map_err(io_err(&partial))?;
            journal.save(&done)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            domain: "dom".into(),
            domain_created: -5,
            disk: "disk0".into(),
            seq: 7,
            disk_size: 1 << 30,
        }
    }

    #[test]
    fn journal_round_trips_and_rejects_damage() {
        let done: RoaringBitmap = (10..5000).chain([70_000, 80_000]).collect();
        let bytes = encode(&identity(), &done).expect("encode");
        assert_eq!(decode(&bytes), Some((identity(), done)));
        for cut in [0, 1, 8, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..cut]), None, "torn at {cut}");
        }
        for pos in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[pos] ^= 0x10;
            assert_eq!(decode(&bad), None, "flipped at {pos}");
        }
    }

    #[test]
    fn journal_of_another_restore_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("x.img");
        let done: RoaringBitmap = (0..3).collect();
        Journal::new(&out, identity()).save(&done).expect("save");
        assert_eq!(Journal::new(&out, identity()).load(), Some(done));
        let other = Identity {
            seq: 8,
            ..identity()
        };
        assert_eq!(Journal::new(&out, other).load(), None);
        discard_partial(&out);
        assert!(!journal_path(&out).exists());
        assert_eq!(Journal::new(&out, identity()).load(), None);
    }
}
