//! Pushers (`/pushers`, `/pushers/set`) and delivery of notifications to
//! their push gateways, as the spec's Push Gateway API has it
//! (`POST {data.url}`, `/_matrix/push/v1/notify`).
//!
//! An event is weighed by the user's rules in force when it is delivered,
//! normally a fraction of a second after it was sent (during a gateway
//! outage, later: a room muted meanwhile is muted for what is still owed).
//!
//! Durable by position, not by queue: a pusher's row holds the stream
//! position through which its notifications are delivered. The sender reads
//! the events after it in the user's joined rooms, weighs each by the
//! user's push rules (the same matcher as the unread counts), posts the
//! ones that notify in stream order, and moves the position on only after
//! the gateway took them (`SetPusherPosition`, never backwards). So a crash,
//! a `kill -9` or a gateway outage loses nothing: the next round starts
//! where the last delivery ended. A gateway that fails (no answer, `5xx`,
//! `429`) is retried with backoff (each pusher is delivered on a task of
//! its own, one delivery at a time, so a slow gateway holds up only its
//! own pushers), doubling from a quarter second to ten
//! minutes; a `4xx` drops that one notification (the gateway will never
//! take it); a pushkey the gateway names `rejected` removes the pusher.
//!
//! Privacy: an encrypted event's content never leaves (not even as
//! ciphertext), whatever the pusher's format; `format: event_id_only`
//! sends no content, sender or type at all. Calls (`m.call.invite`,
//! MatrixRTC notifications) and encrypted events (which may be calls) go at
//! `prio: high`, as do those whose rules set a sound or a highlight.
//!
//! Calls on a line ring through MatrixRTC: a device joining the room's call
//! writes its `m.call.member` state, and the call's own signalling is
//! encrypted. No push rule names a membership, so the server decides
//! ([`Services::call_member_actions`]): a device joining the call rings the
//! room's other members who are not in it (`type: m.call.member`, `prio:
//! high`), and its leaving tells them at low priority, so a ring still
//! showing becomes a missed call; each weighed by the member's rules as a
//! call invite from the same sender would be (a muted room stays silent).
//!
//! Availability ([`crate::availability`]): while a principal is in do not
//! disturb or asleep, a call does not ring them (no push) and a text
//! arrives silently, at low priority; an urgent signal
//! (`org.hotline.urgent`) rings every device of theirs at high priority
//! with sound, and the sender's call just after it rings through
//! ([`Services::rings_for`]).
//!
//! A pusher goes with the device whose token set it (device deletion,
//! logout: the store's `DeleteDevice`). With several processes on one
//! database, the process that runs the deployment's jobs delivers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hotline_store::{PusherRow, WriteBatch, WriteOp};
use ruma::push::{Action, Tweak};
use ruma::{OwnedRoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::Sender;
use crate::availability::URGENT_EVENT;
use crate::contact_log::CALL_MEMBER_TYPES;

/// The events that are a call ringing (besides MatrixRTC memberships):
/// pushed at high priority, and silenced by do not disturb.
const CALL_TYPES: [&str; 5] = [
    "m.call.invite",
    "m.rtc.notification",
    "org.matrix.msc4075.rtc.notification",
    "org.matrix.msc4075.call.notify",
    "m.call.notify",
];
use crate::pdu::PduEvent;
use crate::push_rules::PushEval;
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// What a gateway answered: its status and body.
pub type GatewayFuture =
    Pin<Box<dyn Future<Output = std::result::Result<(u16, Vec<u8>), String>> + Send>>;

/// The way out to push gateways (HTTP or HTTPS), set by the serving
/// binary; the API crate holds the client.
pub trait PushGateway: Send + Sync + 'static {
    fn notify(&self, url: &str, body: Vec<u8>) -> GatewayFuture;
    /// A Web Push request (RFC 8030) to a browser's push service, as this
    /// server's own gateway builds it ([`crate::web_push`]).
    fn web_push(&self, request: http::Request<Vec<u8>>) -> GatewayFuture;
}

/// Events weighed per room per round: a pusher far behind catches up over
/// several rounds.
const ROUND_EVENTS: usize = 200;
/// The first retry's wait; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// A round runs at least this often, for retries that came due.
const TICK: Duration = Duration::from_millis(250);

type PusherKey = (String, String, String);

