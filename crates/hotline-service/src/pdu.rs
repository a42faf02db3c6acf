//! Persistent data units: events as the server keeps them, and the client
//! format they are shown in.
//!
//! **Architecture Invariant:** event ids are reference hashes (room version
//! 11 format) over the canonical JSON, equal to what `ruma::signatures`
//! computes (a test checks each event kind); the server never invents an id
//! that a federating server could not recompute.

use std::collections::BTreeMap;

use base64::{
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
    Engine,
};
use ruma::{
    canonical_json::{redact, redact_content_in_place},
    events::TimelineEventType,
    room_version_rules::EventIdFormatVersion,
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// An event's type exactly as its sender wrote it, with ruma's reading of
/// it for the rules.
///
/// Why not ruma's [`TimelineEventType`] alone: it reads some stable names
/// as aliases of unstable ones (`m.call.member` is
/// `org.matrix.msc3401.call.member`) and writes the unstable name back, so
/// a client's event would change type on the way in, and a remote event's
/// hashes and id would no longer match its bytes. The rules compare with
/// the parsed type (`==` with a [`TimelineEventType`], and through
/// `Deref`); everything written out (`Display`, serde) is the sender's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventType {
    parsed: TimelineEventType,
    raw: Box<str>,
}

impl EventType {
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl From<&str> for EventType {
    fn from(raw: &str) -> Self {
        EventType {
            parsed: TimelineEventType::from(raw),
            raw: raw.into(),
        }
    }
}

impl From<String> for EventType {
    fn from(raw: String) -> Self {
        EventType {
            parsed: TimelineEventType::from(raw.as_str()),
            raw: raw.into(),
        }
    }
}

impl From<TimelineEventType> for EventType {
    fn from(parsed: TimelineEventType) -> Self {
        let raw = parsed.to_string().into();
        EventType { parsed, raw }
    }
}

impl std::ops::Deref for EventType {
    type Target = TimelineEventType;
    fn deref(&self) -> &TimelineEventType {
        &self.parsed
    }
}

impl PartialEq<TimelineEventType> for EventType {
    fn eq(&self, other: &TimelineEventType) -> bool {
        self.parsed == *other
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(EventType::from)
    }
}

/// The `hashes` field of a PDU.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventHashes {
    pub sha256: String,
}

/// A PDU in federation format (without `event_id`, which room version 11
/// derives from the content).
///
/// The fields are declared in key order so that serialising a PDU whose
/// content is canonical gives its canonical JSON (see [`PduEvent::seal`]).
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
    /// Absent only on the create event of room version 12 and later, whose
    /// event id names the room (see [`PduEvent::room_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    #[serde(default)]
    pub signatures: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    #[serde(rename = "type")]
    pub kind: EventType,
}

