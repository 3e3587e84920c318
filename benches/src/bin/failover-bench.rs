//! Failover figures for `tidemark serve`, driven over HTTP against two sites that share
//! one store: A owns the domains and takes the writes, B keeps warm replicas of them.
//! Each mode prints one JSON object (benches/failover.sh formats them).
//!
//! failover-bench rto A_URL B_URL TOKEN TAG DISK_BYTES DATA_BYTES RUNS
//!   RTO of completing continuous failover on a caught-up replica: DATA_BYTES of random
//!   data in 1 MiB writes spread over the disk at A, a replica started at B and waited
//!   for until it follows and holds the last point, then `replica/complete` (queue
//!   apply) timed from the POST to the job seen succeeded (polled every 1 ms). A fresh
//!   domain per run.
//!
//! failover-bench lag A_URL B_URL TOKEN DOMAIN RATE_MB_S SECONDS PUSH_BYTES IN_FLIGHT POLL_MS
//!   Replica lag under a paced write load: pushes of PUSH_BYTES (256 KiB writes) started
//!   on a fixed schedule for RATE_MB_S (10^6 B/s), at most IN_FLIGHT at once, each ack
//!   recorded with its seq; B's replica is read every POLL_MS and the lag of a point is
//!   when the replica first showed applied_seq >= its seq minus when its push was acked.
//!
//! failover-bench rollback A_URL B_URL TOKEN DOMAIN DISK_BYTES DATA_BYTES CHANGED_PERMILLE RUNS
//!   DATA_BYTES of random data in 1 MiB writes (point P), then CHANGED_PERMILLE/1000 of
//!   the disk's 4 KiB blocks rewritten in 64 KiB writes spread over the disk (point Q);
//!   a replica at B caught up at Q is rolled back to P (timed; RUNS times, resumed to Q
//!   in between), then RUNS full restores of P at B into `bench/DOMAIN-full-N.img`
//!   under B's recovery directory (timed). Bytes moved are B's restore and store-read
//!   counters (/metrics) before and after each.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{Mutex, Semaphore};

const BS: u64 = 4096;
const MIB: u64 = 1 << 20;

type R<T> = Result<T, String>;

/// The two sites and the token both accept.
#[derive(Clone)]
struct Sites {
    http: reqwest::Client,
    a: String,
    b: String,
    token: String,
}

