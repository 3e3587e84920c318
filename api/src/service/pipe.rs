//! The ingest pipe of each domain: one task owns the domain's writer and commits pushed
//! writes by group commit.
//!
//! A push is answered only after the segment holding its writes is committed (DESIGN.md
//! section 5). The task stages everything that queued up while the previous commit was
//! in flight, up to a segment's size, and commits it as one point; so an idle domain
//! answers a push after one commit, and a busy one batches without any timer. The
//! points a busy domain makes are as frequent as its commits, which is the best RPO
//! the store allows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tidemark_format::Marker;
use tidemark_ingest::{CommittedPoint, DomainWriter, ImageBlocks, IngestContext, Write};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::metrics::Metrics;
use super::records::Records;

/// Messages queued per domain before pushes wait (bytes are bounded separately).
const QUEUE_DEPTH: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

enum Request {
    /// Stage these writes and answer once they are committed. The permit holds their
    /// bytes in the queue bound until the pipe is done with them, even if the pusher
    /// went away meanwhile.
    Writes(Vec<Write>, OwnedSemaphorePermit, Reply<CommittedPoint>),
    /// Seal what is staged with these markers (empty: only if anything is staged).
    Seal(Vec<Marker>, Reply<Option<CommittedPoint>>),
    /// Make this site the owner (failover, failback).
    TakeOver(Option<u64>, Reply<(u64, CommittedPoint)>),
    /// Commit what came before, then refuse writes: the domain is being handed to
    /// another site (planned failover). Answers with the newest point.
    Release(Reply<Option<u64>>),
    /// Commit one point that sets blocks to what images hold (a failover to an
    /// earlier point makes the log agree with the images it brought up).
    ImageBlocks(Vec<ImageBlocks>, Vec<Marker>, Reply<CommittedPoint>),
}

/// A domain this site released for a planned failover: it refuses writes until it
/// takes the domain over again.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ReleasedRecord {
    domain: String,
    since: String,
}

/// The domains this site released, kept in DATA_DIR/released so that a restart does
/// not start taking writes again.
#[derive(Clone)]
pub struct Released {
    records: Records,
    set: Arc<StdMutex<BTreeSet<String>>>,
}

impl Released {
    /// Loads the released domains.
    pub fn open(dir: &Path) -> std::io::Result<Released> {
        let records = Records::open(dir)?;
        let set = records
            .load::<ReleasedRecord>()?
            .into_iter()
            .map(|r| r.domain)
            .collect();
        Ok(Released {
            records,
            set: Arc::new(StdMutex::new(set)),
        })
    }

    /// Whether `domain` is released here.
    pub fn contains(&self, domain: &str) -> bool {
        self.lock().contains(domain)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, domain: &str) -> Result<(), ApiError> {
        let rec = ReleasedRecord {
            domain: domain.to_owned(),
            since: tidemark_pitr_index::format_time(tidemark_ingest::now_ns()),
        };
        self.records
            .save(domain, &rec)
            .map_err(|e| ApiError::internal(format!("cannot record the release: {e}")))?;
        self.lock().insert(domain.to_owned());
        Ok(())
    }

    fn remove(&self, domain: &str) -> Result<(), ApiError> {
        self.records
            .remove(domain)
            .map_err(|e| ApiError::internal(format!("cannot forget the release: {e}")))?;
        self.lock().remove(domain);
        Ok(())
    }
}

