//! The `tidemark` binary end to end on a local data directory, checked with tools
//! nobody here wrote: `qemu-img compare`, `e2fsck`, `debugfs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};

const BS: usize = 4096;

fn tidemark(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run tidemark")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = tidemark(data, args);
    assert!(
        out.status.success(),
        "tidemark {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Restores `disk` of `domain` at `point` into `out`.
fn restore(data: &Path, domain: &str, disk: &str, point: &str, out: &str) {
    ok(
        data,
        &[
            "restore", "--domain", domain, "--disk", disk, "--point", point, "--out", out,
        ],
    );
}

/// Runs a failing command; returns (exit code, the one stderr line).
fn fails(data: &Path, args: &[&str]) -> (i32, String) {
    let out = tidemark(data, args);
    assert!(!out.status.success(), "tidemark {args:?} should fail");
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one clear line, got {err:?}"
    );
    (out.status.code().unwrap_or(-1), err)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON: {s:?}: {e}"))
}

/// A VM-like image: zero runs, text-like runs and random runs of 64 KiB.
fn make_image(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut img = vec![0u8; size];
    for run in img.chunks_mut(64 << 10) {
        match rng.gen_range(0..10) {
            0..=3 => {}
            4..=7 => {
                let text = b"tidemark keeps every point in time; ";
                for (i, b) in run.iter_mut().enumerate() {
                    *b = text[(i + rng.gen_range(0..2)) % text.len()];
                }
            }
            _ => rng.fill(run),
        }
    }
    std::fs::write(path, &img).expect("write image");
    img
}

/// Changes `fraction` of the blocks of an image in place.
fn change_blocks(path: &Path, img: &mut [u8], fraction: f64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let blocks = img.len() / BS;
    for _ in 0..((blocks as f64 * fraction) as usize).max(1) {
        let b = rng.gen_range(0..blocks);
        rng.fill(&mut img[b * BS..(b + 1) * BS]);
    }
    std::fs::write(path, &*img).expect("write image");
}

fn qemu_img_compare(a: &Path, b: &Path) {
    let st = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw"])
        .arg(a)
        .arg(b)
        .status()
        .expect("qemu-img (install qemu-utils)");
    assert!(
        st.success(),
        "qemu-img compare says {} and {} differ",
        a.display(),
        b.display()
    );
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("tempdir"))
    }
    fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }
}

#[test]
fn protect_points_restore_and_rebuild() {
    let d = Dir::new();
    let data = d.p("data");
    let size = 8 << 20;
    let mut img = make_image(&d.p("vm.img"), size, 1);
    let boot = make_image(&d.p("boot.img"), 1 << 20, 2);
    let v1 = img.clone();
    std::fs::write(d.p("v1.img"), &v1).expect("copy");
    let disk_vm = format!("root={}", d.s("vm.img"));
    let disk_boot = format!("boot={}", d.s("boot.img"));

    let p1 = json(&ok(
        &data,
        &[
            "protect", "--domain", "web", "--disk", &disk_vm, "--disk", &disk_boot,
        ],
    ));
    assert_eq!(p1["seq"], 1);
    assert_eq!(p1["logical_bytes"], (size + (1 << 20)) as u64);
    let full_upload = p1["new_bytes"].as_u64().expect("new_bytes");

    change_blocks(&d.p("vm.img"), &mut img, 0.02, 3);
    let p2 = json(&ok(
        &data,
        &[
            "protect",
            "--domain",
            "web",
            "--disk",
            &disk_vm,
            "--disk",
            &disk_boot,
            "--marker",
            "after",
            "--known-good",
        ],
    ));
    assert_eq!(p2["seq"], 2);
    let changed = p2["changed_bytes"].as_u64().expect("changed");
    assert!(
        changed > 0 && changed <= (0.02 * size as f64) as u64 + BS as u64,
        "changed {changed}"
    );
    let inc_upload = p2["new_bytes"].as_u64().expect("new_bytes");
    assert!(
        inc_upload < full_upload / 4,
        "incremental uploaded {inc_upload} of {full_upload}"
    );

    // Nothing changed: nothing but the segment record is uploaded.
    let p3 = json(&ok(
        &data,
        &["protect", "--domain", "web", "--disk", &disk_vm],
    ));
    assert_eq!(p3["changed_bytes"], 0);
    assert!(p3["new_bytes"].as_u64().expect("new") < 4096);

    let points = json(&ok(&data, &["points", "--domain", "web", "--json"]));
    let points = points.as_array().expect("array");
    assert_eq!(points.len(), 3);
    assert_eq!(points[0]["seq"], 1);
    assert_eq!(points[1]["markers"], serde_json::json!(["after"]));
    let t1 = points[0]["time"].as_str().expect("time").to_owned();

    for (point, expect) in [
        ("1", "v1.img"),
        (t1.as_str(), "v1.img"),
        ("marker:after", "vm.img"),
        ("last-good", "vm.img"),
        ("latest", "vm.img"),
    ] {
        let out = d.s("restored.img");
        restore(&data, "web", "root", point, &out);
        qemu_img_compare(&d.p(expect), &d.p("restored.img"));
        let meta = std::fs::metadata(d.p("restored.img")).expect("meta");
        assert_eq!(meta.len(), size as u64);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < size as u64 * 3 / 4,
            "zero runs should be holes"
        );
    }
    restore(&data, "web", "boot", "1", &d.s("b.img"));
    assert!(std::fs::read(d.p("b.img")).expect("read") == boot);

    // The bucket alone rebuilds the index.
    let r = json(&ok(&data, &["index", "rebuild", "--domain", "web"]));
    assert_eq!(r["segments"], 3);
    restore(&data, "web", "root", "1", &d.s("again.img"));
    qemu_img_compare(&d.p("v1.img"), &d.p("again.img"));
    let v = json(&ok(&data, &["verify", "--domain", "web"]));
    assert_eq!(v["damaged"], serde_json::json!([]));
}