impl Sites {
    async fn call(&self, req: reqwest::RequestBuilder) -> R<(u16, Value)> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| format!("HTTP body: {e}"))?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn get(&self, url: &str) -> R<Value> {
        let (s, v) = self.call(self.http.get(url)).await?;
        if !(200..300).contains(&s) {
            return Err(format!("GET {url}: HTTP {s}: {v}"));
        }
        Ok(v)
    }

    async fn post(&self, url: &str, body: &Value) -> R<(u16, Value)> {
        self.call(
            self.http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    async fn post_ok(&self, url: &str, body: &Value) -> R<Value> {
        let (s, v) = self.post(url, body).await?;
        if !(200..300).contains(&s) {
            return Err(format!("POST {url}: HTTP {s}: {v}"));
        }
        Ok(v)
    }

    async fn create(&self, domain: &str, size: u64) -> R<()> {
        self.post_ok(
            &format!("{}/v1/domains", self.a),
            &json!({"name": domain, "disks": [{"name": "d0", "size": size}]}),
        )
        .await
        .map(|_| ())
    }

    /// Pushes a batch of writes to A; the seq of the point that holds it.
    async fn push(&self, domain: &str, body: Vec<u8>) -> R<u64> {
        let (s, v) = self
            .call(
                self.http
                    .post(format!("{}/v1/domains/{domain}/writes", self.a))
                    .header("content-type", "application/octet-stream")
                    .body(body),
            )
            .await?;
        match v["seq"].as_u64() {
            Some(seq) if (200..300).contains(&s) => Ok(seq),
            _ => Err(format!("push to {domain}: HTTP {s}: {v}")),
        }
    }

    async fn replica(&self, domain: &str) -> R<Value> {
        self.get(&format!("{}/v1/domains/{domain}/replica", self.b))
            .await
    }

    /// Starts a replica of `domain` at B and waits until it follows and holds `seq`
    /// with nothing left to apply. Seconds it took.
    async fn replica_caught_up(&self, domain: &str, seq: u64) -> R<f64> {
        let t = Instant::now();
        let (s, v) = self
            .post(
                &format!("{}/v1/domains/{domain}/replica", self.b),
                &json!({}),
            )
            .await?;
        if s != 201 {
            return Err(format!("start replica of {domain}: HTTP {s}: {v}"));
        }
        self.wait_caught_up(domain, seq, t).await
    }

    async fn wait_caught_up(&self, domain: &str, seq: u64, t: Instant) -> R<f64> {
        loop {
            let v = self.replica(domain).await?;
            let applied = v["applied_seq"].as_u64();
            if v["state"] == "following"
                && applied.is_some_and(|a| a >= seq)
                && v["lag_segments"].as_u64() == Some(0)
            {
                return Ok(t.elapsed().as_secs_f64());
            }
            if t.elapsed() > Duration::from_secs(600) {
                return Err(format!("replica of {domain} not caught up at {seq}: {v}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls job `id` at B every `every` until it ends; the job and the seconds since
    /// `t`.
    async fn wait_job(&self, id: &str, t: Instant, every: Duration) -> R<(Value, f64)> {
        loop {
            let job = self.get(&format!("{}/v1/jobs/{id}", self.b)).await?;
            match job["state"].as_str() {
                Some("succeeded") => return Ok((job, t.elapsed().as_secs_f64())),
                Some("failed") | Some("cancelled") => return Err(format!("job {id}: {job}")),
                _ => {}
            }
            if t.elapsed() > Duration::from_secs(600) {
                return Err(format!("job {id} did not end: {job}"));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// A counter of B's /metrics.
    async fn metric(&self, name: &str) -> R<f64> {
        let r = self
            .http
            .get(format!("{}/metrics", self.b))
            .send()
            .await
            .map_err(|e| format!("metrics: {e}"))?;
        let text = r.text().await.map_err(|e| format!("metrics: {e}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no metric {name}"))
    }
}

/// One write record: header, then `data`.
fn record(out: &mut Vec<u8>, offset: u64, data: &[u8]) {
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(data);
}

/// Writes `len` bytes of fresh random data at each of `offsets`, `per_push` writes per
/// push; the seq of the last push.
async fn write_random(
    s: &Sites,
    domain: &str,
    offsets: &[u64],
    len: usize,
    per_push: usize,
    rng: &mut impl Rng,
) -> R<u64> {
    let mut last = 0;
    let mut data = vec![0u8; len];
    for group in offsets.chunks(per_push) {
        let mut body = Vec::with_capacity(group.len() * (32 + len));
        for &off in group {
            rng.fill(&mut data[..]);
            record(&mut body, off, &data);
        }
        last = s.push(domain, body).await?;
    }
    Ok(last)
}

/// `n` distinct slots of `slot` bytes out of a disk of `size` bytes, as offsets.
fn spread(rng: &mut impl Rng, size: u64, slot: u64, n: usize) -> Vec<u64> {
    rand::seq::index::sample(rng, (size / slot) as usize, n)
        .into_iter()
        .map(|i| i as u64 * slot)
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn num(a: &[String], i: usize) -> R<u64> {
    let s = a.get(i).ok_or_else(|| format!("missing argument {i}"))?;
    s.parse().map_err(|e| format!("{s}: {e}"))
}

async fn rto(s: &Sites, a: &[String]) -> R<Value> {
    let tag = a.get(4).ok_or("missing TAG")?.clone();
    let (size, data, runs) = (num(a, 5)?, num(a, 6)?, num(a, 7)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(size ^ 5);
    let mut out = Vec::new();
    for run in 1..=runs {
        let domain = format!("rto-{tag}-{run}");
        s.create(&domain, size).await?;
        let offsets = spread(&mut rng, size, MIB, (data / MIB) as usize);
        let t = Instant::now();
        let last = write_random(s, &domain, &offsets, MIB as usize, 16, &mut rng).await?;
        let write_s = t.elapsed().as_secs_f64();
        let seed_s = s.replica_caught_up(&domain, last).await?;
        let t = Instant::now();
        let job = s
            .post_ok(
                &format!("{}/v1/domains/{domain}/replica/complete", s.b),
                &json!({"queue": "apply"}),
            )
            .await?;
        let answered_s = t.elapsed().as_secs_f64();
        let id = job["id"].as_str().ok_or("no job id")?.to_owned();
        let (job, wall_s) = s.wait_job(&id, t, Duration::from_millis(1)).await?;
        let f = &job["failover"];
        let steps: Vec<Value> = f["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|st| json!({"name": st["name"], "ms": st["duration_ms"], "detail": st["detail"]}))
            .collect();
        let rep = s.replica(&domain).await?;
        eprintln!(
            "[failover] {domain}: last seq {last}, replica caught up in {seed_s:.2} s, complete {wall_s:.3} s (job rto_seconds {})",
            f["rto_seconds"]
        );
        out.push(json!({
            "domain": domain, "run": run, "last_seq": last, "write_s": write_s,
            "seed_s": seed_s, "post_answered_s": answered_s, "wall_s": wall_s,
            "rto_seconds": f["rto_seconds"], "from_replica": f["from_replica"],
            "fence_seq": f["fence_seq"], "job_seq": job["seq"], "steps": steps,
            "replica_state_after": rep["state"], "replica_applied_after": rep["applied_seq"],
        }));
    }
    Ok(json!({"disk_bytes": size, "data_bytes": data, "runs": out}))
}

/// Half random, half text-like (compressible, never deduplicated: every 4 KiB block
/// carries a random word).
fn fill_mixed(rng: &mut impl Rng, buf: &mut [u8]) {
    let half = buf.len() / 2;
    rng.fill(&mut buf[..half]);
    const TEXT: &[u8] = b"tidemark keeps every point in time. ";
    let phase = rng.gen_range(0..TEXT.len());
    for (j, b) in buf[half..].iter_mut().enumerate() {
        *b = TEXT[(j + phase) % TEXT.len()];
    }
    for block in buf.chunks_mut(BS as usize) {
        block[..8].copy_from_slice(&rng.gen::<u64>().to_le_bytes());
    }
}

async fn lag(s: &Sites, a: &[String]) -> R<Value> {
    let domain = a.get(4).ok_or("missing DOMAIN")?.clone();
    let rate_mb = num(a, 5)? as f64;
    let seconds = num(a, 6)? as f64;
    let push_bytes = num(a, 7)?;
    let in_flight = num(a, 8)? as usize;
    let poll_ms = num(a, 9)?;
    const WRITE: u64 = 256 << 10;
    const DISK: u64 = 8 << 30;
    if push_bytes == 0 || !push_bytes.is_multiple_of(WRITE) {
        return Err("PUSH_BYTES must be a positive multiple of 256 KiB".into());
    }
    let per_push = (push_bytes / WRITE) as usize;
    s.create(&domain, DISK).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rate_mb as u64);
    let mut make = move || {
        let mut body = Vec::with_capacity(per_push * (32 + WRITE as usize));
        let mut data = vec![0u8; WRITE as usize];
        for _ in 0..per_push {
            fill_mixed(&mut rng, &mut data);
            let off = rng.gen_range(0..DISK / WRITE) * WRITE;
            record(&mut body, off, &data);
        }
        body
    };
    let first = s.push(&domain, make()).await?;
    let seed_s = s.replica_caught_up(&domain, first).await?;

    let start = Instant::now();
    // The poller: (seconds since start, applied_seq) each time applied_seq changed.
    let poll_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (s, domain, stop) = (s.clone(), domain.clone(), poll_stop.clone());
        tokio::spawn(async move {
            let mut seen: Vec<(f64, u64)> = Vec::new();
            let (mut polls, mut reported_lag, mut lag_bytes, mut errors) = (0u64, 0f64, 0u64, 0u64);
            let mut reported = Vec::new();
            let mut last = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match s.replica(&domain).await {
                    Ok(v) => {
                        let t = start.elapsed().as_secs_f64();
                        polls += 1;
                        let l = v["lag_seconds"].as_f64().unwrap_or(0.0);
                        reported.push(l);
                        reported_lag = reported_lag.max(l);
                        lag_bytes = lag_bytes.max(v["lag_bytes"].as_u64().unwrap_or(0));
                        let applied = v["applied_seq"].as_u64();
                        if applied.is_some() && applied != last {
                            last = applied;
                            seen.push((t, applied.unwrap_or(0)));
                        }
                    }
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(Duration::from_millis(poll_ms)).await;
            }
            let period = start.elapsed().as_secs_f64() / polls.max(1) as f64;
            (
                seen,
                polls,
                period,
                reported_lag,
                lag_bytes,
                errors,
                reported,
            )
        })
    };

    let acks: Arc<Mutex<Vec<(u64, f64, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(in_flight));
    let interval = push_bytes as f64 / (rate_mb * 1e6);
    let mut tasks = Vec::new();
    let mut late = 0u64;
    for i in 0u64.. {
        let due = interval * i as f64;
        if due >= seconds {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            start + Duration::from_secs_f64(due),
        ))
        .await;
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("semaphore: {e}"))?;
        if start.elapsed().as_secs_f64() > due + interval {
            late += 1;
        }
        let body = make();
        let (s, domain, acks, failures) =
            (s.clone(), domain.clone(), acks.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let sent = start.elapsed().as_secs_f64();
            match s.push(&domain, body).await {
                Ok(seq) => {
                    let t = start.elapsed().as_secs_f64();
                    acks.lock().await.push((seq, sent, t));
                }
                Err(e) => {
                    eprintln!("[failover] {e}");
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let acks = acks.lock().await.clone();
    let last_ack = acks.iter().map(|a| a.2).fold(0.0, f64::max);
    let max_seq = acks.iter().map(|a| a.0).max().unwrap_or(first);
    // Let the replica apply everything acknowledged, then stop the poller.
    let drain_from = Instant::now();
    s.wait_caught_up(&domain, max_seq, drain_from).await?;
    let drain_s = drain_from.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(2 * poll_ms + 50)).await;
    poll_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, polls, poll_period, reported_max, lag_bytes_max, poll_errors, mut reported) =
        poller.await.map_err(|e| format!("poller: {e}"))?;

    let mut lags = Vec::new();
    let mut unseen = 0;
    for &(seq, _, acked) in &acks {
        let i = seen.partition_point(|&(_, applied)| applied < seq);
        match seen.get(i) {
            Some(&(t, _)) => lags.push((t - acked).max(0.0)),
            None => unseen += 1,
        }
    }
    lags.sort_by(f64::total_cmp);
    reported.sort_by(f64::total_cmp);
    let mut push_lat: Vec<f64> = acks.iter().map(|a| a.2 - a.1).collect();
    push_lat.sort_by(f64::total_cmp);
    let points: HashSet<u64> = acks.iter().map(|a| a.0).collect();
    let bytes = acks.len() as u64 * push_bytes;
    let applies = seen.len();
    s.call(
        s.http
            .delete(format!("{}/v1/domains/{domain}/replica", s.b)),
    )
    .await?;
    Ok(json!({
        "domain": domain, "target_mb_s": rate_mb, "seconds": seconds,
        "push_bytes": push_bytes, "write_bytes": WRITE, "in_flight": in_flight,
        "pushes": acks.len(), "failed_pushes": failures.load(std::sync::atomic::Ordering::Relaxed),
        "late_pushes": late,
        "achieved_mb_s": if last_ack > 0.0 { bytes as f64 / last_ack / 1e6 } else { 0.0 },
        "points": points.len(), "replica_applies": applies,
        "push_latency_p50_ms": percentile(&push_lat, 0.5) * 1e3,
        "push_latency_p99_ms": percentile(&push_lat, 0.99) * 1e3,
        "lag_samples": lags.len(), "lag_unseen": unseen,
        "lag_p50_s": percentile(&lags, 0.5), "lag_p99_s": percentile(&lags, 0.99),
        "lag_max_s": lags.last().copied().unwrap_or(0.0),
        "poll_ms": poll_ms, "polls": polls, "poll_errors": poll_errors,
        "poll_period_ms": poll_period * 1e3,
        "reported_lag_p50_s": percentile(&reported, 0.5),
        "reported_lag_p99_s": percentile(&reported, 0.99),
        "reported_lag_max_s": reported_max, "reported_lag_bytes_max": lag_bytes_max,
        "drain_s": drain_s, "seed_s": seed_s,
    }))
}

async fn rollback(s: &Sites, a: &[String]) -> R<Value> {
    let domain = a.get(4).ok_or("missing DOMAIN")?.clone();
    let (size, data, permille, runs) = (num(a, 5)?, num(a, 6)?, num(a, 7)?, num(a, 8)?);
    const SMALL: u64 = 64 << 10;
    s.create(&domain, size).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let big = spread(&mut rng, size, MIB, (data / MIB) as usize);
    let t = Instant::now();
    let p = write_random(s, &domain, &big, MIB as usize, 16, &mut rng).await?;
    let write_p_s = t.elapsed().as_secs_f64();
    let blocks = size / BS;
    let changed_blocks = (blocks * permille).div_ceil(1000);
    let small = spread(
        &mut rng,
        size,
        SMALL,
        changed_blocks.div_ceil(SMALL / BS) as usize,
    );
    let written: HashSet<u64> = big.iter().copied().collect();
    let on_data = small
        .iter()
        .filter(|&&o| written.contains(&(o / MIB * MIB)))
        .count() as u64;
    let q = write_random(s, &domain, &small, SMALL as usize, 64, &mut rng).await?;
    let seed_s = s.replica_caught_up(&domain, q).await?;
    eprintln!(
        "[failover] {domain}: P = seq {p}, Q = seq {q}, replica caught up at Q in {seed_s:.2} s"
    );

    // Rollback Q -> P, RUNS times: between two, the replica resumes and moves to Q again.
    let mut rollbacks = Vec::new();
    let mut image = Value::Null;
    for run in 1..=runs {
        let mut forward_s = Value::Null;
        if run > 1 {
            let t = Instant::now();
            s.post_ok(
                &format!("{}/v1/domains/{domain}/replica/resume", s.b),
                &json!({}),
            )
            .await?;
            forward_s = json!(s.wait_caught_up(&domain, q, t).await?);
        }
        let restored0 = s.metric("tidemark_restore_bytes_total").await?;
        let read0 = s.metric("tidemark_store_read_bytes_total").await?;
        let t = Instant::now();
        let rb = s
            .post_ok(
                &format!("{}/v1/domains/{domain}/replica/rollback", s.b),
                &json!({"point": p.to_string()}),
            )
            .await?;
        let secs = t.elapsed().as_secs_f64();
        let restored1 = s.metric("tidemark_restore_bytes_total").await?;
        let read1 = s.metric("tidemark_store_read_bytes_total").await?;
        if rb["applied_seq"].as_u64() != Some(p) || rb["state"] != "paused" {
            return Err(format!("rollback did not land on {p}: {rb}"));
        }
        eprintln!("[failover] rollback Q -> P, run {run}: {secs:.3} s");
        image = rb["disks"][0]["path"].clone();
        rollbacks.push(json!({
            "run": run, "s": secs, "resume_to_q_s": forward_s,
            "restore_bytes": restored1 - restored0, "store_read_bytes": read1 - read0,
        }));
    }
    // Full restores of P, RUNS times, each into a new file.
    let mut restores = Vec::new();
    for run in 1..=runs {
        let path = format!("bench/{domain}-full-{run}.img");
        let restored0 = s.metric("tidemark_restore_bytes_total").await?;
        let read0 = s.metric("tidemark_store_read_bytes_total").await?;
        let t = Instant::now();
        let job = s
            .post_ok(
                &format!("{}/v1/restores", s.b),
                &json!({"domain": domain, "point": p.to_string(),
                        "targets": [{"disk": "d0", "path": path}]}),
            )
            .await?;
        let id = job["id"].as_str().ok_or("no job id")?.to_owned();
        let (job, secs) = s.wait_job(&id, t, Duration::from_millis(5)).await?;
        let restored1 = s.metric("tidemark_restore_bytes_total").await?;
        let read1 = s.metric("tidemark_store_read_bytes_total").await?;
        eprintln!("[failover] full restore of P, run {run}: {secs:.3} s");
        restores.push(json!({
            "run": run, "s": secs, "path": path, "job_bytes_total": job["bytes_total"],
            "restore_bytes": restored1 - restored0, "store_read_bytes": read1 - read0,
        }));
    }
    Ok(json!({
        "domain": domain, "disk_bytes": size, "p": p, "q": q,
        "p_data_bytes": data, "write_p_s": write_p_s,
        "changed_blocks": small.len() as u64 * (SMALL / BS), "changed_writes": small.len(),
        "changed_bytes": small.len() as u64 * SMALL,
        "changed_writes_on_p_data": on_data, "changed_writes_on_p_holes": small.len() as u64 - on_data,
        "seed_s": seed_s, "replica_image": image,
        "rollbacks": rollbacks, "restores": restores,
    }))
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        eprintln!(
            "usage: failover-bench rto|lag|rollback A_URL B_URL TOKEN ARGS... (see the source)"
        );
        std::process::exit(2);
    }
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let sites = Sites {
        http,
        a: a[1].trim_end_matches('/').to_owned(),
        b: a[2].trim_end_matches('/').to_owned(),
        token: a[3].clone(),
    };
    let result = match a[0].as_str() {
        "rto" => rto(&sites, &a).await,
        "lag" => lag(&sites, &a).await,
        "rollback" => rollback(&sites, &a).await,
        m => Err(format!("unknown mode {m}")),
    };
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("failover-bench {}: {e}", a[0]);
            std::process::exit(1);
        }
    }
}
