//! Failover end to end: two or three real `tidemark serve` processes on loopback
//! sharing one store. Continuous failover while the primary writes, its completion,
//! forced and planned failover, rollback, test failover with a runbook, and the
//! failback round trip. Every image is compared with a model of what was acknowledged.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_image, cli, random_bytes, wire, wire_zero, Api, Server, ServerOptions, BS, WRITE_TOKEN,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const SIZES: [u64; 2] = [4 << 20, 1 << 20];

/// One acknowledged push: its point and its writes (None = zeroed).
#[derive(Clone, Debug)]
struct Pushed {
    seq: u64,
    writes: Vec<(u32, u64, Option<Vec<u8>>, u64)>,
}

/// What the protected disks hold after every acknowledged push up to a point.
fn model_at(history: &[Pushed], upto: u64) -> Vec<Vec<u8>> {
    let mut disks: Vec<Vec<u8>> = SIZES.iter().map(|s| vec![0u8; *s as usize]).collect();
    let mut pushes: Vec<&Pushed> = history.iter().filter(|p| p.seq <= upto).collect();
    pushes.sort_by_key(|p| p.seq);
    for p in pushes {
        for (disk, offset, data, len) in &p.writes {
            let d = &mut disks[*disk as usize];
            let range = *offset as usize..(*offset + *len) as usize;
            match data {
                Some(bytes) => d[range].copy_from_slice(bytes),
                None => d[range].fill(0),
            }
        }
    }
    disks
}

/// Random writes within `region` (a fraction of each disk, so concurrent writers do
/// not overlap), some of them zeroing.
fn random_push(rng: &mut StdRng, region: (u32, u32)) -> Vec<(u32, u64, Option<Vec<u8>>, u64)> {
    (0..rng.gen_range(1..4))
        .map(|_| {
            let disk = rng.gen_range(0..SIZES.len() as u32);
            let blocks = SIZES[disk as usize] / BS as u64;
            let (from, to) = (
                blocks * region.0 as u64 / 100,
                blocks * region.1 as u64 / 100,
            );
            let len = rng.gen_range(1..=8u64).min(to - from);
            let start = rng.gen_range(from..=to - len);
            let data = (rng.gen_range(0..6) != 0).then(|| random_bytes(rng, (len as usize) * BS));
            (disk, start * BS as u64, data, len * BS as u64)
        })
        .collect()
}

async fn push(
    api: &Api,
    domain: &str,
    writes: &[(u32, u64, Option<Vec<u8>>, u64)],
) -> Result<u64, (u16, String)> {
    let mut body = Vec::new();
    for (disk, offset, data, len) in writes {
        match data {
            Some(d) => body.extend(wire(&[(*disk, *offset, d)])),
            None => body.extend(wire_zero(*disk, *offset, *len)),
        }
    }
    let r = api
        .post_raw(
            &format!("/v1/domains/{domain}/writes"),
            "application/octet-stream",
            body,
        )
        .await;
    if r.status == 200 {
        Ok(r.body["seq"].as_u64().expect("seq"))
    } else {
        Err((
            r.status,
            r.body["error"]["code"].as_str().unwrap_or("").to_owned(),
        ))
    }
}

/// Pushes `n` random batches one after the other; returns them with their points.
async fn push_random(api: &Api, domain: &str, rng: &mut StdRng, n: usize) -> Vec<Pushed> {
    let mut history = Vec::new();
    for _ in 0..n {
        let writes = random_push(rng, (0, 100));
        let seq = push(api, domain, &writes).await.expect("push");
        history.push(Pushed { seq, writes });
    }
    history
}

/// What a writer had acknowledged, and the refusal (status, code) that stopped it.
type Written = (Vec<Pushed>, Option<(u16, String)>);

/// Pushes until told to stop or refused; returns what was acknowledged and the
/// refusal that stopped it.
fn writer(
    api: Api,
    domain: &'static str,
    seed: u64,
    region: (u32, u32),
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Written> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut history = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let writes = random_push(&mut rng, region);
            match push(&api, domain, &writes).await {
                Ok(seq) => history.push(Pushed { seq, writes }),
                Err(refused) => return (history, Some(refused)),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (history, None)
    })
}

