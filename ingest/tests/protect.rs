//! The capture agent on sparse images: holes are zero blocks, never read; a block that
//! became a hole is recorded as zeroed; only changes are sent while the agent's hashes
//! are trusted, everything when they are not; and the chunks of every disk's stream
//! are its written blocks, in order, across windows, packs and disks.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tidemark_format::pack::decode_chunk;
use tidemark_format::{keys, DiskDelta, Segment, BLOCK_SIZE};
use tidemark_ingest::agent::{protect, DiskSource, ProtectReport};
use tidemark_ingest::{DomainWriter, IngestConfig, IngestContext, Write};
use tidemark_objstore::{DynStore, MemoryStore};
use tidemark_pitr_index::Index;

const BS: u64 = BLOCK_SIZE as u64;
/// Three groups of stored hashes (4096 blocks each), the last one partial.
const BLOCKS: u64 = 10_000;

/// What a disk holds: the content of its non-zero blocks (a seed per block), and
/// blocks of zeros that are written out rather than left as holes.
#[derive(Clone, Default)]
struct Image {
    data: BTreeMap<u64, u64>,
    written_zeros: Vec<u64>,
}

fn block(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half the bytes repeat, so that zstd keeps some chunks and not others.
            if x & 1 == 0 {
                b'a'
            } else {
                (x >> 56) as u8
            }
        })
        .collect()
}

impl Image {
    /// Writes the image anew: only its data and written zeros, the rest are holes.
    fn write(&self, path: &Path) {
        let f = File::create(path).expect("create image");
        f.set_len(BLOCKS * BS).expect("size image");
        for (&b, &seed) in &self.data {
            f.write_all_at(&block(seed), b * BS).expect("write block");
        }
        for &b in &self.written_zeros {
            f.write_all_at(&[0u8; BS as usize], b * BS)
                .expect("write zeros");
        }
    }

    fn content(&self, b: u64) -> Vec<u8> {
        self.data
            .get(&b)
            .map_or_else(|| vec![0u8; BS as usize], |&s| block(s))
    }
}

struct Site {
    dir: tempfile::TempDir,
    ctx: IngestContext,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Arc::new(Index::open(&dir.path().join("index")).expect("index"));
        let store: DynStore = Arc::new(MemoryStore::new());
        let config = IngestConfig {
            // Packs of a few chunks, so that a segment spans many.
            pack_bytes: 192 << 10,
            ..IngestConfig::default()
        };
        let ctx = IngestContext {
            store,
            index,
            config,
            site: "site".into(),
        };
        Site { dir, ctx }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn protect(&self, disks: &[(&str, &Image)]) -> ProtectReport {
        let sources: Vec<DiskSource> = disks
            .iter()
            .map(|(name, image)| {
                let path = self.path(&format!("{name}.img"));
                image.write(&path);
                DiskSource {
                    name: (*name).into(),
                    path,
                }
            })
            .collect();
        protect(&self.ctx, "d", &sources, None)
            .await
            .expect("protect")
    }

    /// The changes of disk `disk` in point `seq`.
    async fn delta(&self, seq: u64, disk: u32) -> DiskDelta {
        let data = self
            .ctx
            .store
            .get(&keys::segment_key("d", seq))
            .await
            .expect("segment")
            .data;
        let seg = Segment::decode(&data).expect("decode segment");
        seg.disks
            .into_iter()
            .find(|d| d.disk == disk)
            .unwrap_or(DiskDelta {
                disk,
                written: Default::default(),
                zeroed: Default::default(),
                chunks: Vec::new(),
            })
    }

