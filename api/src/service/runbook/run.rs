//! Running a runbook: groups as their dependencies succeed, hooks, and their reports.

use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tidemark_pitr_index::format_time;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::reip::{parse_rules, remap, Mapping};
use super::{
    hook_program, parse_ipv4, webhook_url, Hook, ReIpRule, RunContext, Runbook, RunbookOutcome,
    RunbookStep, StepState, VmStep,
};

/// How much of a failed hook's stderr (or a failed webhook's answer) its step keeps.
const OUTPUT_KEPT: usize = 4096;

/// How long a hook's output is still read after it exited: a child it left behind may
/// hold the pipes open, and that must not turn a finished hook into a timed-out one.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// The hooks' PATH when the service itself has none.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The document a hook gets.
#[derive(Serialize)]
struct HookInput<'a> {
    domain: &'a str,
    mode: &'a str,
    job_id: &'a str,
    point: HookPoint<'a>,
    group: &'a str,
    vm: &'a str,
    disks: Vec<HookDisk<'a>>,
    ips: Vec<HookIp>,
    reip: &'a [ReIpRule],
}

#[derive(Serialize)]
struct HookPoint<'a> {
    seq: u64,
    time: &'a str,
}

#[derive(Serialize)]
struct HookDisk<'a> {
    name: &'a str,
    path: &'a str,
}

#[derive(Serialize)]
struct HookIp {
    source: String,
    /// `None` (null): no rule matches, the address is kept.
    target: Option<String>,
}

/// Where a group is, for the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

/// Why a hook did not succeed.
struct HookFailure {
    summary: String,
    exit_code: Option<i32>,
    /// The tail of stderr, or the start of a webhook's answer.
    output: String,
    /// Killed because the job was cancelled: not a failure of the step itself.
    cancelled: bool,
}

impl HookFailure {
    fn new(summary: impl Into<String>) -> Self {
        HookFailure {
            summary: summary.into(),
            exit_code: None,
            output: String::new(),
            cancelled: false,
        }
    }

    fn cancelled() -> Self {
        HookFailure {
            cancelled: true,
            ..HookFailure::new("killed: the job was cancelled")
        }
    }
}

/// The step list and the first failure, shared by the groups running at once.
struct Board<'a> {
    state: Mutex<(Vec<RunbookStep>, Option<String>)>,
    /// Each group's steps in the list.
    groups: Vec<Range<usize>>,
    on_step: &'a (dyn Fn(&[RunbookStep]) + Sync),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Board<'a> {
    fn new(runbook: &Runbook, on_step: &'a (dyn Fn(&[RunbookStep]) + Sync)) -> Self {
        let mut steps = Vec::new();
        let mut groups = Vec::new();
        for g in &runbook.groups {
            let start = steps.len();
            steps.extend(g.vms.iter().map(|vm| RunbookStep {
                group: g.name.clone(),
                vm: vm.name.clone(),
                state: StepState::Pending,
                started: None,
                finished: None,
                exit_code: None,
                message: None,
            }));
            groups.push(start..steps.len());
        }
        Board {
            state: Mutex::new((steps, None)),
            groups,
            on_step,
        }
    }

    /// Changes steps and reports the whole list. The report is made under the lock so
    /// that the listener sees the changes in the order they happened.
    fn change(&self, f: impl FnOnce(&mut Vec<RunbookStep>, &mut Option<String>)) {
        let mut state = lock(&self.state);
        let (steps, failed) = &mut *state;
        f(steps, failed);
        (self.on_step)(steps);
    }

    fn step(&self, group: usize, vm: usize, f: impl FnOnce(&mut RunbookStep)) {
        let i = self.groups[group].start + vm;
        self.change(|steps, _| {
            if let Some(s) = steps.get_mut(i) {
                f(s);
            }
        });
    }

    fn group(&self, group: usize, f: impl Fn(&mut RunbookStep)) {
        let range = self.groups[group].clone();
        self.change(|steps, _| steps[range].iter_mut().for_each(f));
    }

    fn skip_group(&self, group: usize, reason: &str) {
        self.group(group, |s| {
            s.state = StepState::Skipped;
            s.message = Some(reason.to_owned());
        });
    }

    fn fail(&self, group: usize, vm: usize, f: HookFailure, culprit: &str) {
        let i = self.groups[group].start + vm;
        self.change(|steps, failed| {
            if let Some(s) = steps.get_mut(i) {
                s.state = StepState::Failed;
                s.finished = Some(now());
                s.exit_code = f.exit_code;
                s.message = Some(if f.output.is_empty() {
                    f.summary.clone()
                } else {
                    format!("{}; output: {}", f.summary, f.output)
                });
            }
            if !f.cancelled && failed.is_none() {
                *failed = Some(format!("{culprit}: {}", f.summary));
            }
        });
    }

    fn failed(&self) -> Option<String> {
        lock(&self.state).1.clone()
    }

    fn outcome(self, cancelled: bool) -> RunbookOutcome {
        let (steps, failed) = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let all_succeeded = steps.iter().all(|s| s.state == StepState::Succeeded);
        let failed = match failed {
            Some(f) => Some(f),
            None if cancelled && !all_succeeded => Some("cancelled".to_owned()),
            None => None,
        };
        RunbookOutcome { steps, failed }
    }
}

