//! What the archiver hands in ([`NewEntry`]) and the entry the archive
//! keeps (a JSON object, hashed as it is).

use serde_json::{json, Map, Value};

use crate::canonical::hex;
use crate::chain::Hash;

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A text (or notice, emote) message; `content` is the decrypted
    /// event content.
    Message,
    /// A replacement (`m.replace`); `content` holds `m.new_content` and
    /// the relation naming the edited event.
    Edit,
    /// A redaction; `content` names the redacted event (`redacts`) and the
    /// reason, if any.
    Redaction,
    /// A file, image, video or voice message; `content` is the decrypted
    /// event content (name, mimetype, size), and the decrypted file bytes
    /// go in [`NewEntry::attachment`].
    Attachment,
    /// A call event, metadata only: who, when, how long. `content` holds
    /// `call_id`, `event` (`invite`, `answer`, `hangup`, `reject`, ...) and,
    /// on a hangup, `duration_ms`; no SDP, no candidates, no audio.
    Call,
    /// An event the archiver could not decrypt (yet): `content` says why.
    /// When its keys arrive, the archiver appends the decrypted entry as
    /// well; both stay, each once, and the decrypted one names this one
    /// (`"resolves": SEQ`, set by the archive, not by the caller).
    Undecryptable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Edit => "edit",
            Kind::Redaction => "redaction",
            Kind::Attachment => "attachment",
            Kind::Call => "call",
            Kind::Undecryptable => "undecryptable",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "message" => Kind::Message,
            "edit" => Kind::Edit,
            "redaction" => Kind::Redaction,
            "attachment" => Kind::Attachment,
            "call" => Kind::Call,
            "undecryptable" => Kind::Undecryptable,
            _ => return None,
        })
    }
}

/// One event to archive, as the archiver saw it. Ids are strings (not
/// ruma's types) so that the archiver may use whichever ruma its Matrix
/// client brings; the archive does not interpret them.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    pub event_id: String,
    /// The line.
    pub room_id: String,
    pub sender: String,
    /// The sender's display name, if known.
    pub sender_name: Option<String>,
    /// The sender's title (an official's), if known.
    pub sender_title: Option<String>,
    pub origin_server_ts: i64,
    pub kind: Kind,
    /// The decrypted content (see [`Kind`] for what each kind holds).
    pub content: Value,
    /// For [`Kind::Attachment`]: the decrypted file.
    pub attachment: Option<Vec<u8>>,
}

/// An attachment's description in its entry.
pub(crate) struct AttachmentRef {
    pub sha256: Hash,
    pub size: u64,
}

/// The entry object the archive stores and packages carry.
pub(crate) fn entry_value(
    e: &NewEntry,
    seq: u64,
    prev: &Hash,
    salt: &[u8; 32],
    archived_ts: i64,
    attachment: Option<&AttachmentRef>,
    resolves: Option<u64>,
) -> Value {
    let mut m = Map::new();
    m.insert("v".into(), json!(1));
    m.insert("seq".into(), json!(seq));
    m.insert("prev".into(), json!(hex(prev)));
    m.insert("salt".into(), json!(hex(salt)));
    m.insert("event_id".into(), json!(e.event_id));
    m.insert("room_id".into(), json!(e.room_id));
    m.insert("sender".into(), json!(e.sender));
    if let Some(n) = &e.sender_name {
        m.insert("sender_name".into(), json!(n));
    }
    if let Some(t) = &e.sender_title {
        m.insert("sender_title".into(), json!(t));
    }
    m.insert("origin_server_ts".into(), json!(e.origin_server_ts));
    m.insert("archived_ts".into(), json!(archived_ts));
    m.insert("kind".into(), json!(e.kind.as_str()));
    m.insert("content".into(), e.content.clone());
    if let Some(a) = attachment {
        m.insert(
            "attachment".into(),
            json!({"sha256": hex(&a.sha256), "size": a.size}),
        );
    }
    if let Some(r) = resolves {
        m.insert("resolves".into(), json!(r));
    }
    Value::Object(m)
}

/// The fields of a stored entry the chain and the scope of an export use.
pub(crate) struct EntryFields<'a> {
    pub seq: u64,
    pub prev: &'a str,
    pub room_id: &'a str,
    pub ts: i64,
}

pub(crate) fn fields(v: &Value) -> Option<EntryFields<'_>> {
    Some(EntryFields {
        seq: v.get("seq")?.as_u64()?,
        prev: v.get("prev")?.as_str()?,
        room_id: v.get("room_id")?.as_str()?,
        ts: v.get("origin_server_ts")?.as_i64()?,
    })
}