/// A persisted (or about to be persisted) event with its id and position.
#[derive(Debug)]
pub struct PduEvent {
    pub event_id: OwnedEventId,
    /// The room: `pdu.room_id`, or for a create event without one (room
    /// version 12), its event id with `!` for `$`.
    pub room_id: OwnedRoomId,
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
    pub kind: EventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn new(
        kind: impl Into<EventType>,
        content: &impl Serialize,
        state_key: Option<String>,
    ) -> Result<Self> {
        Ok(Self {
            kind: kind.into(),
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
    ///
    /// The spec's algorithm (what `ruma::signatures::content_hash` and
    /// `reference_hash` do) works on a JSON tree: it clones the whole event
    /// twice and serialises it three times. Here the content is parsed once,
    /// which yields both its canonical and its redacted form (ruma's
    /// redaction rules), and the rest is written straight from the typed
    /// fields, whose serialisation is canonical by construction (fields in
    /// key order, no floats). A test checks every event kind the server
    /// builds against ruma's functions.
    pub fn seal(mut pdu: Pdu, version: &RoomVersionId) -> Result<(PduEvent, String)> {
        let rules = rules(version)?;
        // Room versions 1 and 2 name events differently; 3 uses standard base64.
        if rules.event_id_format != EventIdFormatVersion::V3 {
            return Err(Error::UnsupportedRoomVersion(format!(
                "Room version {version} is not supported"
            )));
        }
        let mut content: CanonicalJsonObject = serde_json::from_str(pdu.content.get())
            .map_err(|e| Error::bad_json(format!("Event content is not canonical JSON: {e}")))?;
        pdu.content = RawValue::from_string(serde_json::to_string(&content)?)?;
        // Both hashes leave `signatures` out; a new event has none anyway.
        debug_assert!(pdu.signatures.is_empty());
        let hashed = serde_json::to_string(&Essentials {
            redacts: pdu.redacts.as_deref(),
            ..Essentials::of(&pdu)
        })?;
        if hashed.len() > MAX_PDU_BYTES {
            return Err(Error::TooLarge(format!(
                "Events are limited to {MAX_PDU_BYTES} bytes"
            )));
        }
        pdu.hashes.sha256 = STANDARD_NO_PAD.encode(Sha256::digest(hashed.as_bytes()));

        redact_content_in_place(&mut content, &rules.redaction, pdu.kind.to_string());
        let redacted_content = serde_json::value::to_raw_value(&content)?;
        // Redaction keeps no top-level `redacts` in any room version.
        let essential = serde_json::to_string(&Essentials {
            hashes: Some(&pdu.hashes),
            content: &redacted_content,
            redacts: None,
            ..Essentials::of(&pdu)
        })?;
        let reference = URL_SAFE_NO_PAD.encode(Sha256::digest(essential.as_bytes()));
        let event_id = EventId::parse(format!("${reference}")).map_err(Error::internal)?;
        let json = serde_json::to_string(&pdu)?;
        Ok((
            PduEvent {
                room_id: room_of(&pdu, &event_id)?,
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
        let event_id = EventId::parse(&row.event_id).map_err(Error::internal)?;
        Ok(PduEvent {
            room_id: room_of(&pdu, &event_id)?,
            event_id,
            pos: row.pos.into(),
            pdu,
            redacted_because: None,
            txn: row.txn.clone(),
        })
    }

    /// The event a write carried, from its JSON (another process's commit,
    /// replayed into this one's caches).
    pub fn from_new(new: &hotline_store::NewEvent) -> Result<PduEvent> {
        let pdu: Pdu = serde_json::from_str(&new.json).map_err(Error::internal)?;
        let event_id = EventId::parse(&new.event_id).map_err(Error::internal)?;
        Ok(PduEvent {
            room_id: room_of(&pdu, &event_id)?,
            event_id,
            pos: 0.into(),
            pdu,
            redacted_because: None,
            txn: new
                .txn
                .as_ref()
                .map(|t| (t.device_id.clone(), t.txn_id.clone())),
        })
    }

    /// The redacted form of this event's stored JSON, per the room version's rules.
    pub fn redacted_json(&self, version: &RoomVersionId) -> Result<String> {
        let rules = rules(version)?;
        let object = to_canonical(&self.pdu)?;
        let redacted = redact(object, &rules.redaction, None).map_err(Error::internal)?;
        Ok(serde_json::to_string(&redacted)?)
    }

    /// An event whose id was derived from `pdu` (a received one).
    pub fn new(event_id: OwnedEventId, pos: i64, pdu: Pdu) -> Result<Self> {
        Ok(PduEvent {
            room_id: room_of(&pdu, &event_id)?,
            event_id,
            pos: pos.into(),
            pdu,
            redacted_because: None,
            txn: None,
        })
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
            room_id: with_room.then_some(&*self.room_id),
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

/// The room of an event: its `room_id`, or for a create event that has
/// none (room version 12), its own id with the sigil `!` (the room id is
/// the create event's reference hash). An event without either is refused.
fn room_of(pdu: &Pdu, event_id: &EventId) -> Result<OwnedRoomId> {
    match &pdu.room_id {
        Some(r) => Ok(r.clone()),
        None if pdu.kind == TimelineEventType::RoomCreate => {
            RoomId::parse(format!("!{}", &event_id.as_str()[1..]))
                .map_err(|e| Error::bad_json(format!("Malformed create event: {e}")))
        }
        None => Err(Error::bad_json("The event has no room_id")),
    }
}

/// The create event a room id names, for room ids that are one (room
/// version 12 on: `!` and the create event's reference hash, no server);
/// the inverse of [`room_of`] for a create event.
pub(crate) fn create_event_id(room_id: &RoomId) -> Option<OwnedEventId> {
    if room_id.server_name().is_some() {
        return None;
    }
    EventId::parse(format!("${}", &room_id.as_str()[1..])).ok()
}

/// The spec's limit on a PDU's canonical JSON.
const MAX_PDU_BYTES: usize = 65_536;

/// The fields both event hashes cover, in key order: without `hashes`, with
/// `redacts` and the full content for the content hash; with `hashes`, no
/// `redacts` and the redacted content for the reference hash. [`Self::of`]
/// gives the full content and neither `hashes` nor `redacts`.
#[derive(Serialize)]
struct Essentials<'a> {
    auth_events: &'a [OwnedEventId],
    content: &'a RawValue,
    depth: UInt,
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes: Option<&'a EventHashes>,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    prev_events: &'a [OwnedEventId],
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    sender: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a EventType,
}

impl<'a> Essentials<'a> {
    fn of(pdu: &'a Pdu) -> Self {
        Essentials {
            auth_events: &pdu.auth_events,
            content: &pdu.content,
            depth: pdu.depth,
            hashes: None,
            origin_server_ts: pdu.origin_server_ts,
            prev_events: &pdu.prev_events,
            redacts: None,
            room_id: pdu.room_id.as_deref(),
            sender: &pdu.sender,
            state_key: pdu.state_key.as_deref(),
            kind: &pdu.kind,
        }
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
    kind: &'a EventType,
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
        self.pdu.room_id.as_deref()
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

#[cfg(test)]
mod tests {
    use ruma::{owned_event_id, owned_room_id, owned_user_id, CanonicalJsonValue};
    use serde_json::json;

    use super::*;

    fn pdu(kind: &str, state_key: Option<&str>, content: serde_json::Value) -> Pdu {
        Pdu {
            auth_events: vec![owned_event_id!("$aaaa"), owned_event_id!("$bbbb")],
            content: serde_json::value::to_raw_value(&content).unwrap(),
            depth: UInt::from(7u32),
            hashes: EventHashes {
                sha256: String::new(),
            },
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::new(1_700_000_000_000).unwrap()),
            prev_events: vec![owned_event_id!("$cccc")],
            redacts: None,
            room_id: Some(owned_room_id!("!room:hotline.test")),
            sender: owned_user_id!("@alice:hotline.test"),
            state_key: state_key.map(str::to_owned),
            kind: kind.into(),
            signatures: Default::default(),
        }
    }

    /// The spec's algorithm as ruma implements it, on a JSON tree.
    fn sealed_by_ruma(pdu: &Pdu, version: &RoomVersionId) -> (String, String, String) {
        let rules = rules(version).unwrap();
        let mut object = to_canonical(pdu).unwrap();
        object.remove("hashes");
        object.remove("signatures");
        let hash = ruma::signatures::content_hash(&object).unwrap().encode();
        object.insert(
            "hashes".into(),
            CanonicalJsonValue::Object(
                [(
                    "sha256".to_owned(),
                    CanonicalJsonValue::String(hash.clone()),
                )]
                .into(),
            ),
        );
        let reference = ruma::signatures::reference_hash(&object, &rules).unwrap();
        object.insert(
            "signatures".into(),
            CanonicalJsonValue::Object(Default::default()),
        );
        (
            hash,
            format!("${reference}"),
            serde_json::to_string(&object).unwrap(),
        )
    }

    #[test]
    fn an_event_type_keeps_the_name_its_sender_wrote() {
        for name in [
            "m.call.member",
            "org.matrix.msc3401.call.member",
            "m.room.member",
            "org.hotline.line",
        ] {
            let json = serde_json::to_value(pdu(name, Some(""), json!({}))).unwrap();
            assert_eq!(json["type"], name);
            let back: Pdu = serde_json::from_value(json).unwrap();
            assert_eq!(back.kind.to_string(), name);
        }
        // The rules read the parsed type.
        assert_eq!(
            EventType::from("m.room.member"),
            TimelineEventType::RoomMember
        );
    }

    #[test]
    fn seal_matches_the_spec_hashes_for_every_kind_of_event() {
        let mut redaction = pdu(
            "m.room.redaction",
            None,
            json!({"redacts": "$cccc", "reason": "oops"}),
        );
        redaction.redacts = Some(owned_event_id!("$cccc"));
        let cases = [
            pdu(
                "m.room.message",
                None,
                json!({"msgtype": "m.text", "body": "héllo \"quoted\" \n\t \u{1} 🌍 </script>"}),
            ),
            pdu(
                "m.room.encrypted",
                None,
                json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAC", "device_id": "DEV", "sender_key": "k", "session_id": "s"}),
            ),
            pdu(
                "m.room.create",
                Some(""),
                json!({"room_version": "11", "creator": "@alice:hotline.test", "m.federate": false, "z": [1, {"b": 2, "a": 1}]}),
            ),
            pdu(
                "m.room.member",
                Some("@bob:hotline.test"),
                json!({"membership": "invite", "displayname": "Bob", "is_direct": true}),
            ),
            pdu(
                "m.room.power_levels",
                Some(""),
                json!({"users": {"@alice:hotline.test": 100}, "invite": 50, "events": {"m.room.name": 50}, "ban": 50, "notifications": {"room": 50}}),
            ),
            pdu(
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!x:y"}], "extra": 1}),
            ),
            pdu(
                "m.room.history_visibility",
                Some(""),
                json!({"history_visibility": "shared", "extra": "x"}),
            ),
            pdu("m.room.name", Some(""), json!({"name": "Line"})),
            // A stable name ruma reads as an alias of an unstable one.
            pdu(
                "m.call.member",
                Some("_@alice:hotline.test_DEV"),
                json!({"application": "m.call", "call_id": ""}),
            ),
            pdu(
                "org.hotline.custom",
                Some("key with spaces"),
                json!({"nested": {"deep": {"z": -9007199254740991i64, "a": null}}, "empty": {}}),
            ),
            redaction,
        ];
        // Room version 12's create event has no room_id: its id names the room.
        let mut create12 = pdu(
            "m.room.create",
            Some(""),
            json!({"room_version": "12", "additional_creators": ["@bob:elsewhere.test"]}),
        );
        create12.room_id = None;
        let (hash, event_id, json) = sealed_by_ruma(&create12, &RoomVersionId::V12);
        let (event, stored) = PduEvent::seal(create12, &RoomVersionId::V12).unwrap();
        assert_eq!(
            (event.pdu.hashes.sha256.as_str(), event.event_id.as_str()),
            (hash.as_str(), event_id.as_str())
        );
        assert_eq!(stored, json);
        assert!(!stored.contains("room_id"), "{stored}");
        assert_eq!(event.room_id.as_str(), format!("!{}", &event_id[1..]));
        for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
            for case in &cases {
                let (hash, event_id, json) = sealed_by_ruma(case, &version);
                let (event, stored) = PduEvent::seal(case.clone(), &version).unwrap();
                assert_eq!(event.pdu.hashes.sha256, hash, "{} in {version}", case.kind);
                assert_eq!(
                    event.event_id.as_str(),
                    event_id,
                    "{} in {version}",
                    case.kind
                );
                assert_eq!(stored, json, "{} in {version}", case.kind);
                assert_eq!(
                    event.pdu.content.get(),
                    serde_json::to_string(&to_canonical(&case.content).unwrap()).unwrap()
                );
            }
        }
    }

    #[test]
    fn seal_refuses_content_that_is_not_canonical_json() {
        for content in [json!({"n": 1.5}), json!({"n": 9007199254740992u64})] {
            let err = PduEvent::seal(pdu("m.room.message", None, content), &RoomVersionId::V11)
                .unwrap_err();
            assert!(matches!(err, Error::BadJson(_)), "{err:?}");
        }
    }

    #[test]
    fn seal_refuses_events_over_the_spec_size_limit() {
        let big = "x".repeat(MAX_PDU_BYTES);
        let err = PduEvent::seal(
            pdu("m.room.message", None, json!({"body": big})),
            &RoomVersionId::V11,
        )
        .unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    }
}