#[test]
fn errors_are_one_clear_line_with_distinct_codes() {
    let d = Dir::new();
    let data = d.p("data");
    make_image(&d.p("a.img"), 1 << 20, 4);
    let disk = format!("a={}", d.s("a.img"));
    ok(&data, &["protect", "--domain", "db", "--disk", &disk]);

    let (code, msg) = fails(&data, &["points", "--domain", "nope"]);
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("unknown domain"), "{msg}");

    let out = d.s("x.img");
    let (code, msg) = fails(
        &data,
        &[
            "restore", "--domain", "db", "--disk", "a", "--point", "42", "--out", &out,
        ],
    );
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("no such point"), "{msg}");
    let (code, msg) = fails(
        &data,
        &["restore", "--domain", "db", "--disk", "zz", "--out", &out],
    );
    assert_eq!(code, 2, "{msg}");
    let (code, msg) = fails(
        &data,
        &[
            "restore",
            "--domain",
            "db",
            "--disk",
            "a",
            "--point",
            "yesterday",
            "--out",
            &out,
        ],
    );
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("RFC 3339"), "{msg}");

    // A disk of another size than the domain's.
    make_image(&d.p("big.img"), 2 << 20, 5);
    let (code, msg) = fails(
        &data,
        &[
            "protect",
            "--domain",
            "db",
            "--disk",
            &format!("a={}", d.s("big.img")),
        ],
    );
    assert_eq!(code, 5, "{msg}");
    assert!(msg.contains("bytes"), "{msg}");
    // An image that is not a whole number of blocks.
    std::fs::write(d.p("odd.img"), vec![1u8; 5000]).expect("write");
    let (code, msg) = fails(
        &data,
        &[
            "protect",
            "--domain",
            "odd",
            "--disk",
            &format!("a={}", d.s("odd.img")),
        ],
    );
    assert_eq!(code, 2, "{msg}");
    let (code, _) = fails(&data, &["protect", "--domain", "../etc", "--disk", &disk]);
    assert_eq!(code, 2);

    // A damaged pack: restore refuses, names the object, and leaves no image behind.
    let packs = std::fs::read_dir(data.join("store/domains/db/packs")).expect("packs");
    let pack = packs
        .map(|e| e.expect("entry").path())
        .next()
        .expect("a pack");
    let mut bytes = std::fs::read(&pack).expect("read");
    bytes[10] ^= 0x20;
    std::fs::write(&pack, &bytes).expect("write");
    let (code, msg) = fails(
        &data,
        &["restore", "--domain", "db", "--disk", "a", "--out", &out],
    );
    assert_eq!(code, 4, "{msg}");
    assert!(msg.contains("corrupt") && msg.contains(".pack"), "{msg}");
    assert!(!Path::new(&out).exists());
    let (code, msg) = fails(&data, &["verify", "--domain", "db"]);
    assert_eq!(code, 4, "{msg}");
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-V").output().is_ok()
}

#[test]
fn restored_ext4_file_system_passes_e2fsck() {
    assert!(
        have("mkfs.ext4") && have("e2fsck"),
        "e2fsprogs is needed (apt-get install e2fsprogs)"
    );
    let d = Dir::new();
    let data = d.p("data");
    let fs = d.p("fs.img");
    std::fs::File::create(&fs)
        .and_then(|f| f.set_len(32 << 20))
        .expect("image");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&fs)
        .status()
        .expect("mkfs");
    assert!(st.success());
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut put = |name: &str, len: usize| {
        let mut content = vec![0u8; len];
        rng.fill(&mut content[..len / 2]);
        let host = d.p(name);
        std::fs::write(&host, &content).expect("write");
        let st = Command::new("debugfs")
            .args(["-w", "-R", &format!("write {} {name}", host.display())])
            .arg(&fs)
            .output()
            .expect("debugfs");
        assert!(st.status.success());
        content
    };
    let first = put("first.bin", 3 << 20);
    let disk = format!("fs={}", fs.display());
    ok(&data, &["protect", "--domain", "vm", "--disk", &disk]);
    let second = put("second.bin", 2 << 20);
    ok(&data, &["protect", "--domain", "vm", "--disk", &disk]);

    for (point, files) in [
        ("1", vec![("first.bin", &first)]),
        ("2", vec![("first.bin", &first), ("second.bin", &second)]),
    ] {
        let out = d.p(&format!("restored-{point}.img"));
        restore(&data, "vm", "fs", point, &out.display().to_string());
        let st = Command::new("e2fsck")
            .args(["-f", "-n"])
            .arg(&out)
            .output()
            .expect("e2fsck");
        assert!(
            st.status.success(),
            "e2fsck: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        for (name, content) in files {
            let dumped = d.p("dumped.bin");
            let _ = std::fs::remove_file(&dumped);
            let st = Command::new("debugfs")
                .args(["-R", &format!("dump {name} {}", dumped.display())])
                .arg(&out)
                .output()
                .expect("debugfs");
            assert!(st.status.success());
            assert!(
                std::fs::read(&dumped).expect("dumped") == *content,
                "{name} at point {point}"
            );
        }
        if point == "1" {
            let ls = Command::new("debugfs")
                .args(["-R", "ls"])
                .arg(&out)
                .output()
                .expect("debugfs");
            assert!(!String::from_utf8_lossy(&ls.stdout).contains("second.bin"));
        }
    }
}
