//! zstd level 3 encode and verified decode of one 64 KiB chunk, as packs store them.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidemark_benches::{content_of_kind, RunKind};
use tidemark_format::pack::{decode_chunk, encode_chunk};
use tidemark_format::ChunkHash;

const CHUNK: usize = 64 << 10;

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    for (name, kind) in [("text", RunKind::Text), ("random", RunKind::Random)] {
        let data = content_of_kind(kind, 1, CHUNK);
        let hash = ChunkHash::of(&data);
        let (codec, frame) = encode_chunk(&data, 3);
        // A failing decode would time the error path instead.
        assert!(decode_chunk(&frame, codec, CHUNK as u32, hash).is_ok());
        eprintln!(
            "compression/{name}: {codec:?}, ratio {:.2}",
            CHUNK as f64 / frame.len() as f64
        );
        g.bench_with_input(BenchmarkId::new("encode_zstd3", name), &data, |b, data| {
            b.iter(|| encode_chunk(black_box(data), 3))
        });
        g.bench_with_input(
            BenchmarkId::new("decode_verify", name),
            &frame,
            |b, frame| b.iter(|| decode_chunk(black_box(frame), codec, CHUNK as u32, hash)),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = compression
}
criterion_main!(benches);
