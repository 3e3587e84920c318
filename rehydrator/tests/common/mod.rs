//! What the rehydrator's integration tests share: a domain of one disk on a local
//! store, written point by point in small packs, with the disk's expected image at
//! each point.

use std::sync::Arc;

use bytes::Bytes;
use tidemark_format::{DiskSpec, DomainRecord, BLOCK_SIZE};
use tidemark_ingest::domain::create_domain;
use tidemark_ingest::{DomainWriter, IngestConfig, IngestContext, Write};
use tidemark_objstore::{DynStore, LocalStore};
use tidemark_pitr_index::Index;

/// Domain `dom` with disk `disk0`, and what the disk holds at each of its points.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: DynStore,
    pub index: Arc<Index>,
    /// The disk's image at each point, by seq.
    pub points: Vec<(u64, Vec<u8>)>,
    writer: DomainWriter,
    /// The disk's image with everything written so far.
    image: Vec<u8>,
    time: i64,
}

impl Fixture {
    /// The domain with an empty disk of `disk_size` bytes and no point yet.
    pub async fn new(disk_size: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: DynStore = Arc::new(LocalStore::open(dir.path().join("store")).expect("store"));
        let index = Arc::new(Index::open(&dir.path().join("index")).expect("index"));
        let ctx = IngestContext {
            store: store.clone(),
            index: index.clone(),
            // Small packs: a restore reads from several.
            config: IngestConfig {
                pack_bytes: 192 << 10,
                ..IngestConfig::default()
            },
            site: "test-site".into(),
        };
        let rec = DomainRecord {
            name: "dom".into(),
            block_size: BLOCK_SIZE,
            disks: vec![DiskSpec {
                name: "disk0".into(),
                size: disk_size as u64,
            }],
            created: 1,
        };
        create_domain(&ctx, rec).await.expect("domain");
        let writer = DomainWriter::open(ctx, "dom").await.expect("writer");
        Fixture {
            dir,
            store,
            index,
            points: Vec::new(),
            writer,
            image: vec![0; disk_size],
            time: 0,
        }
    }

    /// Writes `data` at `offset` into the next point (all-zero blocks become zeroed
    /// blocks there).
    pub fn write(&mut self, offset: usize, data: Vec<u8>) {
        self.image[offset..offset + data.len()].copy_from_slice(&data);
        self.time += 1;
        let w = Write {
            disk: 0,
            offset: offset as u64,
            data: Bytes::from(data),
            time: self.time,
        };
        self.writer.stage(vec![w]).expect("stage");
    }

    /// Commits what was written since the last point as a new point.
    pub async fn commit(&mut self) {
        let seq = self.writer.seal(vec![]).await.expect("seal").seq;
        self.points.push((seq, self.image.clone()));
    }
}
