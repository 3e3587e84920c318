//! Load for `tidemark serve`: concurrent clients push batches of fixed-size writes to
//! random aligned offsets of one domain for a while, and the figures are printed as
//! JSON: throughput (MB/s, writes/s), push latency, and the RPO seen meanwhile (the age
//! of the newest point, sampled from /metrics). With a follower URL it then measures
//! how long a second site takes to see a new point.
//!
//! http-load URL TOKEN DOMAIN WRITE_BYTES WRITES_PER_BATCH CLIENTS SECONDS [FOLLOWER_URL]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const BS: u64 = 4096;
const DISK_BYTES: u64 = 8 << 30;

struct Args {
    url: String,
    token: String,
    domain: String,
    write_bytes: u64,
    per_batch: usize,
    clients: usize,
    seconds: f64,
    follower: Option<String>,
}

fn args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 7 {
        return Err("usage: http-load URL TOKEN DOMAIN WRITE_BYTES WRITES_PER_BATCH CLIENTS SECONDS [FOLLOWER_URL]".into());
    }
    let num = |i: usize| a[i].parse::<f64>().map_err(|e| format!("{}: {e}", a[i]));
    let write_bytes = num(3)? as u64;
    if write_bytes == 0 || !write_bytes.is_multiple_of(BS) {
        return Err("WRITE_BYTES must be a positive multiple of 4096".into());
    }
    Ok(Args {
        url: a[0].trim_end_matches('/').to_owned(),
        token: a[1].clone(),
        domain: a[2].clone(),
        write_bytes,
        per_batch: num(4)? as usize,
        clients: num(5)? as usize,
        seconds: num(6)?,
        follower: a.get(7).map(|s| s.trim_end_matches('/').to_owned()),
    })
}

fn batch(rng: &mut impl Rng, write_bytes: u64, n: usize, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * (32 + write_bytes as usize));
    for _ in 0..n {
        let slots = DISK_BYTES / write_bytes;
        let offset = rng.gen_range(0..slots) * write_bytes;
        let start = rng.gen_range(0..payload.len() - write_bytes as usize);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&write_bytes.to_le_bytes());
        out.extend_from_slice(&0i64.to_le_bytes());
        out.extend_from_slice(&payload[start..start + write_bytes as usize]);
    }
    out
}

async fn rpo(http: &reqwest::Client, url: &str, domain: &str) -> Option<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("tidemark_rpo_seconds{{domain=\"{domain}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let http = reqwest::Client::new();
    let create = http
        .post(format!("{}/v1/domains", a.url))
        .bearer_auth(&a.token)
        .json_body(&json!({"name": a.domain, "disks": [{"name": "d0", "size": DISK_BYTES}]}))
        .send()
        .await;
    match create {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            eprintln!("cannot create the domain: HTTP {}", r.status());
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("cannot create the domain: {e}");
            std::process::exit(1);
        }
    }
    // Half text-like, half random: compressible like a VM's writes, never all zero.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut payload = vec![0u8; 16 << 20];
    for (i, chunk) in payload.chunks_mut(64 << 10).enumerate() {
        if i % 2 == 0 {
            rng.fill(chunk);
        } else {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = b"tidemark keeps every point in time. "[j % 36];
            }
        }
    }
    let payload = Arc::new(payload);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (http, url, token, domain) = (
            http.clone(),
            a.url.clone(),
            a.token.clone(),
            a.domain.clone(),
        );
        let (stop, writes, failures, payload) = (
            stop.clone(),
            writes.clone(),
            failures.clone(),
            payload.clone(),
        );
        let (wb, n) = (a.write_bytes, a.per_batch);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let body = batch(&mut rng, wb, n, &payload);
                let t = Instant::now();
                let r = http
                    .post(format!("{url}/v1/domains/{domain}/writes"))
                    .bearer_auth(&token)
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        latencies.push(t.elapsed().as_secs_f64());
                        writes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut rpos = Vec::new();
    while start.elapsed().as_secs_f64() < a.seconds {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(r) = rpo(&http, &a.url, &a.domain).await {
            rpos.push(r);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    rpos.sort_by(f64::total_cmp);
    let n = writes.load(Ordering::Relaxed);
    let bytes = n * a.write_bytes;
    let mut report = json!({
        "write_bytes": a.write_bytes, "writes_per_batch": a.per_batch, "clients": a.clients,
        "seconds": elapsed, "writes": n, "bytes": bytes,
        "mb_per_sec": bytes as f64 / elapsed / 1e6, "writes_per_sec": n as f64 / elapsed,
        "failed_pushes": failures.load(Ordering::Relaxed),
        "push_latency_p50_ms": percentile(&lat, 0.5) * 1e3,
        "push_latency_p99_ms": percentile(&lat, 0.99) * 1e3,
        "rpo_p50_s": percentile(&rpos, 0.5), "rpo_max_s": rpos.last().copied().unwrap_or(0.0),
    });
    if let Some(follower) = &a.follower {
        let mut seen = Vec::new();
        for _ in 0..10 {
            let body = batch(&mut rng, BS, 1, &payload);
            let acked: Value = match http
                .post(format!("{}/v1/domains/{}/writes", a.url, a.domain))
                .bearer_auth(&a.token)
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.json_value().await,
                Err(_) => Value::Null,
            };
            let Some(seq) = acked["seq"].as_u64() else {
                continue;
            };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                let r = http
                    .get(format!(
                        "{follower}/v1/domains/{}/points/resolve?point=latest",
                        a.domain
                    ))
                    .bearer_auth(&a.token)
                    .send()
                    .await;
                let v = match r {
                    Ok(r) => r.json_value().await,
                    Err(_) => Value::Null,
                };
                if v["seq"].as_u64().is_some_and(|s| s >= seq) {
                    seen.push(t.elapsed().as_secs_f64());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        seen.sort_by(f64::total_cmp);
        report["follower_seen_p50_s"] = json!(percentile(&seen, 0.5));
        report["follower_seen_max_s"] = json!(seen.last().copied().unwrap_or(0.0));
        report["follower_samples"] = json!(seen.len());
    }
    println!("{report}");
}

/// JSON without reqwest's `json` feature (one feature less to build).
trait JsonBody {
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        match self.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}
