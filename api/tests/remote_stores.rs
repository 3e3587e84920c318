//! The `tidemark` binary on real object-store servers (moto for S3, Azurite for Azure,
//! started by scripts/test.sh): protect, restore from another site, ownership and
//! fencing through the CLI. The buckets are created and inspected with the vendors'
//! Python SDKs (boto3, azure-storage-blob), not with our code; images are compared
//! with `qemu-img compare`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};

const SEGMENT_MAGIC: &str = "54444d4b53454700"; // "TDMKSEG\0"
const PACK_MAGIC: &str = "54444d4b50434b00"; // "TDMKPCK\0", at the end of a pack

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("set {name}; scripts/test.sh starts the test servers and sets it")
    })
}

/// How one backend is reached from the CLI and from Python.
struct Remote {
    /// `s3` or `azure`, as `scripts/inspect_store.py` names them.
    kind: &'static str,
    container: String,
    prefix: &'static str,
    url: String,
    env: Vec<(&'static str, String)>,
}

impl Remote {
    fn s3() -> Self {
        let container = format!("tdmk-cli-{:08x}", rand::random::<u32>());
        let url = format!(
            "s3://{container}/dr/site?endpoint={}",
            env("TIDEMARK_TEST_S3_ENDPOINT")
        );
        python(&format!(
            "import boto3, os\n\
             boto3.client('s3', endpoint_url=os.environ['TIDEMARK_TEST_S3_ENDPOINT'])\
             .create_bucket(Bucket='{container}')"
        ));
        Remote {
            kind: "s3",
            container,
            prefix: "dr/site",
            url,
            env: Vec::new(),
        }
    }

    fn azure() -> Self {
        let container = format!("tdmk-cli-{:08x}", rand::random::<u32>());
        python(&format!(
            "import os\n\
             from azure.storage.blob import BlobServiceClient\n\
             BlobServiceClient.from_connection_string(\
             os.environ['TIDEMARK_TEST_AZURE_CONNECTION_STRING'])\
             .create_container('{container}')"
        ));
        Remote {
            kind: "azure",
            url: format!("az://{container}/dr/site"),
            container,
            prefix: "dr/site",
            env: vec![(
                "AZURE_STORAGE_CONNECTION_STRING",
                env("TIDEMARK_TEST_AZURE_CONNECTION_STRING"),
            )],
        }
    }

    fn tidemark(&self, data: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("--data-dir")
            .arg(data)
            .arg("--store")
            .arg(&self.url)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run tidemark")
    }

    fn ok(&self, data: &Path, args: &[&str]) -> serde_json::Value {
        let out = self.tidemark(data, args);
        assert!(
            out.status.success(),
            "tidemark {args:?} on {} failed: {}",
            self.kind,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf8");
        serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null)
    }

