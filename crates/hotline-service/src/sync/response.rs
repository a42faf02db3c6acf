//! The shapes of a `/sync` response (the spec's 200 body), serialized as
//! they are; the sections fill them in.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, OwnedUserId};
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Serialize, Default)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: Rooms,
    pub account_data: Events,
    pub presence: Events,
    pub to_device: Events,
    pub device_lists: DeviceLists,
    pub device_one_time_keys_count: BTreeMap<String, u64>,
    pub device_unused_fallback_key_types: Vec<String>,
}

#[derive(Serialize, Default)]
pub struct Rooms {
    pub join: BTreeMap<OwnedRoomId, JoinedRoom>,
    pub invite: BTreeMap<OwnedRoomId, InvitedRoom>,
    pub leave: BTreeMap<OwnedRoomId, LeftRoom>,
    pub knock: BTreeMap<OwnedRoomId, serde_json::Value>,
}

#[derive(Serialize, Default)]
pub struct Events {
    pub events: Vec<Box<RawValue>>,
}

#[derive(Serialize, Default)]
pub struct DeviceLists {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

#[derive(Serialize)]
pub struct Timeline {
    pub events: Vec<Box<RawValue>>,
    pub limited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
}

#[derive(Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub ephemeral: Events,
    pub account_data: Events,
    pub unread_notifications: UnreadCounts,
    pub summary: serde_json::Value,
}

#[derive(Serialize)]
pub struct UnreadCounts {
    pub notification_count: u64,
    pub highlight_count: u64,
}

#[derive(Serialize)]
pub struct InvitedRoom {
    pub invite_state: Events,
}

#[derive(Serialize)]
pub struct LeftRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub account_data: Events,
}

impl SyncResponse {
    /// Whether nothing changed: a long-poll keeps waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.rooms.join.is_empty()
            && self.rooms.invite.is_empty()
            && self.rooms.knock.is_empty()
            && self.rooms.leave.is_empty()
            && self.account_data.events.is_empty()
            && self.presence.events.is_empty()
            && self.to_device.events.is_empty()
            && self.device_lists.changed.is_empty()
            && self.device_lists.left.is_empty()
    }
}
