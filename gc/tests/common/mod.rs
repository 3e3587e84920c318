//! What the GC tests share: a domain of two small disks on a local store and a real
//! index, written point by point at simulated capture times, with a reference model of
//! both disks at every point; restores compared with the model.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidemark_format::{keys, DiskSpec, DomainRecord, Marker, BLOCK_SIZE};
use tidemark_gc::GcConfig;
use tidemark_ingest::domain::create_domain;
use tidemark_ingest::{DomainWriter, IngestConfig, IngestContext, Write};
use tidemark_objstore::{DynStore, LocalStore};
use tidemark_pitr_index::Index;
use tidemark_rehydrator::{restore_disk, RestoreOptions, RestoreProgress};

pub const BS: usize = BLOCK_SIZE as usize;
pub const DISK_BLOCKS: usize = 256;
pub const DISKS: usize = 2;
pub const HOUR: i64 = 3_600_000_000_000;

/// One write of a history: `blocks` blocks at `first` of `disk`, all with content
/// `pattern` (0: zeroes). Few patterns, so chunks are shared and dedup is exercised.
#[derive(Clone, Copy, Debug)]
pub struct Change {
    pub disk: usize,
    pub first: usize,
    pub blocks: usize,
    pub pattern: u8,
}

/// Bytes of one block of `pattern` at `block` (varies with the block so that runs of
/// one pattern are not all one chunk).
pub fn block_bytes(pattern: u8, block: usize) -> Vec<u8> {
    if pattern == 0 {
        return vec![0; BS];
    }
    let mut x = (pattern as u64) << 32 | (block as u64 % 7);
    (0..BS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: DynStore,
    pub index: Arc<Index>,
    pub ctx: IngestContext,
    pub writer: DomainWriter,
    /// Both disks at each point, by seq.
    pub model: BTreeMap<u64, Vec<Vec<u8>>>,
    image: Vec<Vec<u8>>,
    pub time: i64,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: DynStore = Arc::new(LocalStore::open(dir.path().join("store")).expect("store"));
        let index = Arc::new(Index::open(&dir.path().join("index")).expect("index"));
        let ctx = IngestContext {
            store: store.clone(),
            index: index.clone(),
            // Small packs, so that packs die and are repacked.
            config: IngestConfig {
                pack_bytes: 48 << 10,
                ..IngestConfig::default()
            },
            site: "site-a".into(),
        };
        let rec = DomainRecord {
            name: "dom".into(),
            block_size: BLOCK_SIZE,
            disks: (0..DISKS)
                .map(|i| DiskSpec {
                    name: format!("disk{i}"),
                    size: (DISK_BLOCKS * BS) as u64,
                })
                .collect(),
            created: 1,
        };
        create_domain(&ctx, rec).await.expect("domain");
        let writer = DomainWriter::open(ctx.clone(), "dom")
            .await
            .expect("writer");
        Fixture {
            dir,
            store,
            index,
            ctx,
            writer,
            model: BTreeMap::new(),
            image: vec![vec![0; DISK_BLOCKS * BS]; DISKS],
            time: 1_000 * HOUR,
        }
    }

    /// Commits one point holding `changes`, `after` nanoseconds after the previous.
    pub async fn point(&mut self, changes: &[Change], after: i64, marker: Option<&str>) -> u64 {
        self.time += after.max(1);
        let mut writes = Vec::new();
        for c in changes {
            let first = c.first.min(DISK_BLOCKS - 1);
            let blocks = c.blocks.clamp(1, DISK_BLOCKS - first);
            let mut data = Vec::with_capacity(blocks * BS);
            for b in first..first + blocks {
                data.extend(block_bytes(c.pattern, b));
            }
            self.image[c.disk][first * BS..(first + blocks) * BS].copy_from_slice(&data);
            writes.push(Write {
                disk: c.disk as u32,
                offset: (first * BS) as u64,
                data: Bytes::from(data),
                time: self.time,
            });
        }
        self.writer.stage(writes).expect("stage");
        let markers = marker
            .map(|m| {
                vec![Marker {
                    name: m.into(),
                    known_good: false,
                }]
            })
            .unwrap_or_default();
        // As the service's ingest pipe does: commits exclude a GC run's commit.
        let _commits = self.index.lock_commits("dom").await;
        let seq = self.writer.seal(markers).await.expect("seal").seq;
        self.model.insert(seq, self.image.clone());
        seq
    }

    pub fn gc_config(&self) -> GcConfig {
        let mut cfg = GcConfig::new(self.dir.path().join("scratch"));
        cfg.grace = Duration::ZERO;
        cfg.orphan_grace = Duration::ZERO;
        cfg
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Seqs of the domain's points, per the index.
    pub fn points(&self, index: &Index) -> Vec<u64> {
        index
            .points("dom", 0..=u64::MAX)
            .expect("points")
            .iter()
            .map(|m| m.seq)
            .collect()
    }

    /// Restores every disk at `seq` with `index` and compares with the model.
    pub async fn check_point(&self, index: &Index, seq: u64, what: &str) {
        let expect = self.model.get(&seq).expect("modelled point");
        for (disk, want) in expect.iter().enumerate() {
            let out = self.path(&format!("restore-{disk}.img"));
            let _ = std::fs::remove_file(&out);
            restore_disk(
                &self.store,
                index,
                "dom",
                &format!("disk{disk}"),
                seq,
                &out,
                &RestoreOptions::default(),
                Arc::new(RestoreProgress::default()),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: restore of point {seq} disk {disk}: {e}"));
            let got = std::fs::read(&out).expect("read restore");
            assert!(
                got == *want,
                "{what}: point {seq} disk {disk} differs from the model"
            );
        }
    }

    /// Every object key in the domain's part of the bucket under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.store
            .list_all(prefix, None)
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// Checks the bucket holds exactly what the index references: every pack is known,
    /// every segment object is the current one of its seq.
    pub async fn check_no_garbage(&self) {
        let known: Vec<_> = self
            .index
            .packs("dom")
            .expect("packs")
            .into_iter()
            .map(|(id, _)| keys::pack_key("dom", id))
            .collect();
        for k in self.keys(&keys::packs_prefix("dom")).await {
            assert!(known.contains(&k), "pack {k} is in the bucket but not live");
        }
        for k in self.keys(&keys::log_prefix("dom")).await {
            let (seq, epoch) = keys::parse_segment_object_key(&k).expect("segment key");
            let m = self.index.segment("dom", seq).expect("index");
            assert!(
                m.is_some_and(|m| m.epoch == epoch),
                "segment object {k} is not current"
            );
        }
    }
}

/// A fresh index of the same bucket, rebuilt from it.
pub async fn rebuilt(store: &DynStore, dir: &Path) -> Index {
    let index = Index::open(dir).expect("index");
    tidemark_pitr_index::sync::rebuild(store, &index, "dom")
        .await
        .expect("rebuild");
    index
}
