//! Failover runbooks: the recovery site's VMs brought up group by group, in boot order.
//!
//! A runbook lists boot groups. A group starts once the groups it depends on have
//! succeeded, waits its delay, then runs the hook of each of its VMs at once. A hook is a
//! program the operator installed in the service's hooks directory, or a webhook; it gets
//! one JSON document, on stdin or as the POST body:
//!
//! ```json
//! {"domain": "erp", "mode": "planned", "job_id": "job-…",
//!  "point": {"seq": 42, "time": "2026-11-22T10:42:17Z"},
//!  "group": "db", "vm": "db1",
//!  "disks": [{"name": "db1-root", "path": "/srv/recovery/erp/db1-root.img"}],
//!  "ips": [{"source": "10.10.10.5", "target": "192.168.10.5"},
//!          {"source": "10.20.0.9", "target": null}],
//!  "reip": [{"source": "10.10.10.*", "target": "192.168.10.*"}]}
//! ```
//!
//! `target` is null for an address no re-IP rule matches: the VM keeps that address.
//! A failed step stops every group not yet started; groups already running finish.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod reip;
mod run;

#[cfg(test)]
mod fixtures;

pub use run::run;

/// Seconds a hook may run when the runbook does not say.
pub const DEFAULT_HOOK_TIMEOUT_SECONDS: u64 = 300;

/// The longest hook timeout and the longest group delay a runbook may ask for, in seconds.
pub const MAX_SECONDS: u64 = 3600;

fn default_hook_timeout() -> u64 {
    DEFAULT_HOOK_TIMEOUT_SECONDS
}

/// The VMs of a failover in boot order, and how their addresses change at the recovery site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    /// Boot groups; by default each waits for the one before it.
    pub groups: Vec<BootGroup>,
    /// Re-IP rules, the first matching one applies to an address.
    #[serde(default)]
    pub reip: Vec<ReIpRule>,
}

/// VMs started together once the groups they depend on have succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootGroup {
    /// Unique in the runbook: letters, digits, `.`, `_`, `-`; at most 64.
    pub name: String,
    /// Groups that must have succeeded before this one starts; absent = the previous
    /// group in the list (none for the first). An empty list = may start at once.
    #[serde(default)]
    pub depends_on: Option<Vec<String>>,
    /// Seconds to wait after the dependencies succeeded before starting this group's VMs.
    #[serde(default)]
    pub delay_seconds: u64,
    /// The group's VMs, whose hooks run concurrently.
    pub vms: Vec<VmStep>,
}

/// One VM of a boot group and the hook that brings it up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmStep {
    /// Unique in the runbook.
    pub name: String,
    /// The VM's disks, by their names in the domain.
    pub disks: Vec<String>,
    /// The VM's IPv4 addresses at the protected site; the hook gets them re-IP'd.
    #[serde(default)]
    pub ips: Vec<String>,
    /// What brings the VM up once its disk images are ready.
    pub hook: Hook,
}

/// What the service runs for a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Hook {
    /// A program in the service's hooks directory: `command[0]` is a file name there (no
    /// path separators, no `..`), the rest are arguments. Never run through a shell.
    Command {
        /// The program's file name, then its arguments.
        command: Vec<String>,
        /// Seconds before the program is killed and the step fails (1 to 3600).
        #[serde(default = "default_hook_timeout")]
        timeout_seconds: u64,
    },
    /// An http:// or https:// URL that receives the same JSON as a POST; any 2xx answer
    /// is success.
    Webhook {
        /// Where to POST.
        url: String,
        /// Seconds before the request is abandoned and the step fails (1 to 3600).
        #[serde(default = "default_hook_timeout")]
        timeout_seconds: u64,
    },
}

/// Moves addresses of a source network to a target network of the same size, keeping the
/// host part: `10.10.10.*` → `192.168.10.*` (the last octet, 1 to 254), or
/// `10.10.0.0/16` → `172.16.0.0/16` (the host bits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReIpRule {
    /// The network at the protected site.
    pub source: String,
    /// The network at the recovery site, in the same notation.
    pub target: String,
}

/// What a runbook runs for: the failover job's point and images.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// The domain failed over.
    pub domain: String,
    /// "regular", "planned", "forced" or "test".
    pub mode: String,
    /// The point's sequence number.
    pub seq: u64,
    /// The point's time (RFC 3339).
    pub point_time: String,
    /// Disk name → its restored image.
    pub disk_paths: BTreeMap<String, String>,
    /// The failover job.
    pub job_id: String,
}

