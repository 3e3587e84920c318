//! The CLI commands through a running service (`--server`), so operators use one tool
//! wherever the data directory is.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tidemark_format::BLOCK_SIZE;

use crate::cli::{Command, IndexCommand, OwnerArgs, PointsArgs, ProtectArgs, RestoreArgs};
use crate::client::{Client, RemoteError};
use crate::http::{encode_writes, WireData};

/// Bytes read from a disk at a time.
const READ_BYTES: usize = 4 << 20;
/// Bytes (zeroed ranges included) sent per batch.
const BATCH_BYTES: u64 = 16 << 20;
/// Batches in flight.
const IN_FLIGHT: usize = 4;

/// Runs one command through the service.
pub async fn run(client: &Client, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Points(a) => points(client, a).await,
        Command::Restore(a) => restore(client, a).await,
        Command::Protect(a) => protect(client, a).await,
        Command::Owner(a) => owner(client, a).await,
        Command::Verify(a) => {
            let r: Value = client
                .post(&format!("/v1/domains/{}/verify", a.domain), &json!({}))
                .await?;
            println!("{r}");
            if let Some(d) = r["damaged"].as_array().and_then(|d| d.first()) {
                return Err(RemoteError {
                    status: 500,
                    code: "corrupt".into(),
                    message: format!("{}: {}", d["key"], d["error"]),
                }
                .into());
            }
            Ok(())
        }
        Command::Index(IndexCommand::Rebuild(a)) => {
            let r: Value = client
                .post(
                    &format!("/v1/domains/{}/index/rebuild", a.domain),
                    &json!({}),
                )
                .await?;
            println!("{r}");
            Ok(())
        }
        Command::Failover(a) => super::failover::failover(client, a, false).await,
        Command::Replica(c) => super::failover::replica(client, c).await,
        Command::Release(a) => {
            let r: Value = client
                .post(&format!("/v1/domains/{}/release", a.domain), &json!({}))
                .await?;
            println!("{r}");
            Ok(())
        }
        Command::Status(a) => {
            let r: Value = client.get(&format!("/v1/domains/{}", a.domain)).await?;
            println!("{r}");
            Ok(())
        }
        Command::Gc(a) => super::gc::remote(client, a).await,
        Command::Serve(_) => bail!("serve does not take --server"),
    }
}

