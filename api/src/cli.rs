//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// tidemark: disaster-recovery storage — protect disks into a bucket, restore any point in time.
#[derive(Parser, Debug)]
#[command(name = "tidemark", version)]
pub struct Cli {
    /// Data directory: the local store in DIR/store (unless --store), the index in
    /// DIR/index [default: tidemark-data].
    #[arg(long, global = true, env = "TIDEMARK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Object store URL: file:///path, s3://bucket/prefix or az://container/prefix
    /// (options and credentials: see the README); default: DIR/store.
    #[arg(long, global = true, env = "TIDEMARK_STORE")]
    pub store: Option<String>,
    /// Work through a running service at this URL (e.g. http://127.0.0.1:7878) instead
    /// of the local data directory.
    #[arg(long, global = true, env = "TIDEMARK_SERVER")]
    pub server: Option<String>,
    /// Bearer token for --server.
    #[arg(long, global = true, env = "TIDEMARK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The data directory, or its default.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("tidemark-data"))
    }
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replicate the current content of image files or block devices as one new point.
    Protect(ProtectArgs),
    /// List the points of a domain, oldest first.
    Points(PointsArgs),
    /// Restore one disk at a point into a sparse raw image.
    Restore(RestoreArgs),
    /// Maintain the local index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Read every object of a domain and verify it.
    Verify(DomainArg),
    /// Show which site owns a domain (may append to its log), or take it over.
    Owner(OwnerArgs),
    /// Run the service: the HTTP API, restore jobs, and tailing of other sites' logs.
    Serve(ServeArgs),
    /// Fail a domain over to the service's site (with --server): regular, planned,
    /// forced or test.
    Failover(FailoverArgs),
    /// Warm replicas at the service's site (with --server): continuous failover and
    /// failback.
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// At the primary (with --server): commit what was pushed and stop taking writes,
    /// before a planned failover elsewhere.
    Release(DomainArg),
    /// Show a domain as the service sees it (with --server): owner, mode, RPO, replica.
    Status(DomainArg),
    /// Collect garbage of a domain this site owns, within its retention policy.
    Gc(GcArgs),
}

/// Arguments of `gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
    /// Only report what a run would do; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `failover` and `replica complete`.
#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
    /// regular, planned, forced or test.
    #[arg(long, default_value = "regular")]
    pub mode: String,
    /// latest, last-good, a seq, marker:NAME or an RFC 3339 time.
    #[arg(long, default_value = "latest")]
    pub point: String,
    /// With a warm replica: apply or discard the points it has not applied.
    #[arg(long, default_value = "apply")]
    pub queue: String,
    /// Without a replica: image directory, relative to the recovery directory.
    #[arg(long)]
    pub dir: Option<String>,
    /// Planned: URL of the primary's service.
    #[arg(long)]
    pub primary: Option<String>,
    /// Planned: a write token of the primary's service.
    #[arg(long, env = "TIDEMARK_PRIMARY_TOKEN", hide_env_values = true)]
    pub primary_token: Option<String>,
    /// Planned: have the primary follow the log back (continuous failback).
    #[arg(long)]
    pub failback: bool,
    /// Planned with --failback: the primary's image directory.
    #[arg(long, requires = "failback")]
    pub failback_dir: Option<String>,
    /// A runbook (JSON: groups of VMs in boot order, hooks, re-IP rules).
    #[arg(long)]
    pub runbook: Option<PathBuf>,
    /// Answer with the job at once instead of waiting for it to end.
    #[arg(long)]
    pub no_wait: bool,
}

/// `replica` subcommands.
#[derive(Subcommand, Debug)]
pub enum ReplicaCommand {
    /// Start following a domain into warm images.
    Start(ReplicaStartArgs),
    /// Show a replica: the point its images hold and its lag.
    Status(DomainArg),
    /// Stop following and delete the images (a completed failover's images stay).
    Stop(DomainArg),
    /// Move the images to another point (only the changed blocks) and pause there.
    Rollback(ReplicaRollbackArgs),
    /// Follow the log again after a rollback.
    Resume(DomainArg),
    /// Complete continuous failover: apply or discard the queue and take ownership.
    Complete(FailoverArgs),
}

/// Arguments of `replica start`.
#[derive(Args, Debug)]
pub struct ReplicaStartArgs {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
    /// Image directory, relative to the recovery directory [default: replicas/DOMAIN].
    #[arg(long)]
    pub dir: Option<String>,
    /// This is continuous failback (the site the domain failed over from).
    #[arg(long)]
    pub failback: bool,
}

/// Arguments of `replica rollback`.
#[derive(Args, Debug)]
pub struct ReplicaRollbackArgs {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
    /// last-good, a seq, marker:NAME or an RFC 3339 time.
    #[arg(long)]
    pub point: String,
}

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (see the README); without one, embedded defaults.
    #[arg(long, env = "TIDEMARK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the file and TIDEMARK_LISTEN).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

/// Arguments of `owner`.
#[derive(Args, Debug)]
pub struct OwnerArgs {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
    /// Make this site the owner: bump the generation and write a fence segment, after
    /// which the previous owner's writes fail as fenced.
    #[arg(long)]
    pub take_over: bool,
    /// Take over only if the current generation is this one (as shown by `owner`).
    #[arg(long, requires = "take_over")]
    pub expected_generation: Option<u64>,
}

/// `--domain NAME`.
#[derive(Args, Debug)]
pub struct DomainArg {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
}

/// Arguments of `protect`.
#[derive(Args, Debug)]
pub struct ProtectArgs {
    /// Domain name (created on first use).
    #[arg(long)]
    pub domain: String,
    /// A disk as NAME=PATH (image file or block device); repeat for each disk.
    #[arg(long = "disk", required = true, value_parser = parse_disk)]
    pub disks: Vec<(String, PathBuf)>,
    /// Name the new point with this marker.
    #[arg(long)]
    pub marker: Option<String>,
    /// The marker names a known-good (application-consistent, tested) point.
    #[arg(long, requires = "marker")]
    pub known_good: bool,
}

fn parse_disk(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PATH"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("{s:?}: expected NAME=PATH"));
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

/// Arguments of `points`.
#[derive(Args, Debug)]
pub struct PointsArgs {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Domain name.
    #[arg(long)]
    pub domain: String,
    /// Disk name.
    #[arg(long)]
    pub disk: String,
    /// latest, a seq, an RFC 3339 time (newest point at or before it), marker:NAME or last-good.
    #[arg(long, default_value = "latest")]
    pub point: String,
    /// Where to write the image (replaced atomically when complete); with --server, a
    /// path relative to the service's recovery directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Ranged reads in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print a JSON report of the restore on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `index` subcommands.
#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Forget the domain's index and re-derive it from the bucket.
    Rebuild(DomainArg),
}
