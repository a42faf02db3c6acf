//! Typing notifications (in memory, expiring) and read receipts (stored).

use std::time::{Duration, Instant};

use hotline_store::{WriteBatch, WriteOp};
use ruma::{EventId, RoomId, UserId};

use crate::{now_ms, Error, Result, Services};

/// Longest typing timeout honoured.
const MAX_TYPING: Duration = Duration::from_secs(120);

impl Services {
    /// `PUT /rooms/{roomId}/typing/{userId}`.
    pub fn set_typing(
        self: &std::sync::Arc<Self>,
        user: &UserId,
        room_id: &RoomId,
        typing: bool,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let room = self.room(room_id)?;
        self.require_joined(&room, user)?;
        self.federate_typing(&room, user, typing);
        self.apply_typing(room, user, typing, timeout);
        // Members syncing on another process sharing the database.
        self.store.broadcast(&hotline_store::Broadcast::Typing {
            room_id: room_id.to_string(),
            user_id: user.to_string(),
            typing,
            timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
        });
        Ok(())
    }

    /// Another process's typing change (its `set_typing` checked it).
    pub(crate) fn on_broadcast(self: &std::sync::Arc<Self>, message: &hotline_store::Broadcast) {
        match message {
            hotline_store::Broadcast::Typing {
                room_id,
                user_id,
                typing,
                timeout_ms,
            } => {
                let (Ok(room_id), Ok(user)) = (RoomId::parse(room_id), UserId::parse(user_id))
                else {
                    return;
                };
                let Ok(room) = self.room(&room_id) else {
                    return;
                };
                let timeout = (*timeout_ms > 0).then(|| Duration::from_millis(*timeout_ms));
                self.apply_typing(room, &user, *typing, timeout);
            }
            hotline_store::Broadcast::RateCharges { charges } => {
                self.ratelimit.charge_remote(charges)
            }
            hotline_store::Broadcast::Syncing { users } => self.presence.seen_elsewhere(users),
        }
    }

    pub(crate) fn apply_typing(
        self: &std::sync::Arc<Self>,
        room: std::sync::Arc<super::Room>,
        user: &UserId,
        typing: bool,
        timeout: Option<Duration>,
    ) {
        let expires = Instant::now() + timeout.unwrap_or(Duration::from_secs(30)).min(MAX_TYPING);
        let serial = {
            let mut inner = room.inner.write();
            let changed = if typing {
                inner.typing.insert(user.to_owned(), expires).is_none()
            } else {
                inner.typing.remove(user).is_some()
            };
            if !changed && typing {
                None
            } else if changed {
                let s = self.typing_serial() + 1;
                inner.typing_serial = s;
                Some(s)
            } else {
                None
            }
        };
        if serial.is_some() {
            self.typing_changed(room.joined_members());
        }
        if typing {
            let services = self.clone();
            let user = user.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep_until(expires.into()).await;
                let expired = {
                    let mut inner = room.inner.write();
                    if inner
                        .typing
                        .get(&user)
                        .is_some_and(|e| *e <= Instant::now())
                    {
                        inner.typing.remove(&user);
                        inner.typing_serial = services.typing_serial() + 1;
                        true
                    } else {
                        false
                    }
                };
                if expired {
                    services.typing_changed(room.joined_members());
                }
            });
        }
    }

    /// Users typing in the room, and the serial of the last change.
    pub fn typing_users(&self, room: &super::Room) -> (Vec<ruma::OwnedUserId>, u64) {
        let inner = room.inner.read();
        let now = Instant::now();
        (
            inner
                .typing
                .iter()
                .filter(|(_, e)| **e > now)
                .map(|(u, _)| u.clone())
                .collect(),
            inner.typing_serial,
        )
    }

    /// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
    pub async fn put_receipt(
        &self,
        user: &UserId,
        room_id: &RoomId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<String>,
    ) -> Result<()> {
        let room = self.room(room_id)?;
        self.require_joined(&room, user)?;
        if !matches!(receipt_type, "m.read" | "m.read.private") {
            if receipt_type == "m.fully_read" {
                return self.set_fully_read(user, room_id, event_id).await;
            }
            return Err(Error::invalid_param("Unknown receipt type"));
        }
        let known = self
            .store
            .get_event(event_id.as_str())?
            .is_some_and(|r| r.room_id == room_id.as_str());
        if !known {
            return Err(Error::not_found("Unknown event"));
        }
        let thread_id = thread_id.unwrap_or_default();
        // The same receipt again changes nothing: no write, and so no new
        // stream position and no /sync woken for it. (A client re-sending
        // its receipt on every render would otherwise keep every member's
        // /sync spinning.)
        let current =
            self.store
                .get_receipt(room_id.as_str(), user.as_str(), receipt_type, &thread_id)?;
        if current.is_some_and(|r| r.event_id == event_id.as_str()) {
            return Ok(());
        }
        let ts = now_ms();
        let mut batch = WriteBatch::one(WriteOp::PutReceipt {
            room_id: room_id.to_string(),
            user_id: user.to_string(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread_id.clone(),
            event_id: event_id.to_string(),
            ts,
        });
        if receipt_type == "m.read" {
            // Queued for the room's other servers in the same commit.
            batch
                .ops
                .extend(self.federate_receipt(&room, user, event_id.as_str(), &thread_id, ts));
        }
        self.store.write(batch).await?;
        Ok(())
    }

    /// The `m.fully_read` marker is room account data.
    pub async fn set_fully_read(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<()> {
        let content = serde_json::json!({ "event_id": event_id });
        self.put_account_data(user, Some(room_id), "m.fully_read", content.to_string())
            .await
    }
}
