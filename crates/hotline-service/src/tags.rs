//! Room tags (`/user/{userId}/rooms/{roomId}/tags`).
//!
//! Tags are the room account data `m.tag` (`{"tags": {name: info}}`), as in
//! Synapse: a change reaches the user's clients in the room's
//! `account_data` on `/sync`, and a client that writes `m.tag` directly sees
//! the same tags here. Edits are read-modify-writes under the user's
//! document lock.

use ruma::{RoomId, UserId};
use serde_json::{json, Map, Value};

use crate::{Error, Result, Services};

/// The room account data type holding a room's tags.
const TAGS: &str = "m.tag";

/// The spec's limit on a tag name.
const MAX_TAG_BYTES: usize = 255;

/// Checks a tag's info object: `order`, when present, is a number in [0, 1].
fn check_tag_info(info: &Map<String, Value>) -> Result<()> {
    match info.get("order") {
        None => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(o) if (0.0..=1.0).contains(&o) => Ok(()),
            _ => Err(Error::invalid_param("order must be a number in [0, 1]")),
        },
        Some(_) => Err(Error::bad_json("order must be a number")),
    }
}

impl Services {
    /// `GET /user/{userId}/rooms/{roomId}/tags`.
    pub fn room_tags(&self, user: &UserId, room_id: &RoomId) -> Result<Map<String, Value>> {
        self.room(room_id)?;
        self.stored_tags(user, room_id)
    }

    /// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`: adds or replaces a tag.
    pub async fn set_room_tag(
        &self,
        user: &UserId,
        room_id: &RoomId,
        tag: &str,
        info: Map<String, Value>,
    ) -> Result<()> {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(Error::invalid_param("A tag name has 1 to 255 bytes"));
        }
        check_tag_info(&info)?;
        self.room(room_id)?;
        let _edit = self.doc_locks.lock(user).await;
        let mut tags = self.stored_tags(user, room_id)?;
        tags.insert(tag.to_owned(), Value::Object(info));
        self.write_tags(user, room_id, tags).await
    }

    /// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`: removing a tag the
    /// room does not have succeeds and changes nothing.
    pub async fn delete_room_tag(&self, user: &UserId, room_id: &RoomId, tag: &str) -> Result<()> {
        self.room(room_id)?;
        let _edit = self.doc_locks.lock(user).await;
        let mut tags = self.stored_tags(user, room_id)?;
        if tags.remove(tag).is_none() {
            return Ok(());
        }
        self.write_tags(user, room_id, tags).await
    }

    fn stored_tags(&self, user: &UserId, room_id: &RoomId) -> Result<Map<String, Value>> {
        let doc = self
            .store
            .get_account_data(user.as_str(), room_id.as_str(), TAGS)?;
        Ok(doc
            .and_then(|d| serde_json::from_str::<Value>(&d.content).ok())
            .and_then(|mut v| match v.get_mut("tags").map(Value::take) {
                Some(Value::Object(m)) => Some(m),
                _ => None,
            })
            .unwrap_or_default())
    }

    async fn write_tags(
        &self,
        user: &UserId,
        room_id: &RoomId,
        tags: Map<String, Value>,
    ) -> Result<()> {
        let content = json!({ "tags": tags }).to_string();
        self.write_account_data(user, Some(room_id), TAGS, content)
            .await
    }
}
