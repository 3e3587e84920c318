//! The service's configuration: embedded defaults, a TOML file, environment overrides.
//!
//! Precedence: environment over file over defaults, so that a container or a unit
//! file can change one setting without editing the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Where the service listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// Everything `tidemark serve` reads at start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Data directory: the index, the site id, jobs, and the local store by default.
    pub data_dir: PathBuf,
    /// Object store URL (`file://`, `s3://`, `az://`); default: DATA_DIR/store.
    pub store: Option<String>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// This site's id; default: generated once and kept in DATA_DIR/site-id.
    pub site_id: Option<String>,
    /// Restores and test copies are written only below this directory;
    /// default: DATA_DIR/recovery.
    pub recovery_dir: Option<PathBuf>,
    /// Bearer tokens; with none, an admin token is generated into DATA_DIR/admin-token.
    pub tokens: Vec<TokenConfig>,
    /// What GC keeps of domains without a policy of their own.
    pub retention: Retention,
    /// Garbage collection: its schedule and tuning.
    pub gc: GcTuning,
    /// The write path's tuning.
    pub ingest: IngestTuning,
    /// Restore jobs' tuning.
    pub restore: RestoreTuning,
    /// How a recovery site follows the logs of domains other sites write.
    pub tail: TailTuning,
    /// Warm replicas and failover.
    pub failover: FailoverTuning,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            data_dir: PathBuf::from("tidemark-data"),
            store: None,
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7878))),
            site_id: None,
            recovery_dir: None,
            tokens: Vec::new(),
            retention: Retention::default(),
            gc: GcTuning::default(),
            ingest: IngestTuning::default(),
            restore: RestoreTuning::default(),
            tail: TailTuning::default(),
            failover: FailoverTuning::default(),
        }
    }
}

/// One bearer token and what it may do.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it, for the logs (the token itself is never logged).
    pub name: String,
    /// The secret.
    pub token: String,
    /// `write` (everything) or `read` (GET only).
    #[serde(default)]
    pub access: Access,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// What a token allows.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// GET requests only.
    Read,
    /// Every request.
    #[default]
    Write,
}

/// Which points GC keeps of domains without a policy of their own.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Every point of this many recent hours is kept.
    pub pitr_window_hours: u32,
    /// Then the newest point of each of this many hours,
    pub hourly: u32,
    /// days,
    pub daily: u32,
    /// weeks,
    pub weekly: u32,
    /// and months.
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            pitr_window_hours: 24,
            hourly: 48,
            daily: 14,
            weekly: 8,
            monthly: 12,
        }
    }
}

impl Retention {
    /// As the policy GC applies.
    pub fn policy(&self) -> tidemark_format::RetentionPolicy {
        tidemark_format::RetentionPolicy {
            pitr_window_secs: u64::from(self.pitr_window_hours) * 3600,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            pinned: Vec::new(),
        }
    }
}

/// Garbage collection (DESIGN.md section 9): when it runs on its own and how.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcTuning {
    /// Seconds between two scheduled runs over the domains this site owns (0: none;
    /// `POST /v1/domains/{d}/gc` still runs one).
    pub interval_secs: u64,
    /// Seconds what a run superseded is kept for readers still at it.
    pub grace_secs: u64,
    /// Seconds an object nothing references (a crashed commit's) is kept before it
    /// is deleted; longer than any commit takes.
    pub orphan_grace_secs: u64,
    /// A pack with at least this fraction of its bytes dead is repacked.
    pub repack_dead_fraction: f64,
    /// The oldest kept point becomes an image once this many segments lie at or below it.
    pub image_chain: usize,
    /// Seconds a lease (a restore's, a test copy's, a replica's point) lasts unless
    /// renewed; renewed every third of it.
    pub lease_ttl_secs: u64,
}

impl Default for GcTuning {
    fn default() -> Self {
        GcTuning {
            interval_secs: 3600,
            grace_secs: 3600,
            orphan_grace_secs: 3600,
            repack_dead_fraction: 0.5,
            image_chain: 16,
            lease_ttl_secs: 600,
        }
    }
}

/// Tuning of the write path. Pushes are committed by group commit (see `service::pipe`),
/// so there is no seal-age timer: a point is as old as one commit at most.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestTuning {
    /// Largest segment, bytes (also the largest write batch).
    pub seal_bytes: u64,
    /// Bytes of pushed writes waiting for a commit before new pushes wait.
    pub max_queued_bytes: u64,
    /// zstd level for new chunks.
    pub zstd_level: i32,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
}

