//! Several server processes on one database: every process's commit hook
//! sees every commit, its own and the others', in commit order.
//!
//! Each group's transaction takes the next commit sequence number (under
//! the same row lock as the stream position) and writes its committed
//! batches, as JSON, to `commit_log`; the commit `NOTIFY`s
//! `hotline_stream` with that number. A process's caches and `/sync`
//! waiters are fed by its commit hook alone, so a process replays the other
//! processes' commits through the same hook, in sequence order, interleaved
//! with its own:
//!
//! - the writer, after committing sequence `S`, first replays whatever
//!   other processes committed before `S`, then runs the hook on its own
//!   batches, then replays what has been announced since;
//! - a listener connection hears the notifications; a replay thread reads
//!   the announced rows and runs the hook on them, stopping before a
//!   commit of this process that its writer has not published yet (the
//!   writer will, and continues from there).
//!
//! So a `/sync` on one process never sees a position before every lower
//! position is in its caches, whichever process committed it.
//!
//! The log keeps [`RETENTION_MS`] of commits: enough for a live process to
//! replay, pruned by the writers. A process that falls further behind (it
//! was stopped, not killed) reports it and continues from the log's start;
//! its lazily loaded caches may then miss what it skipped, so such a
//! process should be restarted.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{block_on, engine, Conn, Params};
use crate::*;

/// How long commits stay in `commit_log`.
pub(crate) const RETENTION_MS: i64 = 10 * 60 * 1000;

/// One group's committed batches, as logged.
#[derive(Serialize)]
pub(crate) struct LoggedGroup<'a> {
    pub(crate) batches: Vec<Vec<(i64, &'a WriteOp)>>,
    pub(crate) upto: i64,
}

#[derive(Deserialize)]
struct ReadGroup {
    batches: Vec<Vec<(i64, WriteOp)>>,
    upto: i64,
}

/// The order in which this process's hook sees commits.
pub(crate) struct Replay {
    /// This process's name in `commit_log.origin`.
    pub(crate) origin: String,
    /// The last commit sequence number the hook has seen.
    applied: Mutex<i64>,
    /// The highest sequence number announced so far.
    announced: AtomicI64,
    hook: Arc<RwLock<Option<CommitHook>>>,
    position: Arc<AtomicI64>,
    /// Reads the log (its own connection: the replay must not queue
    /// behind reads, nor reads behind it).
    conn: Conn,
}

impl Replay {
    pub(crate) fn new(
        origin: String,
        applied: i64,
        hook: Arc<RwLock<Option<CommitHook>>>,
        position: Arc<AtomicI64>,
        conn: Conn,
    ) -> Self {
        Self {
            origin,
            applied: Mutex::new(applied),
            announced: AtomicI64::new(applied),
            hook,
            position,
            conn,
        }
    }

    /// Publishes this process's commit `seq`: what others committed before
    /// it first, then `publish` (which runs the hook on its batches), then
    /// what has been announced since.
    pub(crate) fn own(&self, seq: i64, publish: impl FnOnce()) {
        let mut applied = self.applied.lock();
        self.replay_locked(&mut applied, seq - 1);
        publish();
        *applied = (*applied).max(seq);
        let announced = self.announced.load(Ordering::Acquire);
        self.replay_locked(&mut applied, announced);
    }

