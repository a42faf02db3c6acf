//! The PostgreSQL engine: for deployments that outgrow one machine, with
//! several `hotline serve` processes sharing one database.
//!
//! **Client.** `tokio-postgres`, driven by a small runtime of the engine's
//! own (one I/O thread). The store's reads are plain function calls (the
//! `Store` traits are synchronous: on SQLite a read is a few microseconds
//! and needs no executor), so a read here blocks its caller on the query's
//! future with `futures_executor::block_on`. That works on any thread, a
//! Tokio worker included, because only the connection tasks need Tokio's
//! reactor and they run on the engine's runtime; a `Client`'s query futures
//! only talk to its connection task through channels. A `Client` is `Sync`
//! and pipelines the queries of concurrent callers, so the read side is a
//! few clients used round-robin ([`READERS`]) rather than a pool that hands
//! out connections. Each client prepares a statement once and keeps it.
//!
//! **Writes.** One writer thread per process owns a connection and commits
//! in groups, as the SQLite engine's writer does: every batch waiting in its
//! queue goes into one transaction (see [`writer`]). PostgreSQL makes the
//! commit durable (`synchronous_commit = on` for the writer's session, set
//! explicitly, whatever the server's default), so a write resolves `Ok`
//! only once it survives a crash of the server or the machine.
//!
//! **Stream positions across processes.** The stream's high-water mark is
//! one row (`stream_position`). A group locks it (`SELECT ... FOR UPDATE`)
//! before taking positions and writes the new mark just before committing;
//! the row lock is held until the commit. So a second process's group
//! waits for the first's commit and continues after it: positions are
//! allocated and committed in the same order by every process, and no
//! reader ever sees a position committed while a lower one is still
//! pending. (Synapse's stream id generators reach the same guarantee the
//! other way round, tracking a "persisted up to" position per writer.)
//! Each commit also `NOTIFY`s `hotline_stream` with its mark, for other
//! processes to wake their `/sync` waiters.
//!
//! **Schema.** Versioned migrations ([`schema`]), run at start under an
//! advisory lock, so processes starting together migrate once.
//!
//! **Lost connections.** Every connection of a store connects again when
//! PostgreSQL drops it ([`Conn::redial`]): a read that meets the cut runs
//! once more on the new connection (reads change nothing); the writer
//! fails the group that met it (no write is retried behind its caller's
//! back: the client retries with its transaction id) and connects again
//! before the next, taking the deployment-jobs lock again, which was its
//! old session's; the listener listens again, with a pause that doubles up
//! to 5 s while PostgreSQL is away, and replays the commit log from where
//! it stood, since what was announced meanwhile went unheard.

mod replay;
pub(crate) mod schema;
mod tls;
mod writer;

mod accounts;
mod ephemeral;
mod federation;
mod identity;
mod key_backup;
mod keys;
mod media;
mod rooms;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::*;

/// Clients the reads share (each pipelines its callers' queries).
const READERS: usize = 4;
/// The advisory lock of the process that runs the deployment's jobs.
const JOBS_LOCK: i64 = 0x686f_746c_696e_66;

pub(crate) type PgError = tokio_postgres::Error;
pub(crate) type PgResult<T> = std::result::Result<T, PgError>;
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection and the statements prepared on it; with a [`Redial`], it
/// connects again when PostgreSQL drops it (a restart of the server, a
/// terminated backend, a network cut).
pub(crate) struct Conn {
    session: RwLock<Arc<Session>>,
    redial: Option<Redial>,
    /// Where a [`Conn::pipeline`] is: [`NOT_PIPELINING`], [`FIRST_PASS`]
    /// or [`LATER_PASS`].
    pipelining: AtomicU8,
    /// A statement went out after a pipeline's first pass, so the
    /// pipeline's statements may not have reached the server in order.
    out_of_order: AtomicBool,
}

/// One connection's client and its prepared statements, which belong to
/// it: a new connection prepares them again.
struct Session {
    client: Arc<Client>,
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

impl Session {
    fn new(client: Client) -> Arc<Self> {
        Arc::new(Self {
            client: Arc::new(client),
            prepared: Mutex::new(HashMap::new()),
        })
    }

