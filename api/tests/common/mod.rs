//! Running the real `tidemark serve` on a loopback port, and talking to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The write token every test server accepts.
pub const WRITE_TOKEN: &str = "test-write-token-0123456789";
/// The read-only token.
pub const READ_TOKEN: &str = "test-read-token-0123456789";
pub const BS: usize = 4096;

/// A `tidemark serve` process; SIGTERM and wait on drop.
pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub data: PathBuf,
    pub recovery: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

/// What a test server is made of.
pub struct ServerOptions<'a> {
    pub data: &'a Path,
    pub store: &'a Path,
    pub site: &'a str,
    /// Extra TOML appended to the config.
    pub extra: &'a str,
}

impl Server {
    /// One site, `site-a`, with its data and store under `dir`.
    pub fn one_site(dir: &Path, extra: &str) -> Server {
        Server::start(ServerOptions {
            data: &dir.join("a"),
            store: &dir.join("store"),
            site: "site-a",
            extra,
        })
    }

    pub fn start(o: ServerOptions) -> Server {
        std::fs::create_dir_all(o.data).expect("data dir");
        let recovery = o.data.join("recovery");
        let config = o.data.join("tidemark.toml");
        let toml = format!(
            "data_dir = {data:?}\nstore = {store:?}\nlisten = \"127.0.0.1:0\"\nsite_id = {site:?}\nrecovery_dir = {rec:?}\n\
             [[tokens]]\nname = \"automation\"\ntoken = \"{WRITE_TOKEN}\"\naccess = \"write\"\n\
             [[tokens]]\nname = \"dashboard\"\ntoken = \"{READ_TOKEN}\"\naccess = \"read\"\n\
             [tail]\ninterval_ms = 200\n{extra}\n",
            data = o.data.display().to_string(),
            store = format!("file://{}", o.store.display()),
            site = o.site,
            rec = recovery.display().to_string(),
            extra = o.extra,
        );
        std::fs::write(&config, toml).expect("config");
        let log = o.data.join("serve.log");
        let mut s = Server {
            child: None,
            url: String::new(),
            data: o.data.to_owned(),
            recovery,
            config,
            log,
        };
        s.spawn();
        s
    }

    /// Starts the process (again) with the same configuration.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env_remove("TIDEMARK_STORE")
            .env_remove("TIDEMARK_DATA_DIR")
            .env_remove("TIDEMARK_TOKEN")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start tidemark serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log: {}", self.log_text()))
            .to_owned();
        self.url = url;
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        unsafe_kill(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> Api {
        Api {
            http: reqwest::Client::new(),
            url: self.url.clone(),
            token: Some(WRITE_TOKEN.to_owned()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// An HTTP client of a test server.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
}

/// A response: status and body (JSON when it parses).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts a status; returns the body.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected reply: {}", self.text);
        self.body
    }

    /// Asserts an API error with this status and code.
    pub fn error(self, status: u16, code: &str) {
        assert_eq!(self.status, status, "unexpected reply: {}", self.text);
        assert_eq!(self.body["error"]["code"], code, "reply: {}", self.text);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error message: {}",
            self.text
        );
    }
}

impl Api {
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some((ct, b)) = body {
            r = r.header("content-type", ct).body(b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, text }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            path,
            Some(("application/json", serde_json::to_vec(body).expect("json"))),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, ct: &str, body: Vec<u8>) -> Reply {
        self.send(reqwest::Method::POST, path, Some((ct, body)))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Pushes writes `(disk, offset, data)` to a domain.
    pub async fn push(&self, domain: &str, writes: &[(u32, u64, &[u8])]) -> Reply {
        self.post_raw(
            &format!("/v1/domains/{domain}/writes"),
            "application/octet-stream",
            wire(writes),
        )
        .await
    }

    /// Starts restoring one disk of a domain's newest point to a path below the
    /// recovery directory; returns the job.
    pub async fn restore(&self, domain: &str, disk: &str, path: &str) -> Value {
        self.post(
            "/v1/restores",
            &json!({"domain": domain, "targets": [{"disk": disk, "path": path}]}),
        )
        .await
        .expect(202)
    }

    /// Waits until a job ends; returns it.
    pub async fn wait_job(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.get(&format!("/v1/jobs/{id}")).await.expect(200);
            let state = job["state"].as_str().unwrap_or_default();
            if matches!(state, "succeeded" | "failed" | "cancelled") {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn create_domain(&self, name: &str, disks: &[(&str, u64)]) -> Value {
        let disks: Vec<Value> = disks
            .iter()
            .map(|(n, s)| json!({"name": n, "size": s}))
            .collect();
        self.post("/v1/domains", &json!({"name": name, "disks": disks}))
            .await
            .expect(201)
    }
}

/// Runs the CLI against a server; returns (exit code, stdout, stderr).
pub fn cli(server: &Server, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["--server", &server.url, "--token", token])
        .args(args)
        .env_remove("TIDEMARK_DATA_DIR")
        .output()
        .expect("run the CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The wire form of writes (see the API's writes module): 32-byte little-endian header
/// and data, encoded here independently of the service's encoder.
pub fn wire(writes: &[(u32, u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (disk, offset, data) in writes {
        out.extend_from_slice(&disk.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(&0i64.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// A zeroing write on the wire.
pub fn wire_zero(disk: u32, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&disk.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out
}

/// Random bytes.
pub fn random_bytes(rng: &mut impl rand::Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Asserts a restored image equals the model, with qemu-img (nobody here wrote it)
/// when the machine has it, and byte for byte.
pub fn assert_image(path: &Path, model: &[u8], scratch: &Path) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(got.len(), model.len(), "size of {}", path.display());
    assert!(got == model, "{} differs from the model", path.display());
    let expected = scratch.join(format!(
        "expected-{}.img",
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    std::fs::write(&expected, model).expect("write model");
    if let Ok(out) = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&expected)
        .arg(path)
        .output()
    {
        assert!(
            out.status.success(),
            "qemu-img compare: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let _ = std::fs::remove_file(expected);
}
