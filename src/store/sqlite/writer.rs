//! The group-commit writer: one thread owns the write connection, gathers every
//! write waiting at that moment into one transaction, commits (fsync) once, and only
//! then answers each request.
//!
//! A request that is dropped while queued (client gone) still commits: the job is
//! owned by the thread, never by the HTTP handler.

use std::panic::AssertUnwindSafe;
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

/// Handle to the writer thread.
pub struct GroupCommitWriter {
    sender: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommitWriter {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("hopper-sqlite-writer".into())
            .spawn(move || run(conn, receiver))?;
        Ok(GroupCommitWriter {
            sender: std::sync::Mutex::new(Some(sender)),
            thread: std::sync::Mutex::new(Some(thread)),
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

    /// Stops taking jobs, lets the thread commit every job already queued, and waits for it.
    pub async fn close(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run(conn: Connection, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&conn, &mut batch);
    }
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(%error, "sqlite: cannot begin a write transaction");
        // Dropping the jobs unrun drops their reply senders: each caller gets
        // `Unavailable` and nothing was written.
        batch.clear();
        return;
    }
    let mut completions = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        if let Some(completion) = run_job(conn, job) {
            completions.push(completion);
        }
    }
    let commit = conn.execute_batch("COMMIT");
    let cause = commit.as_ref().err().map(|e| e.to_string());
    if let Some(cause) = &cause {
        tracing::error!(error = %cause, "sqlite: commit failed; the batch is rolled back");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for completion in completions {
        completion(cause.as_deref().map_or(Ok(()), Err));
    }
}

/// Runs one job inside its own savepoint, so a failing job leaves the rest of the batch intact.
fn run_job(conn: &Connection, job: Job) -> Option<Completion> {
    if let Err(error) = conn.execute_batch("SAVEPOINT job") {
        tracing::error!(%error, "sqlite: cannot open a savepoint");
        return None;
    }
    match std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))) {
        Ok((true, completion)) => {
            let _ = conn.execute_batch("RELEASE job");
            Some(completion)
        }
        Ok((false, completion)) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Some(completion)
        }
        Err(_) => {
            tracing::error!("sqlite: a write job panicked; its changes are rolled back");
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            None
        }
    }
}