    async fn statement(&self, sql: &'static str) -> PgResult<Statement> {
        if let Some(s) = self.prepared.lock().get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.prepared.lock().insert(sql, s.clone());
        Ok(s)
    }
}

/// How a connection connects again.
pub(crate) struct Redial {
    pub(crate) url: String,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Run on each new connection before it is used (the writer's
    /// `synchronous_commit`).
    pub(crate) setup: &'static str,
}

const NOT_PIPELINING: u8 = 0;
const FIRST_PASS: u8 = 1;
const LATER_PASS: u8 = 2;

impl Conn {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            session: RwLock::new(Session::new(client)),
            redial: None,
            pipelining: AtomicU8::new(NOT_PIPELINING),
            out_of_order: AtomicBool::new(false),
        }
    }

    /// A connection that connects again when it is lost ([`Conn::redial`]).
    pub(crate) fn redialling(client: Client, redial: Redial) -> Self {
        Self {
            redial: Some(redial),
            ..Self::new(client)
        }
    }

    fn now(&self) -> Arc<Session> {
        self.session.read().clone()
    }

    /// Connects again if this connection is lost, or (`failed`) if a
    /// statement just failed in a way that ends the connection (the server
    /// shutting down or terminating the backend) whether or not the client
    /// has noticed yet. Whether it connected again.
    pub(crate) async fn redial(&self, failed: Option<&PgError>) -> Result<bool> {
        let Some(redial) = &self.redial else {
            return Ok(false);
        };
        let ends = |e: &PgError| {
            e.is_closed()
                || e.code().is_some_and(|c| {
                    let class = &c.code()[..2];
                    class == "57" || class == "08"
                })
        };
        let before = self.now();
        if !before.client.is_closed() && !failed.is_some_and(ends) {
            return Ok(false);
        }
        let client = dial(&redial.runtime, &redial.url).await?;
        if !redial.setup.is_empty() {
            client
                .batch_execute(redial.setup)
                .await
                .map_err(|e| failure(&e))?;
        }
        let mut session = self.session.write();
        // Another caller may have connected again meanwhile: keep theirs.
        if Arc::ptr_eq(&session, &before) {
            *session = Session::new(client);
            tracing::warn!("connected to PostgreSQL again");
        }
        Ok(true)
    }

    /// A read, run once more on a new connection if it met a lost one
    /// (reads change nothing); otherwise its own failure.
    pub(crate) async fn read_again<'a, T, F: Future<Output = PgResult<T>>>(
        &'a self,
        query: impl Fn(&'a Conn) -> F,
    ) -> PgResult<T> {
        let e = match query(self).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match self.redial(Some(&e)).await {
            Ok(true) => query(self).await,
            Ok(false) => Err(e),
            Err(redial) => {
                tracing::error!(error = %redial, "connecting to PostgreSQL again");
                Err(e)
            }
        }
    }

    /// `sql` prepared on this connection (once; statements outlive
    /// transactions, they belong to the connection).
    pub(crate) async fn statement(&self, sql: &'static str) -> PgResult<Statement> {
        self.now().statement(sql).await
    }