    /// Exit code and stderr of a command that must fail.
    fn fails(&self, data: &Path, args: &[&str]) -> (i32, String) {
        let out = self.tidemark(data, args);
        assert!(!out.status.success(), "tidemark {args:?} should fail");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every object under the prefix, as the vendor's SDK lists it.
    fn inspect(&self) -> Vec<serde_json::Value> {
        let out = Command::new(env("TIDEMARK_TEST_PYTHON"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/inspect_store.py"
            ))
            .args([self.kind, &self.container, self.prefix])
            .output()
            .expect("run inspect_store.py");
        assert!(
            out.status.success(),
            "inspect_store.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
        v["objects"].as_array().cloned().unwrap_or_default()
    }
}

fn python(code: &str) {
    let out = Command::new(env("TIDEMARK_TEST_PYTHON"))
        .args(["-c", code])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image with zero, text-like and random 64 KiB runs.
fn make_image(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut img = vec![0u8; size];
    for run in img.chunks_mut(64 << 10) {
        match rng.gen_range(0..3) {
            0 => {}
            1 => run
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = b"point in time "[i % 14]),
            _ => rng.fill(run),
        }
    }
    std::fs::write(path, &img).expect("write image");
    img
}

fn qemu_img_compare(a: &Path, b: &Path) {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(a)
        .arg(b)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `owner --take-over` of domain `web`, conditioned on `generation`.
fn take_over(generation: &str) -> [&str; 6] {
    [
        "owner",
        "--domain",
        "web",
        "--take-over",
        "--expected-generation",
        generation,
    ]
}

fn protect_restore_and_fence(remote: Remote) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    let (site_a, site_b) = (p("site-a"), p("site-b"));
    let disk = p("vm.img");
    let disk_arg = format!("root={}", disk.display());
    let first = make_image(&disk, 8 << 20, 1);
    std::fs::copy(&disk, p("first.img")).expect("keep first image");
    remote.ok(
        &site_a,
        &["protect", "--domain", "web", "--disk", &disk_arg],
    );
    let mut second = first.clone();
    second[3 << 20..(3 << 20) + 4096 * 3].fill(0x5a);
    std::fs::write(&disk, &second).expect("change image");
    remote.ok(
        &site_a,
        &[
            "protect", "--domain", "web", "--disk", &disk_arg, "--marker", "v2",
        ],
    );

    // The bucket, seen through the vendor's SDK, holds the layout DESIGN.md gives.
    let objects = remote.inspect();
    let keys: Vec<&str> = objects.iter().filter_map(|o| o["key"].as_str()).collect();
    for key in [
        "domains/web/domain.json",
        "domains/web/owner.json",
        "domains/web/log/0000000000000001.seg",
        "domains/web/log/0000000000000002.seg",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    for o in &objects {
        let key = o["key"].as_str().unwrap_or_default();
        if key.ends_with(".seg") {
            assert_eq!(o["head_hex"], SEGMENT_MAGIC, "{key} is not a segment");
        }
        if key.ends_with(".pack") {
            assert_eq!(o["tail_hex"], PACK_MAGIC, "{key} is not a pack");
        }
    }
    assert!(
        keys.iter().any(|k| k.ends_with(".pack")),
        "no packs in {keys:?}"
    );

    // Another site reads everything without owning the domain.
    let points = remote.ok(&site_b, &["points", "--domain", "web", "--json"]);
    assert_eq!(points.as_array().map(Vec::len), Some(2), "{points}");
    for (point, expect) in [("1", p("first.img")), ("marker:v2", disk.clone())] {
        let out = p("restored.img");
        let out_s = out.display().to_string();
        remote.ok(
            &site_b,
            &[
                "restore", "--domain", "web", "--disk", "root", "--point", point, "--out", &out_s,
            ],
        );
        qemu_img_compare(&out, &expect);
    }

    // Ownership: site A owns the domain; B is fenced until it takes over, then A is.
    let owner = remote.ok(&site_b, &["owner", "--domain", "web"]);
    assert_eq!(owner["generation"], 1, "{owner}");
    let a_id = owner["site"].as_str().expect("owner site").to_owned();
    let (code, err) = remote.fails(
        &site_b,
        &["protect", "--domain", "web", "--disk", &disk_arg],
    );
    assert_eq!(code, 6, "a non-owner's protect: {err}");
    assert!(err.contains("fenced") && err.contains(&a_id), "{err}");
    let (code, err) = remote.fails(&site_b, &take_over("7"));
    assert_eq!(
        code, 6,
        "takeover from a generation that is not current: {err}"
    );
    let took = remote.ok(&site_b, &take_over("1"));
    assert_eq!(took["generation"], 2, "{took}");
    assert_eq!(took["fence_seq"], 3, "{took}");
    let (code, err) = remote.fails(
        &site_a,
        &["protect", "--domain", "web", "--disk", &disk_arg],
    );
    assert_eq!(code, 6, "the old owner's protect after a takeover: {err}");
    second[0..4096].fill(0x11);
    std::fs::write(&disk, &second).expect("change image");
    remote.ok(
        &site_b,
        &["protect", "--domain", "web", "--disk", &disk_arg],
    );
    let out = p("latest.img");
    let out_s = out.display().to_string();
    remote.ok(
        &site_a,
        &[
            "restore", "--domain", "web", "--disk", "root", "--out", &out_s,
        ],
    );
    qemu_img_compare(&out, &disk);
}

#[test]
fn cli_on_s3() {
    protect_restore_and_fence(Remote::s3());
}

#[test]
fn cli_on_azure() {
    protect_restore_and_fence(Remote::azure());
}
