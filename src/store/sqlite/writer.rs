//! The group-commit writer: one thread owns the write connection, gathers every
//! write waiting at that moment into one transaction and commits it; a second
//! thread fsyncs the WAL and only then answers each request of that transaction.
//!
//! Splitting commit from fsync is what lets the writer execute batch N+1 while
//! batch N's fsync is in flight: one fsync then covers every batch committed
//! before it. The connection runs with `synchronous=NORMAL` (SQLite's commit does
//! not fsync the WAL; it still syncs around checkpoints and WAL resets), and no
//! answer leaves before the WAL holding its transaction is fsynced: the same
//! guarantee as `synchronous=FULL`, without the writer waiting on the disk.
//!
//! A request that is dropped while queued (client gone) still commits: the job is
//! owned by the thread, never by the HTTP handler.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{StoreError, StoreResult};

/// Most jobs in one transaction; bounds the latency one commit adds to the first job.
const MAX_BATCH: usize = 1024;
/// Jobs that may wait for the writer before senders are made to wait too.
const QUEUE_DEPTH: usize = 8192;

/// Why a job's transaction did not become durable.
#[derive(Debug, Clone, Copy)]
enum Failure<'a> {
    /// Rolled back: nothing of it was written.
    RolledBack(&'a str),
    /// Committed, but the fsync failed: it may or may not survive a crash.
    NotDurable(&'a str),
}

/// Called once the transaction holding a job is durable (`Ok`) or not (`Err`).
type Completion = Box<dyn FnOnce(Result<(), Failure>) + Send>;
/// Runs a write inside the batch transaction; says whether it succeeded (else its
/// savepoint is rolled back) and how to answer once the commit is known.
type Run = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// A write and how it is answered.
struct Job {
    run: Run,
    /// Whether its answer waits for the fsync; see [`GroupCommitWriter::write_for_caller`].
    durable: bool,
}

/// A committed batch on its way to the syncer.
struct Committed {
    completions: Vec<Completion>,
    /// Some job's answer waits for the fsync.
    needs_sync: bool,
}

/// Handle to the writer and syncer threads.
pub struct GroupCommitWriter {
    sender: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl GroupCommitWriter {
    /// Starts the writer thread on `conn` (which must use WAL with `synchronous=NORMAL`)
    /// and the syncer thread on `wal`, the same database's `-wal` file.
    pub fn start(conn: Connection, wal: File) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let (committed, to_sync) = std_mpsc::channel();
        let broken = Arc::new(AtomicBool::new(false));
        let syncer_broken = broken.clone();
        let syncer = std::thread::Builder::new()
            .name("hopper-sqlite-sync".into())
            .spawn(move || sync_loop(wal, to_sync, &syncer_broken))?;
        let writer = std::thread::Builder::new()
            .name("hopper-sqlite-writer".into())
            .spawn(move || run(conn, receiver, committed, &broken))?;
        Ok(GroupCommitWriter {
            sender: std::sync::Mutex::new(Some(sender)),
            threads: std::sync::Mutex::new(vec![writer, syncer]),
        })
    }

    /// Runs `op` in the next batch; answers after the batch commits, then runs `after_commit`.
    /// The write happens even if the caller is gone by then (see the module doc).
    pub async fn write<T, F>(
        &self,
        op: F,
        after_commit: impl FnOnce() + Send + 'static,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(op, after_commit, false).await
    }

    /// Like [`Self::write`], for writes that hand something to the caller (a pop, a
    /// lease): skipped when the caller is gone before its batch runs, since nobody
    /// would receive it, and answered once committed without waiting for an fsync of
    /// its own. Losing such a write in a crash only makes its messages ready again
    /// (at least once, never lost), and the next durable write's fsync covers it.
    pub async fn write_for_caller<T, F>(
        &self,
        op: F,
        after_commit: impl FnOnce() + Send + 'static,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(op, after_commit, true).await
    }

    async fn submit<T, F>(
        &self,
        op: F,
        after_commit: impl FnOnce() + Send + 'static,
        skip_if_abandoned: bool,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run = Box::new(move |conn: &Connection| {
            if skip_if_abandoned && reply.is_closed() {
                let nothing: Completion = Box::new(|_| {});
                return (true, nothing);
            }
            let result = op(conn);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let outcome = match (result, commit) {
                    (Ok(value), Ok(())) => {
                        after_commit();
                        Ok(value)
                    }
                    (Ok(_), Err(Failure::RolledBack(cause))) => {
                        Err(StoreError::Unavailable(format!("commit failed: {cause}")))
                    }
                    (Ok(_), Err(Failure::NotDurable(cause))) => Err(StoreError::OutcomeUnknown(
                        format!("committed but not fsynced: {cause}"),
                    )),
                    (Err(error), _) => Err(error),
                };
                let _ = reply.send(outcome);
            });
            (ok, completion)
        });
        let job = Job {
            run,
            durable: !skip_if_abandoned,
        };
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
        sender
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
    }

    /// Stops taking jobs, lets the threads commit and sync every job already queued,
    /// and waits for them.
    pub async fn close(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            // The writer first: its exit closes the syncer's channel.
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// `broken` is set once durability can no longer be promised (a failed fsync, a dead
/// syncer); from then on jobs are dropped unrun, so callers get `Unavailable` and
/// nothing more is written behind their back.
fn run(
    conn: Connection,
    mut receiver: mpsc::Receiver<Job>,
    committed: std_mpsc::Sender<Committed>,
    broken: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if broken.load(Ordering::Acquire) {
            batch.clear();
            continue;
        }
        let needs_sync = batch.iter().any(|job| job.durable);
        if let Some(completions) = commit_batch(&conn, &mut batch) {
            let sent = committed.send(Committed {
                completions,
                needs_sync,
            });
            if let Err(unsent) = sent {
                tracing::error!("sqlite: the syncer thread is gone; refusing every later write");
                broken.store(true, Ordering::Release);
                for completion in unsent.0.completions {
                    completion(Err(Failure::NotDurable("the syncer thread is gone")));
                }
            }
        }
    }
}

