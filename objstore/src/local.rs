//! The embedded default backend: one file per object under a root directory.
//!
//! Atomicity comes from the filesystem, so it holds across processes, not only threads:
//! every write lands in a private temp file under `.tmp/` and is published with a single
//! `link(2)` (create-only) or `rename(2)` (replace). Replacing writes and deletes are
//! serialised per key with an `flock` on a lock file under `.locks/`, which is what makes
//! the compare in `put_if_match` and the swap that follows one atomic step.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::key::{split_prefix, validate_key, validate_prefix};
use crate::{ETag, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult, Result, StoreError};

mod direct;

const TMP_DIR: &str = ".tmp";
const LOCKS_DIR: &str = ".locks";

/// How often a publish is retried when a concurrent `delete` removed the (empty) parent
/// directory between our `mkdir` and our `link`/`rename`.
const PUBLISH_RETRIES: usize = 32;

/// An object store in a local directory; the default, embedded backend.
#[derive(Clone, Debug)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    locks: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at the directory `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        let config = |what: &str, e: io::Error| {
            StoreError::Config(format!("local store {}: {what}: {e}", root.display()))
        };
        fs::create_dir_all(&root).map_err(|e| config("cannot create root", e))?;
        // Absolute, symlink-free paths keep the "walk up to the root" loop in `delete`
        // well-defined even if the process changes its working directory later.
        let root = fs::canonicalize(&root).map_err(|e| config("cannot resolve root", e))?;
        let tmp = root.join(TMP_DIR);
        let locks = root.join(LOCKS_DIR);
        for dir in [&tmp, &locks] {
            fs::create_dir_all(dir).map_err(|e| config("cannot create internal directory", e))?;
        }
        // Leftover temp files of crashed writers are harmless (never listed) but would
        // pile up; remove the old ones. Recent ones may belong to a live writer in
        // another process, so leave those alone.
        sweep_stale_temps(&tmp);
        Ok(Self {
            inner: Arc::new(Inner { root, tmp, locks }),
        })
    }

    /// The directory this store is rooted at (canonicalised).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Io {
                key: String::new(),
                source: io::Error::other(format!("blocking task did not complete: {e}")),
            }),
        }
    }
}

/// The etag of `data`: its 128-bit xxh3 in hex. An etag only tells one content from
/// another for compare-and-swap (as S3's MD5 does); it guards against no adversary,
/// and every object's is computed on every write and read, so it is a fast hash
/// rather than BLAKE3, which took 3% of a full protect's CPU time for the packs alone.
fn content_etag(data: &[u8]) -> ETag {
    ETag(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(data)))
}

/// Ranged reads of at least this many bytes ask for the whole range to be read ahead.
const READ_AHEAD_MIN: usize = 1 << 20;

/// Asks the kernel to read `len` bytes at `offset` of `file` into the page cache now,
/// in large requests at once: a plain read of a range that is not cached is served in
/// readahead windows of a few hundred KiB, one after the other, which leaves a fast
/// disk mostly idle while a restore waits. A hint only: a failure is not an error.
#[cfg(target_os = "linux")]
fn read_ahead(file: &File, offset: u64, len: usize) {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise reads only its integer arguments; the descriptor is open
    // while `file` is borrowed.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
}

#[cfg(not(target_os = "linux"))]
fn read_ahead(_file: &File, _offset: u64, _len: usize) {}

/// Maps a read-side error: a missing file, or a path that is a directory or goes through
/// a file, means there is no such object.
fn read_err(key: &str, e: io::Error) -> StoreError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::EISDIR) => StoreError::NotFound {
            key: key.to_owned(),
        },
        _ => io_err(key, e),
    }
}

/// Maps a write-side error: a key that collides with a directory (or has a file where a
/// directory is needed) cannot be represented on a filesystem.
fn write_err(key: &str, e: io::Error) -> StoreError {
    match e.raw_os_error() {
        Some(libc::ENOTDIR | libc::EISDIR) => StoreError::Invalid(format!(
            "key {key:?} conflicts with an existing object or key prefix (the local store \
             cannot hold both `a` and `a/b`)"
        )),
        _ => io_err(key, e),
    }
}

fn io_err(key: &str, source: io::Error) -> StoreError {
    StoreError::Io {
        key: key.to_owned(),
        source,
    }
}

fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A written, fsynced temp file that is removed on drop unless it was renamed away.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn write(tmp_dir: &Path, data: &[u8]) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // pid + counter are unique among live writers; the random part guards against a
        // leftover from a crashed process that had the same pid.
        let name = format!(
            "{}-{}-{:016x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        );
        let path = tmp_dir.join(name);
        // Armed before the first write so that every early return below cleans up.
        let temp = Self { path, armed: true };
        direct::write_new_file(&temp.path, data)?;
        Ok(temp)
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                if !is_enoent(&e) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temp file");
                }
            }
        }
    }
}

