//! `tidemark serve` end to end: the real binary on a loopback port, driven over HTTP.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// A domain with two disks, a model of their bytes, and writes pushed through the API.
struct Protected {
    disks: Vec<Vec<u8>>,
}

impl Protected {
    fn new(sizes: &[u64]) -> Self {
        Protected {
            disks: sizes.iter().map(|s| vec![0u8; *s as usize]).collect(),
        }
    }

    /// Random writes: data of 1 to 16 blocks, some overwriting earlier ones.
    fn random_writes(&mut self, rng: &mut impl Rng, n: usize) -> Vec<(u32, u64, Vec<u8>)> {
        self.random_writes_in(rng, n, 0, 1)
    }

    /// Random writes within part `part` of `parts` equal parts of every disk: batches
    /// pushed concurrently must not overlap, or their order (not known) would matter.
    fn random_writes_in(
        &mut self,
        rng: &mut impl Rng,
        n: usize,
        part: usize,
        parts: usize,
    ) -> Vec<(u32, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let disk = rng.gen_range(0..self.disks.len());
            let blocks = self.disks[disk].len() / BS / parts;
            let len = rng.gen_range(1..=16usize).min(blocks);
            let first = part * blocks + rng.gen_range(0..=blocks - len);
            let data = random_bytes(rng, len * BS);
            self.disks[disk][first * BS..first * BS + len * BS].copy_from_slice(&data);
            out.push((disk as u32, (first * BS) as u64, data));
        }
        out
    }
}

fn as_refs(w: &[(u32, u64, Vec<u8>)]) -> Vec<(u32, u64, &[u8])> {
    w.iter().map(|(d, o, b)| (*d, *o, &b[..])).collect()
}