/// Where a VM's step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Its group has not started.
    Pending,
    /// Its group waits its delay.
    Waiting,
    /// Its hook runs.
    Running,
    /// Its hook succeeded.
    Succeeded,
    /// Its hook failed, timed out or was killed; see `message`.
    Failed,
    /// Never started: a dependency did not succeed, a step failed, or the job was cancelled.
    Skipped,
}

/// One VM's step, as the failover job reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunbookStep {
    /// The boot group.
    pub group: String,
    /// The VM.
    pub vm: String,
    /// Where it is.
    pub state: StepState,
    /// When its hook started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When its hook ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The hook program's exit code, when it exited with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a runbook ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunbookOutcome {
    /// Every VM's step, in runbook order.
    pub steps: Vec<RunbookStep>,
    /// `None` when every step succeeded; else "group G, vm V: reason" of the first step
    /// that failed, or "cancelled" when the job was cancelled before any step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Runbook {
    /// Checks the runbook against the domain's disks and the hooks the operator installed;
    /// the error names the offending group or VM.
    pub fn validate(&self, disks: &[String], hooks_dir: &Path) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("a runbook needs at least one boot group".to_owned());
        }
        self.dependencies()?;
        reip::parse_rules(&self.reip)?;
        let known: HashSet<&str> = disks.iter().map(String::as_str).collect();
        let mut vms: HashSet<&str> = HashSet::new();
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        for g in &self.groups {
            if g.delay_seconds > MAX_SECONDS {
                return Err(format!(
                    "group {}: delay_seconds {} is more than {MAX_SECONDS}",
                    g.name, g.delay_seconds
                ));
            }
            if g.vms.is_empty() {
                return Err(format!("group {}: has no VMs", g.name));
            }
            for vm in &g.vms {
                check_vm_name(&vm.name).map_err(|e| format!("group {}: {e}", g.name))?;
                let at = format!("group {}, vm {}", g.name, vm.name);
                if !vms.insert(&vm.name) {
                    return Err(format!("{at}: another VM of the runbook has this name"));
                }
                if vm.disks.is_empty() {
                    return Err(format!("{at}: lists no disks"));
                }
                for d in &vm.disks {
                    if !known.contains(d.as_str()) {
                        return Err(format!("{at}: the domain has no disk {d:?}"));
                    }
                    if let Some(other) = claimed.insert(d, &vm.name) {
                        return Err(if other == vm.name {
                            format!("{at}: lists disk {d:?} twice")
                        } else {
                            format!("{at}: disk {d:?} is already vm {other}'s")
                        });
                    }
                }
                for ip in &vm.ips {
                    parse_ipv4(ip).map_err(|e| format!("{at}: {e}"))?;
                }
                vm.hook.check(hooks_dir).map_err(|e| format!("{at}: {e}"))?;
            }
        }
        Ok(())
    }

    /// For each group, the indexes of the groups it waits for. Only groups listed earlier
    /// may be named, which is what keeps the graph free of cycles.
    fn dependencies(&self) -> Result<Vec<Vec<usize>>, String> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut deps = Vec::with_capacity(self.groups.len());
        for (i, g) in self.groups.iter().enumerate() {
            check_group_name(&g.name)?;
            let mine: Vec<usize> = match &g.depends_on {
                None => i.checked_sub(1).into_iter().collect(),
                Some(names) => names
                    .iter()
                    .map(|n| match seen.get(n.as_str()) {
                        Some(&j) => Ok(j),
                        None if *n == g.name => Err(format!("group {}: depends on itself", g.name)),
                        None if self.groups.iter().any(|o| o.name == *n) => Err(format!(
                            "group {}: depends on {n:?}, which comes later in the list; a \
                             group may only depend on groups listed before it, so that no \
                             cycle is possible",
                            g.name
                        )),
                        None => Err(format!(
                            "group {}: depends on {n:?}, which is not a group of this runbook",
                            g.name
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            };
            if seen.insert(&g.name, i).is_some() {
                return Err(format!("group {}: another group has this name", g.name));
            }
            deps.push(mine);
        }
        Ok(deps)
    }
}

fn check_group_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "group name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// VM names are the hypervisor's and may hold spaces; they travel in an environment
/// variable and in log lines, so no control characters.
fn check_vm_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(format!(
            "vm name {name:?}: use 1 to 128 bytes without control characters"
        ));
    }
    Ok(())
}

fn parse_ipv4(ip: &str) -> Result<Ipv4Addr, String> {
    ip.parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))
}

