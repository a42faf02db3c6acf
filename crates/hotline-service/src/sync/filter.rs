//! Filters: the spec's `RoomEventFilter` (read by `/sync` for each part of
//! a room, and by `/messages` and `/context` for their events) and the
//! parts of its `Filter` that `/sync` honours, as [`SyncFilter`].
//!
//! A `/sync` names its filter inline or by the id of one the user uploaded;
//! [`Services::sync_filter`] parses it once and keeps it in the sync caches
//! (`cache.rs`), since a client names the same filter at every long-poll.
//! Matching an event by type writes the type's name into a stack buffer, so
//! filtering allocates nothing for ordinary names.

use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::UserId;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::pdu::PduEvent;
use crate::{Error, Result, Services};

/// Which events of a room a client wants: the spec's `RoomEventFilter`
/// (also read for `EventFilter`s, whose fields are a subset).
#[derive(Clone, Debug, Default)]
pub struct RoomEventFilter {
    pub limit: Option<usize>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    /// `Some(true)`: only events whose content has a `url` string;
    /// `Some(false)`: only events without one.
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
}

fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Calls `f` with the name of an event type, written into a stack buffer
/// (ruma's event types only show their name through `Display`), so that
/// matching a filter allocates nothing for ordinary names.
fn with_kind_str<R>(kind: &TimelineEventType, f: impl FnOnce(&str) -> R) -> R {
    use std::fmt::Write;
    struct Buf {
        bytes: [u8; 128],
        len: usize,
        spill: Option<String>,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            if let Some(spill) = &mut self.spill {
                spill.push_str(s);
            } else if self.len + s.len() <= self.bytes.len() {
                self.bytes[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
                self.len += s.len();
            } else {
                let mut spill = String::with_capacity(self.len + s.len());
                spill.push_str(std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default());
                spill.push_str(s);
                self.spill = Some(spill);
            }
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 128],
        len: 0,
        spill: None,
    };
    let _ = write!(buf, "{kind}");
    match &buf.spill {
        Some(s) => f(s),
        // Whole `str`s were copied in, so the bytes are UTF-8.
        None => f(std::str::from_utf8(&buf.bytes[..buf.len]).unwrap_or_default()),
    }
}

/// Whether an event's content has a `url` string (`contains_url`).
fn content_has_url(content: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        url: Option<&'a RawValue>,
    }
    serde_json::from_str::<Probe>(content.get())
        .ok()
        .and_then(|p| p.url)
        .is_some_and(|u| u.get().starts_with('"'))
}

impl RoomEventFilter {
    /// Whether every event passes (room lists aside): nothing to look at
    /// per event.
    pub fn passes_all(&self) -> bool {
        self.types.is_none()
            && self.not_types.is_empty()
            && self.senders.is_none()
            && self.not_senders.is_empty()
            && self.contains_url.is_none()
    }

    /// Whether no event can pass (`types: []` or `senders: []`).
    pub fn passes_none(&self) -> bool {
        self.types.as_ref().is_some_and(|t| t.is_empty())
            || self.senders.as_ref().is_some_and(|s| s.is_empty())
    }

    /// Whether the filter's `rooms` / `not_rooms` let `room` through.
    pub fn room_ok(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == room))
            && !self.not_rooms.iter().any(|x| x == room)
    }

    pub fn matches(&self, e: &PduEvent) -> bool {
        if self.passes_all() {
            return true;
        }
        let type_ok = (self.types.is_none() && self.not_types.is_empty())
            || with_kind_str(&e.pdu.kind, |k| self.type_ok(k));
        type_ok
            && self.sender_ok(e.pdu.sender.as_str())
            && self
                .contains_url
                .is_none_or(|want| content_has_url(&e.pdu.content) == want)
    }

    fn type_ok(&self, kind: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|p| type_matches(p, kind)))
            && !self.not_types.iter().any(|p| type_matches(p, kind))
    }

    fn sender_ok(&self, sender: &str) -> bool {
        self.senders
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == sender))
            && !self.not_senders.iter().any(|x| x == sender)
    }

    /// Whether events of `kind` (from `sender`, when known) pass the filter.
    pub fn matches_type_and_sender(&self, kind: &str, sender: Option<&str>) -> bool {
        self.type_ok(kind) && sender.is_none_or(|sender| self.sender_ok(sender))
    }

    /// Reads the spec's `RoomEventFilter` JSON.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let strings = |k: &str| -> Option<Vec<String>> {
            v.get(k).and_then(|x| x.as_array()).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let flag = |k: &str| v.get(k).and_then(|l| l.as_bool());
        RoomEventFilter {
            limit: v.get("limit").and_then(|l| l.as_u64()).map(|l| l as usize),
            types: strings("types"),
            not_types: strings("not_types").unwrap_or_default(),
            senders: strings("senders"),
            not_senders: strings("not_senders").unwrap_or_default(),
            rooms: strings("rooms"),
            not_rooms: strings("not_rooms").unwrap_or_default(),
            contains_url: flag("contains_url"),
            lazy_load_members: flag("lazy_load_members").unwrap_or(false),
            include_redundant_members: flag("include_redundant_members").unwrap_or(false),
        }
    }
}

