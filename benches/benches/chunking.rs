//! FastCDC throughput over synthetic image content, with the cut sizes ingest uses.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fastcdc::v2020::FastCDC;
use tidemark_benches::synth_content;

const LEN: usize = 64 << 20;

fn chunking(c: &mut Criterion) {
    let data = synth_content(1, LEN);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("fastcdc_16k_64k_256k", |b| {
        b.iter(|| {
            // Summing the lengths keeps the optimiser from dropping the cuts.
            FastCDC::new(black_box(&data), 16384, 65536, 262144)
                .map(|chunk| chunk.length)
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = chunking
}
criterion_main!(benches);