fn now() -> String {
    format_time(tidemark_ingest::now_ns())
}

/// What the groups of one run share.
struct Runner<'a> {
    runbook: &'a Runbook,
    ctx: &'a RunContext,
    hooks_dir: &'a Path,
    rules: Vec<Mapping>,
    board: Board<'a>,
    /// Cancelled by the first failed step (and by `cancel`): groups not yet started stay so.
    stop: CancellationToken,
    cancel: &'a CancellationToken,
    http: OnceLock<Result<reqwest::Client, String>>,
}

/// Runs `runbook`: each group once its dependencies succeeded and its delay passed, the
/// hooks of a group's VMs concurrently. `on_step` gets the whole step list after every
/// change, while the list is held: it should store or forward it and return. Cancelling
/// `cancel` kills running hooks and skips what has not started.
pub async fn run(
    runbook: &Runbook,
    ctx: &RunContext,
    hooks_dir: &Path,
    cancel: &CancellationToken,
    on_step: impl Fn(&[RunbookStep]) + Send + Sync,
) -> RunbookOutcome {
    let board = Board::new(runbook, &on_step);
    // `validate` accepted it; checked again because the graph walk below relies on it.
    let plan = runbook
        .dependencies()
        .and_then(|deps| Ok((deps, parse_rules(&runbook.reip)?)));
    let (deps, rules) = match plan {
        Ok(plan) => plan,
        Err(e) => {
            let reason = format!("the runbook is invalid: {e}");
            for g in 0..runbook.groups.len() {
                board.skip_group(g, &reason);
            }
            let mut outcome = board.outcome(false);
            outcome.failed = Some(reason);
            return outcome;
        }
    };
    let runner = Runner {
        runbook,
        ctx,
        hooks_dir,
        rules,
        board,
        stop: cancel.child_token(),
        cancel,
        http: OnceLock::new(),
    };
    runner.walk(&deps).await;
    runner.board.outcome(cancel.is_cancelled())
}

