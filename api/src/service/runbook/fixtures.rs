//! What the runbook tests share: hooks, and runbooks built from a few words.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{BootGroup, Hook, ReIpRule, RunContext, Runbook, VmStep};

/// The test hooks, all written before any test runs one: a script still open for
/// writing in one thread while another thread forks cannot be executed (ETXTBSY).
/// Shared by every test, so the directory outlives them and stays behind in the temp dir.
pub(super) fn hooks() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-test-hooks-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let scripts = [
            // $1: a directory for the log and the inputs; $2: seconds to sleep.
            (
                "log.sh",
                "echo \"start $TIDEMARK_VM\" >> \"$1/log\"\n\
                 cat > \"$1/$TIDEMARK_VM.json\"\n\
                 sleep \"$2\"\n\
                 echo \"end $TIDEMARK_VM\" >> \"$1/log\"\n",
            ),
            (
                "fail.sh",
                "cat > /dev/null\necho 'disk not bootable' >&2\nexit 3\n",
            ),
            (
                "noisy.sh",
                "i=0\nwhile [ $i -lt 200 ]; do\n  echo \"line $i of a long complaint\" >&2\n  \
                 i=$((i+1))\ndone\necho 'last words' >&2\nexit 1\n",
            ),
            // $1: where to write its pid.
            (
                "hang.sh",
                "echo $$ > \"$1.tmp\"\nmv \"$1.tmp\" \"$1\"\nexec sleep 30\n",
            ),
            ("env.sh", "env > \"$1/env\"\npwd > \"$1/cwd\"\n"),
        ];
        for (name, body) in scripts {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("script");
            set_mode(&path, 0o755);
        }
        std::fs::write(dir.join("plain.txt"), "not a program").expect("plain");
        set_mode(&dir.join("plain.txt"), 0o644);
        std::fs::create_dir(dir.join("subdir")).expect("subdir");
        dir
    })
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub(super) fn rule(source: &str, target: &str) -> ReIpRule {
    ReIpRule {
        source: source.to_owned(),
        target: target.to_owned(),
    }
}

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn command(args: &[&str], timeout_seconds: u64) -> Hook {
    Hook::Command {
        command: strings(args),
        timeout_seconds,
    }
}

pub(super) fn webhook(url: &str) -> Hook {
    Hook::Webhook {
        url: url.to_owned(),
        timeout_seconds: 10,
    }
}

pub(super) fn vm(name: &str, disks: &[&str], hook: Hook) -> VmStep {
    VmStep {
        name: name.to_owned(),
        disks: strings(disks),
        ips: Vec::new(),
        hook,
    }
}

pub(super) fn group(name: &str, depends_on: Option<&[&str]>, vms: Vec<VmStep>) -> BootGroup {
    BootGroup {
        name: name.to_owned(),
        depends_on: depends_on.map(strings),
        delay_seconds: 0,
        vms,
    }
}

pub(super) const DISKS: [&str; 5] = ["d1", "d2", "d3", "d4", "d5"];

pub(super) fn context() -> RunContext {
    RunContext {
        domain: "erp".to_owned(),
        mode: "planned".to_owned(),
        seq: 42,
        point_time: "2026-11-22T10:42:17Z".to_owned(),
        disk_paths: DISKS
            .iter()
            .map(|d| ((*d).to_owned(), format!("/srv/recovery/erp/{d}.img")))
            .collect(),
        job_id: "job-0123456789abcdef".to_owned(),
    }
}

pub(super) fn good_runbook() -> Runbook {
    let mut db = vm("db1", &["d1", "d2"], command(&["log.sh", "x", "0"], 60));
    db.ips = strings(&["10.10.10.5"]);
    Runbook {
        groups: vec![
            group("db", None, vec![db]),
            group(
                "app",
                None,
                vec![
                    vm("app1", &["d3"], command(&["log.sh"], 300)),
                    vm(
                        "app2",
                        &["d4"],
                        webhook("https://hooks.example/vm?token=s3cret"),
                    ),
                ],
            ),
            group(
                "web",
                Some(&["db"]),
                vec![vm("web1", &["d5"], webhook("http://127.0.0.1:9/"))],
            ),
        ],
        reip: vec![rule("10.10.10.*", "192.168.10.*")],
    }
}
