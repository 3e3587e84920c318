//! Prometheus metrics: counters kept as the service works, gauges read at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tidemark_objstore::StoreCounts;

/// Counters of the service's work since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    ingest_writes: AtomicU64,
    ingest_bytes: AtomicU64,
    ingest_segments: AtomicU64,
    restore_bytes: AtomicU64,
    tailed_segments: AtomicU64,
    tail_errors: AtomicU64,
}

/// Gauges gathered when scraped.
pub struct Snapshot {
    /// Jobs by state.
    pub jobs: Vec<(&'static str, u64)>,
    /// Bytes of the index on disk.
    pub index_bytes: u64,
    /// Per domain: (name, seconds since its newest point, newest seq).
    pub domains: Vec<(String, f64, u64)>,
    /// Warm replicas.
    pub replicas: Vec<ReplicaGauges>,
    /// Requests and bytes of the object store.
    pub store: StoreCounts,
}

/// How far one replica is behind its domain's log.
pub struct ReplicaGauges {
    /// Its domain.
    pub domain: String,
    /// Age of the oldest point not applied yet.
    pub lag_seconds: f64,
    /// Points not applied yet.
    pub lag_segments: u64,
    /// Bytes those points wrote.
    pub lag_bytes: u64,
    /// The point its images hold.
    pub applied_seq: Option<u64>,
}

impl Metrics {
    /// A pushed segment was committed holding `writes` writes of `bytes` bytes.
    pub fn segment_committed(&self, writes: u64, bytes: u64) {
        self.ingest_segments.fetch_add(1, Ordering::Relaxed);
        self.ingest_writes.fetch_add(writes, Ordering::Relaxed);
        self.ingest_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A restore wrote `bytes` more bytes.
    pub fn restored(&self, bytes: u64) {
        self.restore_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The tailer indexed segments another site committed.
    pub fn tailed(&self, segments: u64) {
        self.tailed_segments.fetch_add(segments, Ordering::Relaxed);
    }

    /// A pass of the tailer failed.
    pub fn tail_failed(&self) {
        self.tail_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self, s: &Snapshot) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "tidemark_ingest_writes_total",
            "Writes pushed and committed.",
            get(&self.ingest_writes),
        );
        counter(
            "tidemark_ingest_bytes_total",
            "Bytes of writes pushed and committed.",
            get(&self.ingest_bytes),
        );
        counter(
            "tidemark_ingest_segments_total",
            "Segments committed by this service.",
            get(&self.ingest_segments),
        );
        counter(
            "tidemark_restore_bytes_total",
            "Bytes written by restores.",
            get(&self.restore_bytes),
        );
        counter(
            "tidemark_tail_segments_total",
            "Segments of other sites indexed by the tailer.",
            get(&self.tailed_segments),
        );
        counter(
            "tidemark_tail_errors_total",
            "Tailer passes that failed.",
            get(&self.tail_errors),
        );
        counter(
            "tidemark_store_requests_total",
            "Object store requests.",
            s.store.requests(),
        );
        counter(
            "tidemark_store_read_bytes_total",
            "Bytes read from the object store.",
            s.store.bytes_read,
        );
        counter(
            "tidemark_store_written_bytes_total",
            "Bytes written to the object store.",
            s.store.bytes_written,
        );
        let _ = writeln!(
            out,
            "# HELP tidemark_jobs Jobs by state.\n# TYPE tidemark_jobs gauge"
        );
        for (state, n) in &s.jobs {
            let _ = writeln!(out, "tidemark_jobs{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tidemark_index_bytes Size of the local index.\n# TYPE tidemark_index_bytes gauge\ntidemark_index_bytes {}",
            s.index_bytes
        );
        let _ = writeln!(out, "# HELP tidemark_rpo_seconds Age of the newest point of each domain (the current RPO).\n# TYPE tidemark_rpo_seconds gauge");
        for (d, age, _) in &s.domains {
            let _ = writeln!(out, "tidemark_rpo_seconds{{domain=\"{d}\"}} {age:.3}");
        }
        let _ = writeln!(out, "# HELP tidemark_last_seq Newest indexed seq of each domain.\n# TYPE tidemark_last_seq gauge");
        for (d, _, seq) in &s.domains {
            let _ = writeln!(out, "tidemark_last_seq{{domain=\"{d}\"}} {seq}");
        }
        type Gauge = (
            &'static str,
            &'static str,
            fn(&ReplicaGauges) -> Option<f64>,
        );
        let gauges: [Gauge; 4] = [
            (
                "tidemark_replica_lag_seconds",
                "Age of the oldest point a replica has not applied (0 when caught up).",
                |r| Some(r.lag_seconds),
            ),
            (
                "tidemark_replica_lag_segments",
                "Points a replica has not applied.",
                |r| Some(r.lag_segments as f64),
            ),
            (
                "tidemark_replica_lag_bytes",
                "Bytes of the points a replica has not applied.",
                |r| Some(r.lag_bytes as f64),
            ),
            (
                "tidemark_replica_applied_seq",
                "The point a replica's images hold.",
                |r| r.applied_seq.map(|s| s as f64),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for r in &s.replicas {
                if let Some(v) = value(r) {
                    let _ = writeln!(out, "{name}{{domain=\"{}\"}} {v}", r.domain);
                }
            }
        }
        out
    }
}