impl Hook {
    fn timeout_seconds(&self) -> u64 {
        match self {
            Hook::Command {
                timeout_seconds, ..
            }
            | Hook::Webhook {
                timeout_seconds, ..
            } => *timeout_seconds,
        }
    }

    fn check(&self, hooks_dir: &Path) -> Result<(), String> {
        match self {
            Hook::Command { command, .. } => {
                let name = command
                    .first()
                    .ok_or_else(|| "the hook's command is empty".to_owned())?;
                hook_program(hooks_dir, name)?;
            }
            Hook::Webhook { url, .. } => {
                webhook_url(url)?;
            }
        }
        let t = self.timeout_seconds();
        if !(1..=MAX_SECONDS).contains(&t) {
            return Err(format!(
                "the hook's timeout_seconds {t} is not between 1 and {MAX_SECONDS}"
            ));
        }
        Ok(())
    }
}

/// The program `name` in the hooks directory. The service runs only what its operator
/// installed there, never a path an API caller chose.
fn hook_program(hooks_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if !plain {
        return Err(format!(
            "hook program {name:?} must be a file name in the hooks directory, not a path"
        ));
    }
    let path = hooks_dir.join(name);
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("hook program {name:?} is not in the hooks directory ({e})"))?;
    if !meta.is_file() {
        return Err(format!("hook program {name:?} is not a file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(format!("hook program {name:?} is not executable"));
        }
    }
    Ok(path)
}

