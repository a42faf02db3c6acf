//! The records office on official lines (docs/DESIGN.md capability 7): a
//! server whose records office runs an archiver (`[records] archiver`, an
//! account of this server) brings it onto every official line of its
//! principals, shown to everyone as a member: the marking
//! `org.hotline.recorder` keyed `_@archiver:server`
//! (`{"office": NAME, "added_by": P}`), with the invite, sent by the line's
//! principal of this server. The archiver is a Matrix client of its own
//! (its own device keys), so the server still never holds plaintext.
//!
//! When: as soon as a principal of this server is joined to an official
//! line (a line opened here or across servers), when a line turns official
//! again, and at start for every line already held (a crash between a
//! line's commit and the invite loses nothing). When a line turns personal,
//! the commit that turns it takes every records office off it
//! ([`crate::line_record`]).
//!
//! The seam admits a marked recorder into a line and lets it send nothing
//! but its own membership ([`crate::policy`]).

use ruma::events::room::member::MembershipState;
use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value};

use crate::identity::audit;
use crate::line_record::is_official;
use crate::pdu::{EventDraft, PduEvent};
use crate::policy::{line_principals, user_key, user_of_key, StateLookup, LINE_STATE};
use crate::rooms::Room;
use crate::{Result, Services};

/// The state type marking a records office's archiver on a line.
pub const RECORDER_STATE: &str = "org.hotline.recorder";

/// Whether a recorder marking stands (it names the office).
pub(crate) fn marked_recorder(marking: &PduEvent) -> bool {
    marking
        .content::<Value>()
        .is_ok_and(|c| c.get("office").is_some())
}

/// Whether `user` is a records archiver marked on the line `state` is of:
/// a member that only enters and leaves.
pub(crate) fn is_marked_recorder(state: StateLookup<'_>, user: &UserId) -> bool {
    state(RECORDER_STATE, &user_key(user)).is_some_and(|m| marked_recorder(&m))
}

impl Services {
    /// This server's archiver, when its records office runs one.
    fn archiver(&self) -> Option<ruma::OwnedUserId> {
        let a = self.config.records.archiver.as_deref()?;
        UserId::parse(a)
            .ok()
            .filter(|u| u.server_name() == self.server_name())
    }

    /// Brings this server's archiver onto `room_id` when it is an official
    /// line with a principal of this server joined and the archiver is not
    /// on it yet. Idempotent.
    pub async fn ensure_recorder(&self, room_id: &RoomId) -> Result<()> {
        let Some(archiver) = self.archiver() else {
            return Ok(());
        };
        let _one_at_a_time = self.recorder_ensuring.lock().await;
        let Ok(room) = self.room(room_id) else {
            return Ok(());
        };
        let Some(line) = room.state_event(LINE_STATE, "") else {
            return Ok(());
        };
        if !is_official(&line) {
            return Ok(());
        }
        let Some(principal) = line_principals(&line)
            .into_iter()
            .find(|p| p.server_name() == self.server_name() && room.is_joined(p))
        else {
            return Ok(());
        };
        let key = user_key(&archiver);
        let marked = room
            .state_event(RECORDER_STATE, &key)
            .is_some_and(|m| marked_recorder(&m));
        let membership = room.membership(&archiver);
        let present = matches!(
            membership,
            Some(MembershipState::Join | MembershipState::Invite)
        );
        if marked && present {
            return Ok(());
        }
        if !self.user_exists(&archiver)? {
            tracing::warn!(%archiver, "the records archiver account does not exist: official lines are not recorded");
            return Ok(());
        }
        let office = self
            .config
            .records
            .office
            .clone()
            .unwrap_or_else(|| format!("Records office of {}", self.server_name()));
        let mut drafts = vec![EventDraft::new(
            TimelineEventType::from(RECORDER_STATE),
            &json!({"office": office, "added_by": principal}),
            Some(key),
        )?];
        if !present {
            let content = self.member_content(&archiver, MembershipState::Invite)?;
            drafts.push(EventDraft::new(
                TimelineEventType::RoomMember,
                &content,
                Some(archiver.to_string()),
            )?);
        }
        self.append_server_events_with(
            &room,
            &principal,
            drafts,
            vec![audit(
                principal.as_str(),
                "line_recorder_added",
                archiver.as_str(),
                json!({"room_id": room_id}),
            )],
        )
        .await?;
        Ok(())
    }

    /// The drafts that take every records office off a line turning
    /// personal: each marking ended, each archiver removed.
    pub(crate) fn recorder_removals(&self, room: &Room, by: &UserId) -> Result<Vec<EventDraft>> {
        let mut drafts = Vec::new();
        for (key, marking) in room.state_of_type(RECORDER_STATE) {
            if !marked_recorder(&marking) {
                continue;
            }
            drafts.push(EventDraft::new(
                TimelineEventType::from(RECORDER_STATE),
                &json!({"removed_by": by}),
                Some(key.clone()),
            )?);
            let Some(archiver) = user_of_key(&key) else {
                continue;
            };
            if matches!(
                room.membership(&archiver),
                Some(MembershipState::Join | MembershipState::Invite)
            ) {
                drafts.push(EventDraft::new(
                    TimelineEventType::RoomMember,
                    &ruma::events::room::member::RoomMemberEventContent::new(
                        MembershipState::Leave,
                    ),
                    Some(archiver.to_string()),
                )?);
            }
        }
        Ok(drafts)
    }

    /// Starts bringing the archiver onto lines: from now on as the commit
    /// hook asks, and at once onto every line already held. Called once,
    /// on the runtime, by the serving process.
    pub fn start_line_recorders(self: &std::sync::Arc<Self>) {
        if self.archiver().is_none() {
            return;
        }
        let _ = self.recorder_runner.set((
            tokio::runtime::Handle::current(),
            std::sync::Arc::downgrade(self),
        ));
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(s) = weak.upgrade() {
                if let Err(e) = s.ensure_recorders().await {
                    tracing::warn!(error = %e, "bringing the records archiver onto the lines held");
                }
            }
        });
    }

    /// Runs [`Services::ensure_recorder`] for `room_id` on the runtime (from
    /// the commit hook, which cannot write); nothing in a process that does
    /// not serve.
    pub(crate) fn ensure_recorder_soon(&self, room_id: OwnedRoomId) {
        let Some((handle, weak)) = self.recorder_runner.get() else {
            return;
        };
        // Most joins are into rooms that are no line: no task for them.
        let is_line = self
            .room(&room_id)
            .is_ok_and(|r| r.state_event(LINE_STATE, "").is_some());
        if !is_line {
            return;
        }
        let weak = weak.clone();
        handle.spawn(async move {
            let Some(s) = weak.upgrade() else { return };
            if let Err(e) = s.ensure_recorder(&room_id).await {
                tracing::warn!(%room_id, error = %e, "bringing the records archiver onto a line");
            }
        });
    }

    /// At start: every official line of this server's principals gets the
    /// archiver (those whose invite a crash lost).
    pub async fn ensure_recorders(&self) -> Result<()> {
        if self.archiver().is_none() {
            return Ok(());
        }
        let mut rooms = std::collections::BTreeSet::new();
        for o in self.store.list_officials()? {
            if o.role == "principal" {
                for line in self.store.lines_of(&o.user_id)? {
                    rooms.insert(line.room_id);
                }
            }
        }
        for room in rooms {
            if let Ok(room_id) = RoomId::parse(&room) {
                self.ensure_recorder(&room_id).await?;
            }
        }
        Ok(())
    }
}