/// Fsyncs the WAL for every committed batch waiting, then answers their requests
/// (without an fsync when none of them waits for one). After a failed fsync nothing
/// is trusted again: the kernel may have dropped the dirty pages, so a later
/// "successful" fsync would not cover them.
fn sync_loop(wal: File, to_sync: std_mpsc::Receiver<Committed>, broken: &AtomicBool) {
    let mut failed: Option<String> = None;
    while let Ok(first) = to_sync.recv() {
        let mut batches = vec![first];
        batches.extend(to_sync.try_iter());
        let needs_sync = batches.iter().any(|batch| batch.needs_sync);
        if failed.is_none() && needs_sync {
            if let Err(error) = wal.sync_data() {
                tracing::error!(%error, "sqlite: fsync of the WAL failed; refusing every later write");
                failed = Some(format!("fsync failed: {error}"));
                broken.store(true, Ordering::Release);
            }
        }
        for completion in batches.into_iter().flat_map(|batch| batch.completions) {
            completion(
                failed
                    .as_deref()
                    .map_or(Ok(()), |cause| Err(Failure::NotDurable(cause))),
            );
        }
    }
}

/// Runs a batch in one transaction; returns the completions to answer after the
/// fsync, or `None` when they were already answered (the commit failed).
fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) -> Option<Vec<Completion>> {
    if let Err(error) = execute_cached(conn, "BEGIN IMMEDIATE") {
        tracing::error!(%error, "sqlite: cannot begin a write transaction");
        // Dropping the jobs unrun drops their reply senders: each caller gets
        // `Unavailable` and nothing was written.
        batch.clear();
        return None;
    }
    let mut completions = Vec::with_capacity(batch.len());
    let mut jobs = batch.drain(..);
    while let Some(job) = jobs.next() {
        if let Some(completion) = run_job(conn, job) {
            completions.push(completion);
        }
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error): nothing
            // gathered so far was written. The rest of the batch gets a new transaction.
            tracing::error!("sqlite: the batch transaction was rolled back by SQLite");
            for completion in completions.drain(..) {
                completion(Err(Failure::RolledBack("the transaction was rolled back")));
            }
            if let Err(error) = execute_cached(conn, "BEGIN IMMEDIATE") {
                tracing::error!(%error, "sqlite: cannot begin a write transaction");
                jobs.for_each(drop);
                return None;
            }
        }
    }
    match execute_cached(conn, "COMMIT") {
        Ok(()) => Some(completions),
        Err(error) => {
            tracing::error!(%error, "sqlite: commit failed; the batch is rolled back");
            let _ = execute_cached(conn, "ROLLBACK");
            let cause = error.to_string();
            for completion in completions {
                completion(Err(Failure::RolledBack(&cause)));
            }
            None
        }
    }
}

/// Runs one job inside its own savepoint, so a failing job leaves the rest of the batch intact.
fn run_job(conn: &Connection, job: Job) -> Option<Completion> {
    if let Err(error) = execute_cached(conn, "SAVEPOINT job") {
        tracing::error!(%error, "sqlite: cannot open a savepoint");
        return None;
    }
    let (ok, completion) = match std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(conn))) {
        Ok((ok, completion)) => (ok, Some(completion)),
        Err(_) => {
            tracing::error!("sqlite: a write job panicked; its changes are rolled back");
            (false, None)
        }
    };
    if !ok {
        let _ = execute_cached(conn, "ROLLBACK TO job");
    }
    if let Err(error) = execute_cached(conn, "RELEASE job") {
        tracing::error!(%error, "sqlite: cannot release a savepoint");
    }
    completion
}

/// Runs a parameterless statement through the statement cache: these run once per
/// job, and parsing them each time is measurable at tens of thousands of jobs a second.
fn execute_cached(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(|_| ())
}
