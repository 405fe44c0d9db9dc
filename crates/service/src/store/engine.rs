//! The store's own threads. Each owns one connection and runs whole units of work on it, so
//! a transaction costs one hand-off between threads however many statements it has.
//!
//! Writes go to the writer threads, reads to the reader threads. A writer takes every unit
//! waiting (up to `MAX_BATCH`) and, where it may, runs them in one transaction: group commit.
//! On SQLite, which has one writer anyway, that is every write, and the commit is synced to
//! disk when any unit of the batch asks for it. On PostgreSQL only webhook deliveries share
//! transactions (they take no row locks); every other write runs in a transaction of its own
//! beside the others, as several replicas do anyway. Each unit is answered after the commit
//! that holds it. A unit that fails (or panics) rolls its batch back, and each unit of the
//! batch then runs again in a transaction of its own, so it fails alone: units are
//! re-runnable (`FnMut`). Savepoints per unit would do the same without running twice, but
//! they cost every unit a copy of each page it touches, and failures are rare.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::db::{self, Conn};
use super::{Backend, StoreError};

/// Units in one transaction at most.
const MAX_BATCH: usize = 256;
/// SQLite: while writes keep arriving, a transaction takes them in for this long before it
/// commits, so a busy writer commits (writes its pages to the log) less often.
const EXTEND_FOR: std::time::Duration = std::time::Duration::from_millis(1);
/// Units waiting at most per queue; beyond that callers wait to hand theirs over.
const QUEUE: usize = 4096;

/// How a write is committed and grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteKind {
    /// Its commit is on disk before it is answered (it is acknowledged to someone outside).
    pub durable: bool,
    /// It may share a transaction with others on PostgreSQL (it takes no row locks).
    pub shared: bool,
    /// The writer begins and commits its transaction; `false`: it runs alone, outside any
    /// transaction, and manages its own (migrations).
    pub transaction: bool,
}

impl WriteKind {
    /// Webhook deliveries.
    pub const DELIVERY: Self = Self {
        durable: true,
        shared: true,
        transaction: true,
    };
    /// Acknowledged to a caller (a fulfillment answer, an operator), or made before an effect
    /// outside (a call marked in doubt).
    pub const DURABLE: Self = Self {
        durable: true,
        shared: false,
        transaction: true,
    };
    /// The worker's bookkeeping: a crash of the machine may undo it, and the job runs again.
    pub const BACKGROUND: Self = Self {
        durable: false,
        shared: false,
        transaction: true,
    };
    /// Schema changes, in transactions of their own.
    pub const UNMANAGED: Self = Self {
        durable: true,
        shared: false,
        transaction: false,
    };
}

trait Work: Send {
    /// Runs the unit; `false` if it failed (its changes are then rolled back).
    fn run(&mut self, conn: &mut dyn Conn) -> bool;
    /// Sends the result, or `failed` if the transaction that held it did not commit.
    fn answer(self: Box<Self>, failed: Option<&StoreError>);
    fn kind(&self) -> WriteKind;
    /// A marker that stops the thread that takes it (`Engine::close`).
    fn is_stop(&self) -> bool {
        false
    }
}

struct Task<T, F> {
    f: F,
    kind: WriteKind,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Work for Task<T, F>
where
    T: Send,
    F: FnMut(&mut dyn Conn) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &mut dyn Conn) -> bool {
        let f = &mut self.f;
        // A panic is a bug in one unit (a decision): it fails that unit, not the thread.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|panic| Err(StoreError::Panicked(panic_message(&panic))));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failed: Option<&StoreError>) {
        let result = match (self.result, failed) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(e)) => Err(e.clone()),
            (Some(Ok(v)), None) => Ok(v),
            (None, None) => Err(StoreError::Closed),
        };
        // A caller that gave up (its request was cancelled) no longer listens.
        let _ = self.reply.send(result);
    }

    fn kind(&self) -> WriteKind {
        self.kind
    }
}

struct Stop;