/// An exclusive `flock` on a key's lock file, released on drop.
struct KeyLock {
    file: File,
    path: PathBuf,
}

impl KeyLock {
    fn acquire(locks_dir: &Path, key: &str) -> io::Result<Self> {
        let path = locks_dir.join(blake3::hash(key.as_bytes()).to_hex().as_str());
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            flock_exclusive(&file)?;
            // `delete` unlinks the lock file while holding it; whoever was queued on that
            // old inode must not believe it holds the key's lock, so check that the path
            // still names the inode we locked, and start over if not.
            let ours = file.metadata()?;
            match fs::metadata(&path) {
                Ok(current) if current.ino() == ours.ino() && current.dev() == ours.dev() => {
                    return Ok(Self { file, path });
                }
                Ok(_) => continue,
                Err(e) if is_enoent(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases the lock and removes the lock file, for keys that no longer exist.
    fn release_and_remove(self) {
        // Unlink before unlocking (on drop) so that no one can lock the old inode and
        // pass the identity check in `acquire`.
        if let Err(e) = fs::remove_file(&self.path) {
            if !is_enoent(&e) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove lock file");
            }
        }
        drop(self.file);
    }
}

fn flock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number; `file` keeps it open for the
        // duration of the call. (std's File::lock needs Rust 1.89; we support 1.88.)
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Removes temp files older than an hour (best effort).
fn sweep_stale_temps(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let cutoff = std::time::Duration::from_secs(3600);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > cutoff);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

impl Inner {
    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Creates `dir` and its missing ancestors below the root, fsyncing the parent of each
    /// directory it creates so the new entries survive a crash.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if dir == self.root {
            return Ok(());
        }
        for _ in 0..PUBLISH_RETRIES {
            match fs::create_dir(dir) {
                Ok(()) => {
                    if let Some(parent) = dir.parent() {
                        fsync_dir(parent)?;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) if is_enoent(&e) => match dir.parent() {
                    Some(parent) if dir.starts_with(&self.root) => self.ensure_dir(parent)?,
                    _ => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "cannot create {} (parent keeps disappearing)",
            dir.display()
        )))
    }

    /// Runs `publish(temp, final)` with the key's parent directory in place, retrying if
    /// a concurrent delete removed that (empty) directory in between; then fsyncs the
    /// parent directory so the new entry is durable.
    fn publish<F>(&self, key: &str, temp: &Path, mut publish: F) -> Result<()>
    where
        F: FnMut(&Path, &Path) -> io::Result<()>,
    {
        let dest = self.path_of(key);
        let parent = dest.parent().unwrap_or(&self.root);
        let mut attempt = 0;
        loop {
            self.ensure_dir(parent).map_err(|e| write_err(key, e))?;
            match publish(temp, &dest) {
                Ok(()) => break,
                Err(e) if is_enoent(&e) && attempt < PUBLISH_RETRIES => attempt += 1,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // A directory there is a key prefix, not an object.
                    let is_dir = fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir());
                    return Err(if is_dir {
                        write_err(key, io::Error::from_raw_os_error(libc::EISDIR))
                    } else {
                        StoreError::AlreadyExists {
                            key: key.to_owned(),
                        }
                    });
                }
                Err(e) => return Err(write_err(key, e)),
            }
        }
        fsync_dir(parent).map_err(|e| io_err(key, e))
    }

    fn write_temp(&self, key: &str, data: &[u8]) -> Result<TempFile> {
        TempFile::write(&self.tmp, data).map_err(|e| io_err(key, e))
    }

    fn lock(&self, key: &str) -> Result<KeyLock> {
        KeyLock::acquire(&self.locks, key).map_err(|e| io_err(key, e))
    }

    /// The etag of the object as it is now, or `None` if it does not exist.
    fn current_etag(&self, key: &str) -> Result<Option<ETag>> {
        match fs::read(self.path_of(key)) {
            Ok(data) => Ok(Some(content_etag(&data))),
            Err(e) => match read_err(key, e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<PutResult> {
        let etag = content_etag(data);
        let mut temp = self.write_temp(key, data)?;
        // The lock orders this replace with `put_if_match` and `delete` of the same key;
        // the rename itself is atomic for readers either way.
        let _lock = self.lock(key)?;
        self.publish(key, &temp.path, |src, dest| fs::rename(src, dest))?;
        temp.disarm();
        Ok(PutResult { etag })
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<PutResult> {
        let etag = content_etag(data);
        let temp = self.write_temp(key, data)?;
        // link(2) fails with EEXIST if anything is at the destination, atomically, for
        // every process: this is the create-only primitive, and it needs no lock. The
        // temp name is removed when `temp` drops; the object keeps the inode.
        self.publish(key, &temp.path, |src, dest| fs::hard_link(src, dest))?;
        Ok(PutResult { etag })
    }

    fn put_if_match(&self, key: &str, data: &[u8], expected: &ETag) -> Result<PutResult> {
        let precondition = || StoreError::PreconditionFailed {
            key: key.to_owned(),
        };
        // A mismatch seen without the lock is a valid answer (the call takes effect at
        // that instant), and it spares the losers of a race a temp-file write and fsync.
        if self.current_etag(key)?.as_ref() != Some(expected) {
            return Err(precondition());
        }
        let etag = content_etag(data);
        let mut temp = self.write_temp(key, data)?;
        let _lock = self.lock(key)?;
        if self.current_etag(key)?.as_ref() != Some(expected) {
            return Err(precondition());
        }
        // The object exists and we hold its lock, so its directory stays in place and
        // no other writer replaces it between the compare and the swap.
        self.publish(key, &temp.path, |src, dest| fs::rename(src, dest))?;
        temp.disarm();
        Ok(PutResult { etag })
    }

    fn get(&self, key: &str) -> Result<GetResult> {
        let data = fs::read(self.path_of(key)).map_err(|e| read_err(key, e))?;
        let etag = content_etag(&data);
        Ok(GetResult {
            data: Bytes::from(data),
            etag,
        })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let file = File::open(self.path_of(key)).map_err(|e| read_err(key, e))?;
        let meta = file.metadata().map_err(|e| io_err(key, e))?;
        if !meta.is_file() {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        }
        check_range(key, &range, meta.len())?;
        let len = usize::try_from(range.end - range.start)
            .map_err(|_| StoreError::Invalid(format!("range {range:?} too large")))?;
        if len >= READ_AHEAD_MIN {
            read_ahead(&file, range.start, len);
        }
        // Read into spare room, which `read_to_end` fills without zeroing it first (the
        // zeroing of `vec![0; len]` was 4% of a restore's CPU time, issue 7).
        let mut buf = Vec::with_capacity(len);
        let mut reader = &file;
        reader
            .seek(SeekFrom::Start(range.start))
            .map_err(|e| io_err(key, e))?;
        let read = reader
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|e| io_err(key, e))?;
        if read != len {
            let short =
                io::Error::new(io::ErrorKind::UnexpectedEof, "object shorter than its size");
            return Err(io_err(key, short));
        }
        Ok(Bytes::from(buf))
    }

    fn head(&self, key: &str) -> Result<ObjectMeta> {
        let meta = fs::metadata(self.path_of(key)).map_err(|e| read_err(key, e))?;
        if !meta.is_file() {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: meta.len(),
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key);
        let lock = self.lock(key)?;
        match fs::remove_file(&path) {
            Ok(()) => fsync_parent(&path, key)?,
            Err(e) => match e.raw_os_error() {
                // Nothing there, or a directory (a key prefix, not an object): no object.
                Some(libc::ENOENT | libc::ENOTDIR | libc::EISDIR) => {}
                _ => return Err(io_err(key, e)),
            },
        }
        lock.release_and_remove();
        self.remove_empty_parents(&path);
        Ok(())
    }

    /// Removes the now-empty directories between `path` and the root. Best effort: a
    /// concurrent writer may have put something there, and writers retry if we win.
    fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, max: usize) -> Result<ListPage> {
        let (dir_part, partial) = split_prefix(prefix);
        let (base, key_base) = match dir_part {
            Some(d) => (self.root.join(d), format!("{d}/")),
            None => (self.root.clone(), String::new()),
        };
        let mut walk = Walk {
            start_after,
            // One extra entry tells whether another page follows.
            limit: max.saturating_add(1),
            out: Vec::new(),
        };
        walk.dir(&base, &key_base, partial)
            .map_err(|e| io_err(prefix, e))?;
        let objects = walk.out;
        Ok(ListPage::from_overfetch(objects, max))
    }
}

fn fsync_parent(path: &Path, key: &str) -> Result<()> {
    match path.parent() {
        Some(parent) => fsync_dir(parent).map_err(|e| io_err(key, e)),
        None => Ok(()),
    }
}

fn check_range(key: &str, range: &Range<u64>, size: u64) -> Result<()> {
    if range.start > range.end {
        return Err(StoreError::Invalid(format!(
            "range {range:?} of {key:?}: start is after end"
        )));
    }
    if range.end > size {
        return Err(StoreError::Invalid(format!(
            "range {range:?} of {key:?} reaches past the end ({size} bytes)"
        )));
    }
    Ok(())
}

/// An in-order depth-first walk that collects at most `limit` objects.
struct Walk<'a> {
    start_after: Option<&'a str>,
    limit: usize,
    out: Vec<ObjectMeta>,
}