async fn points(client: &Client, a: PointsArgs) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let path = match after {
            Some(s) => format!("/v1/domains/{}/points?after={s}", a.domain),
            None => format!("/v1/domains/{}/points", a.domain),
        };
        let page: Value = client.get(&path).await?;
        all.extend(page["points"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if a.json {
        println!("{}", Value::Array(all));
    } else {
        println!(
            "{:>8}  {:<32}  {:>14}  markers",
            "seq", "time", "stored bytes"
        );
        for p in &all {
            let markers: Vec<String> = p["markers"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| {
                            let name = m["name"].as_str().unwrap_or_default();
                            if m["known_good"].as_bool() == Some(true) {
                                format!("{name} (good)")
                            } else {
                                name.to_owned()
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "{:>8}  {:<32}  {:>14}  {}",
                p["seq"],
                p["time"].as_str().unwrap_or_default(),
                p["stored_bytes"],
                markers.join(", ")
            );
        }
    }
    Ok(())
}

async fn restore(client: &Client, a: RestoreArgs) -> anyhow::Result<()> {
    let out = a
        .out
        .to_str()
        .ok_or_else(|| anyhow!("--out must be UTF-8 with --server"))?;
    let job: Value = client
        .post(
            "/v1/restores",
            &json!({
                "domain": a.domain,
                "point": a.point,
                "targets": [{"disk": a.disk, "path": out}],
                "overwrite": true,
            }),
        )
        .await?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the service answered a job without an id"))?
        .to_owned();
    let job = wait_job(client, &id, "restore").await?;
    if a.json {
        println!(
            "{}",
            json!({
                "domain": a.domain, "disk": a.disk, "seq": job["seq"], "time": job["point_time"],
                "out": job["disks"][0]["path"], "data_bytes": job["bytes_total"],
                "resumed_bytes": job["resumed_bytes"], "job": id,
            })
        );
    }
    Ok(())
}

/// Polls a job until it ends, with a progress bar of its bytes; a job that did not
/// succeed is an error with its code.
pub(super) async fn wait_job(client: &Client, id: &str, what: &str) -> anyhow::Result<Value> {
    let bar = super::progress_bar();
    let job = loop {
        let job: Value = client.get(&format!("/v1/jobs/{id}")).await?;
        if let Some(bar) = &bar {
            bar.set_length(job["bytes_total"].as_u64().unwrap_or(0));
            bar.set_position(job["bytes_done"].as_u64().unwrap_or(0));
        }
        match job["state"].as_str() {
            Some("succeeded") | Some("failed") | Some("cancelled") => break job,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match job["state"].as_str() {
        Some("succeeded") => Ok(job),
        Some("cancelled") => bail!("{what} job {id} was cancelled"),
        _ => Err(RemoteError {
            status: 500,
            code: job["error"]["code"]
                .as_str()
                .unwrap_or("internal")
                .to_owned(),
            message: job["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the {what} failed")),
        }
        .into()),
    }
}

async fn owner(client: &Client, a: OwnerArgs) -> anyhow::Result<()> {
    if a.take_over {
        let r: Value = client
            .post(
                &format!("/v1/domains/{}/take-over", a.domain),
                &json!({"expected_generation": a.expected_generation}),
            )
            .await?;
        println!("{r}");
        return Ok(());
    }
    let d: Value = client.get(&format!("/v1/domains/{}", a.domain)).await?;
    println!(
        "{}",
        json!({
            "domain": a.domain,
            "site": d["owner"]["site"],
            "generation": d["owner"]["generation"].as_u64().unwrap_or(0),
            "since": d["owner"]["since"],
            "owned_here": d["owned_here"],
        })
    );
    Ok(())
}

/// The domain's disks as (name, size), creating the domain if it does not exist.
async fn domain_for(
    client: &Client,
    domain: &str,
    disks: &[(String, u64)],
) -> anyhow::Result<(Value, bool)> {
    match client.get::<Value>(&format!("/v1/domains/{domain}")).await {
        Ok(d) => Ok((d, false)),
        Err(e)
            if e.downcast_ref::<RemoteError>()
                .is_some_and(|r| r.status == 404) =>
        {
            let body = json!({
                "name": domain,
                "disks": disks.iter().map(|(n, s)| json!({"name": n, "size": s})).collect::<Vec<_>>(),
            });
            let d: Value = client.post("/v1/domains", &body).await?;
            Ok((d, true))
        }
        Err(e) => Err(e),
    }
}

/// Sends the current content of each disk as writes: data runs as data, zero runs as
/// zero flags (skipped altogether on a new domain, whose blocks all read as zero).
async fn protect(client: &Client, a: ProtectArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for (name, path) in &a.disks {
        let mut f = File::open(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let size = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(0))?;
        if size == 0 || !size.is_multiple_of(BLOCK_SIZE as u64) {
            return Err(RemoteError {
                status: 400,
                code: "invalid_input".into(),
                message: format!(
                    "{}: size {size} is not a positive multiple of {BLOCK_SIZE}",
                    path.display()
                ),
            }
            .into());
        }
        files.push((name.clone(), f, size));
    }
    let sizes: Vec<_> = files.iter().map(|(n, _, s)| (n.clone(), *s)).collect();
    let (dom, created) = domain_for(client, &a.domain, &sizes).await?;
    let fresh = created || dom["points"].as_u64() == Some(0);
    let path = format!("/v1/domains/{}/writes", a.domain);
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut zeroed, mut batches) = (0u64, 0u64, 0u64);
    for (name, mut f, size) in files {
        let disk = dom["disks"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["name"] == name.as_str()))
            .ok_or_else(|| RemoteError {
                status: 409,
                code: "conflict".into(),
                message: format!("domain {} has no disk {name:?}", a.domain),
            })?;
        if disk["size"].as_u64() != Some(size) {
            return Err(RemoteError {
                status: 409,
                code: "conflict".into(),
                message: format!(
                    "disk {name} of domain {} is {} bytes but the image has {size}",
                    a.domain, disk["size"]
                ),
            }
            .into());
        }
        let index = disk["index"].as_u64().unwrap_or(0) as u32;
        let mut buf = vec![0u8; READ_BYTES];
        let mut offset = 0u64;
        let mut batch: Vec<(u64, Option<Vec<u8>>, u64)> = Vec::new();
        let mut batch_bytes = 0u64;
        while offset < size {
            let n = READ_BYTES.min((size - offset) as usize);
            f.read_exact(&mut buf[..n])?;
            for (at, data, len) in runs(&buf[..n], offset) {
                if data.is_none() {
                    zeroed += len;
                    if fresh {
                        continue;
                    }
                } else {
                    sent += len;
                }
                batch_bytes += len;
                batch.push((at, data, len));
                if batch_bytes >= BATCH_BYTES {
                    if in_flight.len() >= IN_FLIGHT {
                        in_flight.next().await.transpose()?;
                    }
                    in_flight.push(push(client, &path, index, std::mem::take(&mut batch)));
                    batches += 1;
                    batch_bytes = 0;
                }
            }
            offset += n as u64;
        }
        if !batch.is_empty() {
            in_flight.push(push(client, &path, index, batch));
            batches += 1;
        }
    }
    while let Some(r) = in_flight.next().await {
        r?;
    }
    let sealed: Value = match &a.marker {
        Some(m) => {
            client
                .post(
                    &format!("/v1/domains/{}/markers", a.domain),
                    &json!({"name": m, "known_good": a.known_good}),
                )
                .await?
        }
        None => {
            client
                .post(&format!("/v1/domains/{}/flush", a.domain), &json!({}))
                .await?
        }
    };
    println!(
        "{}",
        json!({
            "domain": a.domain,
            "seq": sealed["point"]["seq"],
            "time": sealed["point"]["time"],
            "sent_bytes": sent,
            "zeroed_bytes": zeroed,
            "batches": batches,
        })
    );
    Ok(())
}

async fn push(
    client: &Client,
    path: &str,
    disk: u32,
    batch: Vec<(u64, Option<Vec<u8>>, u64)>,
) -> anyhow::Result<Value> {
    let body = encode_writes(batch.iter().map(|(at, data, len)| {
        let d = match data {
            Some(d) => WireData::Bytes(d),
            None => WireData::Zero(*len),
        };
        (disk, *at, d, 0)
    }));
    client.post_bytes(path, body).await
}

/// Splits a window at `base` into runs of zero blocks and runs of data blocks.
fn runs(buf: &[u8], base: u64) -> Vec<(u64, Option<Vec<u8>>, u64)> {
    let bs = BLOCK_SIZE as usize;
    let mut out: Vec<(u64, Option<Vec<u8>>, u64)> = Vec::new();
    for (i, block) in buf.chunks(bs).enumerate() {
        let zero = block.iter().all(|b| *b == 0);
        let at = base + (i * bs) as u64;
        match out.last_mut() {
            Some((_, None, len)) if zero => *len += bs as u64,
            Some((_, Some(d), len)) if !zero => {
                d.extend_from_slice(block);
                *len += bs as u64;
            }
            _ => out.push((at, (!zero).then(|| block.to_vec()), bs as u64)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_into_zero_and_data_runs() {
        let bs = BLOCK_SIZE as usize;
        let mut buf = vec![0u8; 5 * bs];
        buf[bs] = 1;
        buf[2 * bs + 7] = 2;
        let r = runs(&buf, 8192);
        let shape: Vec<_> = r
            .iter()
            .map(|(at, d, len)| (*at, d.is_some(), *len))
            .collect();
        assert_eq!(
            shape,
            [
                (8192, false, bs as u64),
                (8192 + bs as u64, true, 2 * bs as u64),
                (8192 + 3 * bs as u64, false, 2 * bs as u64)
            ]
        );
    }
}
