//! The CLI commands, each working on the local data directory.

mod failover;
mod gc;
mod owner;
mod points;
mod protect;
mod remote;
mod restore;
mod serve;

use tidemark_pitr_index::sync;

use crate::cli::{Cli, Command, IndexCommand};
use crate::site::Site;

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir();
    let command = match cli.command {
        Command::Serve(a) => return serve::run(cli.data_dir, cli.store, a).await,
        other => other,
    };
    if let Some(server) = &cli.server {
        let client = crate::client::Client::new(server, cli.token.as_deref())?;
        return remote::run(&client, command).await;
    }
    if let Command::Failover(_) | Command::Replica(_) | Command::Release(_) | Command::Status(_) =
        &command
    {
        return Err(needs_server());
    }
    let site = Site::open(&data_dir, cli.store.as_deref(), None)?;
    match command {
        Command::Serve(a) => serve::run(cli.data_dir, cli.store, a).await,
        Command::Protect(a) => protect::run(&site, a).await,
        Command::Points(a) => points::run(&site, a).await,
        Command::Restore(a) => restore::run(&site, a).await,
        Command::Owner(a) => owner::run(&site, a).await,
        Command::Gc(a) => gc::run(&site, data_dir, a).await,
        Command::Failover(_) | Command::Replica(_) | Command::Release(_) | Command::Status(_) => {
            Err(needs_server())
        }
        Command::Index(IndexCommand::Rebuild(a)) => {
            let r = sync::rebuild(&site.store, &site.index, &a.domain).await?;
            println!(
                "{}",
                serde_json::json!({"domain": a.domain, "segments": r.segments, "last_seq": r.last_seq})
            );
            Ok(())
        }
        Command::Verify(a) => {
            let r = tidemark_rehydrator::verify::verify_domain(&site.store, &site.index, &a.domain)
                .await?;
            let damaged: Vec<_> = r
                .damaged
                .iter()
                .map(|(k, why)| serde_json::json!({"key": k, "error": why}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"domain": a.domain, "objects": r.objects, "bytes": r.bytes, "damaged": damaged})
            );
            if let Some((key, why)) = r.damaged.first() {
                return Err(tidemark_rehydrator::RestoreError::Corrupt {
                    key: key.clone(),
                    reason: format!("{why} ({} damaged object(s) in all)", r.damaged.len()),
                }
                .into());
            }
            Ok(())
        }
    }
}

/// The refusal of a command that only a running service can carry out.
fn needs_server() -> anyhow::Error {
    tidemark_ingest::IngestError::Invalid(
        "failover, replica, release and status work through a running service: give --server URL (and --token)".into(),
    )
    .into()
}

/// Makes sure the index knows the domain, picking it up from the bucket if another
/// process or site created it, and indexes segments committed since.
pub async fn refresh(site: &Site, domain: &str) -> anyhow::Result<tidemark_format::DomainRecord> {
    let rec = tidemark_ingest::domain::open_domain(&site.ingest(), domain).await?;
    sync::catch_up(&site.store, &site.index, &rec).await?;
    Ok(rec)
}

/// A progress bar of bytes on stderr, when stderr is a terminal.
pub fn progress_bar() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}
