//! Prometheus metrics: counters kept as the service works, gauges read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
    gc: Mutex<BTreeMap<String, GcStats>>,
}

/// GC of one domain in this process (dry runs are not counted).
#[derive(Clone, Debug, Default)]
struct GcStats {
    runs: u64,
    failures: u64,
    bytes_reclaimed: u64,
    segments_deleted: u64,
    segments_merged: u64,
    packs_repacked: u64,
    last_duration_seconds: Option<f64>,
    last_stored_bytes: Option<u64>,
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

    fn gc_stats(&self, domain: &str, f: impl FnOnce(&mut GcStats)) {
        let mut gc = self.gc.lock().unwrap_or_else(|e| e.into_inner());
        f(gc.entry(domain.to_owned()).or_default());
    }

    /// A GC run (not dry) of `domain` ended with `r`.
    pub fn gc_ran(&self, domain: &str, r: &tidemark_gc::GcReport) {
        self.gc_stats(domain, |s| {
            s.runs += 1;
            s.bytes_reclaimed += r.bytes_reclaimed;
            s.segments_deleted += r.segments_deleted;
            s.segments_merged += r.segments_merged;
            s.packs_repacked += r.packs_repacked;
            s.last_duration_seconds = Some(r.duration_seconds);
            // A deferred run may stop before it measured the bucket (its figures are
            // then 0): the last measure stands.
            let stored = match &r.deferred {
                None => Some(r.stored_bytes_after),
                Some(_) => (r.stored_bytes_before > 0).then_some(r.stored_bytes_before),
            };
            if let Some(b) = stored {
                s.last_stored_bytes = Some(b);
            }
        });
    }

    /// A GC run (not dry) of `domain` failed.
    pub fn gc_failed(&self, domain: &str) {
        self.gc_stats(domain, |s| {
            s.runs += 1;
            s.failures += 1;
        });
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
        self.render_gc(&mut out);
        out
    }

    fn render_gc(&self, out: &mut String) {
        let gc = self.gc.lock().unwrap_or_else(|e| e.into_inner()).clone();
        type Series = (
            &'static str,
            &'static str,
            &'static str,
            fn(&GcStats) -> Option<f64>,
        );
        let series: [Series; 8] = [
            (
                "tidemark_gc_runs_total",
                "counter",
                "GC runs, failed ones included (dry runs are not counted).",
                |s| Some(s.runs as f64),
            ),
            (
                "tidemark_gc_failures_total",
                "counter",
                "GC runs that failed.",
                |s| Some(s.failures as f64),
            ),
            (
                "tidemark_gc_bytes_reclaimed_total",
                "counter",
                "Bytes GC deleted from the bucket.",
                |s| Some(s.bytes_reclaimed as f64),
            ),
            (
                "tidemark_gc_segments_deleted_total",
                "counter",
                "Segments GC deleted: no kept point read them.",
                |s| Some(s.segments_deleted as f64),
            ),
            (
                "tidemark_gc_segments_merged_total",
                "counter",
                "Segments GC merged into new ones.",
                |s| Some(s.segments_merged as f64),
            ),
            (
                "tidemark_gc_packs_repacked_total",
                "counter",
                "Packs GC repacked.",
                |s| Some(s.packs_repacked as f64),
            ),
            (
                "tidemark_gc_last_duration_seconds",
                "gauge",
                "Duration of the last GC run that ended.",
                |s| s.last_duration_seconds,
            ),
            (
                "tidemark_gc_last_stored_bytes",
                "gauge",
                "Bytes the domain held in the bucket after the last GC run.",
                |s| s.last_stored_bytes.map(|b| b as f64),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (domain, s) in &gc {
                if let Some(v) = value(s) {
                    let _ = writeln!(out, "{name}{{domain=\"{domain}\"}} {v}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            jobs: Vec::new(),
            index_bytes: 0,
            domains: Vec::new(),
            replicas: Vec::new(),
            store: StoreCounts::default(),
        }
    }

    #[test]
    fn gc_series_per_domain() {
        let m = Metrics::default();
        let text = m.render(&snapshot());
        assert!(text.contains("# TYPE tidemark_gc_runs_total counter"));
        assert!(!text.contains("tidemark_gc_runs_total{"));
        let report = tidemark_gc::GcReport {
            segments_deleted: 3,
            segments_merged: 4,
            bytes_reclaimed: 5000,
            stored_bytes_after: 777,
            duration_seconds: 0.25,
            ..Default::default()
        };
        m.gc_ran("web", &report);
        m.gc_ran("web", &report);
        m.gc_failed("db");
        let deferred = tidemark_gc::GcReport {
            deferred: Some("busy".into()),
            ..Default::default()
        };
        m.gc_ran("web", &deferred);
        let text = m.render(&snapshot());
        for line in [
            "tidemark_gc_runs_total{domain=\"web\"} 3",
            "tidemark_gc_runs_total{domain=\"db\"} 1",
            "tidemark_gc_failures_total{domain=\"db\"} 1",
            "tidemark_gc_failures_total{domain=\"web\"} 0",
            "tidemark_gc_bytes_reclaimed_total{domain=\"web\"} 10000",
            "tidemark_gc_segments_deleted_total{domain=\"web\"} 6",
            "tidemark_gc_segments_merged_total{domain=\"web\"} 8",
            "tidemark_gc_last_duration_seconds{domain=\"web\"} 0",
            "tidemark_gc_last_stored_bytes{domain=\"web\"} 777",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("tidemark_gc_last_stored_bytes{domain=\"db\"}"));
    }
}