/// The URL of a webhook. Errors do not repeat it: webhook URLs often carry a secret.
fn webhook_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("the webhook URL does not parse: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the webhook URL's scheme {:?} is not http or https",
            parsed.scheme()
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::fixtures::*;
    use super::*;

    #[test]
    fn a_good_runbook_passes_validation() {
        let disks = strings(&DISKS);
        assert_eq!(good_runbook().validate(&disks, hooks()), Ok(()));
        let mut at_once = good_runbook();
        at_once.groups[1].depends_on = Some(Vec::new());
        at_once.groups[2].delay_seconds = MAX_SECONDS;
        assert_eq!(at_once.validate(&disks, hooks()), Ok(()));
    }

    #[test]
    fn each_broken_runbook_is_refused_naming_its_culprit() {
        type Break = fn(&mut Runbook);
        let cases: Vec<(Break, &[&str])> =
            vec![
            (|r| r.groups.clear(), &["at least one boot group"]),
            (|r| r.groups[1].name = "app server".into(), &["group name \"app server\""]),
            (|r| r.groups[1].name = "a".repeat(65), &["group name", "64"]),
            (|r| r.groups[1].name = String::new(), &["group name \"\""]),
            (|r| r.groups[1].name = "db".into(), &["group db: another group has this name"]),
            (
                |r| r.groups[2].depends_on = Some(strings(&["cache"])),
                &["group web: depends on \"cache\", which is not a group"],
            ),
            (
                |r| r.groups[0].depends_on = Some(strings(&["web"])),
                &["group db: depends on \"web\", which comes later", "no cycle"],
            ),
            (
                |r| r.groups[1].depends_on = Some(strings(&["app"])),
                &["group app: depends on itself"],
            ),
            (|r| r.groups[1].vms.clear(), &["group app: has no VMs"]),
            (|r| r.groups[1].delay_seconds = 3601, &["group app: delay_seconds 3601"]),
            (
                |r| r.groups[2].vms[0].name = "db1".into(),
                &["group web, vm db1: another VM of the runbook has this name"],
            ),
            (|r| r.groups[2].vms[0].name = "web\n1".into(), &["group web: vm name"]),
            (|r| r.groups[2].vms[0].name = String::new(), &["group web: vm name"]),
            (|r| r.groups[1].vms[0].disks.clear(), &["group app, vm app1: lists no disks"]),
            (
                |r| r.groups[1].vms[0].disks = strings(&["d9"]),
                &["group app, vm app1: the domain has no disk \"d9\""],
            ),
            (
                |r| r.groups[1].vms[0].disks = strings(&["d3", "d3"]),
                &["group app, vm app1: lists disk \"d3\" twice"],
            ),
            (
                |r| r.groups[2].vms[0].disks = strings(&["d2"]),
                &["group web, vm web1: disk \"d2\" is already vm db1's"],
            ),
            (
                |r| r.groups[0].vms[0].ips = strings(&["10.10.10.300"]),
                &["group db, vm db1: \"10.10.10.300\" is not an IPv4 address"],
            ),
            (
                |r| r.groups[0].vms[0].ips = strings(&["fd00::5"]),
                &["group db, vm db1: \"fd00::5\" is not an IPv4 address"],
            ),
            (|r| r.reip.push(rule("10.10.*.*", "10.20.*.*")), &["re-IP rule 2"]),
            (
                |r| r.groups[1].vms[0].hook = command(&[], 60),
                &["group app, vm app1: the hook's command is empty"],
            ),
            (
                |r| r.groups[1].vms[0].hook = command(&["/bin/sh", "-c", "reboot"], 60),
                &["group app, vm app1: hook program \"/bin/sh\" must be a file name"],
            ),
            (
                |r| r.groups[1].vms[0].hook = command(&["../log.sh"], 60),
                &["group app, vm app1", "must be a file name"],
            ),
            (
                |r| r.groups[1].vms[0].hook = command(&[".."], 60),
                &["group app, vm app1", "must be a file name"],
            ),
            (
                |r| r.groups[1].vms[0].hook = command(&["missing.sh"], 60),
                &["group app, vm app1: hook program \"missing.sh\" is not in the hooks directory"],
            ),
            (
                |r| r.groups[1].vms[0].hook = command(&["plain.txt"], 60),
                &["group app, vm app1: hook program \"plain.txt\" is not executable"],
            ),
            (
                |r| r.groups[1].vms[0].hook = command(&["subdir"], 60),
                &["group app, vm app1: hook program \"subdir\" is not a file"],
            ),
            (
                |r| r.groups[1].vms[0].hook = command(&["log.sh"], 0),
                &["group app, vm app1: the hook's timeout_seconds 0"],
            ),
            (
                |r| r.groups[1].vms[1].hook = webhook("ftp://hooks.example/vm"),
                &["group app, vm app2: the webhook URL's scheme \"ftp\""],
            ),
            (
                |r| r.groups[1].vms[1].hook = webhook("not a url?token=s3cret"),
                &["group app, vm app2: the webhook URL does not parse"],
            ),
            (
                |r| {
                    r.groups[1].vms[1].hook = Hook::Webhook {
                        url: "http://hooks.example/".into(),
                        timeout_seconds: 3601,
                    }
                },
                &["group app, vm app2: the hook's timeout_seconds 3601"],
            ),
        ];
        let disks = strings(&DISKS);
        for (n, (breaks, expected)) in cases.into_iter().enumerate() {
            let mut r = good_runbook();
            breaks(&mut r);
            let err = r
                .validate(&disks, hooks())
                .expect_err(&format!("case {n} is refused"));
            for e in expected {
                assert!(err.contains(e), "case {n}: {err:?} should say {e:?}");
            }
            assert!(!err.contains("s3cret"), "case {n}: {err:?} repeats the URL");
        }
    }

    #[test]
    fn requests_are_read_strictly_with_their_defaults() {
        let text = json!({
            "groups": [
                {"name": "db", "vms": [{"name": "db1", "disks": ["d1"],
                    "hook": {"type": "command", "command": ["log.sh"]}}]},
                {"name": "web", "depends_on": [], "delay_seconds": 5, "vms": [
                    {"name": "web1", "disks": ["d2"], "ips": ["10.0.0.1"],
                     "hook": {"type": "webhook", "url": "http://h/x", "timeout_seconds": 9}}]}
            ]
        });
        let r: Runbook = serde_json::from_value(text.clone()).expect("runbook");
        assert!(r.reip.is_empty());
        assert_eq!(r.groups[0].depends_on, None);
        assert_eq!(r.groups[0].delay_seconds, 0);
        assert_eq!(r.groups[1].depends_on, Some(Vec::new()));
        assert_eq!(
            r.groups[0].vms[0].hook,
            command(&["log.sh"], DEFAULT_HOOK_TIMEOUT_SECONDS)
        );
        assert_eq!(r.groups[1].vms[0].hook.timeout_seconds(), 9);
        let strays = [
            "/extra",
            "/groups/0/extra",
            "/groups/0/vms/0/extra",
            "/groups/0/vms/0/hook/extra",
        ];
        for at in strays {
            let mut v = text.clone();
            let (parent, field) = at.rsplit_once('/').expect("a path");
            v.pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .expect("an object")
                .insert(field.to_owned(), json!(1));
            assert!(
                serde_json::from_value::<Runbook>(v).is_err(),
                "{at} is refused"
            );
        }
        let mut v = text;
        v["groups"][0]["vms"][0]["hook"]["type"] = json!("shell");
        assert!(serde_json::from_value::<Runbook>(v).is_err());
    }
}