impl Walk<'_> {
    /// Visits directory `dir`, whose keys start with `key_base`, keeping only entries whose
    /// name starts with `name_prefix`.
    fn dir(&mut self, dir: &Path, key_base: &str, name_prefix: &str) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            // A prefix naming nothing (or going through a file) lists nothing; a directory
            // removed under us by a concurrent delete is just as empty.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let mut children: Vec<(String, bool)> = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if is_enoent(&e) => continue,
                Err(e) => return Err(e),
            };
            // Names that are not valid key components were not written by us: dot-names
            // are our internals (and temp files), the rest cannot be expressed as keys.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(name_prefix)
                || name.starts_with('.')
                || name.contains('\\')
                || name.chars().any(char::is_control)
            {
                continue;
            }
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if is_enoent(&e) => continue,
                Err(e) => return Err(e),
            };
            if file_type.is_dir() {
                children.push((format!("{key_base}{name}/"), true));
            } else if file_type.is_file() {
                children.push((format!("{key_base}{name}"), false));
            }
        }
        // Sorting a directory as `name/` puts its keys exactly where they belong among
        // its siblings in byte order (`a-b` < `a/x` < `a0`), because no name contains '/'.
        children.sort_unstable();
        for (key, is_dir) in children {
            if self.out.len() >= self.limit {
                break;
            }
            if is_dir {
                // Every key inside starts with `key`; skip the subtree if all of them sort
                // at or before `start_after`.
                if let Some(after) = self.start_after {
                    if !after.starts_with(key.as_str()) && after > key.as_str() {
                        continue;
                    }
                }
                self.dir(&dir.join(&key[key_base.len()..key.len() - 1]), &key, "")?;
            } else {
                if self.start_after.is_some_and(|after| key.as_str() <= after) {
                    continue;
                }
                let size = match fs::metadata(dir.join(&key[key_base.len()..])) {
                    Ok(m) => m.len(),
                    Err(e) if is_enoent(&e) => continue,
                    Err(e) => return Err(e),
                };
                self.out.push(ObjectMeta { key, size });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<PutResult> {
        validate_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.put(&key, &data)).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutResult> {
        validate_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.put_if_absent(&key, &data)).await
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &ETag) -> Result<PutResult> {
        validate_key(key)?;
        let key = key.to_owned();
        let etag = etag.clone();
        self.blocking(move |s| s.put_if_match(&key, &data, &etag))
            .await
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        validate_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.get(&key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        validate_key(key)?;
        if range.start > range.end {
            return Err(StoreError::Invalid(format!(
                "range {range:?} of {key:?}: start is after end"
            )));
        }
        let key = key.to_owned();
        self.blocking(move |s| s.get_range(&key, range)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.head(&key)).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, max: usize) -> Result<ListPage> {
        validate_prefix(prefix)?;
        if max == 0 {
            return Err(StoreError::Invalid("list: max must be at least 1".into()));
        }
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.blocking(move |s| s.list(&prefix, start_after.as_deref(), max))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.delete(&key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        (dir, store)
    }

    async fn all_keys(store: &LocalStore, prefix: &str) -> Vec<String> {
        store
            .list_all(prefix, None)
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    #[tokio::test]
    async fn temp_and_internal_files_are_never_listed() {
        let (dir, store) = store();
        store
            .put("a/x", Bytes::from_static(b"1"))
            .await
            .expect("put");
        // A crashed writer's leftover, a stray lock and dot-files inside data dirs.
        std::fs::write(dir.path().join(".tmp/123-0-deadbeef"), b"partial").expect("write");
        std::fs::write(dir.path().join(".locks/abc"), b"").expect("write");
        std::fs::write(dir.path().join("a/.y"), b"hidden").expect("write");
        std::fs::create_dir(dir.path().join("a/.d")).expect("mkdir");
        std::fs::write(dir.path().join("a/.d/z"), b"hidden").expect("write");
        assert_eq!(all_keys(&store, "").await, ["a/x"]);
        assert_eq!(all_keys(&store, "a/").await, ["a/x"]);
        assert!(all_keys(&store, "a/.").await.is_empty());
        assert!(matches!(
            store.get(".tmp/123-0-deadbeef").await,
            Err(StoreError::Invalid(_))
        ));
        // Writes are unaffected by the leftover and leave no temp file of their own.
        store.put("b", Bytes::from_static(b"2")).await.expect("put");
        store
            .put_if_absent("c", Bytes::from_static(b"3"))
            .await
            .expect("put");
        assert_eq!(all_keys(&store, "").await, ["a/x", "b", "c"]);
        let temps: Vec<_> = std::fs::read_dir(dir.path().join(".tmp"))
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(temps, ["123-0-deadbeef"]);
    }

    #[tokio::test]
    async fn temp_files_of_concurrent_writes_are_not_listed() {
        let (_dir, store) = store();
        let big = Bytes::from(vec![7u8; 4 << 20]);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..8 {
                    store
                        .put(&format!("big/{i}"), big.clone())
                        .await
                        .expect("put");
                }
            })
        };
        while !writer.is_finished() {
            for key in all_keys(&store, "").await {
                assert!(key.starts_with("big/"), "listed {key}");
            }
            tokio::task::yield_now().await;
        }
        writer.await.expect("writer");
        assert_eq!(all_keys(&store, "").await.len(), 8);
    }

    #[test]
    fn open_sweeps_only_old_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        LocalStore::open(dir.path()).expect("open");
        let old = dir.path().join(".tmp/old");
        let fresh = dir.path().join(".tmp/fresh");
        std::fs::write(&old, b"x").expect("write");
        std::fs::write(&fresh, b"x").expect("write");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("set mtime");
        LocalStore::open(dir.path()).expect("reopen");
        assert!(!old.exists(), "stale temp file kept");
        assert!(fresh.exists(), "a live writer's temp file was removed");
    }

    #[tokio::test]
    async fn objects_are_plain_files_and_etag_is_content_hash() {
        let (dir, store) = store();
        let put = store
            .put("d/e/f", Bytes::from_static(b"abc"))
            .await
            .expect("put");
        assert_eq!(
            std::fs::read(dir.path().join("d/e/f")).expect("read"),
            b"abc"
        );
        assert_eq!(
            put.etag.0,
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(b"abc"))
        );
        let again = store
            .put("other", Bytes::from_static(b"abc"))
            .await
            .expect("put");
        assert_eq!(again.etag, put.etag);
        assert_eq!(store.root(), dir.path().canonicalize().expect("canon"));
    }

    #[tokio::test]
    async fn delete_prunes_empty_directories_but_not_the_root() {
        let (dir, store) = store();
        store
            .put("p/q/r/s", Bytes::from_static(b"1"))
            .await
            .expect("put");
        store
            .put("p/t", Bytes::from_static(b"2"))
            .await
            .expect("put");
        store.delete("p/q/r/s").await.expect("delete");
        assert!(!dir.path().join("p/q").exists());
        assert!(dir.path().join("p/t").exists());
        store.delete("p/t").await.expect("delete");
        assert!(!dir.path().join("p").exists());
        assert!(dir.path().join(".tmp").is_dir());
        assert!(dir.path().is_dir());
        // Lock files of deleted keys are removed too.
        assert_eq!(
            std::fs::read_dir(dir.path().join(".locks"))
                .expect("read")
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn file_directory_conflicts_are_invalid() {
        let (_dir, store) = store();
        store
            .put("a/b", Bytes::from_static(b"1"))
            .await
            .expect("put");
        for r in [
            store.put("a", Bytes::from_static(b"2")).await,
            store.put_if_absent("a", Bytes::from_static(b"2")).await,
            store.put("a/b/c", Bytes::from_static(b"2")).await,
            store.put_if_absent("a/b/c", Bytes::from_static(b"2")).await,
        ] {
            assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        }
        // A prefix that runs through a file lists nothing.
        assert!(all_keys(&store, "a/b/").await.is_empty());
        store
            .delete("a")
            .await
            .expect("delete of a directory is a no-op");
        assert_eq!(all_keys(&store, "").await, ["a/b"]);
    }

    #[tokio::test]
    async fn list_skips_subtrees_before_start_after() {
        let (_dir, store) = store();
        for k in ["a/1", "a/2", "b/1", "c"] {
            store.put(k, Bytes::from_static(b"x")).await.expect("put");
        }
        let page = store.list("", Some("a/2"), 10).await.expect("list");
        let keys: Vec<_> = page.objects.into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["b/1", "c"]);
        let page = store.list("", None, 3).await.expect("list");
        assert_eq!(page.next_start_after.as_deref(), Some("b/1"));
        let page = store.list("", None, 4).await.expect("list");
        assert_eq!(page.next_start_after, None);
    }
}
