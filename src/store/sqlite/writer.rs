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
//!
//! Answers leave in commit order, each once every batch committed before it is
//! durable; a batch that needs no fsync of its own (leases, pops) is answered as soon
//! as that holds, never held for the fsync of a batch committed after it. So a write
//! answered here never shows what a crash could still take back, whatever woke it.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

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
/// Runs on the writer thread once the batch holding a job has committed, before its
/// fsync; see [`GroupCommitWriter::write_waking`].
type OnCommit = Box<dyn FnOnce() + Send>;

/// A write and how it is answered.
struct Job {
    run: Run,
    /// Run if the job's write committed; `None` for most writes.
    on_commit: Option<OnCommit>,
    /// Whether its answer waits for the fsync; see [`GroupCommitWriter::write_waking`].
    durable: bool,
}

/// A committed batch on its way to the syncer.
struct Committed {
    completions: Vec<Completion>,
    /// Some job's answer waits for the fsync.
    needs_sync: bool,
    /// When the batch began, for `hopper_store_commit_seconds`.
    started: Instant,
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
        Self::start_syncing(conn, move || wal.sync_data())
    }

    /// [`Self::start`] with `sync` making every committed batch durable; tests hold it
    /// to stand for a slow disk.
    fn start_syncing(
        conn: Connection,
        sync: impl FnMut() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let (committed, to_sync) = std_mpsc::channel();
        let broken = Arc::new(AtomicBool::new(false));
        let syncer_broken = broken.clone();
        let syncer = std::thread::Builder::new()
            .name("hopper-sqlite-sync".into())
            .spawn(move || sync_loop(sync, to_sync, &syncer_broken))?;
        let writer = std::thread::Builder::new()
            .name("hopper-sqlite-writer".into())
            .spawn(move || run(conn, receiver, committed, &broken))?;
        Ok(GroupCommitWriter {
            sender: std::sync::Mutex::new(Some(sender)),
            threads: std::sync::Mutex::new(vec![writer, syncer]),
        })
    }

    /// Runs `op` in the next batch; once the batch is durable, runs `after_commit`, then
    /// answers. The write happens even if the caller is gone by then (see the module doc).
    pub async fn write<T, F>(
        &self,
        op: F,
        after_commit: impl FnOnce() + Send + 'static,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(op, None, after_commit, false).await
    }

    /// Like [`Self::write`], and runs `on_commit` on the writer thread as soon as the
    /// batch has committed, before its fsync. For wake-ups of waiters that look only
    /// through this writer (receives): their writes queue behind this batch and their
    /// answers wait until it is durable, so waking them early shows them nothing a
    /// crash could take back, and their writes overlap the fsync instead of waiting
    /// for it and then for another.
    ///
    /// `for_caller`: a write that hands something to the caller (a pop, a lease):
    /// skipped when the caller is gone before its batch runs, since nobody would
    /// receive it, and answered once every earlier batch is durable, without an fsync
    /// of its own. Losing such a write in a crash only makes its messages ready again
    /// (at least once, never lost), and the next durable write's fsync covers it.
    pub async fn write_waking<T, F>(
        &self,
        for_caller: bool,
        op: F,
        on_commit: impl FnOnce() + Send + 'static,
        after_commit: impl FnOnce() + Send + 'static,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(op, Some(Box::new(on_commit)), after_commit, for_caller)
            .await
    }

    async fn submit<T, F>(
        &self,
        op: F,
        on_commit: Option<OnCommit>,
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
            on_commit,
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
        let started = Instant::now();
        let writes = batch.len();
        if let Some((completions, on_commit)) = commit_batch(&conn, &mut batch) {
            crate::telemetry::committed_batch(writes);
            let sent = committed.send(Committed {
                completions,
                needs_sync,
                started,
            });
            if let Err(unsent) = sent {
                tracing::error!("sqlite: the syncer thread is gone; refusing every later write");
                broken.store(true, Ordering::Release);
                for completion in unsent.0.completions {
                    completion(Err(Failure::NotDurable("the syncer thread is gone")));
                }
                continue;
            }
            // After the send: whatever these hooks wake writes in a later batch, which
            // the syncer answers only after this one.
            for hook in on_commit {
                hook();
            }
        }
    }
}