    /// The data stream of a delta, read back from its packs.
    async fn stream(&self, delta: &DiskDelta) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &delta.chunks {
            let loc = self
                .ctx
                .index
                .chunk_location("d", &c.hash)
                .expect("lookup")
                .expect("located");
            let frame = self
                .ctx
                .store
                .get_range(
                    &keys::pack_key("d", loc.pack),
                    loc.offset..loc.offset + loc.clen as u64,
                )
                .await
                .expect("frame");
            out.extend(decode_chunk(&frame, loc.codec, loc.ulen, c.hash).expect("chunk"));
        }
        out
    }

    /// Checks that point `seq` wrote exactly `written` of `image` and zeroed `zeroed`.
    async fn check(&self, seq: u64, disk: u32, image: &Image, written: &[u64], zeroed: &[u64]) {
        let delta = self.delta(seq, disk).await;
        let got: Vec<u64> = delta.written.iter().map(u64::from).collect();
        assert_eq!(got, written, "written blocks of point {seq}, disk {disk}");
        let got: Vec<u64> = delta.zeroed.iter().map(u64::from).collect();
        assert_eq!(got, zeroed, "zeroed blocks of point {seq}, disk {disk}");
        let expected: Vec<u8> = written.iter().flat_map(|&b| image.content(b)).collect();
        assert!(
            self.stream(&delta).await == expected,
            "stream of point {seq}, disk {disk}"
        );
    }
}

#[tokio::test]
async fn sparse_images_send_changes_and_holes() {
    let site = Site::new();
    let mut root = Image {
        data: [0, 1, 2, 3, 4095, 4096, 4097, 9000]
            .into_iter()
            .map(|b| (b, b + 1))
            .collect(),
        written_zeros: (100..104).collect(),
    };
    // A disk with more data than a window, so that windows of both are in flight.
    let big = Image {
        data: (0..BLOCKS)
            .filter(|b| b % 5 != 0)
            .map(|b| (b, b + 7))
            .collect(),
        written_zeros: Vec::new(),
    };
    let r1 = site.protect(&[("root", &root), ("big", &big)]).await;
    assert_eq!(r1.seq, 1);
    // Nothing was there before: zero blocks are no change.
    let root_data: Vec<u64> = root.data.keys().copied().collect();
    site.check(1, 0, &root, &root_data, &[]).await;
    let big_data: Vec<u64> = big.data.keys().copied().collect();
    site.check(1, 1, &big, &big_data, &[]).await;
    let changed = (root_data.len() + big_data.len()) as u64 * BS;
    assert_eq!(r1.changed_bytes, changed);

    // Blocks 1 and 2 become holes, 9000 written zeros; 4096 changes, 7000 is new.
    root.data.remove(&1);
    root.data.remove(&2);
    root.data.remove(&9000);
    root.written_zeros.push(9000);
    root.data.insert(4096, 77);
    root.data.insert(7000, 78);
    let r2 = site.protect(&[("root", &root), ("big", &big)]).await;
    assert_eq!(r2.changed_bytes, 5 * BS);
    site.check(2, 0, &root, &[4096, 7000], &[1, 2, 9000]).await;
    site.check(2, 1, &big, &[], &[]).await;

    // A point the agent did not write: its hashes are no longer trusted, so every
    // block is sent, zero or not.
    let mut w = DomainWriter::open(site.ctx.clone(), "d")
        .await
        .expect("writer");
    w.stage(vec![Write {
        disk: 0,
        offset: 5 * BS,
        data: Bytes::from(block(99)),
        time: 1,
    }])
    .expect("stage");
    w.seal(Vec::new()).await.expect("seal");
    let r4 = site.protect(&[("root", &root)]).await;
    assert_eq!(r4.seq, 4);
    assert_eq!(r4.changed_bytes, BLOCKS * BS);
    let root_data: Vec<u64> = root.data.keys().copied().collect();
    let zeros: Vec<u64> = (0..BLOCKS).filter(|b| !root.data.contains_key(b)).collect();
    site.check(4, 0, &root, &root_data, &zeros).await;

    // And trusted again: nothing changed, nothing sent.
    let r5 = site.protect(&[("root", &root), ("big", &big)]).await;
    assert_eq!(r5.changed_bytes, 0);
    site.check(5, 0, &root, &[], &[]).await;
}