impl Default for IngestTuning {
    fn default() -> Self {
        let d = tidemark_ingest::IngestConfig::default();
        IngestTuning {
            seal_bytes: d.seal_bytes,
            max_queued_bytes: 512 << 20,
            zstd_level: d.zstd_level,
            upload_concurrency: d.upload_concurrency,
        }
    }
}

/// Tuning of restore jobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreTuning {
    /// Ranged reads in flight per restore.
    pub concurrency: usize,
    /// Jobs running at once; the others wait in the queue.
    pub max_jobs: usize,
    /// Pace each restore's reads to at most this many bytes per second (0: unpaced).
    pub max_bytes_per_sec: u64,
    /// Ended jobs kept (records and status); older ones are forgotten.
    pub keep_ended_jobs: usize,
}

impl Default for RestoreTuning {
    fn default() -> Self {
        RestoreTuning {
            concurrency: 8,
            max_jobs: 2,
            max_bytes_per_sec: 0,
            keep_ended_jobs: 1000,
        }
    }
}

/// How often the log of every domain in the store is read for new segments.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailTuning {
    /// Milliseconds between two passes over the store's domains.
    pub interval_ms: u64,
}

impl Default for TailTuning {
    fn default() -> Self {
        TailTuning { interval_ms: 1000 }
    }
}

/// Warm replicas (continuous failover and failback) and failover runbooks.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverTuning {
    /// Milliseconds between two looks of a replica at its domain's log: the floor of
    /// its lag.
    pub replica_poll_ms: u64,
    /// The only directory runbook hooks may be run from; default: DATA_DIR/hooks.
    pub hooks_dir: Option<PathBuf>,
    /// Seconds a planned failover waits for the primary's last point to reach this
    /// site's index.
    pub catch_up_timeout_secs: u64,
}

impl Default for FailoverTuning {
    fn default() -> Self {
        FailoverTuning {
            replica_poll_ms: 200,
            hooks_dir: None,
            catch_up_timeout_secs: 60,
        }
    }
}

