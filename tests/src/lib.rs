//! Test support: a reference model of protected disks, random write histories, and a
//! site (store + index + write path) in a temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidemark_format::{DiskSpec, DomainRecord, Marker, BLOCK_SIZE};
use tidemark_ingest::{IngestConfig, IngestContext, Write};
use tidemark_objstore::{DynStore, LocalStore};
use tidemark_pitr_index::Index;
use tidemark_rehydrator::{restore_disk, RestoreOptions, RestoreProgress};

mod backend;
pub use backend::Backend;

/// Block size as usize.
pub const BS: usize = BLOCK_SIZE as usize;

/// The protected disks as plain byte vectors: the independent reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// One image per disk.
    pub disks: Vec<Vec<u8>>,
}

impl Model {
    /// All-zero disks of the given sizes.
    pub fn new(sizes: &[u64]) -> Self {
        Model {
            disks: sizes.iter().map(|s| vec![0u8; *s as usize]).collect(),
        }
    }

    /// Applies one write.
    pub fn apply(&mut self, w: &Write) {
        let d = &mut self.disks[w.disk as usize];
        d[w.offset as usize..w.offset as usize + w.data.len()].copy_from_slice(&w.data);
    }
}

/// A site in a temporary directory: a store, an index, a write path.
pub struct TestSite {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The bucket.
    pub store: DynStore,
    /// The index.
    pub index: Arc<Index>,
    /// Site id stamped on what it writes.
    pub site: String,
}

impl TestSite {
    /// A fresh site on a local store.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: DynStore = Arc::new(LocalStore::open(dir.path().join("store")).expect("store"));
        Self::with_store(dir, store, "test-site")
    }

    /// A fresh site on a fresh store of `backend`.
    pub async fn on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = backend.fresh_store(dir.path()).await;
        Self::with_store(dir, store, "test-site")
    }

    /// Another site (own directory and index) sharing this site's store.
    pub fn peer(&self, site: &str) -> Self {
        Self::with_store(
            tempfile::tempdir().expect("tempdir"),
            self.store.clone(),
            site,
        )
    }

    fn with_store(dir: tempfile::TempDir, store: DynStore, site: &str) -> Self {
        let index = Arc::new(Index::open(&dir.path().join("index")).expect("index"));
        TestSite {
            dir,
            store,
            index,
            site: site.to_owned(),
        }
    }

    /// A second index over the same bucket (as another site or after losing the index).
    pub fn fresh_index(&self, name: &str) -> Arc<Index> {
        Arc::new(Index::open(&self.dir.path().join(name)).expect("index"))
    }

    /// The write path with test-sized packs, so that segments span several packs.
    pub fn ingest(&self, config: IngestConfig) -> IngestContext {
        IngestContext {
            store: self.store.clone(),
            index: self.index.clone(),
            config,
            site: self.site.clone(),
        }
    }

    /// A path inside the site's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for TestSite {
    fn default() -> Self {
        Self::new()
    }
}

/// Small packs and segments so that small tests cross every boundary.
pub fn small_config() -> IngestConfig {
    IngestConfig {
        pack_bytes: 192 << 10,
        seal_bytes: 1 << 20,
        ..IngestConfig::default()
    }
}

/// A domain record for tests.
pub fn domain(name: &str, sizes: &[u64]) -> DomainRecord {
    DomainRecord {
        name: name.into(),
        block_size: BLOCK_SIZE,
        disks: sizes
            .iter()
            .enumerate()
            .map(|(i, s)| DiskSpec {
                name: format!("disk{i}"),
                size: *s,
            })
            .collect(),
        created: 1,
    }
}

/// Content kinds a random write uses.
fn fill(rng: &mut StdRng, len: usize, model: &Model) -> Vec<u8> {
    match rng.gen_range(0..6) {
        // Incompressible.
        0 | 1 => (0..len).map(|_| rng.gen()).collect(),
        // Text-like, compressible.
        2 => {
            let words = [
                &b"tidemark "[..],
                b"segment ",
                b"replica ",
                b"point\n",
                b"chunk ",
            ];
            let mut v = Vec::with_capacity(len + 16);
            while v.len() < len {
                v.extend_from_slice(words[rng.gen_range(0..words.len())]);
            }
            v.truncate(len);
            v
        }
        // All zero: zeroes what was there.
        3 => vec![0u8; len],
        // A copy of existing data (dedup across places and disks).
        4 => {
            let d = &model.disks[rng.gen_range(0..model.disks.len())];
            let max_start = (d.len() - len.min(d.len())) / BS;
            let start = rng.gen_range(0..=max_start) * BS;
            let mut v = d[start..(start + len).min(d.len())].to_vec();
            v.resize(len, 0);
            v
        }
        // Mostly zero blocks with a few data blocks.
        _ => {
            let mut v = vec![0u8; len];
            for b in 0..len / BS {
                if rng.gen_bool(0.3) {
                    v[b * BS] = rng.gen_range(1..=255);
                }
            }
            v
        }
    }
}

/// A random write of up to `max_blocks` blocks anywhere on a random disk.
pub fn random_write(rng: &mut StdRng, model: &Model, max_blocks: usize, time: i64) -> Write {
    let disk = rng.gen_range(0..model.disks.len());
    let blocks = model.disks[disk].len() / BS;
    let len = rng.gen_range(1..=max_blocks.min(blocks));
    let start = rng.gen_range(0..=blocks - len);
    Write {
        disk: disk as u32,
        offset: (start * BS) as u64,
        data: Bytes::from(fill(rng, len * BS, model)),
        time,
    }
}

/// A seeded RNG.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A marker for tests.
pub fn marker(name: &str, known_good: bool) -> Marker {
    Marker {
        name: name.into(),
        known_good,
    }
}

/// Restores a disk at a point and returns the image bytes.
pub async fn restore_bytes(
    store: &DynStore,
    index: &Index,
    domain: &str,
    disk: &str,
    seq: u64,
    out: &Path,
) -> Result<Vec<u8>, tidemark_rehydrator::RestoreError> {
    restore_disk(
        store,
        index,
        domain,
        disk,
        seq,
        out,
        &RestoreOptions::default(),
        Arc::new(RestoreProgress::default()),
    )
    .await?;
    Ok(std::fs::read(out).expect("read restored image"))
}

/// The model's snapshot at each committed seq.
pub type History = BTreeMap<u64, Model>;