    /// Prepares each of `sqls` this connection has not prepared yet, so a
    /// pipeline of them sends each statement on its first poll.
    pub(crate) async fn prepare_all(&self, sqls: &[&'static str]) -> PgResult<()> {
        for sql in sqls {
            self.statement(sql).await?;
        }
        Ok(())
    }

    /// Called just before a request goes to the server: one that goes out
    /// after a pipeline's first pass may be out of order.
    fn sending(&self) {
        if self.pipelining.load(Ordering::Relaxed) == LATER_PASS {
            self.out_of_order.store(true, Ordering::Relaxed);
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub(crate) async fn exec(&self, sql: &'static str, params: Params<'_>) -> PgResult<u64> {
        let session = self.now();
        let s = session.statement(sql).await?;
        self.sending();
        session.client.execute(&s, params).await
    }

    pub(crate) async fn all(&self, sql: &'static str, params: Params<'_>) -> PgResult<Vec<Row>> {
        let session = self.now();
        let s = session.statement(sql).await?;
        self.sending();
        session.client.query(&s, params).await
    }

    pub(crate) async fn opt(&self, sql: &'static str, params: Params<'_>) -> PgResult<Option<Row>> {
        let session = self.now();
        let s = session.statement(sql).await?;
        self.sending();
        session.client.query_opt(&s, params).await
    }

    /// Runs `futures` (each a few statements on this connection) as one
    /// pipeline: every future is polled once, in order, before any answer
    /// is awaited, so each sends its statements then and the server runs
    /// them in the futures' order, in one round trip. A future whose
    /// statement goes out later (one that waits for an answer before its
    /// next statement, or for a statement's first preparation) breaks that
    /// order; the second value says whether the order held. Outputs are in
    /// the futures' order.
    pub(crate) async fn pipeline<'a, T>(
        &self,
        futures: Vec<std::pin::Pin<Box<dyn Future<Output = T> + 'a>>>,
    ) -> (Vec<T>, bool) {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        use std::task::Poll;
        let mut outputs: Vec<Option<T>> = (0..futures.len()).map(|_| None).collect();
        let mut first_pass = Some(futures);
        let mut waiting = FuturesUnordered::new();
        self.out_of_order.store(false, Ordering::Relaxed);
        std::future::poll_fn(|cx| {
            self.pipelining.store(FIRST_PASS, Ordering::Relaxed);
            for (i, mut f) in first_pass
                .take()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => outputs[i] = Some(v),
                    Poll::Pending => waiting.push(async move { (i, f.await) }),
                }
            }
            Poll::Ready(())
        })
        .await;
        // The rest only wait for their answers; only the woken are polled.
        self.pipelining.store(LATER_PASS, Ordering::Relaxed);
        while let Some((i, v)) = waiting.next().await {
            outputs[i] = Some(v);
        }
        self.pipelining.store(NOT_PIPELINING, Ordering::Relaxed);
        let in_order = !self.out_of_order.swap(false, Ordering::Relaxed);
        let outputs = outputs
            .into_iter()
            .map(|o| o.expect("a pipeline's futures all finish"))
            .collect();
        (outputs, in_order)
    }

    /// The client itself, for statements built at run time (`migrate`).
    pub(crate) fn client(&self) -> Arc<Client> {
        self.now().client.clone()
    }

    /// Statements with no parameters and no rows (transaction control).
    pub(crate) async fn batch(&self, sql: &str) -> PgResult<()> {
        let session = self.now();
        self.sending();
        session.client.batch_execute(sql).await
    }
}

/// PostgreSQL engine.
pub struct PostgresStore {
    /// Drives every connection's I/O. `None` once closed.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    readers: Vec<Conn>,
    next_reader: AtomicUsize,
    inbox: Mutex<Option<mpsc::Sender<writer::Job>>>,
    hook: Arc<RwLock<Option<CommitHook>>>,
    broadcast_hook: Arc<RwLock<Option<BroadcastHook>>>,
    /// This process's name among those sharing the database.
    origin: String,
    /// Whether this process holds the deployment-jobs lock (the first to
    /// start; held by its writer's session, released when it ends).
    jobs: Arc<AtomicBool>,
    position: Arc<AtomicI64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub(crate) fn engine<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// What a failed statement means to the store's callers.
pub(crate) fn failure(e: &PgError) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::EXCLUSION_VIOLATION => {
            StoreError::Conflict(e.to_string())
        }
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
            StoreError::Full(e.to_string())
        }
        // A NUL character in text (22021), or text the database's encoding
        // cannot hold (22P05).
        Some(c)
            if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            StoreError::Invalid(e.to_string())
        }
        _ => engine(e),
    }
}

/// Whether a statement failed for want of the storage (space, the
/// connection, the server) rather than because of what it wrote: then the
/// whole group fails, as on SQLite.
pub(crate) fn storage_failed(e: &PgError) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => {
            let class = &c.code()[..2];
            // 53: insufficient resources; 57/58: operator intervention,
            // system errors; 08: connection exceptions; XX: internal.
            matches!(class, "53" | "57" | "58" | "08" | "XX")
        }
        // No SQL state: the connection or the protocol failed.
        None => true,
    }
}

/// The runtime that drives an engine's connections (one I/O thread).
pub(crate) fn io_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("postgres-io")
        .enable_all()
        .build()
        .map_err(engine)
}