/// Fsyncs the WAL for every committed batch waiting, then answers their requests.
/// The batches before the first one that waits for an fsync are answered first,
/// without one: every batch before them is durable already, and holding them for the
/// fsync of later batches would make a lease wait for other writers' disk time.
/// After a failed fsync nothing is trusted again: the kernel may have dropped the
/// dirty pages, so a later "successful" fsync would not cover them.
fn sync_loop(
    mut sync: impl FnMut() -> std::io::Result<()>,
    to_sync: std_mpsc::Receiver<Committed>,
    broken: &AtomicBool,
) {
    let mut failed: Option<String> = None;
    let answer = |batches: Vec<Committed>, failed: &Option<String>| {
        for batch in &batches {
            crate::telemetry::committed_in(batch.started.elapsed());
        }
        for completion in batches.into_iter().flat_map(|batch| batch.completions) {
            completion(
                failed
                    .as_deref()
                    .map_or(Ok(()), |cause| Err(Failure::NotDurable(cause))),
            );
        }
    };
    while let Ok(first) = to_sync.recv() {
        let mut batches = vec![first];
        batches.extend(to_sync.try_iter());
        let unsynced = batches
            .iter()
            .position(|batch| batch.needs_sync)
            .unwrap_or(batches.len());
        let waiting = batches.split_off(unsynced);
        answer(batches, &failed);
        if waiting.is_empty() {
            continue;
        }
        if failed.is_none() {
            if let Err(error) = sync() {
                tracing::error!(%error, "sqlite: fsync of the WAL failed; refusing every later write");
                failed = Some(format!("fsync failed: {error}"));
                broken.store(true, Ordering::Release);
            }
        }
        answer(waiting, &failed);
    }
}