impl Work for Stop {
    fn run(&mut self, _conn: &mut dyn Conn) -> bool {
        true
    }
    fn answer(self: Box<Self>, _failed: Option<&StoreError>) {}
    fn kind(&self) -> WriteKind {
        WriteKind::BACKGROUND
    }
    fn is_stop(&self) -> bool {
        true
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

type Queue = Arc<Mutex<mpsc::Receiver<Box<dyn Work>>>>;

pub struct Engine {
    backend: Backend,
    writes: mpsc::Sender<Box<dyn Work>>,
    reads: mpsc::Sender<Box<dyn Work>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    writers: usize,
    readers: usize,
    closed: AtomicBool,
    /// Transactions that held acknowledged writes shared with others (group commit).
    shared_transactions: Arc<AtomicU64>,
    /// Writes handed over and not answered yet.
    in_flight: AtomicUsize,
    /// Set by `pause_writes`: writers wait before they take the next batch.
    gate: Arc<Gate>,
}

/// Writers wait here while `paused`.
#[derive(Default)]
struct Gate {
    paused: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait_open(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        while *paused {
            paused = self.opened.wait(paused).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn set(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = paused;
        self.opened.notify_all();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Keeps the writers from starting a batch while it lives (`Store::pause_writes`).
pub struct WritesPaused(Arc<Gate>);

impl Drop for WritesPaused {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Engine {
    /// Starts the threads, each opening its connection to `url`; fails if one cannot.
    pub async fn start(
        backend: Backend,
        url: &str,
        postgres_writers: usize,
    ) -> Result<Engine, StoreError> {
        let (writers, readers) = match backend {
            // SQLite has one writer; readers go on beside it (WAL).
            Backend::Sqlite => (1, 2),
            Backend::Postgres => (postgres_writers, 4),
        };
        let (writes, write_rx) = mpsc::channel(QUEUE);
        let (reads, read_rx) = mpsc::channel(QUEUE);
        let write_rx: Queue = Arc::new(Mutex::new(write_rx));
        let read_rx: Queue = Arc::new(Mutex::new(read_rx));
        let shared_transactions = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Gate::default());
        let mut engine = Engine {
            backend,
            writes,
            reads,
            threads: Mutex::new(Vec::new()),
            writers,
            readers,
            closed: AtomicBool::new(false),
            shared_transactions,
            in_flight: AtomicUsize::new(0),
            gate,
        };
        // The writer first, alone: the first connection to a new SQLite file makes it a WAL
        // database, which others opening at the same moment would find locked, and a bad URL
        // or password is then one error. SQLite's others follow one at a time; PostgreSQL's
        // open side by side (each is a round trip and an authentication: twenty in a row were
        // most of the time to `/readyz`).
        let side_by_side = backend == Backend::Postgres;
        let mut opening = Vec::new();
        for i in 0..writers + readers {
            let writer = i < writers;
            let queue = if writer { &write_rx } else { &read_rx };
            let thread = Thread {
                backend,
                url: url.to_owned(),
                queue: Arc::clone(queue),
                writer,
                shared_transactions: Arc::clone(&engine.shared_transactions),
                gate: Arc::clone(&engine.gate),
            };
            let (ready, is_ready) = oneshot::channel();
            let name = format!("store-{}-{i}", if writer { "writer" } else { "reader" });
            let started = std::thread::Builder::new()
                .name(name)
                .spawn(move || thread.run(ready))
                .map_err(|e| StoreError::Db(format!("could not start a store thread: {e}")));
            let opened = match started {
                Ok(handle) => {
                    engine
                        .threads
                        .get_mut()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(handle);
                    if side_by_side && i > 0 {
                        opening.push(is_ready);
                        Ok(())
                    } else {
                        is_ready.await.unwrap_or(Err(StoreError::Closed))
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = opened {
                engine.close().await;
                return Err(e);
            }
        }
        for is_ready in opening {
            if let Err(e) = is_ready.await.unwrap_or(Err(StoreError::Closed)) {
                engine.close().await;
                return Err(e);
            }
        }
        Ok(engine)
    }

    /// Runs `f` in a write transaction (shared with other writes where `kind` allows) and
    /// answers once it is committed.
    pub async fn write<T, F>(&self, kind: WriteKind, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let _counted = InFlight::new(&self.in_flight);
        self.submit(&self.writes, kind, f).await
    }

    /// Runs `f` on a reader's connection (no transaction unless `f` begins one).
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(&self.reads, WriteKind::BACKGROUND, f).await
    }

    async fn submit<T, F>(
        &self,
        queue: &mpsc::Sender<Box<dyn Work>>,
        kind: WriteKind,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Conn) -> Result<T, StoreError> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let task = Task {
            f,
            kind,
            result: None,
            reply,
        };
        queue
            .send(Box::new(task))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub fn shared_transactions(&self) -> u64 {
        self.shared_transactions.load(Ordering::Relaxed)
    }

    /// Writes handed over and not answered yet.
    pub fn writes_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Holds the writers before their next batch until the guard is dropped (tests use it to
    /// queue many writes and see them share a transaction).
    pub fn pause_writes(&self) -> WritesPaused {
        self.gate.set(true);
        WritesPaused(Arc::clone(&self.gate))
    }

    /// Stops every thread once the work already queued is done; later calls fail.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for _ in 0..self.writers {
            let _ = self.writes.send(Box::new(Stop)).await;
        }
        for _ in 0..self.readers {
            let _ = self.reads.send(Box::new(Stop)).await;
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

/// Counts a write while its caller waits (also when the caller gives up).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One store thread: its connection and the queue it serves.
struct Thread {
    backend: Backend,
    url: String,
    queue: Queue,
    writer: bool,
    shared_transactions: Arc<AtomicU64>,
    gate: Arc<Gate>,
}

impl Thread {
    fn run(self, ready: oneshot::Sender<Result<(), StoreError>>) {
        let mut conn = match db::connect(self.backend, &self.url) {
            Ok(conn) => {
                let _ = ready.send(Ok(()));
                Some(conn)
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        // Units taken while a transaction was extended that could not join it.
        let mut leftover = Vec::new();
        loop {
            let batch = if leftover.is_empty() {
                match self.next_batch() {
                    Some(batch) => batch,
                    None => return,
                }
            } else {
                std::mem::take(&mut leftover)
            };
            let stop = batch.iter().any(|w| w.is_stop());
            // A connection the server closed is opened anew before the next batch.
            if conn.as_ref().is_none_or(|c| c.is_broken()) {
                conn = match db::connect(self.backend, &self.url) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        warn!(error = %e, "store connection lost and not reopened yet");
                        for work in batch {
                            work.answer(Some(&e));
                        }
                        if stop {
                            return;
                        }
                        continue;
                    }
                };
            }
            let c = conn.as_deref_mut().expect("a connection");
            if self.writer {
                self.write(c, batch, &mut leftover);
            } else {
                for mut work in batch {
                    work.run(c);
                    work.answer(None);
                }
            }
            if stop {
                return;
            }
        }
    }

    /// Blocks until there is work: the first unit waiting and, for a writer, whatever else is
    /// waiting behind it. `None` when the store is gone.
    fn next_batch(&self) -> Option<Vec<Box<dyn Work>>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let first = queue.blocking_recv()?;
        if self.writer {
            // Paused: hold on to the queue too, so what gathers meanwhile is one batch.
            self.gate.wait_open();
        }
        let mut batch = vec![first];
        while self.writer && batch.len() < MAX_BATCH && !batch[batch.len() - 1].is_stop() {
            match queue.try_recv() {
                Ok(work) => batch.push(work),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    fn write(
        &self,
        conn: &mut dyn Conn,
        batch: Vec<Box<dyn Work>>,
        leftover: &mut Vec<Box<dyn Work>>,
    ) {
        let (batch, unmanaged): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|w| w.kind().transaction);
        for mut work in unmanaged {
            work.run(conn);
            work.answer(None);
        }
        match self.backend {
            Backend::Sqlite => self.transaction(conn, batch, Some(leftover)),
            Backend::Postgres => {
                let (shared, alone): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|w| w.kind().shared);
                if !shared.is_empty() {
                    self.transaction(conn, shared, None);
                }
                for work in alone {
                    self.transaction(conn, vec![work], None);
                }
            }
        }
    }

    /// A unit waiting right now, if any (the one SQLite writer: nobody else takes from its
    /// queue).
    fn try_take(&self) -> Option<Box<dyn Work>> {
        self.queue.try_lock().ok()?.try_recv().ok()
    }

    /// One transaction for `batch`; if a unit fails, each unit again in one of its own. With
    /// `extend` (SQLite), units that arrive meanwhile join it for `EXTEND_FOR`, if they ask no
    /// more durability than it has; one that cannot join goes to `extend` for the next batch.
    fn transaction(
        &self,
        conn: &mut dyn Conn,
        mut batch: Vec<Box<dyn Work>>,
        extend: Option<&mut Vec<Box<dyn Work>>>,
    ) {
        batch.retain(|w| !w.is_stop());
        if batch.is_empty() {
            return;
        }
        let durable = batch.iter().any(|w| w.kind().durable);
        if durable && (batch.len() > 1 || batch[0].kind().shared || self.backend == Backend::Sqlite)
        {
            self.shared_transactions.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = conn.begin_write(durable) {
            return answer_all(batch, &e);
        }
        let mut failed = batch.iter_mut().position(|work| !work.run(conn));
        if let (None, Some(leftover)) = (failed, extend) {
            let until = std::time::Instant::now() + EXTEND_FOR;
            while batch.len() < MAX_BATCH && std::time::Instant::now() < until {
                let Some(mut work) = self.try_take() else {
                    break;
                };
                let kind = work.kind();
                if work.is_stop() || !kind.transaction || (kind.durable && !durable) {
                    leftover.push(work);
                    break;
                }
                let ok = work.run(conn);
                batch.push(work);
                if !ok {
                    failed = Some(batch.len() - 1);
                    break;
                }
            }
        }
        let Some(at) = failed else {
            return match conn.execute("COMMIT", &[]) {
                Ok(_) => batch.into_iter().for_each(|work| work.answer(None)),
                Err(e) => {
                    let _ = conn.execute("ROLLBACK", &[]);
                    answer_all(batch, &e)
                }
            };
        };
        if let Err(e) = conn.execute("ROLLBACK", &[]) {
            error!(error = %e, "rollback failed");
        }
        if batch.len() == 1 {
            return answer_all(batch, &StoreError::RolledBack);
        }
        warn!(
            units = batch.len(),
            failed = at,
            "a unit of a shared write failed; each unit runs again alone"
        );
        for work in batch {
            self.transaction(conn, vec![work], None);
        }
    }
}

fn answer_all(batch: Vec<Box<dyn Work>>, e: &StoreError) {
    for work in batch {
        work.answer(Some(e));
    }
}
