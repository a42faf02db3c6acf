//! `/sync`: what changed for a user since their token, or a long wait until
//! something does.
//!
//! **Architecture Invariant:** an incremental sync reads only what changed
//! since its token: rooms whose latest position passed it (known from the
//! room cache), and per-user rows by position index. Its cost does not grow
//! with total history or total users.
//!
//! This file is the entry point: the long-poll ([`Services::sync`], which
//! waits at most 300 seconds whatever `timeout` asks) and the assembly of
//! one response from its sections, each in its own file:
//!
//! - `token`: the `since` / `next_batch` token;
//! - `filter`: filters, parsed once and cached (also read by `/messages`);
//! - `cache`: the in-memory caches kept between calls, and their bounds;
//! - `response`: the response's shapes;
//! - `account_data`: global and per-room account data, push rules;
//! - `rooms`: the joined, invited, knocked and left room entries, made of
//!   `timeline`, `state` (with `lazy_members`), `ephemeral`, `unread`
//!   (notification counts), `summary`, and `stripped` (for invites and
//!   knocks).
//!
//! To-device messages and device lists come from `keys`, presence from
//! `presence`.
//!
//! `sliding` (with `sliding_room`) is Simplified Sliding Sync (MSC4186),
//! built from the same pieces.
//!
//! Filters apply before limits: a timeline keeps the newest `limit`
//! matching events (a bounded scan below the in-memory window), so
//! `limited` and `prev_batch` describe what the client asked for. Lazy
//! loading sends the member events of the timeline's senders that the
//! device was not yet sent ([`SyncCaches`]), and unread counts are kept per
//! user and room and moved on by the events each sync brings.

mod account_data;
mod cache;
mod ephemeral;
mod filter;
mod lazy_members;
mod response;
mod rooms;
mod sliding;
mod sliding_room;
mod state;
pub(crate) mod stripped;
mod summary;
mod timeline;
mod token;
mod unread;

use std::sync::Arc;
use std::time::Duration;

use crate::accounts::Sender;
use crate::{Result, Services};

pub use cache::{FilterCache, SyncCaches};
pub use filter::{RoomEventFilter, SyncFilter};
pub use response::{
    DeviceLists, Events, InvitedRoom, JoinedRoom, LeftRoom, Rooms, SyncResponse, Timeline,
    UnreadCounts,
};
pub use sliding::{SlidingConnections, SlidingRequest, SlidingResponse};
pub use token::SyncToken;

/// What a `/sync` call asks for.
pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: Arc<SyncFilter>,
}

impl Services {
    /// `GET /sync`.
    pub async fn sync(&self, sender: &Sender, req: SyncRequest) -> Result<SyncResponse> {
        let deadline = tokio::time::Instant::now() + req.timeout.min(Duration::from_secs(300));
        if let Some(since) = req.since {
            self.prune_to_device(sender, since.to_device).await?;
        }
        loop {
            let mut rx = self.notifier.subscribe(&sender.user_id);
            let upto = self.visible_pos();
            let typing = self.typing_serial();
            let resp = self.build_sync(sender, &req, upto, typing)?;
            let waited_enough = tokio::time::Instant::now() >= deadline;
            if req.since.is_none() || req.full_state || !resp.is_empty() || waited_enough {
                return Ok(resp);
            }
            // Typing changes alone also end the wait: they are in `ephemeral`,
            // which `is_empty` counts through the joined room entries.
            tokio::select! {
                changed = rx.changed() => { if changed.is_err() { return Ok(resp); } }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// One response, as of stream position `upto` and typing serial
    /// `typing`.
    fn build_sync(
        &self,
        sender: &Sender,
        req: &SyncRequest,
        upto: i64,
        typing: u64,
    ) -> Result<SyncResponse> {
        let user = &sender.user_id;
        let since = req.since;
        let filter = &req.filter;
        let (to_device, to_device_pos) =
            self.to_device_for_sync(sender, since.map(|s| s.to_device).unwrap_or(0), upto)?;
        let mut resp = SyncResponse {
            next_batch: SyncToken {
                pos: upto,
                typing,
                to_device: to_device_pos,
            }
            .to_string(),
            to_device: Events { events: to_device },
            ..Default::default()
        };
        let counts = self.key_counts(user.as_str(), sender.device_id.as_str())?;
        resp.device_one_time_keys_count = counts.one_time_keys;
        resp.device_unused_fallback_key_types = counts.unused_fallback;
        let user_rooms = self.user_rooms(user)?;
        if since.is_none() && filter.lazy_members() {
            // A new sync sequence: the client remembers no member events.
            self.filters.lazy_forget(user, &sender.device_id);
        }
        if let Some(since) = since {
            let (changed, left) = self.device_list_changes(user, &user_rooms, since.pos, upto)?;
            resp.device_lists = DeviceLists { changed, left };
        }
        // Presence: everything on a fresh (or full-state) sync; otherwise
        // what changed, and the current state of users newly sharing a room
        // (exactly the `changed` device-list users, already computed).
        let presence_since = since.filter(|_| !req.full_state).map(|s| s.pos);
        resp.presence.events = self.presence_for_sync(
            user,
            presence_since,
            upto,
            &resp.device_lists.changed,
            &filter.presence,
        )?;

        // Account data: global and per room (none when the filters want
        // neither).
        let (global_account_data, room_account_data) =
            self.account_data_for_sync(user, filter, since, upto, user_rooms.last_private_pos)?;
        resp.account_data.events = global_account_data;
        resp.rooms = self.rooms_for_sync(sender, req, &user_rooms, upto, room_account_data)?;
        Ok(resp)
    }
}
