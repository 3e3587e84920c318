//! `tidemark failover` and `tidemark replica ...`, through a running service.

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

use super::remote::wait_job;
use crate::cli::{FailoverArgs, ReplicaCommand};
use crate::client::Client;

/// Starts a failover (or completes a replica, `complete`) and waits for its job
/// unless told not to; prints the job, whose `failover` field has every step.
pub async fn failover(client: &Client, a: FailoverArgs, complete: bool) -> anyhow::Result<()> {
    let runbook: Option<Value> = match &a.runbook {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read runbook {}", path.display()))?;
            Some(
                serde_json::from_slice(&text)
                    .with_context(|| format!("runbook {} is not JSON", path.display()))?,
            )
        }
        None => None,
    };
    let primary = a
        .primary
        .as_ref()
        .map(|url| json!({"url": url, "token": a.primary_token}));
    let failback = a.failback.then(|| json!({"dir": a.failback_dir}));
    let mut body = json!({
        "mode": a.mode,
        "point": a.point,
        "queue": a.queue,
        "primary": primary,
        "failback": failback,
        "runbook": runbook,
    });
    let path = if complete {
        format!("/v1/domains/{}/replica/complete", a.domain)
    } else {
        body["dir"] = json!(a.dir);
        format!("/v1/domains/{}/failover", a.domain)
    };
    let job: Value = client.post(&path, &body).await?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the service answered a job without an id"))?
        .to_owned();
    if a.no_wait {
        println!("{job}");
        return Ok(());
    }
    let ended = wait_job(client, &id, "failover").await;
    // The steps say how far a failed failover got: show them either way.
    let job: Value = client.get(&format!("/v1/jobs/{id}")).await?;
    println!("{job}");
    ended.map(|_| ())
}

/// `replica start|status|stop|rollback|resume|complete`.
pub async fn replica(client: &Client, c: ReplicaCommand) -> anyhow::Result<()> {
    let r: Value = match c {
        ReplicaCommand::Start(a) => {
            let direction = if a.failback { "failback" } else { "failover" };
            client
                .post(
                    &format!("/v1/domains/{}/replica", a.domain),
                    &json!({"dir": a.dir, "direction": direction}),
                )
                .await?
        }
        ReplicaCommand::Status(a) => {
            client
                .get(&format!("/v1/domains/{}/replica", a.domain))
                .await?
        }
        ReplicaCommand::Stop(a) => {
            client
                .delete(&format!("/v1/domains/{}/replica", a.domain))
                .await?
        }
        ReplicaCommand::Rollback(a) => {
            client
                .post(
                    &format!("/v1/domains/{}/replica/rollback", a.domain),
                    &json!({"point": a.point}),
                )
                .await?
        }
        ReplicaCommand::Resume(a) => {
            client
                .post(
                    &format!("/v1/domains/{}/replica/resume", a.domain),
                    &json!({}),
                )
                .await?
        }
        ReplicaCommand::Complete(a) => return failover(client, a, true).await,
    };
    println!("{r}");
    Ok(())
}
