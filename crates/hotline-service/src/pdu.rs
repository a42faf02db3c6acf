//! Persistent data units: events as the server keeps them, and the client
//! format they are shown in.
//!
//! **Architecture Invariant:** event ids are reference hashes (room version
//! 11 format), computed with `ruma::signatures` over the canonical JSON; the
//! server never invents an id that a federating server could not recompute.

use std::collections::BTreeMap;

use ruma::{
    canonical_json::redact, events::TimelineEventType, CanonicalJsonObject, EventId,
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId,
    UInt, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Error, Result};

/// The `hashes` field of a PDU.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventHashes {
    pub sha256: String,
}

/// A PDU in federation format (without `event_id`, which room version 11
/// derives from the content).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pdu {
    pub auth_events: Vec<OwnedEventId>,
    pub content: Box<RawValue>,
    pub depth: UInt,
    pub hashes: EventHashes,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub prev_events: Vec<OwnedEventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacts: Option<OwnedEventId>,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    #[serde(default)]
    pub signatures: BTreeMap<String, BTreeMap<String, String>>,
}

/// A persisted (or about to be persisted) event with its id and position.
#[derive(Debug)]
pub struct PduEvent {
    pub event_id: OwnedEventId,
    /// Stream position; `0` until the commit hook stamps it. Atomic because
    /// the event is shared (`Arc`) from build to cache.
    pos: std::sync::atomic::AtomicI64,
    pub pdu: Pdu,
    /// The redaction event that redacted this one, in client format.
    pub redacted_because: Option<Box<RawValue>>,
    /// `(device_id, txn_id)` of the send that made it.
    pub txn: Option<(String, String)>,
}

/// What the server needs to build an event.
pub struct EventDraft {
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn new(
        kind: TimelineEventType,
        content: &impl Serialize,
        state_key: Option<String>,
    ) -> Result<Self> {
        Ok(Self {
            kind,
            content: serde_json::value::to_raw_value(content)?,
            state_key,
            redacts: None,
        })
    }
}

pub fn rules(version: &RoomVersionId) -> Result<ruma::room_version_rules::RoomVersionRules> {
    version.rules().ok_or_else(|| {
        Error::UnsupportedRoomVersion(format!("Room version {version} is not supported"))
    })
}

impl PduEvent {
    /// Hashes `pdu`, derives its event id and returns the event and its
    /// canonical JSON for storage.
    pub fn seal(mut pdu: Pdu, version: &RoomVersionId) -> Result<(PduEvent, String)> {
        let rules = rules(version)?;
        let mut object = to_canonical(&pdu)?;
        let hash = ruma::signatures::content_hash(&object).map_err(Error::internal)?;
        pdu.hashes.sha256 = hash.encode();
        object.insert(
            "hashes".into(),
            ruma::CanonicalJsonValue::Object(to_canonical(&pdu.hashes)?),
        );
        let reference =
            ruma::signatures::reference_hash(&object, &rules).map_err(Error::internal)?;
        let event_id = EventId::parse(format!("${reference}")).map_err(Error::internal)?;
        let json = serde_json::to_string(&object)?;
        Ok((
            PduEvent {
                event_id,
                pos: Default::default(),
                pdu,
                redacted_because: None,
                txn: None,
            },
            json,
        ))
    }

    /// Loads a stored event. `redacted_because` is filled by the caller,
    /// who can look the redaction up.
    pub fn from_row(row: &hotline_store::EventRow) -> Result<PduEvent> {
        let pdu: Pdu = serde_json::from_str(&row.json).map_err(Error::internal)?;
        Ok(PduEvent {
            event_id: EventId::parse(&row.event_id).map_err(Error::internal)?,
            pos: row.pos.into(),
            pdu,
            redacted_because: None,
            txn: row.txn.clone(),
        })
    }

    /// The redacted form of this event's stored JSON, per the room version's rules.
    pub fn redacted_json(&self, version: &RoomVersionId) -> Result<String> {
        let rules = rules(version)?;
        let object = to_canonical(&self.pdu)?;
        let redacted = redact(object, &rules.redaction, None).map_err(Error::internal)?;
        Ok(serde_json::to_string(&redacted)?)
    }

    pub fn new(event_id: OwnedEventId, pos: i64, pdu: Pdu) -> Self {
        PduEvent {
            event_id,
            pos: pos.into(),
            pdu,
            redacted_because: None,
            txn: None,
        }
    }

    /// The stream position (`0` before commit).
    pub fn pos(&self) -> i64 {
        self.pos.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_pos(&self, pos: i64) {
        self.pos.store(pos, std::sync::atomic::Ordering::Release)
    }

    pub fn kind(&self) -> &TimelineEventType {
        &self.pdu.kind
    }

    pub fn is_state(&self) -> bool {
        self.pdu.state_key.is_some()
    }

    /// Parses the content as `T`.
    pub fn content<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_str(self.pdu.content.get()).map_err(Error::internal)
    }

    /// The event in the client-server format. `for_device` adds the
    /// transaction id when the viewer's device sent it; `room` adds `room_id`.
    pub fn to_client(&self, viewer: Option<(&UserId, &str)>, with_room: bool) -> Box<RawValue> {
        let transaction_id = match (&self.txn, viewer) {
            (Some((device, txn)), Some((user, viewer_device)))
                if device == viewer_device && user == self.pdu.sender =>
            {
                Some(txn.as_str())
            }
            _ => None,
        };
        let age = MilliSecondsSinceUnixEpoch::now()
            .get()
            .saturating_sub(self.pdu.origin_server_ts.get());
        let event = ClientEvent {
            content: &self.pdu.content,
            event_id: &self.event_id,
            origin_server_ts: self.pdu.origin_server_ts,
            room_id: with_room.then_some(&*self.pdu.room_id),
            sender: &self.pdu.sender,
            state_key: self.pdu.state_key.as_deref(),
            kind: &self.pdu.kind,
            redacts: self.pdu.redacts.as_deref(),
            unsigned: Unsigned {
                age: Some(age),
                transaction_id,
                redacted_because: self.redacted_because.as_deref(),
            },
        };
        serde_json::value::to_raw_value(&event).expect("client event serializes")
    }
}

#[derive(Serialize)]
struct ClientEvent<'a> {
    content: &'a RawValue,
    event_id: &'a EventId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    sender: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a TimelineEventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
    unsigned: Unsigned<'a>,
}

#[derive(Serialize)]
struct Unsigned<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<ruma::UInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted_because: Option<&'a RawValue>,
}

fn to_canonical<T: Serialize>(value: &T) -> Result<CanonicalJsonObject> {
    match ruma::canonical_json::to_canonical_value(value).map_err(Error::internal)? {
        ruma::CanonicalJsonValue::Object(o) => Ok(o),
        _ => Err(Error::internal("event is not an object")),
    }
}

/// Lets ruma's auth rules read our events.
impl ruma::state_res::Event for PduEvent {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        Some(&self.pdu.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.pdu.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.pdu.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.pdu.kind
    }
    fn content(&self) -> &RawValue {
        &self.pdu.content
    }
    fn state_key(&self) -> Option<&str> {
        self.pdu.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.pdu.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.pdu.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.pdu.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}