    /// The listener was cut and is listening again: what was announced
    /// meanwhile went unheard, so replays up to the log's end.
    pub(crate) fn resume(&self) {
        const LAST: &str = "SELECT COALESCE(MAX(seq), 0) FROM commit_log";
        let last = block_on(self.conn.read_again(|c| c.opt(LAST, &[])));
        match last.map(|r| r.and_then(|r| r.try_get::<_, i64>(0).ok())) {
            Ok(Some(seq)) => self.announced(seq),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "reading where the commit log ends"),
        }
    }

    /// A commit `seq` was announced: replays up to it.
    pub(crate) fn announced(&self, seq: i64) {
        self.announced.fetch_max(seq, Ordering::AcqRel);
        let mut applied = self.applied.lock();
        self.replay_locked(&mut applied, seq);
    }

    fn replay_locked(&self, applied: &mut i64, upto: i64) {
        if upto <= *applied {
            return;
        }
        const READ: &str =
            "SELECT seq, origin, batches FROM commit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq";
        let from = *applied;
        let params: Params = &[&from, &upto];
        let rows = match block_on(self.conn.read_again(|c| c.all(READ, params))) {
            Ok(rows) => rows,
            Err(e) => {
                // The next announcement or commit tries again.
                tracing::error!(error = %e, "reading other processes' commits");
                return;
            }
        };
        let hook = self.hook.read().clone();
        for row in rows {
            let (seq, origin, json): (i64, String, String) =
                match (row.try_get(0), row.try_get(1), row.try_get(2)) {
                    (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                    _ => {
                        tracing::error!("an unreadable commit log row");
                        return;
                    }
                };
            if origin == self.origin {
                // Ours, not yet published by our writer: it will, and
                // continue from there.
                return;
            }
            if seq != *applied + 1 {
                tracing::error!(
                    from = *applied + 1,
                    to = seq - 1,
                    "commits of other processes were pruned before this one replayed them; restart it"
                );
            }
            match serde_json::from_str::<ReadGroup>(&json) {
                Ok(group) => {
                    self.position.fetch_max(group.upto, Ordering::AcqRel);
                    let last = group.batches.len().saturating_sub(1);
                    for (i, items) in group.batches.into_iter().enumerate() {
                        let committed = Committed {
                            items,
                            high_water: if i == last { group.upto } else { 0 },
                        };
                        if let Some(h) = &hook {
                            h(&committed);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, seq, "an unreadable commit log entry"),
            }
            *applied = seq;
        }
    }
}

/// What the listener heard.
pub(crate) enum Heard {
    /// A commit's sequence number (`hotline_stream`).
    Commit(i64),
    /// A [`BroadcastEnvelope`] (`hotline_ephemeral`).
    Broadcast(String),
    /// Listening again after the connection was lost.
    Resumed,
}

/// A broadcast as sent on `hotline_ephemeral`: the sender's origin lets
/// it ignore its own.
#[derive(Serialize, Deserialize)]
pub(crate) struct BroadcastEnvelope {
    pub(crate) origin: String,
    pub(crate) message: Broadcast,
}

/// Listens on `hotline_stream` and `hotline_ephemeral`; once listening,
/// answers the channel what it hears arrives on (for [`spawn`]).
pub(crate) fn listen(
    runtime: &tokio::runtime::Runtime,
    url: &str,
) -> Result<mpsc::Receiver<Heard>> {
    let (tx, rx) = mpsc::channel::<Heard>();
    let url = url.to_owned();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    runtime.spawn(async move {
        // A lost connection is made again, at most every few seconds;
        // the first failure to connect fails the store's opening instead.
        let mut ready = Some(ready_tx);
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            match listen_once(&url, &tx, &mut ready).await {
                Ended::Receiver => return,
                Ended::Failed(e) => match ready.take() {
                    Some(r) => {
                        let _ = r.send(Err(e));
                        return;
                    }
                    None => tracing::error!(error = %e, "the commit listener's connection failed"),
                },
                Ended::Lost(heard) => {
                    tracing::error!("the commit listener's connection was lost");
                    if heard {
                        pause = std::time::Duration::from_millis(100);
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(5));
        }
    });
    ready_rx
        .recv()
        .map_err(|_| StoreError::Engine("the commit listener stopped".into()))??;
    Ok(rx)
}

/// How one connection of the listener ended.
enum Ended {
    /// Nobody listens to what it hears any more (the store closed).
    Receiver,
    /// It could not connect or listen.
    Failed(StoreError),
    /// It was listening, then lost (whether it heard anything at all).
    Lost(bool),
}

/// Connects, listens, and forwards what it hears until the connection
/// ends. The first time, answers `ready`; after that, a connection that
/// starts listening says [`Heard::Resumed`], so what was committed while
/// nobody listened is replayed.
async fn listen_once(
    url: &str,
    tx: &mpsc::Sender<Heard>,
    ready: &mut Option<mpsc::Sender<Result<()>>>,
) -> Ended {
    use futures_util::StreamExt;
    let (client, mut connection) = match super::tls::connect(url).await {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    {
        let listen = client.batch_execute("LISTEN hotline_stream; LISTEN hotline_ephemeral");
        // The connection must be polled for LISTEN to complete.
        tokio::pin!(listen);
        loop {
            tokio::select! {
                r = &mut listen => match r {
                    Ok(()) => break,
                    Err(e) => return Ended::Failed(engine(e)),
                },
                m = messages.next() => if m.is_none() {
                    return Ended::Failed(StoreError::Engine("connection closed before LISTEN".into()));
                },
            }
        }
    }
    match ready.take() {
        Some(r) => {
            let _ = r.send(Ok(()));
        }
        None => {
            if tx.send(Heard::Resumed).is_err() {
                return Ended::Receiver;
            }
        }
    }
    let mut heard = false;
    while let Some(m) = messages.next().await {
        match m {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                heard = true;
                let message = match n.channel() {
                    "hotline_stream" => match n.payload().parse::<i64>() {
                        Ok(seq) => Heard::Commit(seq),
                        Err(_) => continue,
                    },
                    _ => Heard::Broadcast(n.payload().to_owned()),
                };
                if tx.send(message).is_err() {
                    return Ended::Receiver;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "the commit listener's connection failed");
                break;
            }
        }
    }
    drop(client);
    Ended::Lost(heard)
}

/// The replay thread: each announcement replayed, each other process's
/// broadcast handed to `broadcast` (the hook may read the store, which
/// must not run on the engine's runtime: its connections need that thread).
pub(crate) fn spawn(
    rx: mpsc::Receiver<Heard>,
    replay: Arc<Replay>,
    broadcast: Arc<RwLock<Option<BroadcastHook>>>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("postgres-replay".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                // What queued meanwhile: one read of the log for all of it.
                let mut upto = None;
                let mut resumed = false;
                for heard in std::iter::once(first).chain(rx.try_iter()) {
                    match heard {
                        Heard::Commit(seq) => upto = upto.max(Some(seq)),
                        Heard::Resumed => resumed = true,
                        Heard::Broadcast(json) => {
                            match serde_json::from_str::<BroadcastEnvelope>(&json) {
                                Ok(b) if b.origin == replay.origin => {}
                                Ok(b) => {
                                    if let Some(h) = broadcast.read().clone() {
                                        h(&b.message);
                                    }
                                }
                                Err(e) => tracing::warn!(error = %e, "an unreadable broadcast"),
                            }
                        }
                    }
                }
                if let Some(seq) = upto {
                    replay.announced(seq);
                }
                if resumed {
                    replay.resume();
                }
            }
        })
        .map(|_| ())
        .map_err(engine)
}