/// A client of the database at `url`, its connection task on `rt`.
pub(crate) fn connect(rt: &tokio::runtime::Runtime, url: &str) -> Result<Client> {
    block_on(dial(rt.handle(), url))
}

/// A new connection to `url`. Connecting needs the reactor: it runs on the
/// engine's runtime, and its connection task stays there.
async fn dial(runtime: &tokio::runtime::Handle, url: &str) -> Result<Client> {
    let url = url.to_owned();
    runtime
        .spawn(async move {
            let (client, connection) = tls::connect(&url).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "PostgreSQL connection ended");
                }
            });
            Ok::<_, StoreError>(client)
        })
        .await
        .map_err(engine)?
}

/// Runs `f` to completion on this thread (see the module docs).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// runs the migrations it lacks, and starts the writer.
    pub fn open(url: &str) -> Result<Arc<Self>> {
        tls::warn_if_unchecked(url);
        let runtime = io_runtime()?;
        let connect = |rt: &tokio::runtime::Runtime| connect(rt, url);
        let redial = |setup: &'static str| Redial {
            url: url.to_owned(),
            runtime: runtime.handle().clone(),
            setup,
        };
        let mut writer_conn = Conn::redialling(connect(&runtime)?, redial(writer::SESSION_SETUP));
        block_on(schema::migrate(&mut writer_conn))?;
        let jobs = block_on(writer_conn.opt("SELECT pg_try_advisory_lock($1)", &[&JOBS_LOCK]))
            .map_err(engine)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(engine)?
            .unwrap_or(false);
        let jobs = Arc::new(AtomicBool::new(jobs));
        let readers = (0..READERS)
            .map(|_| connect(&runtime).map(|c| Conn::redialling(c, redial(""))))
            .collect::<Result<Vec<_>>>()?;
        // Listening before reading where the log stands: no commit falls
        // between the two.
        let announcements = replay::listen(&runtime, url)?;
        let row = block_on(writer_conn.opt("SELECT pos, commit_seq FROM stream_position", &[]))
            .map_err(engine)?
            .ok_or_else(|| StoreError::Engine("stream_position has no row".into()))?;
        let (position, seq): (i64, i64) = (
            row.try_get(0).map_err(engine)?,
            row.try_get(1).map_err(engine)?,
        );
        let position = Arc::new(AtomicI64::new(position));
        let hook: Arc<RwLock<Option<CommitHook>>> = Arc::new(RwLock::new(None));
        let replay = Arc::new(replay::Replay::new(
            format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            seq,
            hook.clone(),
            position.clone(),
            Conn::redialling(connect(&runtime)?, redial("")),
        ));
        let broadcast_hook: Arc<RwLock<Option<BroadcastHook>>> = Arc::new(RwLock::new(None));
        let origin = replay.origin.clone();
        replay::spawn(announcements, replay.clone(), broadcast_hook.clone())?;
        let (tx, rx) = mpsc::channel();
        let writer = {
            let w = writer::Writer {
                conn: writer_conn,
                hook: hook.clone(),
                position: position.clone(),
                replay,
                jobs: jobs.clone(),
            };
            std::thread::Builder::new()
                .name("postgres-writer".into())
                .spawn(move || w.run(rx))
                .map_err(engine)?
        };
        Ok(Arc::new(Self {
            runtime: Mutex::new(Some(runtime)),
            readers,
            next_reader: AtomicUsize::new(0),
            inbox: Mutex::new(Some(tx)),
            hook,
            broadcast_hook,
            origin,
            jobs,
            position,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// A connection of its own to `url`, on a runtime that lives as long
    /// as the process (tests, and `CREATE DATABASE` before a store opens).
    #[cfg(test)]
    pub(crate) fn open_admin(url: &str) -> Conn {
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let rt = RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        });
        Conn::new(connect(rt, url).unwrap())
    }

    /// Stops the writer after the queued batches are committed, then the
    /// connections.
    pub fn close(&self) {
        self.inbox.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        // Dropping a runtime blocks, which Tokio forbids inside another
        // runtime (the server closes the store from one).
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }

    fn reader(&self) -> &Conn {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        &self.readers[i]
    }

    /// A read on one of the readers ([`Conn::read_again`]).
    fn read<'a, T, F: Future<Output = PgResult<T>>>(
        &'a self,
        query: impl Fn(&'a Conn) -> F,
    ) -> Result<T> {
        block_on(self.reader().read_again(query)).map_err(|e| failure(&e))
    }

    /// Every row of a read, mapped.
    pub(crate) fn query_all<T>(
        &self,
        sql: &'static str,
        params: Params<'_>,
        map: impl Fn(&Row) -> PgResult<T>,
    ) -> Result<Vec<T>> {
        let rows = self.read(|c| c.all(sql, params))?;
        rows.iter().map(|r| map(r).map_err(engine)).collect()
    }

    /// The one row of a read (at most one), mapped.
    pub(crate) fn query_one<T>(
        &self,
        sql: &'static str,
        params: Params<'_>,
        map: impl Fn(&Row) -> PgResult<T>,
    ) -> Result<Option<T>> {
        let row = self.read(|c| c.opt(sql, params))?;
        row.as_ref().map(map).transpose().map_err(engine)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for PostgresStore {
    fn write(&self, batch: WriteBatch) -> WriteFuture {
        let (reply, rx) = oneshot::channel();
        let sent = match &*self.inbox.lock() {
            Some(tx) => tx.send((batch, reply)).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Engine("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError::Engine("writer stopped".into()))?
        })
    }

    fn set_commit_hook(&self, hook: CommitHook) {
        *self.hook.write() = Some(hook);
    }

    fn current_position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    fn count_events(&self) -> Result<u64> {
        let n: Option<i64> =
            self.query_one("SELECT COUNT(*) FROM events", &[], |r| r.try_get(0))?;
        Ok(n.unwrap_or(0) as u64)
    }

    fn stored_position(&self) -> Result<i64> {
        let stored = self.query_one("SELECT pos FROM stream_position", &[], |r| r.try_get(0))?;
        Ok(stored.unwrap_or(0).max(self.current_position()))
    }

    fn broadcast(&self, message: &Broadcast) {
        let envelope = replay::BroadcastEnvelope {
            origin: self.origin.clone(),
            message: message.clone(),
        };
        let Ok(json) = serde_json::to_string(&envelope) else {
            return;
        };
        if let Err(e) = block_on(
            self.reader()
                .exec("SELECT pg_notify('hotline_ephemeral', $1)", &[&json]),
        ) {
            tracing::warn!(error = %e, "broadcasting to the other processes");
        }
    }

    fn set_broadcast_hook(&self, hook: BroadcastHook) {
        *self.broadcast_hook.write() = Some(hook);
    }

    fn runs_deployment_jobs(&self) -> bool {
        self.jobs.load(Ordering::Acquire)
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store on a new, empty database of the server `HOTLINE_TEST_POSTGRES`
    /// names (`postgres://user@host:port/db`; the tests make their own
    /// databases beside `db`). Panics when it is not set: these tests are
    /// run with a server (`scripts/test.sh` starts one).
    pub(crate) fn fresh_store() -> Arc<PostgresStore> {
        PostgresStore::open(&fresh_database()).unwrap()
    }

    /// The URL of a new, empty database (see [`fresh_store`]).
    pub(crate) fn fresh_database() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::var("HOTLINE_TEST_POSTGRES")
            .expect("HOTLINE_TEST_POSTGRES names the PostgreSQL server of the tests");
        let name = format!(
            "unit_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let admin = PostgresStore::open_admin(&base);
        block_on(admin.batch(&format!("CREATE DATABASE {name}"))).unwrap();
        let (head, _) = base.rsplit_once('/').unwrap();
        format!("{head}/{name}")
    }

    /// Positions the hook saw, in the order it saw them.
    fn record_hook(store: &PostgresStore) -> Arc<Mutex<Vec<i64>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        store.set_commit_hook(Arc::new(move |c: &Committed| {
            s.lock()
                .extend(c.items.iter().map(|(p, _)| *p).filter(|p| *p > 0));
        }));
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_process_hook_sees_every_commit_of_every_process_once_in_position_order() {
        let url = fresh_database();
        let (a, b) = (
            PostgresStore::open(&url).unwrap(),
            PostgresStore::open(&url).unwrap(),
        );
        let (seen_a, seen_b) = (record_hook(&a), record_hook(&b));
        const N: i64 = 400;
        let mut writes = Vec::new();
        for i in 0..N {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            writes.push(tokio::spawn(async move {
                store
                    .write(account_data(&format!("@u{}:x", i % 7), i))
                    .await
                    .unwrap()
            }));
        }
        for w in writes {
            w.await.unwrap();
        }
        // Then turn about: each process commits right after the other, so
        // its own commit races the announcement of the other's.
        for i in 0..N {
            let store = if i % 2 == 0 { &a } else { &b };
            store.write(account_data("@turns:x", i)).await.unwrap();
        }
        const N2: i64 = 2 * N;
        // The other process's commits arrive through NOTIFY and the log.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (seen_a.lock().len() as i64) < N2 || (seen_b.lock().len() as i64) < N2 {
            assert!(
                std::time::Instant::now() < deadline,
                "a: {}, b: {}",
                seen_a.lock().len(),
                seen_b.lock().len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let all: Vec<i64> = (1..=N2).collect();
        assert_eq!(*seen_a.lock(), all, "process A's hook");
        assert_eq!(*seen_b.lock(), all, "process B's hook");
        assert_eq!(a.current_position(), N2);
        assert_eq!(b.current_position(), N2);
    }

    fn account_data(user: &str, i: i64) -> WriteBatch {
        WriteBatch::one(WriteOp::PutAccountData {
            user_id: user.into(),
            room_id: String::new(),
            kind: "k".into(),
            content: format!("{{\"i\":{i}}}"),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_whose_connections_are_cut_connect_again_and_miss_no_commit() {
        let url = fresh_database();
        let (a, b) = (
            PostgresStore::open(&url).unwrap(),
            PostgresStore::open(&url).unwrap(),
        );
        let (seen_a, seen_b) = (record_hook(&a), record_hook(&b));
        a.write(account_data("@a:x", 1)).await.unwrap();
        b.write(account_data("@b:x", 2)).await.unwrap();
        assert!(a.runs_deployment_jobs() && !b.runs_deployment_jobs());
        // What a restart of PostgreSQL does to the processes: every
        // backend of the database terminated (the writers', the readers',
        // the listeners').
        let db = url.rsplit('/').next().unwrap().to_owned();
        let admin = PostgresStore::open_admin(&std::env::var("HOTLINE_TEST_POSTGRES").unwrap());
        let cut = admin
            .opt(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .await
            .unwrap()
            .unwrap()
            .get::<_, i64>(0);
        assert!(cut >= 2 * (READERS as i64 + 3), "{cut} connections cut");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // Writes and reads go on, each process on new connections; A
        // hears of B's commit through its listener, which listens again
        // (before A's own next commit would replay it anyway).
        b.write(account_data("@b:x", 3)).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen_a.lock().len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "a: {:?}",
                seen_a.lock()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        a.write(account_data("@a:x", 4)).await.unwrap();
        let got = a.get_account_data("@b:x", "", "k").unwrap().unwrap();
        assert_eq!(got.content, "{\"i\":3}");
        // Each hook sees every commit once, in order, the other process's
        // included: what was announced while a listener was away is
        // replayed when it listens again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen_a.lock().len() < 4 || seen_b.lock().len() < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "a: {:?}, b: {:?}",
                seen_a.lock(),
                seen_b.lock()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(*seen_a.lock(), [1, 2, 3, 4]);
        assert_eq!(*seen_b.lock(), [1, 2, 3, 4]);
        // The deployment's jobs lock went with the old sessions; the first
        // writer back took it, and only one process holds it.
        assert!(a.runs_deployment_jobs() != b.runs_deployment_jobs());
        a.close();
        b.close();
    }

    #[tokio::test]
    async fn reads_and_writes_work_from_inside_a_current_thread_runtime() {
        let store = fresh_store();
        let before = store.stored_position().unwrap();
        assert_eq!(before, 0);
        let c = store.write(WriteBatch::new()).await.unwrap();
        assert!(c.items.is_empty());
        assert_eq!(store.stored_position().unwrap(), before);
        store.close();
    }
}