/// The pipes of all domains written through this service.
pub struct Pipes {
    ctx: IngestContext,
    metrics: Arc<Metrics>,
    released: Released,
    /// Bytes of pushed writes not yet answered, in KiB permits.
    queued: Arc<Semaphore>,
    queued_kib: u32,
    pipes: StdMutex<HashMap<String, mpsc::Sender<Request>>>,
    tasks: StdMutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Pipes {
    /// Pipes writing through `ctx`, with at most `max_queued_bytes` of pushes waiting.
    pub fn new(
        ctx: IngestContext,
        metrics: Arc<Metrics>,
        released: Released,
        max_queued_bytes: u64,
    ) -> Self {
        let queued_kib = (max_queued_bytes >> 10).min(u32::MAX as u64 >> 3) as u32;
        Pipes {
            ctx,
            metrics,
            released,
            queued: Arc::new(Semaphore::new(queued_kib as usize)),
            queued_kib,
            pipes: StdMutex::new(HashMap::new()),
            tasks: StdMutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Pushes writes; returns the point that holds them, once it is committed.
    pub async fn push(&self, domain: &str, writes: Vec<Write>) -> Result<CommittedPoint, ApiError> {
        let bytes: u64 = writes.iter().map(|w| w.data.len() as u64).sum();
        let permit = self.reserve(bytes).await?;
        let (tx, rx) = oneshot::channel();
        self.send(domain, Request::Writes(writes, permit, tx))
            .await?;
        answer(rx).await
    }

    /// Seals what is staged into a point carrying `markers`; with no markers, only if
    /// anything is staged.
    pub async fn seal(
        &self,
        domain: &str,
        markers: Vec<Marker>,
    ) -> Result<Option<CommittedPoint>, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.send(domain, Request::Seal(markers, tx)).await?;
        answer(rx).await
    }

    /// Takes the domain over for this site; returns the new generation and the fence.
    pub async fn take_over(
        &self,
        domain: &str,
        expected_generation: Option<u64>,
    ) -> Result<(u64, CommittedPoint), ApiError> {
        let (tx, rx) = oneshot::channel();
        self.send(domain, Request::TakeOver(expected_generation, tx))
            .await?;
        answer(rx).await
    }

    /// Commits everything pushed before, then refuses writes to `domain` until this
    /// site takes it over again. Answers with the newest point.
    pub async fn release(&self, domain: &str) -> Result<Option<u64>, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.send(domain, Request::Release(tx)).await?;
        answer(rx).await
    }

    /// Whether `domain` is released here.
    pub fn is_released(&self, domain: &str) -> bool {
        self.released.contains(domain)
    }

    /// Commits one point setting the given blocks to what the images hold.
    pub async fn commit_image_blocks(
        &self,
        domain: &str,
        disks: Vec<ImageBlocks>,
        markers: Vec<Marker>,
    ) -> Result<CommittedPoint, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.send(domain, Request::ImageBlocks(disks, markers, tx))
            .await?;
        answer(rx).await
    }

    async fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let kib = bytes.div_ceil(1024).min(self.queued_kib as u64) as u32;
        self.queued
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| ApiError::unavailable("the service is shutting down"))
    }

    async fn send(&self, domain: &str, req: Request) -> Result<(), ApiError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("the service is shutting down"));
        }
        let tx = {
            let mut pipes = self
                .pipes
                .lock()
                .map_err(|_| ApiError::internal("pipe table poisoned"))?;
            pipes
                .entry(domain.to_owned())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
                    let task = PipeTask {
                        ctx: self.ctx.clone(),
                        domain: domain.to_owned(),
                        metrics: self.metrics.clone(),
                        released: self.released.clone(),
                        writer: None,
                    };
                    let handle = tokio::spawn(task.run(rx));
                    if let Ok(mut tasks) = self.tasks.lock() {
                        tasks.push(handle);
                    }
                    tx
                })
                .clone()
        };
        tx.send(req)
            .await
            .map_err(|_| ApiError::unavailable("the service is shutting down"))
    }

    /// Stops taking requests and lets every pipe finish what it holds: each pipe
    /// commits and answers everything queued before it exits.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.queued.close();
        let tasks = match self.pipes.lock() {
            Ok(mut p) => {
                // Dropping the senders ends each task's loop once its queue is empty.
                p.clear();
                std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()))
            }
            Err(_) => return,
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    rx.await
        .map_err(|_| ApiError::unavailable("the domain's pipe stopped before answering"))?
}

