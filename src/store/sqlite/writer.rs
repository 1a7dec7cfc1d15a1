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
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

/// Most jobs in one transaction; bounds the latency one commit adds to the first job.
const MAX_BATCH: usize = 1024;
/// Jobs that may wait for the writer before senders are made to wait too.
const QUEUE_DEPTH: usize = 8192;

/// Called once the transaction holding a job has committed (`Ok`) or failed (`Err`).
type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// A write: runs inside the batch transaction, says whether it succeeded (else its
/// savepoint is rolled back) and how to answer once the commit is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

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
        let syncer = std::thread::Builder::new()
            .name("hopper-sqlite-sync".into())
            .spawn(move || sync_loop(wal, to_sync))?;
        let writer = std::thread::Builder::new()
            .name("hopper-sqlite-writer".into())
            .spawn(move || run(conn, receiver, committed))?;
        Ok(GroupCommitWriter {
            sender: std::sync::Mutex::new(Some(sender)),
            threads: std::sync::Mutex::new(vec![writer, syncer]),
        })
    }

    /// Runs `op` in the next batch; answers after the batch commits, then runs `after_commit`.
    pub async fn write<T, F>(
        &self,
        op: F,
        after_commit: impl FnOnce() + Send + 'static,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = op(conn);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let outcome = match (result, commit) {
                    (Ok(value), Ok(())) => {
                        after_commit();
                        Ok(value)
                    }
                    (Ok(_), Err(cause)) => {
                        Err(StoreError::Unavailable(format!("commit failed: {cause}")))
                    }
                    (Err(error), _) => Err(error),
                };
                let _ = reply.send(outcome);
            });
            (ok, completion)
        });
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

fn run(
    conn: Connection,
    mut receiver: mpsc::Receiver<Job>,
    committed: std_mpsc::Sender<Vec<Completion>>,
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
        if let Some(completions) = commit_batch(&conn, &mut batch) {
            // A closed channel means the syncer died: dropping the completions answers
            // each caller `Unavailable`, never a success that was not fsynced.
            let _ = committed.send(completions);
        }
    }
}

/// Fsyncs the WAL for every committed batch waiting, then answers their requests.
/// After a failed fsync nothing is trusted again: the kernel may have dropped the
/// dirty pages, so a later "successful" fsync would not cover them.
fn sync_loop(wal: File, to_sync: std_mpsc::Receiver<Vec<Completion>>) {
    let mut failed: Option<String> = None;
    while let Ok(first) = to_sync.recv() {
        let mut batches = vec![first];
        batches.extend(to_sync.try_iter());
        if failed.is_none() {
            if let Err(error) = wal.sync_data() {
                tracing::error!(%error, "sqlite: fsync of the WAL failed; refusing every later write");
                failed = Some(format!("fsync failed: {error}"));
            }
        }
        for completion in batches.into_iter().flatten() {
            completion(failed.as_deref().map_or(Ok(()), Err));
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
    for job in batch.drain(..) {
        if let Some(completion) = run_job(conn, job) {
            completions.push(completion);
        }
    }
    match execute_cached(conn, "COMMIT") {
        Ok(()) => Some(completions),
        Err(error) => {
            tracing::error!(%error, "sqlite: commit failed; the batch is rolled back");
            let _ = execute_cached(conn, "ROLLBACK");
            let cause = error.to_string();
            for completion in completions {
                completion(Err(&cause));
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
    let (ok, completion) = match std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))) {
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