/// Runs a batch in one transaction; returns the completions to answer after the
/// fsync and the on-commit hooks of the jobs that succeeded, or `None` when the
/// completions were already answered (the commit failed).
fn commit_batch(
    conn: &Connection,
    batch: &mut Vec<Job>,
) -> Option<(Vec<Completion>, Vec<OnCommit>)> {
    if let Err(error) = execute_cached(conn, "BEGIN IMMEDIATE") {
        tracing::error!(%error, "sqlite: cannot begin a write transaction");
        // Dropping the jobs unrun drops their reply senders: each caller gets
        // `Unavailable` and nothing was written.
        batch.clear();
        return None;
    }
    let mut completions = Vec::with_capacity(batch.len());
    let mut on_commit = Vec::new();
    let mut jobs = batch.drain(..);
    while let Some(job) = jobs.next() {
        let (completion, hook, tainted) = run_job(conn, job);
        completions.extend(completion);
        on_commit.extend(hook);
        if tainted && !conn.is_autocommit() {
            // The transaction may still hold the failed job's partial writes, which a
            // commit would make durable: only rolling it all back undoes them.
            if let Err(error) = execute_cached(conn, "ROLLBACK") {
                tracing::error!(%error, "sqlite: cannot roll back a batch holding a failed job's writes");
            }
            if !conn.is_autocommit() {
                // Still open: nothing may commit on it. The next batch's BEGIN fails
                // too, so no later COMMIT can make these writes durable either.
                on_commit.clear();
                for completion in completions.drain(..) {
                    completion(Err(Failure::RolledBack(
                        "the batch could not be rolled back",
                    )));
                }
                jobs.for_each(drop);
                return None;
            }
        }
        if conn.is_autocommit() {
            // The whole transaction was rolled back, by SQLite (disk full, I/O error) or
            // above: nothing gathered so far was written. The rest of the batch gets a
            // new transaction.
            tracing::error!("sqlite: the batch transaction was rolled back");
            on_commit.clear();
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
        Ok(()) => Some((completions, on_commit)),
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

/// Runs one job inside its own savepoint, so a failing job leaves the rest of the batch
/// intact; returns its completion, its on-commit hook if it succeeded, and whether the
/// transaction must not commit: the job failed and its savepoint could not be rolled
/// back, so its partial writes may still be in it.
fn run_job(conn: &Connection, job: Job) -> (Option<Completion>, Option<OnCommit>, bool) {
    if let Err(error) = execute_cached(conn, "SAVEPOINT job") {
        tracing::error!(%error, "sqlite: cannot open a savepoint");
        return (None, None, false);
    }
    let (ok, completion) = match std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(conn))) {
        Ok((ok, completion)) => (ok, Some(completion)),
        Err(_) => {
            tracing::error!("sqlite: a write job panicked; its changes are rolled back");
            (false, None)
        }
    };
    if !ok {
        if let Err(error) = execute_cached(conn, "ROLLBACK TO job") {
            tracing::error!(%error, "sqlite: cannot roll back a failed job's savepoint");
            return (completion, None, true);
        }
    }
    if let Err(error) = execute_cached(conn, "RELEASE job") {
        tracing::error!(%error, "sqlite: cannot release a savepoint");
    }
    (completion, job.on_commit.filter(|_| ok), false)
}

/// Runs a parameterless statement through the statement cache: these run once per
/// job, and parsing them each time is measurable at tens of thousands of jobs a second.
fn execute_cached(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Long enough for a thread on a loaded machine, short enough to fail a stuck test quickly.
    const PATIENCE: Duration = Duration::from_secs(5);

    /// A writer on an in-memory database whose fsyncs each wait for a release, as on a
    /// slow disk; `started` tells when one begins.
    struct Gated {
        writer: Arc<GroupCommitWriter>,
        started: std_mpsc::Receiver<()>,
        release: std_mpsc::Sender<()>,
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        conn
    }

    fn gated() -> Gated {
        let conn = table();
        let (started_tx, started) = std_mpsc::channel();
        let (release, released) = std_mpsc::channel::<()>();
        let writer = GroupCommitWriter::start_syncing(conn, move || {
            let _ = started_tx.send(());
            released
                .recv()
                .map_err(|_| std::io::Error::other("the test ended"))
        })
        .unwrap();
        Gated {
            writer: Arc::new(writer),
            started,
            release,
        }
    }

    fn insert(conn: &Connection) -> StoreResult<i64> {
        conn.execute("INSERT INTO t VALUES (1)", [])
            .map_err(|e| StoreError::backend("insert", e))?;
        Ok(conn.last_insert_rowid())
    }

    fn count(conn: &Connection) -> StoreResult<i64> {
        conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .map_err(|e| StoreError::backend("count", e))
    }

    /// An on-commit hook that reports `what` committed.
    fn tell(to: std_mpsc::Sender<&'static str>, what: &'static str) -> impl FnOnce() + Send {
        move || {
            let _ = to.send(what);
        }
    }

    /// Blocks until `receiver` yields, or fails the test naming `what`.
    fn expect<T>(receiver: &std_mpsc::Receiver<T>, what: &str) -> T {
        receiver
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("{what} did not happen"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_is_not_held_for_the_fsync_of_a_batch_committed_after_it() {
        let gated = gated();
        let (hooked_tx, hooked) = std_mpsc::channel();
        let writer = gated.writer.clone();
        let first = tokio::spawn(async move { writer.write(insert, || {}).await });
        expect(&gated.started, "the first fsync");
        // While the first batch's fsync runs, a lease commits, then a durable write.
        let (writer, hook) = (gated.writer.clone(), hooked_tx.clone());
        let lease = tokio::spawn(async move {
            writer
                .write_waking(true, count, tell(hook, "lease"), || {})
                .await
        });
        assert_eq!(expect(&hooked, "the lease's commit"), "lease");
        let (writer, hook) = (gated.writer.clone(), hooked_tx);
        let durable = tokio::spawn(async move {
            writer
                .write_waking(false, insert, tell(hook, "durable"), || {})
                .await
        });
        assert_eq!(expect(&hooked, "the durable write's commit"), "durable");

        gated.release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        expect(&gated.started, "the second fsync");
        let leased = tokio::time::timeout(PATIENCE, lease)
            .await
            .expect("the lease waited for the fsync of the write committed after it");
        assert_eq!(leased.unwrap().unwrap(), 1, "the lease saw the first write");
        assert!(!durable.is_finished(), "answered before its fsync");
        gated.release.send(()).unwrap();
        assert_eq!(durable.await.unwrap().unwrap(), 2);
        gated.writer.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_commit_runs_before_the_fsync_and_later_answers_still_wait_for_it() {
        let gated = gated();
        let (hooked_tx, hooked) = std_mpsc::channel();
        let (writer, hook) = (gated.writer.clone(), hooked_tx.clone());
        let push = tokio::spawn(async move {
            writer
                .write_waking(false, insert, tell(hook, "push"), || {})
                .await
        });
        expect(&gated.started, "the push's fsync");
        assert_eq!(expect(&hooked, "the push's on-commit hook"), "push");
        // What the hook woke commits next, but its answer must not show the push
        // before the push is durable.
        let (writer, hook) = (gated.writer.clone(), hooked_tx);
        let lease = tokio::spawn(async move {
            writer
                .write_waking(true, count, tell(hook, "lease"), || {})
                .await
        });
        assert_eq!(expect(&hooked, "the lease's commit"), "lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !push.is_finished(),
            "the push was answered before its fsync"
        );
        assert!(
            !lease.is_finished(),
            "the lease was answered before the push it saw was durable"
        );
        gated.release.send(()).unwrap();
        assert_eq!(push.await.unwrap().unwrap(), 1);
        assert_eq!(lease.await.unwrap().unwrap(), 1);
        gated.writer.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_runs_no_on_commit_hook() {
        let gated = gated();
        let (hooked_tx, hooked) = std_mpsc::channel::<&str>();
        let failing =
            |_: &Connection| -> StoreResult<()> { Err(StoreError::Unavailable("refused".into())) };
        let writer = gated.writer.clone();
        let answer = tokio::spawn(async move {
            writer
                .write_waking(false, failing, tell(hooked_tx, "failed"), || {})
                .await
        });
        expect(&gated.started, "the batch's fsync");
        gated.release.send(()).unwrap();
        assert!(answer.await.unwrap().is_err());
        assert!(hooked.try_recv().is_err(), "a hook of a failed write ran");
        gated.writer.close().await;
    }

    /// Inserts `x`; returns its row id.
    fn insert_value(x: i64) -> impl FnOnce(&Connection) -> StoreResult<i64> + Send {
        move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [x])
                .map_err(|e| StoreError::backend("insert", e))?;
            Ok(conn.last_insert_rowid())
        }
    }

    fn values(conn: &Connection) -> StoreResult<Vec<i64>> {
        conn.prepare("SELECT x FROM t ORDER BY x")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .map_err(|e| StoreError::backend("values", e))
    }

    /// Waits until `n` jobs wait in the writer's queue.
    async fn queued(writer: &GroupCommitWriter, n: usize) {
        let sender = writer.sender.lock().unwrap().clone().unwrap();
        let deadline = Instant::now() + PATIENCE;
        while QUEUE_DEPTH - sender.capacity() < n {
            assert!(Instant::now() < deadline, "{n} jobs were never queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_job_whose_savepoint_is_gone_rolls_back_its_whole_batch() {
        let writer = Arc::new(GroupCommitWriter::start_syncing(table(), || Ok(())).unwrap());
        // The first batch holds the writer while the next one queues up behind it.
        let (entered_tx, entered) = std_mpsc::channel();
        let (release, released) = std_mpsc::channel::<()>();
        let holder = tokio::spawn({
            let writer = writer.clone();
            async move {
                let hold = move |conn: &Connection| {
                    let _ = entered_tx.send(());
                    let _ = released.recv_timeout(PATIENCE);
                    count(conn)
                };
                writer.write(hold, || {}).await
            }
        });
        expect(&entered, "the first batch");

        let (hooked_tx, hooked) = std_mpsc::channel::<&str>();
        let (after_tx, after) = std_mpsc::channel::<&str>();
        let earlier = tokio::spawn({
            let writer = writer.clone();
            let (hook, after) = (tell(hooked_tx, "earlier"), tell(after_tx, "earlier"));
            async move {
                writer
                    .write_waking(false, insert_value(1), hook, after)
                    .await
            }
        });
        queued(&writer, 1).await;
        let failing = tokio::spawn({
            let writer = writer.clone();
            async move {
                let write_then_fail = |conn: &Connection| -> StoreResult<i64> {
                    insert_value(2)(conn)?;
                    // Ends the job's own savepoint: the writer's ROLLBACK TO then fails
                    // and the insert is still in the batch's transaction.
                    conn.execute_batch("RELEASE job")
                        .map_err(|e| StoreError::backend("release", e))?;
                    Err(StoreError::Unavailable("failed after writing".into()))
                };
                writer.write(write_then_fail, || {}).await
            }
        });
        queued(&writer, 2).await;
        let later = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(insert_value(3), || {}).await }
        });
        queued(&writer, 3).await;
        release.send(()).unwrap();
        assert_eq!(holder.await.unwrap().unwrap(), 0);

        match earlier.await.unwrap() {
            Err(StoreError::Unavailable(cause)) => {
                assert!(cause.contains("rolled back"), "{cause}")
            }
            other => panic!("a job of a rolled-back batch was answered {other:?}"),
        }
        assert!(
            matches!(failing.await.unwrap(), Err(StoreError::Unavailable(cause)) if cause == "failed after writing"),
            "the failed job keeps its own error"
        );
        assert!(
            later.await.unwrap().is_ok(),
            "a job after the failed one commits in a new transaction"
        );
        assert!(
            hooked.try_recv().is_err(),
            "an on-commit hook of the rolled-back batch ran"
        );
        assert!(
            after.try_recv().is_err(),
            "an after-commit hook of the rolled-back batch ran"
        );
        assert_eq!(
            writer.write(values, || {}).await.unwrap(),
            [3],
            "only the job after the rollback was written"
        );
        writer.close().await;
    }
}