/// The task that owns one domain's writer.
struct PipeTask {
    ctx: IngestContext,
    domain: String,
    metrics: Arc<Metrics>,
    released: Released,
    writer: Option<DomainWriter>,
}

/// Staged writes waiting for their commit.
struct Ack {
    reply: Reply<CommittedPoint>,
    writes: u64,
    bytes: u64,
    _permit: OwnedSemaphorePermit,
}

/// What one round of the pipe stages before it commits.
#[derive(Default)]
struct Round {
    acks: Vec<Ack>,
    seal: Option<(Vec<Marker>, Reply<Option<CommittedPoint>>)>,
}

impl PipeTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut next = rx.recv().await;
        while let Some(first) = next.take() {
            let mut round = Round::default();
            let mut req = Some(first);
            while let Some(r) = req.take() {
                match r {
                    Request::Writes(writes, permit, reply) => {
                        if self.would_overflow(&writes) && !round.acks.is_empty() {
                            // The segment is full: commit it, then start the next one.
                            next = Some(Request::Writes(writes, permit, reply));
                            break;
                        }
                        self.stage(&mut round, writes, permit, reply).await;
                    }
                    Request::Seal(markers, reply) => {
                        round.seal = Some((markers, reply));
                        break;
                    }
                    // These act on a committed log: what is staged is committed first.
                    r @ (Request::TakeOver(..)
                    | Request::Release(..)
                    | Request::ImageBlocks(..)) => {
                        if round.acks.is_empty() {
                            self.exclusive(r).await;
                        } else {
                            next = Some(r);
                            break;
                        }
                    }
                }
                req = rx.try_recv().ok();
            }
            self.commit(round).await;
            if next.is_none() {
                next = rx.recv().await;
            }
        }
    }

    async fn exclusive(&mut self, r: Request) {
        match r {
            Request::TakeOver(expected, reply) => {
                let _ = reply.send(self.take_over(expected).await);
            }
            Request::Release(reply) => {
                let _ = reply.send(self.release().await);
            }
            Request::ImageBlocks(disks, markers, reply) => {
                let _ = reply.send(self.image_blocks(disks, markers).await);
            }
            Request::Writes(..) | Request::Seal(..) => {}
        }
    }

    fn refuse_if_released(&self) -> Result<(), ApiError> {
        if self.released.contains(&self.domain) {
            return Err(ApiError::released(format!(
                "domain {} was released for a planned failover; this site takes writes again only after it takes the domain over",
                self.domain
            )));
        }
        Ok(())
    }

    async fn release(&mut self) -> Result<Option<u64>, ApiError> {
        self.released.add(&self.domain)?;
        self.writer = None;
        let _lock = self.ctx.index.lock_commits(&self.domain).await;
        Ok(self.ctx.index.last_seq(&self.domain)?)
    }

    async fn image_blocks(
        &mut self,
        disks: Vec<ImageBlocks>,
        markers: Vec<Marker>,
    ) -> Result<CommittedPoint, ApiError> {
        self.refuse_if_released()?;
        let index = self.ctx.index.clone();
        let domain = self.domain.clone();
        let w = self.writer().await?;
        let _lock = index.lock_commits(&domain).await;
        let p = w.commit_image_blocks(disks, markers).await;
        if p.is_err() {
            // The next commit re-reads the log and the ownership.
            self.writer = None;
        }
        let p = p?;
        self.metrics.segment_committed(0, 0);
        Ok(p)
    }

    fn would_overflow(&self, writes: &[Write]) -> bool {
        let adding: u64 = writes.iter().map(|w| w.data.len() as u64).sum();
        self.writer
            .as_ref()
            .is_some_and(|w| w.staged_bytes() + adding > self.ctx.config.seal_bytes)
    }

    async fn writer(&mut self) -> Result<&mut DomainWriter, ApiError> {
        if self.writer.is_none() {
            let _lock = self.ctx.index.lock_commits(&self.domain).await;
            let w = DomainWriter::open(self.ctx.clone(), &self.domain).await?;
            self.writer = Some(w);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| ApiError::internal("writer vanished"))
    }

    async fn stage(
        &mut self,
        round: &mut Round,
        writes: Vec<Write>,
        permit: OwnedSemaphorePermit,
        reply: Reply<CommittedPoint>,
    ) {
        let count = writes.len() as u64;
        let bytes: u64 = writes.iter().map(|w| w.data.len() as u64).sum();
        if let Err(e) = self.refuse_if_released() {
            let _ = reply.send(Err(e));
            return;
        }
        let staged = match self.writer().await {
            Ok(w) => w.stage(writes).map_err(ApiError::from),
            Err(e) => Err(e),
        };
        match staged {
            Ok(()) => round.acks.push(Ack {
                reply,
                writes: count,
                bytes,
                _permit: permit,
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// After a failed commit of `seq`: did its segment land anyway (the index failed
    /// after the segment was created, or the store's answer was lost)? Its writers are
    /// then answered with the point, and otherwise with an error they can trust: the
    /// writes are not in the log. If that cannot be told, the answer says so.
    async fn outcome(
        &mut self,
        seq: u64,
        err: ApiError,
    ) -> Result<Option<CommittedPoint>, ApiError> {
        let unknown = |probe: String| {
            ApiError::unavailable(format!(
                "the commit failed ({}) and whether its segment landed is unknown ({probe}); retry the writes",
                err.message
            ))
        };
        let Some(w) = self.writer.as_mut() else {
            return Err(err);
        };
        let me = w.writer().clone();
        let _lock = self.ctx.index.lock_commits(&self.domain).await;
        // Indexes the log to its end before it checks the ownership, so the index is
        // complete even when this writer turns out fenced.
        let synced = w.resync().await;
        match self.ctx.index.segment(&self.domain, seq) {
            Ok(Some(m)) if m.site == me.site && m.generation == me.generation => {
                tracing::info!(domain = %self.domain, seq, "a commit reported failed had landed");
                let blocks = |f: fn(&tidemark_pitr_index::DiskStat) -> u64| {
                    m.disks.iter().map(f).sum::<u64>()
                };
                Ok(Some(CommittedPoint {
                    seq,
                    time: m.time_end,
                    new_bytes: m.stored_bytes + m.object_size,
                    data_blocks: blocks(|d| d.written_blocks),
                    zero_blocks: blocks(|d| d.zeroed_blocks),
                }))
            }
            _ => match synced {
                Ok(()) => Err(err),
                Err(fenced @ tidemark_ingest::IngestError::Fenced { .. }) => Err(fenced.into()),
                Err(probe) => Err(unknown(probe.to_string())),
            },
        }
    }

    async fn take_over(
        &mut self,
        expected: Option<u64>,
    ) -> Result<(u64, CommittedPoint), ApiError> {
        self.writer = None;
        let _lock = self.ctx.index.lock_commits(&self.domain).await;
        let (w, fence) = DomainWriter::take_over(self.ctx.clone(), &self.domain, expected).await?;
        self.released.remove(&self.domain)?;
        let generation = w.writer().generation;
        self.writer = Some(w);
        self.metrics.segment_committed(0, 0);
        Ok((generation, fence))
    }

    /// Commits the round's staged writes (and its seal), then answers every writer.
    async fn commit(&mut self, round: Round) {
        let Round { acks, seal } = round;
        if acks.is_empty() && seal.is_none() {
            return;
        }
        let (markers, seal_reply) = match seal {
            Some((m, r)) => (m, Some(r)),
            None => (Vec::new(), None),
        };
        let sealing_markers = !markers.is_empty();
        let mut attempted = None;
        let result = async {
            self.refuse_if_released()?;
            let domain = self.domain.clone();
            let index = self.ctx.index.clone();
            let w = self.writer().await?;
            let _lock = index.lock_commits(&domain).await;
            attempted = Some(w.next_seq());
            let point = if sealing_markers {
                Some(w.seal(markers).await?)
            } else {
                w.flush().await?
            };
            Ok::<_, ApiError>(point)
        }
        .await;
        let result = match (result, attempted) {
            (Err(e), Some(seq)) if e.code != "fenced" => self.outcome(seq, e).await,
            (r, _) => r,
        };
        match &result {
            Ok(Some(_)) => {
                // A commit that failed but landed left its writes staged.
                if let Some(w) = self.writer.as_mut() {
                    w.discard_staged();
                }
                let writes = acks.iter().map(|a| a.writes).sum();
                let bytes = acks.iter().map(|a| a.bytes).sum();
                self.metrics.segment_committed(writes, bytes);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(domain = %self.domain, "commit failed: {}", e.message);
                if let Some(w) = self.writer.as_mut() {
                    w.discard_staged();
                }
                if e.code == "fenced" {
                    self.writer = None;
                }
            }
        }
        for ack in acks {
            let r = match &result {
                Ok(Some(p)) => Ok(p.clone()),
                Ok(None) => Err(ApiError::internal(
                    "staged writes vanished before the commit",
                )),
                Err(e) => Err(e.clone()),
            };
            let _ = ack.reply.send(r);
        }
        if let Some(reply) = seal_reply {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tidemark_format::{DiskSpec, DomainRecord};
    use tidemark_ingest::{FailPoint, IngestConfig};
    use tidemark_objstore::MemoryStore;
    use tidemark_pitr_index::Index;

    use super::*;

    async fn pipes(fail_at: Option<FailPoint>) -> (tempfile::TempDir, Pipes, IngestContext) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ctx = IngestContext {
            store: Arc::new(MemoryStore::new()),
            index: Arc::new(Index::open(tmp.path()).expect("index")),
            config: IngestConfig {
                fail_at,
                ..IngestConfig::default()
            },
            site: "site-a".into(),
        };
        let rec = DomainRecord {
            name: "vm".into(),
            block_size: 4096,
            disks: vec![DiskSpec {
                name: "d0".into(),
                size: 1 << 20,
            }],
            created: 1,
        };
        tidemark_ingest::domain::create_domain(&ctx, rec)
            .await
            .expect("domain");
        let pipes = Pipes::new(
            ctx.clone(),
            Arc::new(Metrics::default()),
            Released::open(&tmp.path().join("released")).expect("released"),
            64 << 20,
        );
        (tmp, pipes, ctx)
    }

    fn write() -> Vec<Write> {
        vec![Write {
            disk: 0,
            offset: 0,
            data: Bytes::from(vec![7u8; 4096]),
            time: 5,
        }]
    }

    #[tokio::test]
    async fn a_failed_commit_that_landed_is_acknowledged() {
        // The segment is created, then the index update "crashes".
        let (_tmp, pipes, ctx) = pipes(Some(FailPoint::AfterSegment)).await;
        let p = pipes.push("vm", write()).await.expect("acknowledged");
        assert_eq!(p.seq, 1);
        assert_eq!(p.data_blocks, 1);
        assert!(ctx.index.segment("vm", 1).expect("index").is_some());
    }

    #[tokio::test]
    async fn a_failed_commit_that_did_not_land_is_an_error_and_stays_out() {
        // Packs are stored, the segment is not.
        let (_tmp, pipes, ctx) = pipes(Some(FailPoint::AfterPacks)).await;
        pipes
            .push("vm", write())
            .await
            .expect_err("not acknowledged");
        assert_eq!(ctx.index.last_seq("vm").expect("index"), None);
        let listed = ctx
            .store
            .list_all(&tidemark_format::keys::log_prefix("vm"), None)
            .await
            .expect("list");
        assert!(listed.is_empty(), "{listed:?}");
    }
}