/// Pusher delivery state shared by the rounds.
#[derive(Default)]
pub struct Pushers {
    wake: Arc<tokio::sync::Notify>,
    gateway: OnceLock<Arc<dyn PushGateway>>,
    /// Pushers whose gateway is failing: failures so far and when to retry.
    failing: parking_lot::Mutex<HashMap<PusherKey, (u32, Instant)>>,
    /// Pushers being delivered to now.
    in_flight: parking_lot::Mutex<std::collections::HashSet<PusherKey>>,
}

impl Pushers {
    pub fn set_gateway(&self, gateway: Arc<dyn PushGateway>) {
        let _ = self.gateway.set(gateway);
    }

    pub(crate) fn gateway(&self) -> Option<Arc<dyn PushGateway>> {
        self.gateway.get().cloned()
    }

    /// Something was committed: a round soon.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// `POST /pushers/set`'s body.
#[derive(Debug, Deserialize)]
pub struct SetPusher {
    pub pushkey: Option<String>,
    /// `null`: delete the pusher.
    pub kind: Option<Value>,
    pub app_id: Option<String>,
    pub app_display_name: Option<String>,
    pub device_display_name: Option<String>,
    pub profile_tag: Option<String>,
    pub lang: Option<String>,
    pub data: Option<Value>,
    #[serde(default)]
    pub append: bool,
}

fn required<'a>(field: &'a Option<String>, name: &str) -> Result<&'a str> {
    field
        .as_deref()
        .ok_or_else(|| Error::MissingParam(format!("{name} is required")))
}

/// The spec's push gateway path; Synapse refuses any other too. (Typed
/// here, not taken from ruma: its push gateway API is a feature the
/// workspace's ruma is built without, and turning it on would build
/// matrix-sdk's ruma again.)
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

impl Services {
    /// `GET /pushers`: the user's pushers as they were set.
    pub fn pushers(&self, user: &UserId) -> Result<Vec<Value>> {
        Ok(self
            .store
            .pushers_of(user.as_str())?
            .into_iter()
            .filter_map(|p| serde_json::from_str(&p.json).ok())
            .collect())
    }

    /// `POST /pushers/set`: creates, replaces or (with `kind: null`)
    /// deletes one of the sender's pushers. A new pusher is sent what
    /// happens from now on.
    pub async fn set_pusher(&self, sender: &Sender, body: SetPusher) -> Result<()> {
        let user = sender.user_id.as_str();
        let app_id = required(&body.app_id, "app_id")?;
        let pushkey = required(&body.pushkey, "pushkey")?;
        if app_id.is_empty() || app_id.chars().count() > 64 {
            return Err(Error::invalid_param("app_id must be 1 to 64 characters"));
        }
        if pushkey.is_empty() || pushkey.len() > 512 {
            return Err(Error::invalid_param("pushkey must be 1 to 512 bytes"));
        }
        let kind = match &body.kind {
            None | Some(Value::Null) => {
                self.store
                    .write(WriteBatch::one(WriteOp::DeletePusher {
                        user_id: user.to_owned(),
                        app_id: app_id.to_owned(),
                        pushkey: pushkey.to_owned(),
                    }))
                    .await?;
                return Ok(());
            }
            Some(Value::String(k)) => k.as_str(),
            Some(_) => return Err(Error::bad_json("kind must be a string or null")),
        };
        if kind != "http" {
            return Err(Error::invalid_param(format!(
                "Unsupported pusher kind {kind:?}: this server delivers to HTTP push gateways"
            )));
        }
        let app_display_name = required(&body.app_display_name, "app_display_name")?;
        let device_display_name = required(&body.device_display_name, "device_display_name")?;
        let lang = required(&body.lang, "lang")?;
        let data = match &body.data {
            Some(Value::Object(d)) => d.clone(),
            Some(_) => return Err(Error::bad_json("data must be an object")),
            None => return Err(Error::MissingParam("data is required".into())),
        };
        let url = data
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_param("An http pusher needs data.url"))?;
        let parsed: http::Uri = url
            .parse()
            .map_err(|_| Error::invalid_param("data.url is not a URL"))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https"))
            || parsed.host().is_none()
            || parsed.path() != NOTIFY_PATH
        {
            return Err(Error::invalid_param(format!(
                "data.url must be an http(s) URL whose path is {NOTIFY_PATH}"
            )));
        }
        if let Some(format) = data.get("format") {
            if format != "event_id_only" {
                return Err(Error::invalid_param(
                    "data.format, when given, is event_id_only",
                ));
            }
        }
        // The web app's pushers go to a browser through a gateway like this
        // server's: one that cannot reach the browser is refused now rather
        // than rejected at the first notification.
        if app_id == crate::web_push::APP_ID {
            crate::web_push::check_subscription(pushkey, &data)?;
        }
        let mut pusher = json!({
            "pushkey": pushkey,
            "kind": "http",
            "app_id": app_id,
            "app_display_name": app_display_name,
            "device_display_name": device_display_name,
            "lang": lang,
            "data": data,
        });
        if let Some(tag) = &body.profile_tag {
            pusher["profile_tag"] = json!(tag);
        }
        let mut batch = WriteBatch::new();
        if !body.append {
            batch.push(WriteOp::DeletePushersOfKey {
                app_id: app_id.to_owned(),
                pushkey: pushkey.to_owned(),
                except_user: user.to_owned(),
            });
        }
        // A pusher set again keeps its place: nothing is sent twice.
        let position = self
            .store
            .pushers_of(user)?
            .into_iter()
            .find(|p| p.app_id == app_id && p.pushkey == pushkey)
            .map_or_else(|| self.visible_pos(), |p| p.position);
        batch.push(WriteOp::PutPusher(PusherRow {
            user_id: user.to_owned(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
            device_id: sender.device_id.to_string(),
            json: pusher.to_string(),
            position,
        }));
        self.store.write(batch).await?;
        self.pushers.failing.lock().remove(&(
            user.to_owned(),
            app_id.to_owned(),
            pushkey.to_owned(),
        ));
        self.pushers.wake();
        Ok(())
    }

