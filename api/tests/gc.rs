//! GC through the service and the CLI: retention policies per domain, dry and real
//! runs, the points kept (head, pins, leases) restoring byte for byte, metrics, and
//! the leases of restores, test copies and replicas.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// GC on request only, and garbage deleted at once, so that a run's effect is seen.
const NO_GRACE: &str = "[gc]\ninterval_secs = 0\ngrace_secs = 0\norphan_grace_secs = 0\n";

/// Only the head, pins and leases are kept: every pushed point is older than a run.
fn head_and_pins(pinned: &[&str]) -> Value {
    json!({"pitr_window": "0s", "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "pinned": pinned})
}

/// One disk's bytes as the pushes left them.
struct Disk(Vec<u8>);

impl Disk {
    /// Pushes random data over `blocks` (first, count) as one point; returns its seq.
    async fn push(
        &mut self,
        api: &Api,
        domain: &str,
        rng: &mut StdRng,
        blocks: &[(usize, usize)],
    ) -> u64 {
        let mut writes = Vec::new();
        for &(first, n) in blocks {
            let data = random_bytes(rng, n * BS);
            self.0[first * BS..(first + n) * BS].copy_from_slice(&data);
            writes.push((0u32, (first * BS) as u64, data));
        }
        let refs: Vec<(u32, u64, &[u8])> =
            writes.iter().map(|(d, o, b)| (*d, *o, &b[..])).collect();
        api.push(domain, &refs).await.expect(200)["seq"]
            .as_u64()
            .expect("seq")
    }
}

async fn point_seqs(api: &Api, domain: &str) -> Vec<u64> {
    api.get(&format!("/v1/domains/{domain}/points"))
        .await
        .expect(200)["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["seq"].as_u64().expect("seq"))
        .collect()
}

/// Restores disk d0 of `domain` at `point` and checks it is `model`, byte for byte.
async fn restores_to(server: &Server, domain: &str, point: &str, model: &[u8], scratch: &Path) {
    let api = server.client();
    let path = format!("check/{domain}-{}.img", point.replace(':', "-"));
    let job = api
        .post(
            "/v1/restores",
            &json!({"domain": domain, "point": point, "overwrite": true, "targets": [{"disk": "d0", "path": path}]}),
        )
        .await
        .expect(202);
    let job = api.wait_job(job["id"].as_str().expect("id")).await;
    assert_eq!(job["state"], "succeeded", "restore of {point}: {job}");
    assert_image(&server.recovery.join(&path), model, scratch);
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(api: &Api) -> String {
    let r = api.get("/metrics").await;
    assert_eq!(r.status, 200);
    r.text
}

fn lease_path(store: &Path, domain: &str, site: &str, holder: &str) -> PathBuf {
    store
        .join("domains")
        .join(domain)
        .join("leases")
        .join(site)
        .join(format!("{holder}.json"))
}

/// The body of a stored lease.
fn lease_body(path: &Path) -> Option<Value> {
    let data = std::fs::read(path).ok()?;
    let v: Value = serde_json::from_slice(&data).ok()?;
    Some(v["body"].clone())
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_the_head_and_pinned_points_and_collects_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // image_chain 2: the pinned point, the oldest kept, becomes an image too.
    let server = Server::one_site(tmp.path(), &format!("{NO_GRACE}image_chain = 2\n"));
    let api = server.client();
    let mut rng = StdRng::seed_from_u64(11);
    api.create_domain("gcd", &[("d0", MIB)]).await;
    api.get("/v1/domains/gcd/gc").await.error(404, "not_found");

    let mut disk = Disk(vec![0u8; MIB as usize]);
    disk.push(&api, "gcd", &mut rng, &[(0, 4)]).await;
    disk.push(&api, "gcd", &mut rng, &[(4, 4)]).await;
    disk.push(&api, "gcd", &mut rng, &[(0, 2)]).await;
    disk.push(&api, "gcd", &mut rng, &[(10, 1)]).await;
    let golden = api
        .post(
            "/v1/domains/gcd/markers",
            &json!({"name": "golden", "known_good": true}),
        )
        .await
        .expect(200)["point"]["seq"]
        .as_u64()
        .expect("seq");
    let at_golden = disk.0.clone();
    disk.push(&api, "gcd", &mut rng, &[(20, 2)]).await;
    // Block 30 twice: the first point's write is dead once the second is not kept.
    disk.push(&api, "gcd", &mut rng, &[(30, 1)]).await;
    disk.push(&api, "gcd", &mut rng, &[(30, 1)]).await;
    disk.push(&api, "gcd", &mut rng, &[(40, 2)]).await;
    disk.push(&api, "gcd", &mut rng, &[(50, 2)]).await;
    let head = disk.push(&api, "gcd", &mut rng, &[(0, 1), (60, 3)]).await;

    // The default policy until one is set.
    let r = api.get("/v1/domains/gcd/retention").await.expect(200);
    assert_eq!(r["source"], "default", "{r}");
    assert_eq!(r["pitr_window"], "1d");
    assert_eq!(r["pitr_window_secs"], 86_400);
    assert_eq!(r["hourly"], 48);
    let set = api
        .send(
            reqwest::Method::PUT,
            "/v1/domains/gcd/retention",
            Some((
                "application/json",
                serde_json::to_vec(&head_and_pins(&["golden"])).expect("json"),
            )),
        )
        .await
        .expect(200);
    assert_eq!(set["source"], "domain", "{set}");
    assert_eq!(set["pitr_window_secs"], 0);
    assert_eq!(set["pinned"], json!(["golden"]));
    assert_eq!(api.get("/v1/domains/gcd/retention").await.expect(200), set);
    let dom = api.get("/v1/domains/gcd").await.expect(200);
    assert_eq!(
        dom["retention"], set,
        "the domain shows its effective policy"
    );

    // A dry run changes nothing and says what a run would do.
    let before = point_seqs(&api, "gcd").await;
    assert!(before.len() >= 11, "{before:?}");
    let dry = api
        .post("/v1/domains/gcd/gc", &json!({"dry_run": true}))
        .await
        .expect(200);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["epoch"], Value::Null, "{dry}");
    assert_eq!(
        dry["points_before"].as_u64(),
        Some(before.len() as u64),
        "{dry}"
    );
    assert_eq!(dry["points_retained"], 2, "{dry}");
    assert!(
        dry["segments_deleted"].as_u64().is_some_and(|n| n > 0),
        "{dry}"
    );
    assert_eq!(dry["bytes_reclaimed"], 0, "{dry}");
    assert_eq!(point_seqs(&api, "gcd").await, before);
    assert_eq!(api.get("/v1/domains/gcd/gc").await.expect(200), dry);
    let m = metrics(&api).await;
    assert_eq!(
        metric(&m, "tidemark_gc_runs_total{domain=\"gcd\"}"),
        None,
        "dry runs are not counted"
    );

    // The run: only the pinned point and the head are points after it.
    let run = api.post("/v1/domains/gcd/gc", &json!({})).await.expect(200);
    eprintln!("report: {run}");
    assert_eq!(run["dry_run"], false);
    assert_eq!(run["deferred"], Value::Null, "{run}");
    assert_eq!(run["epoch"], 1, "{run}");
    assert_eq!(run["upto"].as_u64(), Some(head), "{run}");
    assert_eq!(run["points_retained"], 2, "{run}");
    assert!(
        run["segments_deleted"].as_u64().is_some_and(|n| n > 0),
        "{run}"
    );
    assert!(
        run["segments_merged"].as_u64().is_some_and(|n| n > 0),
        "{run}"
    );
    assert_eq!(run["images_written"], 1, "{run}");
    assert!(
        run["bytes_reclaimed"].as_u64().is_some_and(|n| n > 0),
        "{run}"
    );
    assert!(
        run["objects_deleted"].as_u64().is_some_and(|n| n > 0),
        "{run}"
    );
    assert!(
        run["stored_bytes_after"].as_u64().is_some_and(|n| n > 0),
        "{run}"
    );
    assert!(
        run["duration_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{run}"
    );
    assert_eq!(point_seqs(&api, "gcd").await, [golden, head]);
    assert_eq!(api.get("/v1/domains/gcd/gc").await.expect(200), run);
    let dom = api.get("/v1/domains/gcd").await.expect(200);
    assert_eq!(dom["points"], 2);
    assert_eq!(dom["stored_bytes"], run["stored_bytes_after"]);

    restores_to(&server, "gcd", "latest", &disk.0, tmp.path()).await;
    restores_to(&server, "gcd", "marker:golden", &at_golden, tmp.path()).await;

    let m = metrics(&api).await;
    assert_eq!(
        metric(&m, "tidemark_gc_runs_total{domain=\"gcd\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "tidemark_gc_failures_total{domain=\"gcd\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "tidemark_gc_bytes_reclaimed_total{domain=\"gcd\"}"),
        run["bytes_reclaimed"].as_f64()
    );
    assert_eq!(
        metric(&m, "tidemark_gc_segments_deleted_total{domain=\"gcd\"}"),
        run["segments_deleted"].as_f64()
    );
    assert_eq!(
        metric(&m, "tidemark_gc_segments_merged_total{domain=\"gcd\"}"),
        run["segments_merged"].as_f64()
    );
    assert!(metric(&m, "tidemark_gc_packs_repacked_total{domain=\"gcd\"}").is_some());
    assert!(
        metric(&m, "tidemark_gc_last_duration_seconds{domain=\"gcd\"}").is_some_and(|s| s > 0.0)
    );
    assert_eq!(
        metric(&m, "tidemark_gc_last_stored_bytes{domain=\"gcd\"}"),
        run["stored_bytes_after"].as_f64()
    );

    // Again: nothing left to do, and the points still restore.
    let again = api.post("/v1/domains/gcd/gc", &json!({})).await.expect(200);
    assert_eq!(again["points_retained"], 2, "{again}");
    assert_eq!(again["segments_deleted"], 0, "{again}");
    assert_eq!(point_seqs(&api, "gcd").await, [golden, head]);
    // Protection goes on after GC.
    let newest = disk.push(&api, "gcd", &mut rng, &[(1, 2)]).await;
    assert!(newest > head);
    restores_to(&server, "gcd", "latest", &disk.0, tmp.path()).await;
    restores_to(&server, "gcd", "marker:golden", &at_golden, tmp.path()).await;

    // Unpinned, and back to the default policy: the pinned point goes at the next run.
    api.send(
        reqwest::Method::PUT,
        "/v1/domains/gcd/retention",
        Some((
            "application/json",
            serde_json::to_vec(&head_and_pins(&[])).expect("json"),
        )),
    )
    .await
    .expect(200);
    api.post("/v1/domains/gcd/gc", &json!({"dry_run": false}))
        .await
        .expect(200);
    assert_eq!(point_seqs(&api, "gcd").await, [newest]);
    restores_to(&server, "gcd", "latest", &disk.0, tmp.path()).await;
    let r = api.delete("/v1/domains/gcd/retention").await.expect(200);
    assert_eq!(r["source"], "default", "{r}");
    assert_eq!(api.get("/v1/domains/gcd/retention").await.expect(200), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_lease_keeps_its_point_through_a_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Restores paced to 1 MiB/s: the run starts while one reads an old point.
    let server = Server::one_site(
        tmp.path(),
        &format!("{NO_GRACE}[restore]\nmax_bytes_per_sec = 1048576\nconcurrency = 2\n"),
    );
    let store = tmp.path().join("store");
    let api = server.client();
    let mut rng = StdRng::seed_from_u64(12);
    api.create_domain("leased", &[("d0", 8 * MIB)]).await;
    let mut disk = Disk(vec![0u8; 8 * MIB as usize]);
    // The old point reads six packs of 1 MiB: paced, about 5 seconds to restore (the
    // pacer spaces the reads of a restore, so one large read would not be slowed).
    let mut old = 0;
    for i in 0..6 {
        old = disk.push(&api, "leased", &mut rng, &[(i * 256, 256)]).await;
    }
    let at_old = disk.0.clone();
    disk.push(&api, "leased", &mut rng, &[(0, 1536)]).await;
    let head = disk.push(&api, "leased", &mut rng, &[(1800, 1)]).await;
    api.send(
        reqwest::Method::PUT,
        "/v1/domains/leased/retention",
        Some((
            "application/json",
            serde_json::to_vec(&head_and_pins(&[])).expect("json"),
        )),
    )
    .await
    .expect(200);

    let job = api
        .post(
            "/v1/restores",
            &json!({"domain": "leased", "point": old.to_string(), "targets": [{"disk": "d0", "path": "old.img"}]}),
        )
        .await
        .expect(202);
    let id = job["id"].as_str().expect("id").to_owned();
    let lease = lease_path(&store, "leased", "site-a", &format!("restore-{id}"));
    loop {
        let j = api.get(&format!("/v1/jobs/{id}")).await.expect(200);
        if j["state"] == "running" && j["bytes_done"].as_u64().is_some_and(|b| b > 0) {
            break;
        }
        assert_ne!(j["state"], "succeeded", "the restore ended too soon: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = lease_body(&lease).unwrap_or_else(|| panic!("no lease at {}", lease.display()));
    assert_eq!(body["seq"].as_u64(), Some(old), "{body}");
    assert_eq!(body["onwards"], false);

    // The run waits for the restore to let go of the index, then commits; meanwhile a
    // second run of the domain is refused.
    let runner = api.clone();
    let first = tokio::spawn(async move { runner.post("/v1/domains/leased/gc", &json!({})).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = api
        .post("/v1/domains/leased/gc", &json!({"dry_run": true}))
        .await;
    assert!(!first.is_finished(), "the run did not wait for the restore");
    busy.error(409, "conflict");
    let run = first.await.expect("task").expect(200);
    assert_eq!(run["deferred"], Value::Null, "{run}");
    assert!(run["epoch"].as_u64().is_some(), "{run}");
    assert_eq!(run["points_retained"], 2, "{run}");
    assert_eq!(point_seqs(&api, "leased").await, [old, head]);

    let job = api.wait_job(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_image(&server.recovery.join("old.img"), &at_old, tmp.path());
    assert!(!lease.exists(), "an ended job holds no lease");

    // Without the lease the point goes.
    let run = api
        .post("/v1/domains/leased/gc", &json!({}))
        .await
        .expect(200);
    assert_eq!(run["points_retained"], 1, "{run}");
    assert!(
        run["bytes_reclaimed"].as_u64().is_some_and(|b| b > 0),
        "{run}"
    );
    assert_eq!(point_seqs(&api, "leased").await, [head]);
    restores_to(&server, "leased", "latest", &disk.0, tmp.path()).await;
    assert!(!server.log_text().contains("WARN"), "{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_tokens_owners_and_leases_of_copies_and_replicas() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let extra = format!("{NO_GRACE}[failover]\nreplica_poll_ms = 50\n");
    let a = Server::start(ServerOptions {
        data: &tmp.path().join("a"),
        store: &store,
        site: "site-a",
        extra: &extra,
    });
    let api = a.client();
    let mut rng = StdRng::seed_from_u64(13);
    api.create_domain("web", &[("d0", MIB)]).await;
    let mut disk = Disk(vec![0u8; MIB as usize]);
    let p1 = disk.push(&api, "web", &mut rng, &[(0, 8)]).await;
    let head = disk.push(&api, "web", &mut rng, &[(0, 8)]).await;

    let put = |body: Vec<u8>, api: Api| async move {
        api.send(
            reqwest::Method::PUT,
            "/v1/domains/web/retention",
            Some(("application/json", body)),
        )
        .await
    };
    // Unknown domains.
    api.post("/v1/domains/nope/gc", &json!({}))
        .await
        .error(404, "not_found");
    api.get("/v1/domains/nope/gc").await.error(404, "not_found");
    api.get("/v1/domains/nope/retention")
        .await
        .error(404, "not_found");
    api.send(
        reqwest::Method::PUT,
        "/v1/domains/nope/retention",
        Some(("application/json", b"{}".to_vec())),
    )
    .await
    .error(404, "not_found");
    api.post("/v1/domains/bad%20name/gc", &json!({}))
        .await
        .error(400, "invalid_input");
    // Malformed policies change nothing.
    for bad in [
        &b"{"[..],
        b"[]",
        br#"{"window": "1h"}"#,
        br#"{"pitr_window": "1y"}"#,
        br#"{"pitr_window": "24"}"#,
        br#"{"pitr_window": 3600}"#,
        br#"{"hourly": -1}"#,
        br#"{"daily": 5000000000}"#,
        br#"{"pinned": ["a/b"]}"#,
        br#"{"pinned": [""]}"#,
        br#"{"pinned": "golden"}"#,
    ] {
        put(bad.to_vec(), api.clone())
            .await
            .error(400, "invalid_input");
    }
    assert_eq!(
        api.get("/v1/domains/web/retention").await.expect(200)["source"],
        "default"
    );
    api.post("/v1/domains/web/gc", &json!({"dry_run": "yes"}))
        .await
        .error(400, "invalid_input");
    api.post("/v1/domains/web/gc", &json!({"dryrun": true}))
        .await
        .error(400, "invalid_input");
    // Tokens: none is refused; a read token may look, not change.
    let anon = api.with_token(None);
    put(
        serde_json::to_vec(&head_and_pins(&[])).expect("json"),
        anon.clone(),
    )
    .await
    .error(401, "unauthorized");
    anon.post("/v1/domains/web/gc", &json!({}))
        .await
        .error(401, "unauthorized");
    anon.get("/v1/domains/web/retention")
        .await
        .error(401, "unauthorized");
    let reader = api.with_token(Some(READ_TOKEN));
    reader
        .post("/v1/domains/web/gc", &json!({"dry_run": true}))
        .await
        .error(403, "forbidden");
    put(b"{}".to_vec(), reader.clone())
        .await
        .error(403, "forbidden");
    reader
        .delete("/v1/domains/web/retention")
        .await
        .error(403, "forbidden");
    reader.get("/v1/domains/web/retention").await.expect(200);
    assert_eq!(point_seqs(&api, "web").await, [p1, head]);
    // An empty body is a real run, with the default policy here: everything is
    // recent, so all is kept.
    let r = api
        .send(reqwest::Method::POST, "/v1/domains/web/gc", None)
        .await
        .expect(200);
    assert_eq!(r["dry_run"], false, "{r}");
    assert_eq!(r["points_retained"], 2, "{r}");

    // A test copy holds its point for as long as it exists.
    let tc = api
        .post(
            "/v1/test-copies",
            &json!({"domain": "web", "point": p1.to_string()}),
        )
        .await
        .expect(202);
    let tc_id = tc["id"].as_str().expect("id").to_owned();
    let tc_lease = lease_path(&store, "web", "site-a", &format!("test-{tc_id}"));
    wait_until("the test copy's lease", || {
        lease_body(&tc_lease).is_some_and(|b| b["seq"].as_u64() == Some(p1))
    })
    .await;
    let job = api.wait_job(tc["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    put(
        serde_json::to_vec(&head_and_pins(&[])).expect("json"),
        api.clone(),
    )
    .await
    .expect(200);
    let r = api.post("/v1/domains/web/gc", &json!({})).await.expect(200);
    assert_eq!(r["points_retained"], 2, "{r}");
    assert_eq!(point_seqs(&api, "web").await, [p1, head]);
    api.delete(&format!("/v1/test-copies/{tc_id}"))
        .await
        .expect(204);
    wait_until("the test copy's lease to go", || !tc_lease.exists()).await;

    // Another site: it may not collect the domain, and its replica holds points.
    let b = Server::start(ServerOptions {
        data: &tmp.path().join("b"),
        store: &store,
        site: "site-b",
        extra: &extra,
    });
    let pb = b.client();
    let t0 = Instant::now();
    while pb
        .get("/v1/domains/web/points/resolve?point=latest")
        .await
        .body["seq"]
        .as_u64()
        != Some(head)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "site B never saw the domain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pb.post("/v1/domains/web/gc", &json!({}))
        .await
        .error(409, "fenced");
    // The policy lives in the bucket: site B sees what A set.
    assert_eq!(
        pb.get("/v1/domains/web/retention").await.expect(200)["source"],
        "domain"
    );
    pb.post("/v1/domains/web/replica", &json!({}))
        .await
        .expect(201);
    let replica_lease = lease_path(&store, "web", "site-b", "replica");
    wait_until("the replica's lease", || {
        lease_body(&replica_lease)
            .is_some_and(|b| b["seq"].as_u64() == Some(head) && b["onwards"] == true)
    })
    .await;
    pb.delete("/v1/domains/web/replica").await.expect(200);
    wait_until("the replica's lease to go", || !replica_lease.exists()).await;
    // With the copy gone, the old point goes.
    api.post("/v1/domains/web/gc", &json!({})).await.expect(200);
    assert_eq!(point_seqs(&api, "web").await, [head]);
    for s in [&a, &b] {
        assert!(!s.log_text().contains("WARN"), "{}", s.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_gc_collects_the_domains_this_site_owns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::one_site(
        tmp.path(),
        "[gc]\ninterval_secs = 1\ngrace_secs = 0\norphan_grace_secs = 0\n",
    );
    let api = server.client();
    let mut rng = StdRng::seed_from_u64(14);
    api.create_domain("sched", &[("d0", MIB)]).await;
    let mut disk = Disk(vec![0u8; MIB as usize]);
    for _ in 0..4 {
        disk.push(&api, "sched", &mut rng, &[(0, 4)]).await;
    }
    let head = disk.push(&api, "sched", &mut rng, &[(8, 1)]).await;
    api.send(
        reqwest::Method::PUT,
        "/v1/domains/sched/retention",
        Some((
            "application/json",
            serde_json::to_vec(&head_and_pins(&[])).expect("json"),
        )),
    )
    .await
    .expect(200);
    let t0 = Instant::now();
    while point_seqs(&api, "sched").await != [head] {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "scheduled GC never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = metrics(&api).await;
    assert!(
        metric(&m, "tidemark_gc_runs_total{domain=\"sched\"}").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        api.get("/v1/domains/sched/gc").await.expect(200)["dry_run"],
        false
    );
    restores_to(&server, "sched", "latest", &disk.0, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_gc_through_the_service_and_offline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::one_site(tmp.path(), NO_GRACE);
    let api = server.client();
    let mut rng = StdRng::seed_from_u64(15);
    api.create_domain("cli", &[("d0", MIB)]).await;
    let mut disk = Disk(vec![0u8; MIB as usize]);
    for _ in 0..3 {
        disk.push(&api, "cli", &mut rng, &[(0, 2)]).await;
    }
    let before = point_seqs(&api, "cli").await;

    let (code, out, err) = cli(
        &server,
        WRITE_TOKEN,
        &["gc", "--domain", "cli", "--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("GC of domain cli (dry run"), "{out}");
    assert!(out.contains("points kept"), "{out}");
    let (code, out, err) = cli(
        &server,
        WRITE_TOKEN,
        &["gc", "--domain", "cli", "--dry-run", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["domain"], "cli");
    assert_eq!(point_seqs(&api, "cli").await, before);
    let (code, _, err) = cli(&server, WRITE_TOKEN, &["gc", "--domain", "nope"]);
    assert_eq!(code, 3, "unknown domain: {err}");
    let (code, _, err) = cli(&server, READ_TOKEN, &["gc", "--domain", "cli"]);
    assert_eq!(code, 2, "read token: {err}");

    // Offline, on the data directory of the stopped service.
    api.send(
        reqwest::Method::PUT,
        "/v1/domains/cli/retention",
        Some((
            "application/json",
            serde_json::to_vec(&head_and_pins(&[])).expect("json"),
        )),
    )
    .await
    .expect(200);
    assert!(server.stop());
    let offline = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("--data-dir")
            .arg(&server.data)
            .arg("--store")
            .arg(format!("file://{}", tmp.path().join("store").display()))
            .args(args)
            .env_remove("TIDEMARK_SERVER")
            .output()
            .expect("run tidemark")
    };
    let out = offline(&["gc", "--domain", "cli", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["dry_run"], false, "{r}");
    assert_eq!(r["points_retained"], 1, "the domain's policy applies: {r}");
    let out = offline(&["gc", "--domain", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    server.spawn();
    let api = server.client();
    assert_eq!(point_seqs(&api, "cli").await, before[before.len() - 1..]);
    restores_to(&server, "cli", "latest", &disk.0, tmp.path()).await;
}
