//! schemathesis (from PyPI; nobody here wrote it) fuzzes the running service from its
//! own OpenAPI document: no request may get a 5xx, and every documented response must
//! match its schema.

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let python = std::env::var("TIDEMARK_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("set TIDEMARK_TEST_PYTHON; scripts/test.sh installs schemathesis and sets it")
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::one_site(tmp.path(), "");
    let api = server.client();
    // Something to find: a domain with a point, and a finished job.
    api.create_domain("vm1", &[("d0", 1 << 20)]).await;
    let block = vec![3u8; BS];
    api.push("vm1", &[(0, 0, &block)]).await.expect(200);
    let job = api
        .post("/v1/restores", &serde_json::json!({"domain": "vm1"}))
        .await
        .expect(202);
    api.wait_job(job["id"].as_str().expect("id")).await;

    let spec = api.get("/v1/openapi.json").await.expect(200);
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    assert!(spec["paths"]["/v1/domains/{domain}/writes"]["post"].is_object());

    let out = Command::new(&python)
        .args(["-c", "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())"])
        .args(["run", &format!("{}/v1/openapi.json", server.url)])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "25", "--seed", "1", "--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["-H", &format!("Authorization: Bearer {WRITE_TOKEN}")])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(tmp.path())
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\nservice log:\n{}",
        server.log_text()
    );
    // The service is still healthy after the fuzzing.
    assert_eq!(api.get("/healthz").await.status, 200);
}