/// The parts of the spec's `Filter` that `/sync` honours.
#[derive(Clone, Debug, Default)]
pub struct SyncFilter {
    pub timeline: RoomEventFilter,
    pub state: RoomEventFilter,
    pub ephemeral: RoomEventFilter,
    /// `room.account_data`: per-room account data.
    pub room_account_data: RoomEventFilter,
    /// `account_data`: global account data.
    pub account_data: RoomEventFilter,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    /// The filter's `presence` part (types and senders).
    pub presence: RoomEventFilter,
    /// Whether `m.typing` / `m.receipt` are filtered out of `ephemeral`
    /// (worked out once: the filter is cached and read at every sync).
    pub typing_off: bool,
    pub receipts_off: bool,
}

impl SyncFilter {
    /// Reads a filter definition; unknown fields are ignored as the spec allows.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::bad_json("Filter must be an object"));
        }
        let empty = json!({});
        let room = v.get("room").unwrap_or(&empty);
        let strings = |x: Option<&serde_json::Value>| -> Option<Vec<String>> {
            x.and_then(|x| x.as_array()).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let part = |parent: &serde_json::Value, k: &str| {
            RoomEventFilter::from_json(parent.get(k).unwrap_or(&empty))
        };
        let ephemeral = part(room, "ephemeral");
        let ephemeral_on = ephemeral.limit != Some(0) && !ephemeral.passes_none();
        Ok(SyncFilter {
            rooms: strings(room.get("rooms")),
            not_rooms: strings(room.get("not_rooms")).unwrap_or_default(),
            include_leave: room
                .get("include_leave")
                .and_then(|b| b.as_bool())
                .unwrap_or(false),
            account_data: part(v, "account_data"),
            room_account_data: part(room, "account_data"),
            presence: part(v, "presence"),
            typing_off: !(ephemeral_on && ephemeral.matches_type_and_sender("m.typing", None)),
            receipts_off: !(ephemeral_on && ephemeral.matches_type_and_sender("m.receipt", None)),
            ephemeral,
            timeline: part(room, "timeline"),
            state: part(room, "state"),
        })
    }

    pub(super) fn room_wanted(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == room))
            && !self.not_rooms.iter().any(|x| x == room)
    }

    /// Whether `m.room.member` events are lazy-loaded.
    pub(super) fn lazy_members(&self) -> bool {
        self.state.lazy_load_members || self.timeline.lazy_load_members
    }

    pub(super) fn redundant_members(&self) -> bool {
        self.state.include_redundant_members || self.timeline.include_redundant_members
    }
}

impl Services {
    /// The filter a `/sync` names: none, inline JSON, or the id of one the
    /// user uploaded.
    pub fn sync_filter(&self, user: &UserId, filter: Option<&str>) -> Result<Arc<SyncFilter>> {
        let Some(filter) = filter else {
            return Ok(Default::default());
        };
        let inline = filter.trim_start().starts_with('{');
        let key = if inline {
            std::borrow::Cow::Borrowed(filter)
        } else {
            std::borrow::Cow::Owned(format!("{user}\n{filter}"))
        };
        if let Some(parsed) = self.filters.get(&key) {
            return Ok(parsed);
        }
        let parsed = if inline {
            let v: serde_json::Value =
                serde_json::from_str(filter).map_err(|e| Error::bad_json(e.to_string()))?;
            SyncFilter::from_json(&v)?
        } else {
            let json = self.get_filter(user, filter)?;
            SyncFilter::from_json(&serde_json::from_str(&json).map_err(Error::internal)?)?
        };
        let parsed = Arc::new(parsed);
        self.filters.insert(key.into_owned(), parsed.clone());
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ephemeral_filter_is_worked_out_once() {
        let f = SyncFilter::from_json(&json!({})).unwrap();
        assert!(!f.typing_off && !f.receipts_off);
        let f = SyncFilter::default();
        assert!(!f.typing_off && !f.receipts_off, "no filter: everything");
        let f = SyncFilter::from_json(&json!({"room": {"ephemeral": {"limit": 0}}})).unwrap();
        assert!(f.typing_off && f.receipts_off);
        let f = SyncFilter::from_json(&json!({"room": {"ephemeral": {"types": ["m.receipt"]}}}))
            .unwrap();
        assert!(f.typing_off && !f.receipts_off);
    }
}