impl ServiceConfig {
    /// Reads the file (if any), then applies `TIDEMARK_*` environment overrides.
    pub fn load(file: Option<&Path>) -> anyhow::Result<ServiceConfig> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config {}", path.display()))?
            }
            None => ServiceConfig::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Overrides from the environment (`get` reads a variable).
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(v) = get("TIDEMARK_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("TIDEMARK_STORE") {
            self.store = Some(v);
        }
        if let Some(v) = get("TIDEMARK_LISTEN") {
            self.listen = v
                .parse()
                .with_context(|| format!("TIDEMARK_LISTEN={v:?} is not an address"))?;
        }
        if let Some(v) = get("TIDEMARK_SITE_ID") {
            self.site_id = Some(v);
        }
        if let Some(v) = get("TIDEMARK_RECOVERY_DIR") {
            self.recovery_dir = Some(v.into());
        }
        if let Some(v) = get("TIDEMARK_TOKEN") {
            self.tokens.push(TokenConfig {
                name: "TIDEMARK_TOKEN".into(),
                token: v,
                access: Access::Write,
            });
        }
        if let Some(v) = get("TIDEMARK_READ_TOKEN") {
            self.tokens.push(TokenConfig {
                name: "TIDEMARK_READ_TOKEN".into(),
                token: v,
                access: Access::Read,
            });
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        for t in &self.tokens {
            if t.token.len() < 16 {
                bail!("token {:?} is shorter than 16 characters", t.name);
            }
        }
        if let Some(site) = &self.site_id {
            tidemark_format::names::validate_name("site", site)?;
        }
        if self.ingest.seal_bytes < 1 << 20 || self.ingest.seal_bytes > 1 << 30 {
            bail!("ingest.seal_bytes must be between 1 MiB and 1 GiB");
        }
        if self.ingest.max_queued_bytes < self.ingest.seal_bytes {
            bail!("ingest.max_queued_bytes must be at least ingest.seal_bytes");
        }
        if self.restore.concurrency == 0 || self.restore.max_jobs == 0 {
            bail!("restore.concurrency and restore.max_jobs must be positive");
        }
        if self.tail.interval_ms == 0 {
            bail!("tail.interval_ms must be positive");
        }
        if self.failover.replica_poll_ms == 0 || self.failover.catch_up_timeout_secs == 0 {
            bail!("failover.replica_poll_ms and failover.catch_up_timeout_secs must be positive");
        }
        let fraction = self.gc.repack_dead_fraction;
        if !(fraction > 0.0 && fraction <= 1.0) {
            bail!("gc.repack_dead_fraction must be above 0 and at most 1");
        }
        if self.gc.image_chain < 2 {
            bail!("gc.image_chain must be at least 2");
        }
        // Renewed every third of it: below 3 seconds a slow store request would let
        // a lease lapse between renewals.
        if self.gc.lease_ttl_secs < 3 {
            bail!("gc.lease_ttl_secs must be at least 3");
        }
        Ok(())
    }

    /// The write path's configuration.
    pub fn ingest_config(&self) -> tidemark_ingest::IngestConfig {
        tidemark_ingest::IngestConfig {
            seal_bytes: self.ingest.seal_bytes,
            zstd_level: self.ingest.zstd_level,
            upload_concurrency: self.ingest.upload_concurrency.max(1),
            ..tidemark_ingest::IngestConfig::default()
        }
    }

    /// Largest push body accepted: a segment's worth of data and its write headers.
    pub fn max_push_body(&self) -> u64 {
        self.ingest.seal_bytes + (1 << 20)
    }

    /// GC's configuration; rewrites stage blocks in DATA_DIR/gc-scratch.
    pub fn gc_config(&self) -> tidemark_gc::GcConfig {
        let mut cfg = tidemark_gc::GcConfig::new(self.gc_scratch_dir());
        cfg.grace = Duration::from_secs(self.gc.grace_secs);
        cfg.orphan_grace = Duration::from_secs(self.gc.orphan_grace_secs);
        cfg.repack_dead_fraction = self.gc.repack_dead_fraction;
        cfg.rules.image_chain = self.gc.image_chain;
        // GC's reads are not paced like restores': a paced run would hold the
        // domain's commit for as long.
        cfg.restore.concurrency = self.restore.concurrency;
        cfg
    }

    /// Where GC stages rewrites.
    pub fn gc_scratch_dir(&self) -> PathBuf {
        self.data_dir.join("gc-scratch")
    }

    /// How long a lease lasts unless renewed.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.gc.lease_ttl_secs)
    }

    /// Where runbook hooks are installed.
    pub fn hooks_dir(&self) -> PathBuf {
        self.failover
            .hooks_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("hooks"))
    }

    /// Where restores go.
    pub fn recovery_dir(&self) -> PathBuf {
        self.recovery_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("recovery"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let mut cfg: ServiceConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            store = "file:///tmp/x"
            [[tokens]]
            name = "ops"
            token = "0123456789abcdef"
            access = "read"
            [restore]
            max_jobs = 3
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.restore.max_jobs, 3);
        assert_eq!(cfg.restore.concurrency, 8);
        assert_eq!(cfg.tokens[0].access, Access::Read);
        cfg.apply_env(|k| match k {
            "TIDEMARK_LISTEN" => Some("127.0.0.1:9001".into()),
            "TIDEMARK_TOKEN" => Some("fedcba9876543210".into()),
            _ => None,
        })
        .expect("overrides");
        assert_eq!(cfg.listen.port(), 9001);
        assert_eq!(cfg.store.as_deref(), Some("file:///tmp/x"));
        assert_eq!(cfg.tokens.len(), 2);
        cfg.validate().expect("valid");
    }

    #[test]
    fn gc_section_and_default_policy() {
        let cfg: ServiceConfig = toml::from_str(
            "[gc]\ninterval_secs = 0\ngrace_secs = 5\nimage_chain = 4\n[retention]\npitr_window_hours = 2\nhourly = 3",
        )
        .expect("parses");
        cfg.validate().expect("valid");
        assert_eq!(cfg.gc.interval_secs, 0);
        assert_eq!(cfg.gc.orphan_grace_secs, 3600);
        let gc = cfg.gc_config();
        assert_eq!(gc.grace, Duration::from_secs(5));
        assert_eq!(gc.rules.image_chain, 4);
        assert!(gc.scratch_dir.ends_with("gc-scratch"));
        let p = cfg.retention.policy();
        assert_eq!((p.pitr_window_secs, p.hourly, p.daily), (7200, 3, 14));
        for bad in [
            "[gc]\nrepack_dead_fraction = 0.0",
            "[gc]\nrepack_dead_fraction = 1.5",
            "[gc]\nimage_chain = 1",
            "[gc]\nlease_ttl_secs = 0",
        ] {
            let cfg: ServiceConfig = toml::from_str(bad).expect("parses");
            assert!(cfg.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<ServiceConfig>("[gc]\nintervall_secs = 1").is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_short_tokens() {
        assert!(toml::from_str::<ServiceConfig>("lisen = \"x\"").is_err());
        let cfg: ServiceConfig =
            toml::from_str("[[tokens]]\nname = \"a\"\ntoken = \"short\"").expect("parses");
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let t = TokenConfig {
            name: "ops".into(),
            token: "very-secret-token-value".into(),
            access: Access::Write,
        };
        assert!(!format!("{t:?}").contains("very-secret"));
    }
}