    /// Starts delivering: a round on every commit and every [`TICK`].
    /// Called once by the serving process, after the gateway is set.
    pub fn start_pushers(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = weak.upgrade() else { return };
                let wake = s.pushers.wake.clone();
                // Asked for before the round: a commit during it means
                // another round at once.
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if let Err(e) = s.push_round().await {
                    tracing::warn!(error = %e, "delivering notifications");
                }
                drop(s);
                let _ = tokio::time::timeout(TICK, woken).await;
            }
        });
    }

    /// One round: every pusher behind the visible position and not
    /// waiting out a failure gets what it is owed.
    async fn push_round(self: &Arc<Self>) -> Result<()> {
        let Some(gateway) = self.pushers.gateway.get().cloned() else {
            return Ok(());
        };
        // With several processes on one database, one delivers: two
        // would both send every notification.
        if !self.store.runs_deployment_jobs() {
            return Ok(());
        }
        let upto = self.visible_pos();
        for row in self.store.all_pushers()? {
            if row.position >= upto {
                continue;
            }
            let key = (row.user_id.clone(), row.app_id.clone(), row.pushkey.clone());
            if self
                .pushers
                .failing
                .lock()
                .get(&key)
                .is_some_and(|(_, at)| Instant::now() < *at)
            {
                continue;
            }
            // Each pusher on its own task: a slow gateway delays only its
            // own pushers; one delivery per pusher at a time keeps order.
            if !self.pushers.in_flight.lock().insert(key.clone()) {
                continue;
            }
            let (s, gateway) = (self.clone(), gateway.clone());
            tokio::spawn(async move {
                let delivered = s.deliver(&*gateway, &row, upto).await;
                {
                    let mut failing = s.pushers.failing.lock();
                    match delivered {
                        Ok(()) => {
                            failing.remove(&key);
                        }
                        Err(e) => {
                            let n = failing.get(&key).map_or(0, |(n, _)| *n) + 1;
                            let wait = FIRST_BACKOFF
                                .saturating_mul(1 << n.min(16).saturating_sub(1))
                                .min(MAX_BACKOFF);
                            failing.insert(key.clone(), (n, Instant::now() + wait));
                            tracing::info!(app_id = %row.app_id, failures = n, retry_in_ms = wait.as_millis() as u64, reason = %e, "a push gateway failed; retrying");
                        }
                    }
                }
                s.pushers.in_flight.lock().remove(&key);
            });
        }
        Ok(())
    }

    /// Sends `row` its notifications for events after its position through
    /// `upto`, in stream order, moving its position on after each one the
    /// gateway took. An error leaves the position at the first event not
    /// delivered.
    async fn deliver(
        &self,
        gateway: &dyn PushGateway,
        row: &PusherRow,
        upto: i64,
    ) -> std::result::Result<(), String> {
        let user = UserId::parse(row.user_id.as_str()).map_err(|e| e.to_string())?;
        let pusher: Value = serde_json::from_str(&row.json).map_err(|e| e.to_string())?;
        let url = pusher["data"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (joined, events, reached) = self
            .owed(&user, row.position, upto)
            .map_err(|e| e.to_string())?;
        let rules = self.push_rules_in_force(&user).map_err(|e| e.to_string())?;
        // The rules with each room's context, built once per room.
        let mut evals: HashMap<OwnedRoomId, PushEval> = HashMap::new();
        let mut done = row.position;
        for (room, event) in events {
            let eval = evals.entry(room.id.clone()).or_insert_with(|| {
                // Mentions by name match the user's display name in the room.
                let name = room
                    .state_event("m.room.member", user.as_str())
                    .and_then(|m| m.content::<Value>().ok())
                    .and_then(|c| {
                        c.get("displayname")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    });
                PushEval::new(rules.rules.clone(), &room, &user, name.as_deref())
            });
            let actions = match self.call_member_actions(eval, &room, &user, &event) {
                Some(actions) => actions,
                None => eval.actions(&event),
            };
            let (actions, silent) = self
                .availability_actions(&room, &user, &event, actions)
                .map_err(|e| e.to_string())?;
            if actions.iter().any(Action::should_notify) {
                let body = self.notification(
                    &user, row, &pusher, &joined, &room, &event, &actions, silent,
                );
                let (status, answer) = gateway.notify(&url, body.to_string().into_bytes()).await?;
                match status {
                    200..=299 => {
                        let rejected = serde_json::from_slice::<Value>(&answer)
                            .ok()
                            .and_then(|a| a.get("rejected").cloned())
                            .and_then(|r| serde_json::from_value::<Vec<String>>(r).ok())
                            .unwrap_or_default();
                        if rejected.contains(&row.pushkey) {
                            tracing::info!(app_id = %row.app_id, "the push gateway rejected a pushkey: its pusher is removed");
                            self.store
                                .write(WriteBatch::one(WriteOp::DeletePusher {
                                    user_id: row.user_id.clone(),
                                    app_id: row.app_id.clone(),
                                    pushkey: row.pushkey.clone(),
                                }))
                                .await
                                .map_err(|e| e.to_string())?;
                            return Ok(());
                        }
                    }
                    429 | 500..=599 => return Err(format!("the gateway answered {status}")),
                    // It will never take this one: on to the next.
                    _ => {
                        tracing::warn!(app_id = %row.app_id, status, "the push gateway refused a notification")
                    }
                }
            }
            done = event.pos();
            self.move_pusher(row, done)
                .await
                .map_err(|e| e.to_string())?;
        }
        if reached > done {
            self.move_pusher(row, reached)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn move_pusher(&self, row: &PusherRow, position: i64) -> Result<()> {
        self.store
            .write(WriteBatch::one(WriteOp::SetPusherPosition {
                user_id: row.user_id.clone(),
                app_id: row.app_id.clone(),
                pushkey: row.pushkey.clone(),
                position,
            }))
            .await?;
        Ok(())
    }

    /// `user`'s joined rooms; the events after `after` through `upto` in
    /// them, in stream order; and the position they were read through
    /// (short of `upto` when a room had more than a round's worth).
    #[allow(clippy::type_complexity)]
    fn owed(
        &self,
        user: &UserId,
        after: i64,
        upto: i64,
    ) -> Result<(Vec<Arc<Room>>, Vec<(Arc<Room>, Arc<PduEvent>)>, i64)> {
        let mut joined = Vec::new();
        let mut out = Vec::new();
        let mut reached = upto;
        for m in self.store.memberships_of_user(user.as_str())? {
            if m.membership != "join" {
                continue;
            }
            let Ok(room_id) = OwnedRoomId::try_from(m.room_id.as_str()) else {
                continue;
            };
            let Ok(room) = self.room(&room_id) else {
                continue;
            };
            let rows = self
                .store
                .room_events_forward(room_id.as_str(), after, ROUND_EVENTS)?;
            if rows.len() == ROUND_EVENTS {
                if let Some(last) = rows.last() {
                    reached = reached.min(last.pos);
                }
            }
            for row in rows.iter().filter(|r| r.pos <= upto) {
                let event = Arc::new(self.load_event(row)?);
                out.push((room.clone(), event));
            }
            joined.push(room);
        }
        out.retain(|(_, e)| e.pos() <= reached);
        out.sort_by_key(|(_, e)| e.pos());
        Ok((joined, out, reached))
    }

    /// The Push Gateway API's `notification` for `event`; its unread count
    /// is over the user's `joined` rooms.
    #[allow(clippy::too_many_arguments)]
    fn notification(
        &self,
        user: &UserId,
        row: &PusherRow,
        pusher: &Value,
        joined: &[Arc<Room>],
        room: &Room,
        event: &PduEvent,
        actions: &[Action],
        silent: bool,
    ) -> Value {
        let mut tweaks = serde_json::Map::new();
        for a in actions {
            if let Action::SetTweak(Tweak::Sound(s)) = a {
                tweaks.insert("sound".into(), json!(s));
            }
        }
        if actions.iter().any(Action::is_highlight) {
            tweaks.insert("highlight".into(), json!(true));
        }
        let kind = event.pdu.kind.to_string();
        let encrypted = kind == "m.room.encrypted";
        let call = CALL_TYPES.contains(&kind.as_str())
            || (CALL_MEMBER_TYPES.contains(&kind.as_str())
                && serde_json::from_str::<Value>(event.pdu.content.get())
                    .is_ok_and(|c| !memberships(&c).is_empty()));
        // A call member leaving only tells a ring to stop: no sound.
        if CALL_MEMBER_TYPES.contains(&kind.as_str()) && !call {
            tweaks.remove("sound");
        }
        // Do not disturb: it arrives, but quietly.
        if silent {
            tweaks.remove("sound");
            tweaks.remove("highlight");
        }
        let high = !silent
            && (call
                || encrypted
                || kind == URGENT_EVENT
                || tweaks.contains_key("sound")
                || tweaks.get("highlight").is_some_and(|h| h == true));
        let mut data = pusher["data"].clone();
        if let Some(d) = data.as_object_mut() {
            d.remove("url");
        }
        let unread: u64 = joined
            .iter()
            .filter_map(|r| self.unread_counts(r, user, event.pos(), None).ok())
            .map(|(n, _)| n)
            .sum();
        let mut n = json!({
            "event_id": event.event_id,
            "room_id": room.id,
            "prio": if high { "high" } else { "low" },
            "counts": {"unread": unread, "missed_calls": 0},
            "devices": [{
                "app_id": row.app_id,
                "pushkey": row.pushkey,
                "data": data,
                "tweaks": tweaks,
            }],
        });
        if pusher["data"]["format"] != "event_id_only" {
            n["type"] = json!(kind);
            n["sender"] = json!(event.pdu.sender);
            if let Some(name) = room
                .state_event("m.room.member", event.pdu.sender.as_str())
                .and_then(|e| e.content::<Value>().ok())
                .and_then(|c| {
                    c.get("displayname")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
            {
                n["sender_display_name"] = json!(name);
            }
            if let Some(name) = room
                .state_event("m.room.name", "")
                .and_then(|e| e.content::<Value>().ok())
                .and_then(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            {
                n["room_name"] = json!(name);
            }
            if !encrypted {
                n["content"] =
                    serde_json::from_str::<Value>(event.pdu.content.get()).unwrap_or(Value::Null);
            }
            if event.pdu.state_key.as_deref() == Some(user.as_str()) {
                n["user_is_target"] = json!(true);
            }
        }
        json!({ "notification": n })
    }
}

/// The memberships a MatrixRTC `m.call.member` content holds: itself when
/// it names an `application` (MSC4143, one per device), else its
/// `memberships` list (MSC3401); empty content is a leave.
fn memberships(content: &Value) -> Vec<&Value> {
    match content["memberships"].as_array() {
        Some(list) => list.iter().collect(),
        None if content.get("application").is_some() => vec![content],
        None => Vec::new(),
    }
}

/// Whether a call membership content (of an event sent at `sent_ts`)
/// still holds a live membership at `at_ms`: not expired by its `expires`
/// (from its `created_ts`, else the event's time) or `expires_ts`.
fn in_call(content: &Value, sent_ts: i64, at_ms: i64) -> bool {
    memberships(content).iter().any(|m| {
        let end = m["expires"]
            .as_i64()
            .map(|e| {
                m["created_ts"]
                    .as_i64()
                    .unwrap_or(sent_ts)
                    .saturating_add(e)
            })
            .or_else(|| m["expires_ts"].as_i64());
        end.is_none_or(|end| end > at_ms)
    })
}

impl Services {
    /// Availability over the rules' `actions` for `event` to `user`
    /// ([`Services::rings_for`] decides): an urgent signal from someone
    /// else rings (sound, highlight, high priority) whatever the rules and
    /// the availability; while a contact does not ring the user, a call
    /// (an invite, a call notification, a device joining the call) does
    /// not notify at all (nor its end: it never rang), and anything else
    /// notifies silently (the
    /// `bool`), at low priority.
    fn availability_actions(
        &self,
        room: &Room,
        user: &UserId,
        event: &PduEvent,
        actions: Vec<Action>,
    ) -> Result<(Vec<Action>, bool)> {
        let kind = event.pdu.kind.to_string();
        let sender = &event.pdu.sender;
        if sender == user {
            return Ok((actions, false));
        }
        if kind == URGENT_EVENT && event.pdu.state_key.is_none() {
            return Ok((
                vec![
                    Action::Notify,
                    Action::SetTweak(Tweak::Sound(ruma::push::SoundTweakValue::Default)),
                    Action::SetTweak(Tweak::Highlight(ruma::push::HighlightTweakValue::Yes)),
                ],
                false,
            ));
        }
        if !actions.iter().any(Action::should_notify) {
            return Ok((actions, false));
        }
        let at: i64 = event.pdu.origin_server_ts.get().into();
        if self.rings_for(room, user, sender, at)? {
            return Ok((actions, false));
        }
        let rings =
            CALL_TYPES.contains(&kind.as_str()) || CALL_MEMBER_TYPES.contains(&kind.as_str());
        if rings {
            return Ok((Vec::new(), false));
        }
        Ok((actions, true))
    }

    /// How a MatrixRTC call membership notifies `user` (`None`: it is no
    /// membership, and the rules alone decide). A device joining the
    /// room's call (its key held no live membership before) rings: the
    /// actions a call invite from its sender would get by the user's rules
    /// (`.m.rule.call` rings by default; a muted room, a room rule without
    /// actions, the master rule keep it silent). Its leaving (a live
    /// membership emptied) notifies without sound, so a ring still showing
    /// can stop. Neither reaches a user who is in the call themselves, and
    /// a membership renewed rings nobody again.
    fn call_member_actions(
        &self,
        eval: &PushEval,
        room: &Room,
        user: &UserId,
        event: &PduEvent,
    ) -> Option<Vec<Action>> {
        let kind = event.pdu.kind.as_str();
        if !CALL_MEMBER_TYPES.contains(&kind) {
            return None;
        }
        let quiet = Some(Vec::new());
        let key = event.pdu.state_key.as_deref()?;
        if event.pdu.sender == user {
            return quiet;
        }
        let sent: i64 = event.pdu.origin_server_ts.get().into();
        let content: Value = serde_json::from_str(event.pdu.content.get()).unwrap_or_default();
        let joins = in_call(&content, sent, sent);
        // The same key's membership just before this event.
        let before = self
            .store
            .state_event_at(room.id.as_str(), kind, key, event.pos() - 1)
            .ok()
            .flatten()
            .and_then(|row| self.load_event(&row).ok())
            .and_then(|e| serde_json::from_str::<Value>(e.pdu.content.get()).ok())
            .is_some_and(|c| in_call(&c, sent, sent));
        if joins == before {
            return quiet;
        }
        let now = crate::now_ms();
        let user_in_call = room.state().iter().any(|e| {
            CALL_MEMBER_TYPES.contains(&e.pdu.kind.as_str())
                && e.pdu.sender == user
                && serde_json::from_str::<Value>(e.pdu.content.get())
                    .is_ok_and(|c| in_call(&c, e.pdu.origin_server_ts.get().into(), now))
        });
        if user_in_call {
            return quiet;
        }
        let as_invite = eval.actions_as(&"m.call.invite".into(), &event.pdu.sender, &event.room_id);
        if joins {
            Some(as_invite)
        } else if as_invite.iter().any(Action::should_notify) {
            Some(vec![Action::Notify])
        } else {
            quiet
        }
    }
}
