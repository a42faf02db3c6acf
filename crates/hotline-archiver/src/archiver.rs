//! The loop: sync, catch up, append, retry, import keys, checkpoint.
//! See the crate docs for the invariant it keeps.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hotline_records::{Appended, Archive, NewEntry, Options, Status};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind, UnableToDecryptReason};
use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::events::room::{EncryptedFile, MediaSource};
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{uint, EventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::sync::{SyncResponse, Timeline};
use matrix_sdk::{Client, Room};
use serde_json::{json, Value};

use crate::convert::{self, Seen};
use crate::state::{private_dir, read_secrets, BookFile, Pending};
use crate::{session, Config, Error};

/// The state type marking a records archiver on a line.
const RECORDER_STATE: &str = "org.hotline.recorder";
/// The state type that makes a room a line.
const LINE_STATE: &str = "org.hotline.line";
/// An undecryptable event younger than this may have its key in flight.
const YOUNG_MS: i64 = 60_000;
/// How long a batch waits for keys in flight.
const GRACE: Duration = Duration::from_secs(3);

fn json_of<T>(raw: &Raw<T>) -> Value {
    serde_json::from_str(raw.json().get()).unwrap_or(Value::Null)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn reason_text(r: &UnableToDecryptReason) -> String {
    if r.is_missing_room_key() {
        return "missing room key".into();
    }
    match r {
        UnableToDecryptReason::UnknownMegolmMessageIndex => {
            "the room key held starts after this message".into()
        }
        other => {
            let t = format!("{other:?}");
            t.chars().take(120).collect()
        }
    }
}

struct Runner {
    client: Client,
    me: OwnedUserId,
    archive: Arc<Mutex<Option<Archive>>>,
    book: BookFile,
    imports: PathBuf,
    /// Lines caught up in this run (a sync timeline of another line is
    /// preceded by a catch-up).
    caught_up: HashSet<OwnedRoomId>,
    /// Rooms found not to be lines naming this archiver (logged once).
    not_mine: HashSet<OwnedRoomId>,
    names: HashMap<(OwnedRoomId, OwnedUserId), Option<String>>,
}

pub(crate) async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let keys = crate::archive_keys(&config.keys)?;
    let secrets = read_secrets(&config.password_file)?;
    private_dir(&config.state)?;
    let imports = config.state.join("key-imports");
    private_dir(&imports)?;
    let book = BookFile::open(&config.state)?;
    let (dir, every) = (config.archive.clone(), config.checkpoint_every);
    let archive = tokio::task::spawn_blocking(move || {
        Archive::open(
            &dir,
            keys,
            Options {
                checkpoint_every: every.max(1),
                ..Options::default()
            },
        )
    })
    .await
    .expect("the archive opens")?;
    let (entries, _) = archive.head();
    tracing::info!(archive = %config.archive.display(), entries, "archive open");
    let client = session::connect(&config, &secrets).await?;
    if let Err(e) = session::bootstrap_cross_signing(&client, &secrets).await {
        tracing::warn!(error = %e, "cross-signing not set up; offices cannot verify this device yet (tried again at the next start)");
    }
    drop(secrets);
    let me = client.user_id().expect("signed in").to_owned();
    let mut runner = Runner {
        client,
        me,
        archive: Arc::new(Mutex::new(Some(archive))),
        book,
        imports,
        caught_up: HashSet::new(),
        not_mine: HashSet::new(),
        names: HashMap::new(),
    };
    let result = runner.main_loop(&config, shutdown).await;
    let closed = runner.close().await;
    result.and(closed)
}

impl Runner {
    async fn main_loop(
        &mut self,
        config: &Config,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        tokio::pin!(shutdown);
        // The sync loop runs on its own, one response ahead at most: the
        // next response is being fetched (and its keys taken in) while
        // this one's events are appended.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<matrix_sdk::Result<SyncResponse>>(1);
        let c = self.client.clone();
        let syncing = tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(Duration::from_secs(10));
            let mut backoff = Duration::from_millis(500);
            loop {
                let r = c.sync_once(settings.clone()).await;
                let failed = r.is_err();
                if tx.send(r).await.is_err() {
                    return;
                }
                if failed {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                } else {
                    backoff = Duration::from_millis(500);
                }
            }
        });
        let mut keys = self
            .client
            .encryption()
            .room_keys_received_stream()
            .await
            .ok_or_else(|| Error::Matrix("no end-to-end encryption machine".into()))?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let (mut last_checkpoint, mut last_retry, mut last_catch_up) = (start, start, start);
        let mut first_sync = true;
        let result = loop {
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("stopping");
                    break Ok(());
                }
                r = rx.recv() => match r {
                    Some(Ok(response)) => {
                        let done = self.on_sync(response).await;
                        if done.is_ok() && first_sync {
                            first_sync = false;
                            last_catch_up = Instant::now();
                            self.catch_up_all().await
                        } else {
                            done
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "sync failed; trying again");
                        Ok(())
                    }
                    None => break Err(Error::Matrix("the sync loop ended".into())),
                },
                k = keys.next() => match k {
                    Some(Ok(infos)) => {
                        let sessions: HashSet<String> =
                            infos.iter().map(|i| i.session_id.clone()).collect();
                        self.retry(Some(&sessions)).await
                    }
                    Some(Err(_)) => self.retry(None).await,
                    None => break Err(Error::Matrix("the room keys stream ended".into())),
                },
                _ = tick.tick() => {
                    let mut r = self.import_keys().await;
                    if r.is_ok() && last_retry.elapsed() >= config.retry_interval {
                        last_retry = Instant::now();
                        r = self.retry(None).await;
                    }
                    if r.is_ok() && !first_sync && last_catch_up.elapsed() >= config.catch_up_interval {
                        last_catch_up = Instant::now();
                        r = self.catch_up_all().await;
                    }
                    if r.is_ok() && last_checkpoint.elapsed() >= config.checkpoint_interval {
                        last_checkpoint = Instant::now();
                        r = self.checkpoint().await;
                    }
                    r
                }
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        syncing.abort();
        let _ = syncing.await;
        result
    }

    async fn close(&mut self) -> Result<(), Error> {
        let archive = self.archive.clone();
        tokio::task::spawn_blocking(move || match archive.lock().unwrap().take() {
            Some(a) => a.close(),
            None => Ok(()),
        })
        .await
        .expect("closing the archive")?;
        tracing::info!("archive closed with a checkpoint");
        Ok(())
    }

    async fn checkpoint(&mut self) -> Result<(), Error> {
        let archive = self.archive.clone();
        let covered = tokio::task::spawn_blocking(move || {
            archive.lock().unwrap().as_mut().expect("open").checkpoint()
        })
        .await
        .expect("checkpointing")?;
        if let Some(seq) = covered {
            tracing::info!(entry = seq, "checkpoint");
        }
        Ok(())
    }

    fn status(&self, event_id: &str) -> Status {
        self.archive
            .lock()
            .unwrap()
            .as_ref()
            .expect("open")
            .status(event_id)
    }

    async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let archive = self.archive.clone();
        Ok(tokio::task::spawn_blocking(move || {
            archive
                .lock()
                .unwrap()
                .as_mut()
                .expect("open")
                .append_all(&entries)
        })
        .await
        .expect("appending")?)
    }

    /// Whether `room` is a line whose marking names this archiver.
    async fn is_my_line(&self, room: &Room) -> bool {
        let state = |kind: &'static str, key: String| async move {
            room.get_state_event(StateEventType::from(kind), &key)
                .await
                .ok()
                .flatten()
                .map(|raw| match raw {
                    matrix_sdk::deserialized_responses::RawAnySyncOrStrippedState::Sync(r) => {
                        json_of(&r)
                    }
                    matrix_sdk::deserialized_responses::RawAnySyncOrStrippedState::Stripped(r) => {
                        json_of(&r)
                    }
                })
        };
        let line = state(LINE_STATE, String::new()).await.is_some();
        let marking = state(RECORDER_STATE, format!("_{}", self.me)).await;
        line && marking.is_some_and(|m| m.pointer("/content/office").is_some())
    }

    async fn on_sync(&mut self, response: SyncResponse) -> Result<(), Error> {
        for (room_id, invite) in &response.rooms.invited {
            // A line that marks this archiver: the invite's preview shows
            // the line and this archiver's own recorder marking.
            let me = format!("_{}", self.me);
            let shows = |kind: &str, key: &str| {
                invite.invite_state.events.iter().any(|e| {
                    e.get_field::<String>("type").ok().flatten().as_deref() == Some(kind)
                        && e.get_field::<String>("state_key").ok().flatten().as_deref() == Some(key)
                })
            };
            if shows(LINE_STATE, "") && shows(RECORDER_STATE, &me) {
                match self.client.join_room_by_id(room_id).await {
                    Ok(_) => tracing::info!(%room_id, "joined a line"),
                    Err(e) => tracing::warn!(%room_id, error = %e, "could not join a line"),
                }
            } else if let Some(room) = self.client.get_room(room_id) {
                match room.leave().await {
                    Ok(()) => {
                        tracing::info!(%room_id, "declined an invite to a room that is not a line")
                    }
                    Err(e) => tracing::warn!(%room_id, error = %e, "could not decline an invite"),
                }
            }
        }
        for (room_id, update) in &response.rooms.joined {
            let Some(room) = self.client.get_room(room_id) else {
                continue;
            };
            if !self.is_my_line(&room).await {
                if self.not_mine.insert(room_id.clone()) {
                    tracing::info!(%room_id, "not a line that names this archiver: not recorded");
                }
                continue;
            }
            self.not_mine.remove(room_id);
            self.on_timeline(&room, &update.timeline).await?;
        }
        // A line that turned personal: the archiver was taken off it; its
        // events up to then are still recorded.
        for (room_id, update) in &response.rooms.left {
            if !self.book.book.cursors.contains_key(room_id.as_str()) {
                continue;
            }
            if let Some(room) = self.client.get_room(room_id) {
                // Caught up from the leave back: the events before it may
                // have come in a response handled while the marking was
                // already gone.
                self.caught_up.remove(room_id);
                self.on_timeline(&room, &update.timeline).await?;
                tracing::info!(%room_id, "taken off the line");
            }
        }
        Ok(())
    }

    async fn on_timeline(&mut self, room: &Room, timeline: &Timeline) -> Result<(), Error> {
        let mut events = Vec::new();
        if timeline.limited || !self.caught_up.contains(room.room_id()) {
            events = self.collect_back(room, timeline.prev_batch.clone()).await?;
            self.caught_up.insert(room.room_id().to_owned());
        }
        events.extend(timeline.events.iter().cloned());
        self.archive_batch(room, events).await
    }

    /// Catches up every line this archiver is on.
    async fn catch_up_all(&mut self) -> Result<(), Error> {
        for room in self.client.joined_rooms() {
            if !self.is_my_line(&room).await {
                continue;
            }
            let events = self.collect_back(&room, None).await?;
            self.caught_up.insert(room.room_id().to_owned());
            if !events.is_empty() {
                tracing::info!(room_id = %room.room_id(), events = events.len(), "caught up");
            }
            self.archive_batch(&room, events).await?;
        }
        Ok(())
    }

    fn processed(&self, room_id: &RoomId, event_id: &EventId) -> bool {
        self.book
            .book
            .cursors
            .get(room_id.as_str())
            .map(String::as_str)
            == Some(event_id.as_str())
            || self.status(event_id.as_str()) != Status::Absent
    }

    /// The events of `room` after the last processed one, oldest first,
    /// paging back from `from` (or the newest event).
    async fn collect_back(
        &self,
        room: &Room,
        from: Option<String>,
    ) -> Result<Vec<TimelineEvent>, Error> {
        let mut out = Vec::new();
        let mut from = from;
        loop {
            let mut options = MessagesOptions::backward();
            options.from = from.clone();
            options.limit = uint!(100);
            let page = room
                .messages(options)
                .await
                .map_err(|e| Error::Matrix(format!("paging {}: {e}", room.room_id())))?;
            let mut stop = page.chunk.is_empty();
            for ev in page.chunk {
                let Some(id) = ev.event_id() else {
                    continue;
                };
                if self.processed(room.room_id(), &id) {
                    stop = true;
                    break;
                }
                out.push(ev);
            }
            match page.end {
                Some(end) if !stop => from = Some(end),
                _ => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    async fn sender_name(&mut self, room: &Room, sender: &str) -> Option<String> {
        let user = UserId::parse(sender).ok()?;
        let key = (room.room_id().to_owned(), user.clone());
        if let Some(n) = self.names.get(&key) {
            return n.clone();
        }
        let name = room
            .get_member_no_sync(&user)
            .await
            .ok()
            .flatten()
            .and_then(|m| m.display_name().map(str::to_owned));
        self.names.insert(key, name.clone());
        name
    }

    /// The attachment's decrypted bytes, tried three times.
    async fn download(&self, content: &Value) -> Result<Vec<u8>, String> {
        let source = if let Some(file) = content.get("file") {
            let file: EncryptedFile =
                serde_json::from_value(file.clone()).map_err(|e| format!("file: {e}"))?;
            MediaSource::Encrypted(Box::new(file))
        } else if let Some(url) = content.get("url").and_then(Value::as_str) {
            MediaSource::Plain(OwnedMxcUri::from(url))
        } else {
            return Err("no file in the event".into());
        };
        let request = MediaRequestParameters {
            source,
            format: MediaFormat::File,
        };
        let mut last = String::new();
        for attempt in 0..3u32 {
            match self.client.media().get_media_content(&request, false).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300 * (attempt as u64 + 1))).await;
        }
        Err(last)
    }

    /// Turns one event into its entry: sender name, attachment bytes.
    async fn entry_of(
        &mut self,
        room: &Room,
        ev: &TimelineEvent,
        resolving: bool,
    ) -> Option<(NewEntry, Option<Option<String>>)> {
        let json = json_of(ev.raw());
        let room_id = room.room_id().as_str();
        let reason;
        let seen = match &ev.kind {
            TimelineEventKind::UnableToDecrypt { utd_info, .. } => {
                reason = reason_text(&utd_info.reason);
                Seen::Undecryptable {
                    event: &json,
                    reason: &reason,
                    session_id: utd_info.session_id.as_deref(),
                }
            }
            _ => Seen::Read(&json),
        };
        let mut plan = convert::plan(room_id, seen, &mut self.book.book.calls, resolving)?;
        plan.entry.sender_name = self.sender_name(room, &plan.entry.sender.clone()).await;
        if let Some(media) = &plan.media {
            match self.download(media).await {
                Ok(bytes) => plan.entry.attachment = Some(bytes),
                Err(e) => {
                    tracing::warn!(event_id = %plan.entry.event_id, error = %e, "attachment not downloaded; recorded without its file");
                    plan.entry.content["org.hotline.archiver"] =
                        json!({"attachment_unavailable": e});
                }
            }
        }
        Some((plan.entry, plan.pending))
    }

    /// Decrypts `ev` again if it is undecryptable and young, waiting for a
    /// key in flight until `deadline`.
    async fn with_grace(
        &self,
        room: &Room,
        ev: TimelineEvent,
        deadline: &mut Option<Instant>,
    ) -> TimelineEvent {
        if !ev.kind.is_utd() {
            return ev;
        }
        let ts = json_of(ev.raw())["origin_server_ts"].as_i64().unwrap_or(0);
        if now_ms() - ts > YOUNG_MS {
            return ev;
        }
        let until = *deadline.get_or_insert_with(|| Instant::now() + GRACE);
        let raw: Raw<OriginalSyncRoomEncryptedEvent> = Raw::from_json(ev.raw().json().to_owned());
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(again) = room.decrypt_event(&raw, None).await {
                if !again.kind.is_utd() {
                    return again;
                }
            }
        }
        ev
    }

    /// Processes `events` (oldest first) of the line `room`: appends what
    /// the record keeps, then moves the line's cursor.
    async fn archive_batch(
        &mut self,
        room: &Room,
        events: Vec<TimelineEvent>,
    ) -> Result<(), Error> {
        let Some(last) = events.iter().rev().find_map(|e| e.event_id()) else {
            return Ok(());
        };
        let mut entries = Vec::new();
        let mut pending = Vec::new();
        let mut seen = HashSet::new();
        let mut deadline = None;
        for ev in events {
            let Some(id) = ev.event_id() else {
                continue;
            };
            if !seen.insert(id.clone()) {
                continue;
            }
            let status = self.status(id.as_str());
            if matches!(status, Status::Archived(_)) {
                continue;
            }
            // A placeholder already: resolved by `retry`, when keys come.
            if ev.kind.is_utd() && matches!(status, Status::Undecryptable(_)) {
                continue;
            }
            let ev = self.with_grace(room, ev, &mut deadline).await;
            let resolving = matches!(status, Status::Undecryptable(_));
            let Some((entry, wait)) = self.entry_of(room, &ev, resolving).await else {
                continue;
            };
            if let Some(session_id) = wait {
                pending.push((
                    entry.event_id.clone(),
                    Pending {
                        room_id: room.room_id().to_string(),
                        session_id,
                    },
                ));
            }
            entries.push(entry);
        }
        // Placeholders to retry are noted before they are appended.
        if !pending.is_empty() {
            self.book.book.pending.extend(pending);
            self.book.save()?;
        }
        let appended = self.append(entries.clone()).await?;
        let mut resolved = 0;
        for (e, a) in entries.iter().zip(&appended) {
            if matches!(a, Appended::Entry(_)) {
                if e.kind == hotline_records::Kind::Undecryptable {
                    tracing::info!(event_id = %e.event_id, room_id = %e.room_id, "archived as undecryptable; retried when keys arrive");
                } else if self.book.book.pending.remove(&e.event_id).is_some() {
                    resolved += 1;
                }
            }
        }
        let written = appended
            .iter()
            .filter(|a| matches!(a, Appended::Entry(_)))
            .count();
        if written > 0 || resolved > 0 {
            tracing::debug!(room_id = %room.room_id(), written, resolved, "appended");
        }
        self.book
            .book
            .cursors
            .insert(room.room_id().to_string(), last.to_string());
        self.book.save()
    }

    /// Tries the pending placeholders again (those of `sessions`, or all):
    /// an event that decrypts now is appended, naming its placeholder.
    async fn retry(&mut self, sessions: Option<&HashSet<String>>) -> Result<(), Error> {
        let todo: Vec<(String, Pending)> = self
            .book
            .book
            .pending
            .iter()
            .filter(|(_, p)| match (sessions, &p.session_id) {
                (None, _) => true,
                (Some(set), Some(s)) => set.contains(s),
                (Some(_), None) => false,
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut changed = false;
        for (id, p) in todo {
            let (Ok(event_id), Ok(room_id)) = (EventId::parse(&id), RoomId::parse(&p.room_id))
            else {
                self.book.book.pending.remove(&id);
                changed = true;
                continue;
            };
            match self.status(&id) {
                Status::Archived(_) => {
                    self.book.book.pending.remove(&id);
                    changed = true;
                    continue;
                }
                Status::Absent => {
                    // Noted, but the crash came before its append: the
                    // catch-up appends it in its place.
                    continue;
                }
                Status::Undecryptable(_) => {}
            }
            let Some(room) = self.client.get_room(&room_id) else {
                continue;
            };
            let ev = match room.event(&event_id, None).await {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(event_id = %id, error = %e, "could not fetch a placeholder's event");
                    continue;
                }
            };
            if ev.kind.is_utd() {
                continue;
            }
            let Some((entry, wait)) = self.entry_of(&room, &ev, true).await else {
                continue;
            };
            if wait.is_some() {
                continue;
            }
            let kind = entry.kind;
            let appended = self.append(vec![entry]).await?;
            self.book.book.pending.remove(&id);
            changed = true;
            if kind != hotline_records::Kind::Undecryptable {
                tracing::info!(event_id = %id, entry = ?appended.first(), "undecryptable event decrypted and archived");
            }
        }
        if changed {
            self.book.save()?;
        }
        Ok(())
    }

    /// Imports the key exports handed in (`NAME.keys` with
    /// `NAME.passphrase`), deletes them, and retries the placeholders.
    async fn import_keys(&mut self) -> Result<(), Error> {
        let Ok(dir) = std::fs::read_dir(&self.imports) else {
            return Ok(());
        };
        let files: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "keys"))
            .collect();
        let mut imported = false;
        for keys in files {
            let phrase_path = keys.with_extension("passphrase");
            let Ok(phrase) = std::fs::read_to_string(&phrase_path) else {
                continue;
            };
            let phrase = phrase.lines().next().unwrap_or_default().to_owned();
            let name = keys
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match self
                .client
                .encryption()
                .import_room_keys(keys.clone(), &phrase)
                .await
            {
                Ok(r) => {
                    tracing::info!(file = %name, imported = r.imported_count, total = r.total_count, "room keys imported");
                    imported = true;
                    let _ = std::fs::remove_file(&keys);
                    let _ = std::fs::remove_file(&phrase_path);
                }
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "room key import failed; renamed to .failed");
                    let _ = std::fs::rename(&keys, keys.with_extension("keys.failed"));
                    let _ = std::fs::remove_file(&phrase_path);
                }
            }
        }
        if imported {
            self.retry(None).await?;
        }
        Ok(())
    }
}
