//! PDUs between servers: what this server signs when an event leaves, and
//! the checks an event from another server passes before anything else
//! looks at it.
//!
//! A local event is stored unsigned (its id, a reference hash, leaves the
//! signatures out) and signed as it leaves ([`Services::outgoing_pdu`]):
//! ed25519 signatures are deterministic, so every copy carries the same
//! signature. A received event ([`Services::check_incoming_pdu`]) has its
//! format checked, its id derived, the signatures of the servers the spec
//! names verified against their keys as of the event's timestamp, and its
//! content hash compared: an event whose hash is wrong is kept in its
//! redacted form, as the spec says; one with a bad signature is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use ruma::canonical_json::redact;
use ruma::serde::Base64;
use ruma::signatures::{
    reference_hash, required_server_signatures_to_verify_event, sign_event, verify_event, Verified,
};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, RoomVersionId, ServerName, UserId};
use serde_json::value::RawValue;

use crate::pdu::{rules, Pdu, PduEvent};
use crate::{Error, Result, Services};

/// A received event that passed [`Services::check_incoming_pdu`], with the
/// JSON to store (canonical, without `unsigned`).
pub(crate) struct CheckedPdu {
    pub event: Arc<PduEvent>,
    pub json: String,
}

impl Services {
    /// A stored event as it goes to another server: its JSON, signed by
    /// this server when a local user sent it (or when `countersign`, as a
    /// resident server signs a join it accepted).
    pub(crate) fn outgoing_pdu(
        &self,
        json: &str,
        version: &RoomVersionId,
        countersign: bool,
    ) -> Result<Box<RawValue>> {
        let rules = rules(version)?;
        let mut object: CanonicalJsonObject =
            serde_json::from_str(json).map_err(Error::internal)?;
        object.remove("unsigned");
        object.remove("event_id");
        let ours = self.server_name().as_str();
        let local_sender = match object.get("sender") {
            Some(CanonicalJsonValue::String(s)) => {
                UserId::parse(s.as_str()).is_ok_and(|u| u.server_name() == self.server_name())
            }
            _ => false,
        };
        let signed = matches!(object.get("signatures"), Some(CanonicalJsonValue::Object(m)) if m.contains_key(ours));
        if (local_sender || countersign) && !signed {
            if !matches!(
                object.get("signatures"),
                Some(CanonicalJsonValue::Object(_))
            ) {
                object.insert(
                    "signatures".into(),
                    CanonicalJsonValue::Object(Default::default()),
                );
            }
            sign_event(ours, self.server_key.pair(), &mut object, &rules.redaction)
                .map_err(Error::internal)?;
        }
        Ok(serde_json::value::to_raw_value(&object)?)
    }

    /// Checks an event another server sent (see the module docs), for a
    /// room of `version`. `Forbidden` for a bad or missing signature or a
    /// server this one does not federate with; `BadJson` for a malformed
    /// event.
    pub(crate) async fn check_incoming_pdu(
        &self,
        raw: &RawValue,
        version: &RoomVersionId,
    ) -> Result<CheckedPdu> {
        let rules = rules(version)?;
        if rules.event_id_format != ruma::room_version_rules::EventIdFormatVersion::V3 {
            return Err(Error::UnsupportedRoomVersion(format!(
                "Room version {version} is not supported"
            )));
        }
        let mut object: CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|e| Error::bad_json(format!("Not an event: {e}")))?;
        object.remove("unsigned");
        object.remove("event_id");
        ruma::state_res::check_pdu_format(&object, &rules.event_format)
            .map_err(|e| Error::bad_json(format!("Malformed event: {e}")))?;
        let event_id = EventId::parse(format!(
            "${}",
            reference_hash(&object, &rules).map_err(|e| Error::bad_json(e.to_string()))?
        ))
        .map_err(Error::internal)?;
        let servers = required_server_signatures_to_verify_event(&object, &rules.signatures)
            .map_err(|e| Error::bad_json(e.to_string()))?;
        let ts = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(i)) => i64::from(*i),
            _ => return Err(Error::bad_json("origin_server_ts is required")),
        };
        let signatures = match object.get("signatures") {
            Some(CanonicalJsonValue::Object(m)) => m.clone(),
            _ => return Err(Error::forbidden("The event is not signed")),
        };
        let mut keys = BTreeMap::new();
        for server in servers {
            let key_ids: Vec<String> = match signatures.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(s)) => s
                    .keys()
                    .filter(|k| k.starts_with("ed25519:"))
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            if key_ids.is_empty() {
                return Err(Error::forbidden(format!(
                    "The event lacks {server}'s signature"
                )));
            }
            let server: &ServerName = &server;
            if server != self.server_name() {
                self.federation_peer(server)?;
            }
            let mut set = BTreeMap::new();
            for key_id in key_ids {
                if let Ok(key) = self.server_key_at(server, &key_id, ts).await {
                    let key = Base64::parse(key).map_err(Error::internal)?;
                    set.insert(key_id, key);
                }
            }
            keys.insert(server.to_string(), set);
        }
        match verify_event(&keys, &object, &rules) {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => {
                tracing::warn!(%event_id, "an event's content hash is wrong: it is kept redacted");
                object = redact(object, &rules.redaction, None)
                    .map_err(|e| Error::bad_json(e.to_string()))?;
            }
            Err(e) => {
                tracing::warn!(%event_id, error = %e, "an event's signature does not verify");
                return Err(Error::forbidden(format!(
                    "The event's signature does not verify: {e}"
                )));
            }
        }
        let json = serde_json::to_string(&object)?;
        let pdu: Pdu = serde_json::from_str(&json)
            .map_err(|e| Error::bad_json(format!("Malformed event: {e}")))?;
        let event = Arc::new(PduEvent::new(event_id, 0, pdu)?);
        self.read_directory_for_aide_marking(&event).await;
        Ok(CheckedPdu { event, json })
    }

    /// A peer's principal marks an aide of theirs on a line: the aide may
    /// have been enrolled since the peer's directory was last read here, so
    /// it is read again before the seam judges the marking by it.
    async fn read_directory_for_aide_marking(&self, event: &PduEvent) {
        let sender = &event.pdu.sender;
        let peer = sender.server_name();
        if event.pdu.kind.to_string() != crate::line_aides::AIDE_STATE || peer == self.server_name()
        {
            return;
        }
        let Some(aide) = event
            .pdu
            .state_key
            .as_deref()
            .and_then(crate::policy::user_of_key)
        else {
            return;
        };
        if crate::line_aides::marked_for(event).is_none()
            || self.peer_principal_of(&aide).as_ref() == Some(sender)
        {
            return;
        }
        self.forget_peer_directory(peer);
        if let Err(e) = self.peer_directory(peer).await {
            tracing::info!(%peer, error = %e, "a peer's directory could not be read for an aide marking");
        }
    }
}