async fn points(api: &Api, domain: &str) -> Vec<Value> {
    api.get(&format!("/v1/domains/{domain}/points"))
        .await
        .expect(200)["points"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mark_restore_with_progress_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::one_site(tmp.path(), "");
    let api = server.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model = Protected::new(&[8 * MIB, 4 * MIB]);
    let d = api
        .create_domain("vm1", &[("root", 8 * MIB), ("data", 4 * MIB)])
        .await;
    assert_eq!(d["owner"]["site"], "site-a");
    assert_eq!(d["owned_here"], true);
    // Creating it again with the same disks is idempotent; other disks conflict.
    api.post("/v1/domains", &json!({"name": "vm1", "disks": [{"name": "root", "size": 8 * MIB}, {"name": "data", "size": 4 * MIB}]}))
        .await
        .expect(200);
    api.post(
        "/v1/domains",
        &json!({"name": "vm1", "disks": [{"name": "root", "size": 4096}]}),
    )
    .await
    .error(409, "conflict");

    // Concurrent pushes are each acknowledged with the point that holds them.
    let batches: Vec<_> = (0..12)
        .map(|i| model.random_writes_in(&mut rng, 20, i, 12))
        .collect();
    let mut tasks = Vec::new();
    for b in batches.clone() {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.push("vm1", &as_refs(&b)).await.expect(200)
        }));
    }
    for t in tasks {
        let acked = t.await.expect("task");
        assert_eq!(acked["writes"], 20);
        assert!(acked["seq"].as_u64().is_some_and(|s| s >= 1));
    }
    let marked = api
        .post(
            "/v1/domains/vm1/markers",
            &json!({"name": "before-upgrade", "known_good": true}),
        )
        .await
        .expect(200);
    let marked_seq = marked["point"]["seq"].as_u64().expect("seq");
    let before = model.disks.clone();
    // A zeroing write and more data after the marker.
    let z = wire_zero(0, 0, 64 * 1024);
    api.post_raw("/v1/domains/vm1/writes", "application/octet-stream", z)
        .await
        .expect(200);
    model.disks[0][..64 * 1024].fill(0);
    let later = model.random_writes(&mut rng, 30);
    api.push("vm1", &as_refs(&later)).await.expect(200);

    let pts = points(&api, "vm1").await;
    assert!(pts.len() >= 3, "{pts:?}");
    let r = api
        .get("/v1/domains/vm1/points/resolve?point=marker:before-upgrade")
        .await
        .expect(200);
    assert_eq!(r["seq"].as_u64(), Some(marked_seq));
    assert_eq!(r["markers"][0]["known_good"], true);
    let r = api
        .get("/v1/domains/vm1/points/resolve?point=last-good")
        .await
        .expect(200);
    assert_eq!(r["seq"].as_u64(), Some(marked_seq));
    // Paging walks every point once.
    let mut seen = Vec::new();
    let mut after = None::<u64>;
    loop {
        let q = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let page = api
            .get(&format!("/v1/domains/vm1/points?limit=2{q}"))
            .await
            .expect(200);
        seen.extend(
            page["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| p["seq"].as_u64().expect("seq")),
        );
        match page["next_after"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let all: Vec<u64> = pts
        .iter()
        .map(|p| p["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seen, all);
    let time = r["time"].as_str().expect("time").to_owned();
    let page = api
        .get(&format!("/v1/domains/vm1/points?to={time}"))
        .await
        .expect(200);
    assert_eq!(
        page["points"]
            .as_array()
            .expect("points")
            .last()
            .expect("one")["seq"]
            .as_u64(),
        Some(marked_seq)
    );

    let dom = api.get("/v1/domains/vm1").await.expect(200);
    assert_eq!(
        dom["newest_point"]["seq"],
        pts.last().expect("a point")["seq"]
    );
    assert!(dom["stored_bytes"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(dom["capacity_bytes"].as_u64(), Some(12 * MIB));
    assert_eq!(dom["retention"]["source"], "default");
    assert_eq!(
        dom["retention"]["pitr_window_secs"].as_u64(),
        Some(24 * 3600)
    );

    // Restore the marked point; follow it over Server-Sent Events.
    let job = api
        .post("/v1/restores", &json!({"domain": "vm1", "point": "marker:before-upgrade",
            "targets": [{"disk": "root", "path": "vm1/root.img"}, {"disk": "data", "path": "vm1/data.img"}]}))
        .await
        .expect(202);
    let id = job["id"].as_str().expect("id").to_owned();
    let events = sse_events(&api, &format!("/v1/jobs/{id}/events")).await;
    let (last_name, last) = events.last().expect("events");
    assert_eq!(last_name, "end", "{events:?}");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["bytes_done"], last["bytes_total"]);
    assert_image(
        &server.recovery.join("vm1/root.img"),
        &before[0],
        tmp.path(),
    );
    assert_image(
        &server.recovery.join("vm1/data.img"),
        &before[1],
        tmp.path(),
    );
    // The default targets: every disk of the newest point.
    let job = api
        .post("/v1/restores", &json!({"domain": "vm1"}))
        .await
        .expect(202);
    let job = api.wait_job(job["id"].as_str().expect("id")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    for (i, d) in job["disks"].as_array().expect("disks").iter().enumerate() {
        assert_image(
            std::path::Path::new(d["path"].as_str().expect("path")),
            &model.disks[i],
            tmp.path(),
        );
    }
    // The same target again is a conflict unless overwrite.
    api.post(
        "/v1/restores",
        &json!({"domain": "vm1", "targets": [{"disk": "root", "path": "vm1/root.img"}]}),
    )
    .await
    .error(409, "conflict");
    let jobs = api.get("/v1/jobs").await.expect(200);
    assert_eq!(jobs["jobs"].as_array().expect("jobs").len(), 2);

    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.contains("tidemark_rpo_seconds{domain=\"vm1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidemark_jobs{state=\"succeeded\"} 2"),
        "{metrics}"
    );
    let writes = metric(&metrics, "tidemark_ingest_writes_total");
    assert!(writes >= 12.0 * 20.0 + 31.0, "{metrics}");
    assert!(metric(&metrics, "tidemark_restore_bytes_total") > 0.0);
    assert!(metric(&metrics, "tidemark_index_bytes") > 0.0);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Reads a Server-Sent Events stream to its end: (event name, JSON data) pairs.
async fn sse_events(api: &Api, path: &str) -> Vec<(String, Value)> {
    let mut resp = api
        .http
        .get(format!("{}{path}", api.url))
        .bearer_auth(api.token.as_deref().unwrap_or_default())
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut events = Vec::new();
    for block in buf.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim());
            }
        }
        if !data.is_empty() {
            events.push((name, serde_json::from_str(&data).expect("event JSON")));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_bad_input_change_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::one_site(tmp.path(), "");
    let api = server.client();
    api.create_domain("db", &[("d0", MIB)]).await;
    let block = vec![5u8; BS];
    api.push("db", &[(0, 0, &block)]).await.expect(200);
    let baseline = points(&api, "db").await;

    // Tokens: none, unknown, read-only on a mutation; a read token can read.
    let push = wire(&[(0, 4096, &block)]);
    for (token, status, code) in [
        (None, 401, "unauthorized"),
        (Some("wrong-token-0000000000"), 401, "unauthorized"),
        (Some(READ_TOKEN), 403, "forbidden"),
    ] {
        api.with_token(token)
            .post_raw(
                "/v1/domains/db/writes",
                "application/octet-stream",
                push.clone(),
            )
            .await
            .error(status, code);
        api.with_token(token)
            .post(
                "/v1/domains",
                &json!({"name": "x", "disks": [{"name": "d", "size": 4096}]}),
            )
            .await
            .error(status, code);
    }
    api.with_token(None)
        .get("/v1/domains")
        .await
        .error(401, "unauthorized");
    api.with_token(Some(READ_TOKEN))
        .get("/v1/domains/db")
        .await
        .expect(200);
    // The token is never logged.
    assert!(!server.log_text().contains(WRITE_TOKEN));
    assert!(!server.log_text().contains(READ_TOKEN));

    // Malformed bodies.
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/v1/domains",
            b"{\"name\": \"x\", \"disks\": [".to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/domains",
            br#"{"name": 5, "disks": []}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/domains",
            br#"{"name": "x", "disks": [{"name": "d", "size": 4095}]}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/domains",
            br#"{"name": "../x", "disks": [{"name": "d", "size": 4096}]}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/domains",
            br#"{"name": "x", "disks": [{"name": "d", "size": 4096}], "block_size": 512}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/domains",
            br#"{"name": "x", "disks": [], "extra": 1}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/domains/db/markers",
            br#"{"name": "bad name"}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/restores",
            br#"{"domain": "db", "targets": [{"disk": "d0", "path": "../../etc/x.img"}]}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/restores",
            br#"{"domain": "db", "targets": [{"disk": "d0", "path": "/tmp/x.img"}]}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/restores",
            br#"{"domain": "db", "targets": [{"disk": "nope", "path": "x.img"}]}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/restores",
            br#"{"domain": "db", "point": "marker:none"}"#.to_vec(),
            422,
            "invalid_point",
        ),
        (
            "/v1/restores",
            br#"{"domain": "db", "point": "yesterday"}"#.to_vec(),
            400,
            "invalid_input",
        ),
        (
            "/v1/restores",
            br#"{"domain": "nope"}"#.to_vec(),
            404,
            "not_found",
        ),
    ];
    for (path, body, status, code) in cases {
        api.post_raw(path, "application/json", body)
            .await
            .error(status, code);
    }
    // Malformed, misaligned, out-of-range and oversized writes.
    let mut truncated = wire(&[(0, 0, &block)]);
    truncated.truncate(40);
    let mut huge = wire(&[(0, 0, &block)]);
    huge[16..24].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let unaligned = vec![1u8; 100];
    let writes: Vec<(Vec<u8>, u16, &str)> = vec![
        (truncated, 400, "invalid_input"),
        (huge, 413, "payload_too_large"),
        (vec![0u8; 20], 400, "invalid_input"),
        (Vec::new(), 400, "invalid_input"),
        (wire(&[(0, 100, &block)]), 400, "invalid_input"),
        (wire(&[(0, 0, &unaligned)]), 400, "invalid_input"),
        (wire(&[(0, MIB, &block)]), 400, "invalid_input"),
        (wire(&[(3, 0, &block)]), 400, "invalid_input"),
        // One good write and one bad: the whole batch is refused.
        (
            wire(&[(0, 8192, &block), (0, MIB - 2048, &block)]),
            400,
            "invalid_input",
        ),
        (wire_zero(0, 0, u64::MAX - 4095), 413, "payload_too_large"),
    ];
    for (body, status, code) in writes {
        api.post_raw("/v1/domains/db/writes", "application/octet-stream", body)
            .await
            .error(status, code);
    }
    // Unknown things, bad names and queries, wrong methods.
    api.push("nope", &[(0, 0, &block)])
        .await
        .error(404, "not_found");
    use reqwest::Method;
    let requests = [
        (Method::GET, "/v1/domains/nope", 404, "not_found"),
        (Method::GET, "/v1/domains/bad%20name", 400, "invalid_input"),
        (Method::GET, "/v1/jobs/job-0000", 404, "not_found"),
        (Method::POST, "/v1/jobs/job-0000/cancel", 404, "not_found"),
        (Method::GET, "/v1/test-copies/tc-0000", 404, "not_found"),
        (Method::DELETE, "/v1/test-copies/tc-0000", 404, "not_found"),
        (
            Method::GET,
            "/v1/domains/db/points/resolve?point=99",
            422,
            "invalid_point",
        ),
        (
            Method::GET,
            "/v1/domains/db/points?limit=0",
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/domains/db/points?from=soon",
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/domains/db/points?limit=x",
            400,
            "invalid_input",
        ),
        (Method::GET, "/v1/nothing-here", 404, "not_found"),
        (Method::DELETE, "/v1/domains/db", 405, "method_not_allowed"),
    ];
    for (method, path, status, code) in requests {
        let body = (method == Method::POST).then(|| ("application/json", b"{}".to_vec()));
        api.send(method, path, body).await.error(status, code);
    }
    let ahead = {
        let mut w = wire(&[(0, 0, &block)]);
        w[24..32].copy_from_slice(&i64::MAX.to_le_bytes());
        w
    };
    api.post_raw("/v1/domains/db/writes", "application/octet-stream", ahead)
        .await
        .error(400, "invalid_input");

    // Nothing changed: the same points, the same domains, no file written.
    assert_eq!(points(&api, "db").await, baseline);
    let names: Vec<_> = api.get("/v1/domains").await.expect(200)["domains"]
        .as_array()
        .expect("domains")
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, [json!("db")]);
    let rec = std::fs::read_dir(&server.recovery)
        .expect("recovery dir")
        .count();
    assert_eq!(rec, 0, "no file was written for a refused restore");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_copy_is_isolated_and_undone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::one_site(tmp.path(), "");
    let api = server.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut model = Protected::new(&[2 * MIB]);
    api.create_domain("web", &[("d0", 2 * MIB)]).await;
    let w = model.random_writes(&mut rng, 40);
    api.push("web", &as_refs(&w)).await.expect(200);
    let at = model.disks[0].clone();

    let tc = api
        .post("/v1/test-copies", &json!({"domain": "web"}))
        .await
        .expect(202);
    let id = tc["id"].as_str().expect("id").to_owned();
    let job = api.wait_job(tc["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "test_copy");
    let dir = std::path::PathBuf::from(tc["dir"].as_str().expect("dir"));
    let img = dir.join("d0.img");
    assert_image(&img, &at, tmp.path());
    // The copy is writable, and writing it changes neither protection nor the domain.
    std::fs::write(&img, vec![9u8; 2 * MIB as usize]).expect("write the copy");
    let more = model.random_writes(&mut rng, 10);
    api.push("web", &as_refs(&more)).await.expect(200);
    let listed = api.get("/v1/test-copies").await.expect(200);
    assert_eq!(listed["test_copies"][0]["id"], id.as_str());
    assert_eq!(
        api.get(&format!("/v1/test-copies/{id}")).await.expect(200)["job"]["state"],
        "succeeded"
    );

    api.delete(&format!("/v1/test-copies/{id}"))
        .await
        .expect(204);
    assert!(!dir.exists(), "the images are gone");
    assert_eq!(
        api.get("/v1/test-copies").await.expect(200)["test_copies"],
        json!([])
    );
    api.get(&format!("/v1/test-copies/{id}"))
        .await
        .error(404, "not_found");
    // Protection went on: the newest point restores to the model.
    let job = api.restore("web", "d0", "after.img").await;
    let job = api.wait_job(job["id"].as_str().expect("id")).await;
    assert_eq!(job["state"], "succeeded");
    assert_image(
        &server.recovery.join("after.img"),
        &model.disks[0],
        tmp.path(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_then_crash_and_resume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Restores paced to 8 MiB/s, so that there is time to cancel and to crash.
    let mut server = Server::one_site(
        tmp.path(),
        "[restore]\nmax_bytes_per_sec = 8388608\nconcurrency = 2\n",
    );
    let api = server.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let size = 32 * MIB;
    api.create_domain("big", &[("d0", size)]).await;
    let image = random_bytes(&mut rng, size as usize);
    for (i, part) in image.chunks(8 << 20).enumerate() {
        api.push("big", &[(0, (i << 23) as u64, part)])
            .await
            .expect(200);
    }

    // Cancel: the job ends cancelled and leaves nothing behind.
    let job = api.restore("big", "d0", "c/d0.img").await;
    let id = job["id"].as_str().expect("id").to_owned();
    wait_progress(&api, &id, 1).await;
    let c = api
        .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await
        .expect(200);
    assert_eq!(c["id"], id.as_str());
    let job = api.wait_job(&id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let leftovers: Vec<_> = std::fs::read_dir(server.recovery.join("c"))
        .expect("dir")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    api.post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await
        .error(409, "conflict");

    // Crash in the middle of a restore: after the restart it resumes and completes.
    let job = api.restore("big", "d0", "r/d0.img").await;
    let id = job["id"].as_str().expect("id").to_owned();
    // A second job may not write the same image meanwhile, overwrite or not.
    api.post(
        "/v1/restores",
        &json!({"domain": "big", "overwrite": true, "targets": [{"disk": "d0", "path": "r/d0.img"}]}),
    )
    .await
    .error(409, "conflict");
    api.post("/v1/domains/big/index/rebuild", &json!({}))
        .await
        .error(409, "conflict");
    // The crash comes after the restore's journal recorded progress (it is saved
    // about once a second, and grows from an empty set of blocks).
    wait_progress(&api, &id, 1).await;
    let journal = server.recovery.join("r/d0.img.tidemark-resume");
    let len = || std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    let t0 = Instant::now();
    let empty = len();
    while len() <= empty.max(64) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the journal never grew"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.crash();
    server.spawn();
    let api = server.client();
    let job = api.wait_job(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["runs"], 2);
    assert!(
        job["resumed_bytes"].as_u64().is_some_and(|b| b > 0),
        "{job}"
    );
    assert_image(&server.recovery.join("r/d0.img"), &image, tmp.path());
}

async fn wait_progress(api: &Api, id: &str, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = api.get(&format!("/v1/jobs/{id}")).await.expect(200);
        if job["bytes_done"].as_u64().is_some_and(|b| b >= bytes) && job["state"] == "running" {
            assert!(job["rate_bytes_per_sec"].as_f64().is_some());
            return;
        }
        assert!(
            Instant::now() < deadline && job["state"] != "succeeded",
            "no progress: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::one_site(tmp.path(), "");
    let api = server.client();
    api.create_domain("vm", &[("d0", 4 * MIB)]).await;
    // Writers push distinct blocks until the service stops under them.
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200u64 {
                let block = w * 200 + i;
                let data = vec![(block % 251) as u8 + 1; BS];
                let r = api
                    .http
                    .post(format!("{}/v1/domains/vm/writes", api.url))
                    .bearer_auth(WRITE_TOKEN)
                    .body(wire(&[(0, block * BS as u64, &data)]))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 200 => acked.push(block),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.stop(),
        "clean exit on SIGTERM: {}",
        server.log_text()
    );
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    assert!(!acked.is_empty());
    server.spawn();
    let api = server.client();
    let job = api.restore("vm", "d0", "vm.img").await;
    assert_eq!(
        api.wait_job(job["id"].as_str().expect("id")).await["state"],
        "succeeded"
    );
    let img = std::fs::read(server.recovery.join("vm.img")).expect("image");
    for b in acked {
        let at = b as usize * BS;
        assert!(
            img[at..at + BS].iter().all(|x| *x == (b % 251) as u8 + 1),
            "acknowledged block {b} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_site_follows_the_log_and_takes_over() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let a = Server::start(ServerOptions {
        data: &tmp.path().join("a"),
        store: &store,
        site: "site-a",
        extra: "",
    });
    let b = Server::start(ServerOptions {
        data: &tmp.path().join("b"),
        store: &store,
        site: "site-b",
        extra: "",
    });
    let (pa, pb) = (a.client(), b.client());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut model = Protected::new(&[2 * MIB]);
    pa.create_domain("crm", &[("d0", 2 * MIB)]).await;
    let mut waited = Vec::new();
    for _ in 0..3 {
        let w = model.random_writes(&mut rng, 10);
        let seq = pa.push("crm", &as_refs(&w)).await.expect(200)["seq"]
            .as_u64()
            .expect("seq");
        let t0 = Instant::now();
        loop {
            let r = pb.get("/v1/domains/crm/points/resolve?point=latest").await;
            if r.status == 200 && r.body["seq"].as_u64() == Some(seq) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "site B never saw seq {seq}: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        waited.push(t0.elapsed());
    }
    eprintln!("site B saw new points after {waited:?}");
    // B restores what A wrote, and may not write itself.
    let job = pb.restore("crm", "d0", "crm.img").await;
    assert_eq!(
        pb.wait_job(job["id"].as_str().expect("id")).await["state"],
        "succeeded"
    );
    assert_image(&b.recovery.join("crm.img"), &model.disks[0], tmp.path());
    let block = vec![1u8; BS];
    pb.push("crm", &[(0, 0, &block)]).await.error(409, "fenced");
    let dom = pb.get("/v1/domains/crm").await.expect(200);
    assert_eq!(dom["owner"]["site"], "site-a");
    assert_eq!(dom["owned_here"], false);
    // Failover: B takes over; A is fenced; B writes.
    let gen = dom["owner"]["generation"].as_u64().expect("generation");
    pb.post(
        "/v1/domains/crm/take-over",
        &json!({"expected_generation": gen + 5}),
    )
    .await
    .error(409, "fenced");
    let t = pb
        .post(
            "/v1/domains/crm/take-over",
            &json!({"expected_generation": gen}),
        )
        .await
        .expect(200);
    assert_eq!(t["site"], "site-b");
    assert_eq!(t["generation"].as_u64(), Some(gen + 1));
    pa.push("crm", &[(0, 0, &block)]).await.error(409, "fenced");
    pb.push("crm", &[(0, 0, &block)]).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_works_through_the_service() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::one_site(tmp.path(), "");
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    // An image with zero runs and data runs.
    let mut image = vec![0u8; 6 * MIB as usize];
    for run in image.chunks_mut(256 << 10).step_by(2) {
        rng.fill(run);
    }
    let path = tmp.path().join("disk.img");
    std::fs::write(&path, &image).expect("image");
    let disk = format!("root={}", path.display());
    let (code, out, err) = cli(
        &server,
        WRITE_TOKEN,
        &["protect", "--domain", "app", "--disk", &disk],
    );
    assert_eq!(code, 0, "{err}");
    let first: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(first["zeroed_bytes"].as_u64(), Some(3 * MIB));
    // Change the image (zero some data, write some zeroes' place), protect with a marker.
    let v1 = image.clone();
    image[..64 << 10].fill(0);
    rng.fill(&mut image[(256 << 10)..(320 << 10)]);
    std::fs::write(&path, &image).expect("image");
    let (code, out, err) = cli(
        &server,
        WRITE_TOKEN,
        &[
            "protect",
            "--domain",
            "app",
            "--disk",
            &disk,
            "--marker",
            "v2",
            "--known-good",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let second: Value = serde_json::from_str(out.trim()).expect("json");
    assert!(second["seq"].as_u64() > first["seq"].as_u64());

    let (code, out, err) = cli(
        &server,
        READ_TOKEN,
        &["points", "--domain", "app", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let pts: Value = serde_json::from_str(out.trim()).expect("json");
    // Each pushed batch is a point; the marker names the last one.
    let pts = pts.as_array().expect("points");
    assert!(pts.len() >= 2, "{pts:?}");
    assert_eq!(pts.last().expect("point")["markers"][0]["name"], "v2");
    let s1 = first["seq"].to_string();
    for (point, out_path, want) in [
        (s1.as_str(), "cli/v1.img", &v1),
        ("marker:v2", "cli/v2.img", &image),
    ] {
        let (code, out, err) = cli(
            &server,
            WRITE_TOKEN,
            &[
                "restore", "--domain", "app", "--disk", "root", "--point", point, "--out",
                out_path, "--json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let r: Value = serde_json::from_str(out.trim()).expect("json");
        assert_image(
            std::path::Path::new(r["out"].as_str().expect("out")),
            want,
            tmp.path(),
        );
    }
    let (code, out, _) = cli(&server, READ_TOKEN, &["owner", "--domain", "app"]);
    assert_eq!(code, 0);
    assert!(out.contains("site-a"), "{out}");
    let (code, out, err) = cli(&server, WRITE_TOKEN, &["verify", "--domain", "app"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"damaged\":[]"), "{out}");
    let (code, _, err) = cli(
        &server,
        WRITE_TOKEN,
        &["index", "rebuild", "--domain", "app"],
    );
    assert_eq!(code, 0, "{err}");
    // The exit codes of the local CLI: unknown (3), invalid (2), conflict (5).
    assert_eq!(
        cli(&server, WRITE_TOKEN, &["points", "--domain", "nope"]).0,
        3
    );
    assert_eq!(
        cli(
            &server,
            WRITE_TOKEN,
            &[
                "restore",
                "--domain",
                "app",
                "--disk",
                "root",
                "--point",
                "marker:none",
                "--out",
                "x.img"
            ]
        )
        .0,
        3
    );
    assert_eq!(
        cli(
            &server,
            WRITE_TOKEN,
            &["restore", "--domain", "app", "--disk", "root", "--out", "../x.img"]
        )
        .0,
        2
    );
    let refused = cli(
        &server,
        READ_TOKEN,
        &["protect", "--domain", "app", "--disk", &disk],
    );
    assert_eq!(refused.0, 2, "{refused:?}");
    assert_eq!(
        cli(
            &server,
            "wrong-token-000000000",
            &["points", "--domain", "app"]
        )
        .0,
        2
    );
    let small = tmp.path().join("small.img");
    std::fs::write(&small, vec![1u8; 8192]).expect("small");
    let (code, _, err) = cli(
        &server,
        WRITE_TOKEN,
        &[
            "protect",
            "--domain",
            "app",
            "--disk",
            &format!("root={}", small.display()),
        ],
    );
    assert_eq!(code, 5, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_defaults_keep_everything_in_the_working_directory() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().expect("tempdir");
    // No config file and no token: only the port is moved off 7878, for the test.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("serve")
        .current_dir(tmp.path())
        .env("TIDEMARK_LISTEN", "127.0.0.1:0")
        .env_remove("TIDEMARK_STORE")
        .env_remove("TIDEMARK_DATA_DIR")
        .env_remove("TIDEMARK_TOKEN")
        .env_remove("TIDEMARK_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    let data = tmp.path().join("tidemark-data");
    let token = std::fs::read_to_string(data.join("admin-token")).expect("admin token");
    let api = Api {
        http: reqwest::Client::new(),
        url,
        token: Some(token.trim().to_owned()),
    };
    assert_eq!(api.get("/healthz").await.status, 200);
    assert_eq!(api.get("/readyz").await.status, 200);
    api.create_domain("vm", &[("d0", MIB)]).await;
    let block = vec![1u8; BS];
    api.push("vm", &[(0, 0, &block)]).await.expect(200);
    api.with_token(None)
        .push("vm", &[(0, 0, &block)])
        .await
        .error(401, "unauthorized");
    assert!(data.join("store/domains/vm/domain.json").is_file());
    assert!(data.join("site-id").is_file());
    assert!(data.join("recovery").is_dir());
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "clean exit on SIGTERM");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log)
        .expect("log");
    assert!(log.contains("admin-token"), "{log}");
    assert!(!log.contains(token.trim()), "the token is never logged");
}