impl Runner<'_> {
    /// Starts groups as their dependencies succeed, until none runs.
    async fn walk(&self, deps: &[Vec<usize>]) {
        let groups = &self.runbook.groups;
        let mut state = vec![GroupState::Pending; groups.len()];
        let mut running = FuturesUnordered::new();
        loop {
            // Dependencies come earlier in the list, so one pass in order settles every
            // group whose fate is known, transitive skips included.
            for i in 0..groups.len() {
                if state[i] != GroupState::Pending {
                    continue;
                }
                let blocked = deps[i]
                    .iter()
                    .find(|&&d| matches!(state[d], GroupState::Failed | GroupState::Skipped));
                let skip = if self.cancel.is_cancelled() {
                    Some("cancelled".to_owned())
                } else if let Some(&d) = blocked {
                    Some(format!(
                        "not started: group {} did not succeed",
                        groups[d].name
                    ))
                } else if self.stop.is_cancelled() {
                    Some(self.stop_reason())
                } else {
                    None
                };
                if let Some(reason) = skip {
                    state[i] = GroupState::Skipped;
                    self.board.skip_group(i, &reason);
                } else if deps[i].iter().all(|&d| state[d] == GroupState::Succeeded) {
                    state[i] = GroupState::Running;
                    running.push(self.group(i));
                }
            }
            match running.next().await {
                Some((i, end)) => state[i] = end,
                None => break,
            }
        }
    }

    fn stop_reason(&self) -> String {
        if self.cancel.is_cancelled() {
            "cancelled".to_owned()
        } else {
            match self.board.failed() {
                Some(f) => format!("not started: {f}"),
                None => "not started".to_owned(),
            }
        }
    }

    async fn group(&self, i: usize) -> (usize, GroupState) {
        let g = &self.runbook.groups[i];
        if g.delay_seconds > 0 {
            self.board.group(i, |s| s.state = StepState::Waiting);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(g.delay_seconds)) => {}
                _ = self.stop.cancelled() => {
                    self.board.skip_group(i, &self.stop_reason());
                    return (i, GroupState::Skipped);
                }
            }
        }
        let steps = g.vms.iter().enumerate().map(|(k, vm)| self.vm(i, k, vm));
        let results = futures::future::join_all(steps).await;
        let end = if results.into_iter().all(|ok| ok) {
            GroupState::Succeeded
        } else {
            GroupState::Failed
        };
        (i, end)
    }

    /// Runs one VM's hook; whether it succeeded.
    async fn vm(&self, group: usize, k: usize, vm: &VmStep) -> bool {
        self.board.step(group, k, |s| {
            s.state = StepState::Running;
            s.started = Some(now());
        });
        let result = match self.input(group, vm) {
            Ok(body) => match &vm.hook {
                Hook::Command {
                    command,
                    timeout_seconds,
                } => self.command(vm, command, *timeout_seconds, body).await,
                Hook::Webhook {
                    url,
                    timeout_seconds,
                } => self.webhook(url, *timeout_seconds, body).await,
            },
            Err(e) => Err(HookFailure::new(e)),
        };
        match result {
            Ok(()) => {
                self.board.step(group, k, |s| {
                    s.state = StepState::Succeeded;
                    s.finished = Some(now());
                    if matches!(vm.hook, Hook::Command { .. }) {
                        s.exit_code = Some(0);
                    }
                });
                true
            }
            Err(f) => {
                let culprit = format!("group {}, vm {}", self.runbook.groups[group].name, vm.name);
                let counts = !f.cancelled;
                self.board.fail(group, k, f, &culprit);
                // Recorded before `stop` fires, so that skipped groups can say why.
                if counts {
                    self.stop.cancel();
                }
                false
            }
        }
    }

    fn input(&self, group: usize, vm: &VmStep) -> Result<Vec<u8>, String> {
        let disks = vm
            .disks
            .iter()
            .map(|d| match self.ctx.disk_paths.get(d) {
                Some(path) => Ok(HookDisk { name: d, path }),
                None => Err(format!("no image of disk {d:?} was restored")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ips = vm
            .ips
            .iter()
            .map(|ip| {
                let source = parse_ipv4(ip)?;
                Ok(HookIp {
                    source: source.to_string(),
                    target: remap(&self.rules, source).map(|t| t.to_string()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let input = HookInput {
            domain: &self.ctx.domain,
            mode: &self.ctx.mode,
            job_id: &self.ctx.job_id,
            point: HookPoint {
                seq: self.ctx.seq,
                time: &self.ctx.point_time,
            },
            group: &self.runbook.groups[group].name,
            vm: &vm.name,
            disks,
            ips,
            reip: &self.runbook.reip,
        };
        serde_json::to_vec(&input).map_err(|e| format!("cannot encode the hook's input: {e}"))
    }

    async fn command(
        &self,
        vm: &VmStep,
        argv: &[String],
        timeout_seconds: u64,
        input: Vec<u8>,
    ) -> Result<(), HookFailure> {
        let (name, args) = argv
            .split_first()
            .ok_or_else(|| HookFailure::new("the hook's command is empty"))?;
        // Checked again: the runbook may have been accepted before the file changed.
        let program = hook_program(self.hooks_dir, name).map_err(HookFailure::new)?;
        // A relative program path together with current_dir is resolved differently
        // from one platform to the next.
        let program = std::path::absolute(&program).unwrap_or(program);
        let path = std::env::var_os("PATH").unwrap_or_else(|| FALLBACK_PATH.into());
        let mut child = tokio::process::Command::new(&program)
            .args(args)
            .current_dir(self.hooks_dir)
            .env_clear()
            .env("PATH", path)
            .env("TIDEMARK_DOMAIN", &self.ctx.domain)
            .env("TIDEMARK_VM", &vm.name)
            .env("TIDEMARK_MODE", &self.ctx.mode)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HookFailure::new(format!("cannot start hook {name:?}: {e}")))?;

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let io = async move {
            let feed = async move {
                if let Some(mut stdin) = stdin {
                    // A hook may ignore its input and exit first: a broken pipe is no
                    // failure of its own. Dropping stdin closes it.
                    let _ = stdin.write_all(&input).await;
                }
            };
            let ((), out, err) = tokio::join!(
                feed,
                read_tail(stdout, OUTPUT_KEPT),
                read_tail(stderr, OUTPUT_KEPT)
            );
            (out, err)
        };
        let finish = async {
            tokio::pin!(io);
            tokio::select! {
                status = child.wait() => {
                    let output = tokio::time::timeout(OUTPUT_GRACE, &mut io)
                        .await
                        .unwrap_or_default();
                    (status, output)
                }
                output = &mut io => (child.wait().await, output),
            }
        };
        let timeout = Duration::from_secs(timeout_seconds);
        let ended = tokio::select! {
            ended = tokio::time::timeout(timeout, finish) => ended.ok(),
            _ = self.cancel.cancelled() => {
                kill(&mut child).await;
                return Err(HookFailure::cancelled());
            }
        };
        let Some((status, (stdout, stderr))) = ended else {
            kill(&mut child).await;
            return Err(HookFailure::new(format!(
                "timed out after {timeout_seconds} s"
            )));
        };
        let status =
            status.map_err(|e| HookFailure::new(format!("cannot wait for the hook: {e}")))?;
        let stdout = text(&stdout);
        if !stdout.is_empty() {
            // The service's log keeps what the hook said.
            tracing::info!(domain = %self.ctx.domain, vm = %vm.name, "hook {name}: {stdout}");
        }
        if status.success() {
            return Ok(());
        }
        Err(HookFailure {
            summary: match status.code() {
                Some(code) => format!("hook {name:?} exited with code {code}"),
                None => format!("hook {name:?} {}", ended_without_code(status)),
            },
            exit_code: status.code(),
            output: text(&stderr),
            cancelled: false,
        })
    }

    async fn webhook(
        &self,
        url: &str,
        timeout_seconds: u64,
        input: Vec<u8>,
    ) -> Result<(), HookFailure> {
        let url = webhook_url(url).map_err(HookFailure::new)?;
        let http = self
            .http
            .get_or_init(|| {
                reqwest::Client::builder()
                    // A redirected POST turns into a GET without the document; a webhook
                    // that moved is reported, not half-followed.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("cannot make an HTTP client: {}", chain(&e)))
            })
            .as_ref()
            .map_err(|e| HookFailure::new(e.clone()))?;
        let request = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(input)
            .timeout(Duration::from_secs(timeout_seconds));
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status();
            let mut start = Vec::new();
            if !status.is_success() {
                // The status is the news; an answer cut short still shows its start.
                while start.len() < OUTPUT_KEPT {
                    match response.chunk().await {
                        Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                        Ok(None) | Err(_) => break,
                    }
                }
                start.truncate(OUTPUT_KEPT);
            }
            Ok::<_, reqwest::Error>((status, start))
        };
        tokio::select! {
            answer = exchange => match answer {
                Ok((status, _)) if status.is_success() => Ok(()),
                Ok((status, body)) => Err(HookFailure {
                    output: text(&body),
                    ..HookFailure::new(format!("the webhook answered {status}"))
                }),
                Err(e) if e.is_timeout() => Err(HookFailure::new(format!(
                    "timed out after {timeout_seconds} s"
                ))),
                Err(e) => Err(HookFailure::new(format!(
                    "the webhook could not be reached: {}",
                    chain(&e.without_url())
                ))),
            },
            _ = self.cancel.cancelled() => Err(HookFailure::cancelled()),
        }
    }
}

/// Kills a hook and reaps it.
async fn kill(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[cfg(unix)]
fn ended_without_code(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) => format!("was killed by signal {sig}"),
        None => "ended without an exit code".to_owned(),
    }
}

#[cfg(not(unix))]
fn ended_without_code(_: std::process::ExitStatus) -> String {
    "ended without an exit code".to_owned()
}

/// Reads a pipe to its end, keeping only its last `keep` bytes.
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>, keep: usize) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    tail
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// An error with its causes: reqwest's own message alone rarely says what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use axum::http::{HeaderMap, StatusCode};
    use bytes::Bytes;
    use serde_json::{json, Value};
    use tidemark_pitr_index::parse_time;
    use tokio::sync::mpsc;

    use super::super::fixtures::*;
    use super::*;

    /// Runs a runbook, keeping every report `on_step` made.
    async fn run_seen(
        runbook: &Runbook,
        cancel: &CancellationToken,
    ) -> (RunbookOutcome, Vec<Vec<RunbookStep>>) {
        let seen = Mutex::new(Vec::new());
        let outcome = run(runbook, &context(), hooks(), cancel, |steps| {
            lock(&seen).push(steps.to_vec())
        })
        .await;
        let seen = seen.into_inner().expect("reports");
        assert_eq!(
            seen.last(),
            Some(&outcome.steps),
            "the last report is the outcome"
        );
        (outcome, seen)
    }

    fn step<'a>(outcome: &'a RunbookOutcome, vm: &str) -> &'a RunbookStep {
        outcome
            .steps
            .iter()
            .find(|s| s.vm == vm)
            .expect("a step of the vm")
    }

    fn time(s: &Option<String>) -> i64 {
        parse_time(s.as_deref().expect("a time")).expect("RFC 3339")
    }

    fn path_arg(dir: &tempfile::TempDir) -> String {
        dir.path().display().to_string()
    }

    /// Whether the process is gone (or only a zombie).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn a_run_can_be_spawned() {
        fn spawnable<T: Send>(_: &T) {}
        let r = good_runbook();
        let ctx = context();
        let cancel = CancellationToken::new();
        let fut = run(&r, &ctx, hooks(), &cancel, |_| {});
        spawnable(&fut);
    }

    #[tokio::test]
    async fn groups_run_in_order_after_their_delay_and_hooks_get_their_document() {
        let out = tempfile::tempdir().expect("tempdir");
        let log = |vm_name: &str, disks: &[&str]| {
            vm(
                vm_name,
                disks,
                command(&["log.sh", &path_arg(&out), "0"], 60),
            )
        };
        let mut a1 = log("a1", &["d1", "d2"]);
        a1.ips = strings(&["10.10.10.96", "10.20.0.9"]);
        let mut b = group("B", None, vec![log("b1", &["d3"])]);
        b.delay_seconds = 1;
        let runbook = Runbook {
            groups: vec![
                group("A", None, vec![a1]),
                b,
                group("C", None, vec![log("c1", &["d4", "d5"])]),
            ],
            reip: vec![rule("10.10.10.*", "192.168.10.*")],
        };
        assert_eq!(runbook.validate(&strings(&DISKS), hooks()), Ok(()));

        let (outcome, seen) = run_seen(&runbook, &CancellationToken::new()).await;

        assert_eq!(outcome.failed, None);
        for s in &outcome.steps {
            assert_eq!(s.state, StepState::Succeeded, "{s:?}");
            assert_eq!(s.exit_code, Some(0));
        }
        let log = std::fs::read_to_string(out.path().join("log")).expect("log");
        assert_eq!(
            log,
            "start a1\nend a1\nstart b1\nend b1\nstart c1\nend c1\n"
        );
        let (a, b, c) = (
            step(&outcome, "a1"),
            step(&outcome, "b1"),
            step(&outcome, "c1"),
        );
        assert!(
            time(&b.started) - time(&a.finished) >= 1_000_000_000,
            "B waited its delay"
        );
        assert!(time(&c.started) >= time(&b.finished));
        assert!(
            seen.iter()
                .any(|steps| steps[0].state == StepState::Succeeded
                    && steps[1].state == StepState::Waiting),
            "B was reported waiting"
        );

        let input: Value =
            serde_json::from_slice(&std::fs::read(out.path().join("a1.json")).expect("input"))
                .expect("JSON");
        assert_eq!(
            input,
            json!({
                "domain": "erp",
                "mode": "planned",
                "job_id": "job-0123456789abcdef",
                "point": {"seq": 42, "time": "2026-11-22T10:42:17Z"},
                "group": "A",
                "vm": "a1",
                "disks": [
                    {"name": "d1", "path": "/srv/recovery/erp/d1.img"},
                    {"name": "d2", "path": "/srv/recovery/erp/d2.img"}
                ],
                "ips": [
                    {"source": "10.10.10.96", "target": "192.168.10.96"},
                    {"source": "10.20.0.9", "target": null}
                ],
                "reip": [{"source": "10.10.10.*", "target": "192.168.10.*"}]
            })
        );
        let input: Value =
            serde_json::from_slice(&std::fs::read(out.path().join("c1.json")).expect("input"))
                .expect("JSON");
        assert_eq!(input["group"], "C");
        assert_eq!(input["ips"], json!([]));
        assert_eq!(input["disks"][1]["path"], "/srv/recovery/erp/d5.img");
    }

    #[tokio::test]
    async fn a_failed_hook_stops_the_groups_not_yet_started() {
        let out = tempfile::tempdir().expect("tempdir");
        let ok = || command(&["log.sh", &path_arg(&out), "0.3"], 60);
        // Independent of everything, but still in its delay when B fails.
        let mut late = group("D", Some(&[]), vec![vm("d1", &["d5"], ok())]);
        late.delay_seconds = 20;
        let runbook = Runbook {
            groups: vec![
                group("A", None, vec![vm("a1", &["d1"], ok())]),
                group(
                    "B",
                    None,
                    vec![
                        vm("b1", &["d2"], command(&["fail.sh"], 60)),
                        vm("b2", &["d3"], ok()),
                    ],
                ),
                group("C", None, vec![vm("c1", &["d4"], ok())]),
                late,
            ],
            reip: Vec::new(),
        };
        let started = Instant::now();

        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;

        assert!(
            started.elapsed() < Duration::from_secs(15),
            "D's delay was cut short"
        );
        assert_eq!(
            outcome.failed.as_deref(),
            Some("group B, vm b1: hook \"fail.sh\" exited with code 3")
        );
        assert_eq!(step(&outcome, "a1").state, StepState::Succeeded);
        let b1 = step(&outcome, "b1");
        assert_eq!(b1.state, StepState::Failed);
        assert_eq!(b1.exit_code, Some(3));
        let message = b1.message.as_deref().unwrap_or_default();
        assert!(message.contains("disk not bootable"), "{message}");
        assert!(b1.finished.is_some());
        assert_eq!(
            step(&outcome, "b2").state,
            StepState::Succeeded,
            "B's other VM finished"
        );
        let c1 = step(&outcome, "c1");
        assert_eq!(c1.state, StepState::Skipped);
        assert_eq!(c1.started, None);
        // Stopped by b1's failure while b2 still ran.
        assert_eq!(
            c1.message.as_deref(),
            Some("not started: group B, vm b1: hook \"fail.sh\" exited with code 3")
        );
        let d1 = step(&outcome, "d1");
        assert_eq!(d1.state, StepState::Skipped);
        let message = d1.message.as_deref().unwrap_or_default();
        assert!(
            message.starts_with("not started: group B, vm b1"),
            "{message}"
        );
        let log = std::fs::read_to_string(out.path().join("log")).expect("log");
        assert!(!log.contains("c1") && !log.contains("d1"), "{log}");
    }

    #[tokio::test]
    async fn only_the_tail_of_a_long_stderr_is_kept() {
        let runbook = Runbook {
            groups: vec![group(
                "A",
                None,
                vec![vm("a1", &["d1"], command(&["noisy.sh"], 60))],
            )],
            reip: Vec::new(),
        };
        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;
        let a1 = step(&outcome, "a1");
        assert_eq!(a1.exit_code, Some(1));
        let message = a1.message.as_deref().unwrap_or_default();
        assert!(message.ends_with("last words"), "{message}");
        assert!(message.contains("line 199 of"), "{message}");
        assert!(!message.contains("line 0 of"), "{message}");
        assert!(message.len() <= OUTPUT_KEPT + 100, "{}", message.len());
    }

    #[tokio::test]
    async fn a_group_depending_only_on_the_first_runs_beside_its_sibling() {
        let out = tempfile::tempdir().expect("tempdir");
        let sleeping = |secs: &str| command(&["log.sh", &path_arg(&out), secs], 60);
        let runbook = Runbook {
            groups: vec![
                group("A", None, vec![vm("a1", &["d1"], sleeping("0"))]),
                group("B", None, vec![vm("b1", &["d2"], sleeping("1.5"))]),
                group("C", Some(&["A"]), vec![vm("c1", &["d3"], sleeping("0"))]),
            ],
            reip: Vec::new(),
        };

        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;

        assert_eq!(outcome.failed, None);
        let log = std::fs::read_to_string(out.path().join("log")).expect("log");
        let at = |line: &str| log.find(line).expect(line);
        assert!(
            at("end a1") < at("start b1") && at("end a1") < at("start c1"),
            "{log}"
        );
        assert!(at("end c1") < at("end b1"), "C ran while B did: {log}");
        let (b, c) = (step(&outcome, "b1"), step(&outcome, "c1"));
        assert!(time(&c.started) < time(&b.finished));
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed() {
        let out = tempfile::tempdir().expect("tempdir");
        let pid_file = out.path().join("pid");
        let hang = command(&["hang.sh", &pid_file.display().to_string()], 1);
        let runbook = Runbook {
            groups: vec![group("A", None, vec![vm("a1", &["d1"], hang)])],
            reip: Vec::new(),
        };
        let started = Instant::now();

        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;

        assert!(started.elapsed() < Duration::from_secs(20));
        let a1 = step(&outcome, "a1");
        assert_eq!(a1.state, StepState::Failed);
        assert_eq!(a1.message.as_deref(), Some("timed out after 1 s"));
        assert_eq!(a1.exit_code, None);
        assert_eq!(
            outcome.failed.as_deref(),
            Some("group A, vm a1: timed out after 1 s")
        );
        let pid = std::fs::read_to_string(&pid_file).expect("pid");
        assert!(gone(&pid), "the hook {pid} was killed");
    }

    /// A webhook receiver answering `status`; what it received comes out of the channel.
    async fn receiver(status: StatusCode) -> (String, mpsc::UnboundedReceiver<(String, Bytes)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let tx = Arc::new(tx);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((ct, body));
                    (status, "no capacity left")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/hook"), rx)
    }

    #[tokio::test]
    async fn a_webhook_succeeds_on_2xx_and_fails_otherwise() {
        let (url, mut received) = receiver(StatusCode::OK).await;
        let runbook = Runbook {
            groups: vec![group("A", None, vec![vm("a1", &["d1"], webhook(&url))])],
            reip: Vec::new(),
        };
        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;
        assert_eq!(outcome.failed, None);
        let a1 = step(&outcome, "a1");
        assert_eq!(a1.state, StepState::Succeeded);
        assert_eq!(a1.exit_code, None);
        let (content_type, body) = received.recv().await.expect("a request");
        assert_eq!(content_type, "application/json");
        let input: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(input["vm"], "a1");
        assert_eq!(input["disks"][0]["path"], "/srv/recovery/erp/d1.img");

        let (url, _received) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
        let runbook = Runbook {
            groups: vec![
                group("A", None, vec![vm("a1", &["d1"], webhook(&url))]),
                group("B", None, vec![vm("b1", &["d2"], webhook(&url))]),
            ],
            reip: Vec::new(),
        };
        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;
        let a1 = step(&outcome, "a1");
        assert_eq!(a1.state, StepState::Failed);
        let message = a1.message.as_deref().unwrap_or_default();
        assert!(
            message.contains("500") && message.contains("no capacity left"),
            "{message}"
        );
        let failed = outcome.failed.as_deref().unwrap_or_default();
        assert!(
            failed.starts_with("group A, vm a1: the webhook answered 500"),
            "{failed}"
        );
        let b1 = step(&outcome, "b1");
        assert_eq!(b1.state, StepState::Skipped);
        assert_eq!(
            b1.message.as_deref(),
            Some("not started: group A did not succeed")
        );
    }

    #[tokio::test]
    async fn cancelling_kills_running_hooks_and_skips_the_rest() {
        let out = tempfile::tempdir().expect("tempdir");
        let pid_file = out.path().join("pid");
        let mut waiting = group(
            "B",
            None,
            vec![vm(
                "b1",
                &["d2"],
                command(&["log.sh", &path_arg(&out), "0"], 60),
            )],
        );
        waiting.delay_seconds = 30;
        let runbook = Runbook {
            groups: vec![
                group(
                    "A",
                    None,
                    vec![vm(
                        "a1",
                        &["d1"],
                        command(&["log.sh", &path_arg(&out), "0"], 60),
                    )],
                ),
                waiting,
                group("C", None, vec![vm("c1", &["d3"], command(&["log.sh"], 60))]),
                group(
                    "H",
                    Some(&[]),
                    vec![vm(
                        "h1",
                        &["d4"],
                        command(&["hang.sh", &pid_file.display().to_string()], 60),
                    )],
                ),
            ],
            reip: Vec::new(),
        };
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            let (pid_file, log) = (pid_file.clone(), out.path().join("log"));
            tokio::spawn(async move {
                // Once the hang hook runs and B waits its delay.
                loop {
                    let a_done = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("end a1"));
                    if a_done && pid_file.exists() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                cancel.cancel();
            })
        };
        let started = Instant::now();

        let (outcome, _) = run_seen(&runbook, &cancel).await;

        canceller.await.expect("canceller");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(outcome.failed.as_deref(), Some("cancelled"));
        assert_eq!(step(&outcome, "a1").state, StepState::Succeeded);
        for skipped in ["b1", "c1"] {
            let s = step(&outcome, skipped);
            assert_eq!(s.state, StepState::Skipped, "{s:?}");
            assert_eq!(s.message.as_deref(), Some("cancelled"));
        }
        let h1 = step(&outcome, "h1");
        assert_eq!(h1.state, StepState::Failed);
        assert_eq!(h1.message.as_deref(), Some("killed: the job was cancelled"));
        let pid = std::fs::read_to_string(&pid_file).expect("pid");
        assert!(gone(&pid), "the hook {pid} was killed");
    }

    #[tokio::test]
    async fn a_cancelled_job_starts_nothing() {
        let runbook = good_runbook();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let (outcome, _) = run_seen(&runbook, &cancel).await;
        assert_eq!(outcome.failed.as_deref(), Some("cancelled"));
        assert!(outcome.steps.iter().all(|s| s.state == StepState::Skipped));
    }

    #[tokio::test]
    async fn hooks_run_in_the_hooks_directory_with_a_clean_environment() {
        let out = tempfile::tempdir().expect("tempdir");
        let runbook = Runbook {
            groups: vec![group(
                "A",
                None,
                vec![vm("a1", &["d1"], command(&["env.sh", &path_arg(&out)], 60))],
            )],
            reip: Vec::new(),
        };
        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;
        assert_eq!(outcome.failed, None);
        let env = std::fs::read_to_string(out.path().join("env")).expect("env");
        for expected in [
            "TIDEMARK_DOMAIN=erp",
            "TIDEMARK_VM=a1",
            "TIDEMARK_MODE=planned",
        ] {
            assert!(env.lines().any(|l| l == expected), "{expected} in {env}");
        }
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
        // The test process has cargo's variables; the hook must not.
        assert!(!env.lines().any(|l| l.starts_with("CARGO")), "{env}");
        let cwd = std::fs::read_to_string(out.path().join("cwd")).expect("cwd");
        assert_eq!(
            Path::new(cwd.trim()),
            hooks().canonicalize().expect("hooks dir")
        );
    }

    #[tokio::test]
    async fn a_missing_image_fails_the_step_without_running_its_hook() {
        let out = tempfile::tempdir().expect("tempdir");
        let runbook = Runbook {
            groups: vec![group(
                "A",
                None,
                vec![vm(
                    "a1",
                    &["d9"],
                    command(&["log.sh", &path_arg(&out), "0"], 60),
                )],
            )],
            reip: Vec::new(),
        };
        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;
        assert_eq!(
            outcome.failed.as_deref(),
            Some("group A, vm a1: no image of disk \"d9\" was restored")
        );
        assert!(!out.path().join("log").exists());
    }

    #[tokio::test]
    async fn an_invalid_runbook_runs_nothing() {
        let mut runbook = good_runbook();
        runbook.groups[0].depends_on = Some(strings(&["web"]));
        let (outcome, _) = run_seen(&runbook, &CancellationToken::new()).await;
        let failed = outcome.failed.as_deref().unwrap_or_default();
        assert!(
            failed.starts_with("the runbook is invalid: group db"),
            "{failed}"
        );
        assert!(outcome.steps.iter().all(|s| s.state == StepState::Skipped));
    }
}