struct Sites {
    dir: tempfile::TempDir,
    a: Server,
    b: Server,
}

fn two_sites() -> Sites {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).expect("hooks");
    let extra = format!(
        "[failover]\nreplica_poll_ms = 50\nhooks_dir = {:?}\n",
        hooks.display().to_string()
    );
    let site = |name: &str| {
        Server::start(ServerOptions {
            data: &dir.path().join(name),
            store: &dir.path().join("store"),
            site: name,
            extra: &extra,
        })
    };
    let a = site("site-a");
    let b = site("site-b");
    Sites { dir, a, b }
}

fn scratch(dir: &Path) -> PathBuf {
    let s = dir.join("scratch");
    std::fs::create_dir_all(&s).expect("scratch");
    s
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a failover (or a replica's completion) and waits for its job to succeed.
async fn succeeded(api: &Api, path: &str, body: &Value) -> Value {
    let job = api.post(path, body).await.expect(202);
    let job = api.wait_job(job["id"].as_str().expect("id")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    job
}

/// Waits until the replica of `domain` at `api` is following and holds `seq` or later.
async fn replica_at(api: &Api, domain: &str, seq: u64) -> Value {
    wait_for(&format!("the replica to reach seq {seq}"), async || {
        let r = api
            .get(&format!("/v1/domains/{domain}/replica"))
            .await
            .expect(200);
        (r["state"] == "following" && r["applied_seq"].as_u64().is_some_and(|a| a >= seq))
            .then_some(r)
    })
    .await
}

fn assert_images(images: &[Value], model: &[Vec<u8>], scratch: &Path) {
    assert_eq!(images.len(), model.len(), "{images:?}");
    for (img, expected) in images.iter().zip(model) {
        assert_image(
            Path::new(img["path"].as_str().expect("path")),
            expected,
            scratch,
        );
    }
}

fn image_paths(replica: &Value) -> Vec<Value> {
    replica["disks"].as_array().expect("disks").clone()
}

async fn create(api: &Api, domain: &str) {
    api.create_domain(domain, &[("boot", SIZES[0]), ("data", SIZES[1])])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn continuous_failover_survives_a_restart_and_completes_at_the_last_acknowledged_write() {
    let mut s = two_sites();
    let (a, b) = (s.a.client(), s.b.client());
    create(&a, "erp").await;
    let mut rng = StdRng::seed_from_u64(1);
    let mut history = push_random(&a, "erp", &mut rng, 5).await;
    // A replica refuses to start where the domain is owned.
    a.post("/v1/domains/erp/replica", &json!({}))
        .await
        .error(409, "conflict");
    let started = b
        .post("/v1/domains/erp/replica", &json!({}))
        .await
        .expect(201);
    assert_eq!(started["state"], "seeding");
    let last = history.last().map(|p| p.seq).unwrap_or(0);
    replica_at(&b, "erp", last).await;

    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(a.clone(), "erp", 2, (0, 100), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = b.get("/v1/domains/erp").await.expect(200);
    assert_eq!(d["mode"], "cfo", "{d}");
    assert!(d["replica"]["lag_segments"].is_u64(), "{d}");
    let metrics = reqwest::get(format!("{}/metrics", s.b.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("tidemark_replica_lag_seconds{domain=\"erp\"}"),
        "{metrics}"
    );
    // The recovery service stops mid-CFO and comes back: the replica goes on.
    assert!(s.b.stop(), "clean stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.b.spawn();
    let b = s.b.client();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = b.get("/v1/domains/erp/replica").await.expect(200);
    assert_eq!(r["state"], "following", "{r}");

    // Complete while the primary keeps writing: it is fenced from then on.
    let job = succeeded(
        &b,
        "/v1/domains/erp/replica/complete",
        &json!({"queue": "apply"}),
    )
    .await;
    let report = &job["failover"];
    let fence = report["fence_seq"].as_u64().expect("fence");
    assert!(
        report["rto_seconds"].as_f64().expect("rto") < 60.0,
        "{report}"
    );
    assert_eq!(report["from_replica"], true);
    let (w_history, refused) = tokio::time::timeout(Duration::from_secs(60), w)
        .await
        .expect("the writer is refused")
        .expect("writer");
    assert_eq!(refused.map(|r| r.1).as_deref(), Some("fenced"));
    history.extend(w_history.iter().cloned());
    assert!(
        history.iter().all(|p| p.seq < fence),
        "a write acknowledged after the fence"
    );
    let model = model_at(&history, fence);
    assert_images(
        &report["images"].as_array().cloned().unwrap_or_default(),
        &model,
        &scratch(s.dir.path()),
    );

    let d = b.get("/v1/domains/erp").await.expect(200);
    assert_eq!(d["mode"], "failed_over", "{d}");
    assert_eq!(d["owned_here"], true);
    let r = b.get("/v1/domains/erp/replica").await.expect(200);
    assert_eq!(r["state"], "completed");
    let d = a.get("/v1/domains/erp").await.expect(200);
    assert_eq!(d["mode"], "standby", "{d}");
    // The new owner extends the same log.
    let more = random_push(&mut rng, (0, 100));
    let seq = push(&b, "erp", &more).await.expect("the new owner writes");
    assert!(seq > fence);
    stop.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forced_failover_fences_a_primary_that_keeps_writing() {
    let s = two_sites();
    let (a, b) = (s.a.client(), s.b.client());
    create(&a, "web").await;
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(a.clone(), "web", 3, (0, 100), stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A point that does not exist is refused before anything is fenced.
    b.post(
        "/v1/domains/web/failover",
        &json!({"mode": "forced", "point": "marker:nope"}),
    )
    .await
    .error(422, "invalid_point");
    assert_eq!(
        a.get("/v1/domains/web").await.expect(200)["owned_here"],
        true
    );
    let job = succeeded(&b, "/v1/domains/web/failover", &json!({"mode": "forced"})).await;
    let report = &job["failover"];
    let fence = report["fence_seq"].as_u64().expect("fence");
    assert_eq!(report["from_replica"], false);
    let (history, refused) = tokio::time::timeout(Duration::from_secs(60), w)
        .await
        .expect("the old primary is refused")
        .expect("writer");
    assert_eq!(refused.map(|r| r.1).as_deref(), Some("fenced"));
    assert!(history.iter().all(|p| p.seq < fence));
    // Nothing after the fence comes from the old primary.
    let points = b
        .get("/v1/domains/web/points?limit=10000")
        .await
        .expect(200);
    for p in points["points"].as_array().expect("points") {
        if p["seq"].as_u64().expect("seq") >= fence {
            assert_eq!(p["site"], "site-b", "{p}");
        }
    }
    assert_images(
        &report["images"].as_array().cloned().unwrap_or_default(),
        &model_at(&history, fence),
        &scratch(s.dir.path()),
    );
    // A second failover to the owner is refused.
    b.post("/v1/domains/web/failover", &json!({"mode": "regular"}))
        .await
        .error(409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_and_test_failover_with_a_runbook() {
    let s = two_sites();
    let (a, b) = (s.a.client(), s.b.client());
    create(&a, "db").await;
    let mut rng = StdRng::seed_from_u64(4);
    let mut history = push_random(&a, "db", &mut rng, 30).await;
    let early = history[9].seq;
    let last = history.last().map(|p| p.seq).unwrap_or(0);
    b.post("/v1/domains/db/replica", &json!({"dir": "warm/db"}))
        .await
        .expect(201);
    let r = replica_at(&b, "db", last).await;
    let images = image_paths(&r);
    let scratch = scratch(s.dir.path());
    assert_images(&images, &model_at(&history, last), &scratch);

    // Rollback: only the blocks changed after `early` are rewritten.
    let rolled = b
        .post(
            "/v1/domains/db/replica/rollback",
            &json!({"point": early.to_string()}),
        )
        .await
        .expect(200);
    assert_eq!(rolled["state"], "paused");
    assert_eq!(rolled["applied_seq"], early);
    let model_early = model_at(&history, early);
    assert_images(&images, &model_early, &scratch);
    // ... equal to a fresh restore of the same point.
    for (i, disk) in ["boot", "data"].iter().enumerate() {
        let job = b
            .post(
                "/v1/restores",
                &json!({"domain": "db", "point": early.to_string(), "targets": [{"disk": disk, "path": format!("fresh/{disk}.img")}]}),
            )
            .await
            .expect(202);
        let job = b.wait_job(job["id"].as_str().expect("id")).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let fresh = std::fs::read(job["disks"][0]["path"].as_str().expect("path")).expect("fresh");
        let rolled = std::fs::read(images[i]["path"].as_str().expect("path")).expect("rolled");
        assert!(
            fresh == rolled,
            "rollback of {disk} differs from a fresh restore"
        );
    }
    b.post(
        "/v1/domains/db/replica/rollback",
        &json!({"point": "999999"}),
    )
    .await
    .error(422, "invalid_point");
    b.post("/v1/domains/db/replica/resume", &json!({}))
        .await
        .expect(200);
    replica_at(&b, "db", last).await;
    assert_images(&images, &model_at(&history, last), &scratch);

    // A test failover at the early point from the replica, with a runbook whose hook
    // records what it was given.
    let hooks = s.dir.path().join("hooks");
    let seen = s.dir.path().join("seen");
    std::fs::create_dir_all(&seen).expect("seen");
    let hook = hooks.join("record.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\ncat > {}/$TIDEMARK_VM.json\n", seen.display()),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let runbook = json!({
        "groups": [
            {"name": "storage", "vms": [{"name": "db1", "disks": ["data"], "ips": ["10.10.10.96"], "hook": {"type": "command", "command": ["record.sh"]}}]},
            {"name": "apps", "delay_seconds": 1, "vms": [{"name": "app1", "disks": ["boot"], "hook": {"type": "command", "command": ["record.sh"]}}]}
        ],
        "reip": [{"source": "10.10.10.*", "target": "192.168.10.*"}]
    });
    // Bad runbooks and requests change nothing.
    let bad_hook = json!({"groups": [{"name": "g", "vms": [{"name": "x", "disks": ["boot"], "hook": {"type": "command", "command": ["../../bin/sh"]}}]}]});
    for (body, status) in [
        (json!({"mode": "test", "runbook": bad_hook}), 400),
        (json!({"mode": "planned"}), 400),
        (json!({"mode": "sideways"}), 400),
        (json!({"mode": "test", "point": "marker:nope"}), 422),
    ] {
        let r = b.post("/v1/domains/db/failover", &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    let job = succeeded(
        &b,
        "/v1/domains/db/failover",
        &json!({"mode": "test", "point": early.to_string(), "runbook": runbook}),
    )
    .await;
    let report = &job["failover"];
    let copy = report["test_copy"].as_str().expect("test copy").to_owned();
    assert_images(
        &report["images"].as_array().cloned().unwrap_or_default(),
        &model_early,
        &scratch,
    );
    let steps = report["runbook"].as_array().expect("runbook steps");
    assert!(steps.iter().all(|s| s["state"] == "succeeded"), "{steps:?}");
    let db1: Value =
        serde_json::from_slice(&std::fs::read(seen.join("db1.json")).expect("db1 ran"))
            .expect("json");
    assert_eq!(db1["mode"], "test");
    assert_eq!(db1["point"]["seq"], early);
    assert_eq!(db1["ips"][0]["target"], "192.168.10.96", "{db1}");
    assert!(db1["disks"][0]["path"]
        .as_str()
        .expect("path")
        .contains(&copy));
    assert!(seen.join("app1.json").exists());
    // Ownership did not move; the replica follows on; undo deletes the copy.
    assert_eq!(
        b.get("/v1/domains/db").await.expect(200)["owned_here"],
        false
    );
    let w = random_push(&mut rng, (0, 100));
    history.push(Pushed {
        seq: push(&a, "db", &w).await.expect("push"),
        writes: w,
    });
    let last = history.last().map(|p| p.seq).unwrap_or(0);
    replica_at(&b, "db", last).await;
    assert_images(&images, &model_at(&history, last), &scratch);
    let dir = b.get(&format!("/v1/test-copies/{copy}")).await.expect(200)["dir"]
        .as_str()
        .expect("dir")
        .to_owned();
    b.delete(&format!("/v1/test-copies/{copy}"))
        .await
        .expect(204);
    assert!(!Path::new(&dir).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_to_an_earlier_point_makes_the_log_agree_with_the_images() {
    let s = two_sites();
    let (a, b) = (s.a.client(), s.b.client());
    create(&a, "files").await;
    let mut rng = StdRng::seed_from_u64(5);
    let history = push_random(&a, "files", &mut rng, 12).await;
    let p = history[5].seq;
    let job = succeeded(
        &b,
        "/v1/domains/files/failover",
        &json!({"mode": "regular", "point": p.to_string(), "dir": "ransomware-recovery"}),
    )
    .await;
    let report = &job["failover"];
    assert!(
        report["revert_seq"].as_u64().expect("revert")
            > report["fence_seq"].as_u64().expect("fence")
    );
    let scratch = scratch(s.dir.path());
    let at_p = model_at(&history, p);
    assert_images(
        &report["images"].as_array().cloned().unwrap_or_default(),
        &at_p,
        &scratch,
    );
    // The newest point of the log is the failover point again, and new writes land on it.
    let w = random_push(&mut rng, (0, 100));
    let seq = push(&b, "files", &w).await.expect("push");
    let mut after: Vec<Pushed> = history.iter().filter(|h| h.seq <= p).cloned().collect();
    after.push(Pushed { seq, writes: w });
    let expected = model_at(&after, seq);
    for (i, disk) in ["boot", "data"].iter().enumerate() {
        let job = b.restore("files", disk, &format!("check/{disk}.img")).await;
        let job = b.wait_job(job["id"].as_str().expect("id")).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_image(
            Path::new(job["disks"][0]["path"].as_str().expect("path")),
            &expected[i],
            &scratch,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planned_failover_loses_nothing_and_fails_back() {
    let mut s = two_sites();
    let (a, b) = (s.a.client(), s.b.client());
    create(&a, "crm").await;
    b.post("/v1/domains/crm/replica", &json!({}))
        .await
        .expect(201);
    let stop = Arc::new(AtomicBool::new(false));
    // Two writers on disjoint halves, so the model does not depend on their order.
    let w1 = writer(a.clone(), "crm", 6, (0, 50), stop.clone());
    let w2 = writer(a.clone(), "crm", 7, (50, 100), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = succeeded(&b, "/v1/domains/crm/failover", &json!({"mode": "planned", "primary": {"url": s.a.url, "token": WRITE_TOKEN}, "failback": {}})).await;
    let report = &job["failover"];
    let fence = report["fence_seq"].as_u64().expect("fence");
    let mut history = Vec::new();
    for w in [w1, w2] {
        let (h, refused) = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("the primary refuses writes")
            .expect("writer");
        // Released by the primary (or fenced, had a push raced the takeover).
        let code = refused.map(|r| r.1).unwrap_or_default();
        assert!(code == "released" || code == "fenced", "{code}");
        history.extend(h);
    }
    assert!(history.iter().all(|p| p.seq < fence));
    let scratch = scratch(s.dir.path());
    let b_images = report["images"].as_array().cloned().unwrap_or_default();
    assert_images(&b_images, &model_at(&history, fence), &scratch);
    let d = a.get("/v1/domains/crm").await.expect(200);
    assert_eq!(d["mode"], "failing_back", "{d}");

    // The recovery site runs the VMs: their writes go to its images and are pushed.
    let mut rng = StdRng::seed_from_u64(8);
    for _ in 0..10 {
        let w = random_push(&mut rng, (0, 100));
        let seq = push(&b, "crm", &w).await.expect("the new owner writes");
        for (disk, offset, data, len) in &w {
            let path = b_images[*disk as usize]["path"].as_str().expect("path");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("image");
            let bytes = data.clone().unwrap_or_else(|| vec![0u8; *len as usize]);
            std::os::unix::fs::FileExt::write_all_at(&f, &bytes, *offset).expect("write image");
        }
        history.push(Pushed { seq, writes: w });
    }
    let last = history.iter().map(|p| p.seq).max().unwrap_or(0);
    // The primary site restarts meanwhile (a third process); its failback replica goes on.
    assert!(s.a.stop());
    s.a.spawn();
    let a = s.a.client();
    let r = replica_at(&a, "crm", last).await;
    assert_eq!(r["direction"], "failback");
    // Fail back: planned, from the original site, with the recovery site as primary.
    let job = succeeded(
        &a,
        "/v1/domains/crm/replica/complete",
        &json!({"mode": "planned", "primary": {"url": s.b.url, "token": WRITE_TOKEN}}),
    )
    .await;
    let back = model_at(&history, u64::MAX);
    assert_images(
        &job["failover"]["images"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        &back,
        &scratch,
    );
    assert_images(&b_images, &back, &scratch);
    assert_eq!(
        a.get("/v1/domains/crm").await.expect(200)["mode"],
        "protected"
    );
    assert_eq!(
        b.get("/v1/domains/crm").await.expect(200)["mode"],
        "released"
    );
    let w = random_push(&mut rng, (0, 100));
    push(&a, "crm", &w).await.expect("home again");
    let refused = push(&b, "crm", &w).await.expect_err("b released it");
    assert_eq!(refused.0, 409);
    stop.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_drives_replicas_and_failover() {
    let s = two_sites();
    let a = s.a.client();
    create(&a, "mail").await;
    let mut rng = StdRng::seed_from_u64(10);
    let history = push_random(&a, "mail", &mut rng, 6).await;
    let last = history.last().map(|p| p.seq).unwrap_or(0);
    let run = |args: &[&str]| {
        let (code, out, err) = cli(&s.b, WRITE_TOKEN, args);
        (code, out.trim().to_owned(), err)
    };
    let (code, out, err) = run(&["replica", "start", "--domain", "mail", "--dir", "cli/mail"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["state"],
        "seeding"
    );
    replica_at(&s.b.client(), "mail", last).await;
    let (code, out, err) = run(&[
        "replica",
        "rollback",
        "--domain",
        "mail",
        "--point",
        &history[1].seq.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["state"],
        "paused"
    );
    let (code, _, err) = run(&["replica", "resume", "--domain", "mail"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["replica", "complete", "--domain", "mail"]);
    assert_eq!(code, 0, "{err}");
    let job: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(job["state"], "succeeded", "{job}");
    let fence = job["failover"]["fence_seq"].as_u64().expect("fence");
    assert_images(
        &job["failover"]["images"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        &model_at(&history, fence),
        &scratch(s.dir.path()),
    );
    let (code, out, err) = run(&["status", "--domain", "mail"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["mode"],
        "failed_over"
    );
    // Failing over to the owner again is a conflict (exit 5); the old primary is fenced
    // (exit 6 for its writes); without --server the command says what it needs (exit 2).
    let (code, _, err) = run(&["failover", "--domain", "mail", "--mode", "forced"]);
    assert_eq!(code, 5, "{err}");
    let (code, _, err) = cli(&s.a, WRITE_TOKEN, &["release", "--domain", "mail"]);
    assert_eq!(code, 5, "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["--data-dir"])
        .arg(s.dir.path().join("cli-local"))
        .args(["failover", "--domain", "mail"])
        .env_remove("TIDEMARK_SERVER")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));
    assert!(!s.dir.path().join("cli-local").exists(), "nothing created");
}
