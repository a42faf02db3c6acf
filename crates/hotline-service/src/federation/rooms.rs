//! Rooms across servers: joining a room another server is in
//! (`make_join`/`send_join`, both sides), and the events other servers send
//! (`/send` transactions).
//!
//! What a joining server receives with its join (the room's state and its
//! auth chain) is checked event by event ([`Services::check_incoming_pdu`])
//! and against the room's authorization rules before the room is stored.
//! The state events are stored in the room's timeline ahead of the join,
//! in depth order, so the room loads like a room made here; events of the
//! auth chain that are no longer state are kept outside the timeline
//! (outliers), for checking the room's past when it is fetched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use hotline_store::{Attachment, NewEvent, RoomRow, WriteBatch, WriteOp};
use ruma::api::federation::membership::{
    create_join_event, create_leave_event, prepare_join_event, prepare_leave_event,
};
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::pdus::CheckedPdu;
use crate::pdu::{rules, EventDraft, Pdu, PduEvent};
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// The room versions this server joins and serves over federation: those
/// whose event ids are reference hashes (from 12, room ids are too: such a
/// room is reached through the servers a client names, or its inviter's).
pub const FEDERATED_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V12,
    RoomVersionId::V11,
    RoomVersionId::V10,
    RoomVersionId::V9,
    RoomVersionId::V8,
    RoomVersionId::V7,
    RoomVersionId::V6,
    RoomVersionId::V5,
    RoomVersionId::V4,
    RoomVersionId::V3,
];

/// Most PDUs and EDUs a transaction may carry (the spec's limits).
const MAX_TXN_PDUS: usize = 50;
const MAX_TXN_EDUS: usize = 100;

/// What a resident server answers a `send_join` with.
pub struct JoinAnswer {
    pub state: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
    pub event: Box<RawValue>,
    /// Whether `state` leaves members out (the joining server asked it to
    /// with `omit_members`); then `servers_in_room` names where the room is.
    pub members_omitted: bool,
    pub servers_in_room: Vec<OwnedServerName>,
}

/// Members a partial-state join (`omit_members`) is still sent besides the
/// joining user: enough for the room's name when it has none (its heroes).
const HEROES: usize = 5;

/// A `/send` transaction's body, as far as this server reads it.
#[derive(Deserialize)]
struct Transaction {
    #[serde(default)]
    pdus: Vec<Box<RawValue>>,
    #[serde(default)]
    edus: Vec<Value>,
}

impl Services {
    /// The other servers this server's events in `room` go to: those with
    /// a member joined, when they are allowed peers.
    pub(crate) fn federation_destinations_of(&self, room: &Room) -> Vec<OwnedServerName> {
        if !self.federation.enabled() {
            return Vec::new();
        }
        room.remote_servers(self.server_name())
            .into_iter()
            .filter(|s| self.federation_peer(s).is_ok())
            .collect()
    }

    /// Refuses `server` in `room` when the room's `m.room.server_acl`
    /// denies it.
    pub(crate) fn check_server_acl(&self, room: &Room, server: &ServerName) -> Result<()> {
        let Some(acl) = room.state_event("m.room.server_acl", "") else {
            return Ok(());
        };
        let allowed = acl
            .content::<ruma::events::room::server_acl::RoomServerAclEventContent>()
            .map_or(true, |c| c.is_allowed(server));
        if allowed {
            Ok(())
        } else {
            tracing::warn!(peer = %server, room_id = %room.id, "refused by the room's server ACL");
            Err(Error::forbidden("The room's server ACL denies your server"))
        }
    }

    /// A room another server asks about: loaded, and with a member of this
    /// server joined (otherwise this server cannot speak for it).
    fn resident_room(&self, room_id: &RoomId) -> Result<Arc<Room>> {
        let room = self
            .room(room_id)
            .map_err(|_| Error::not_found("This server does not know the room"))?;
        if !room
            .joined_members()
            .iter()
            .any(|u| u.server_name() == self.server_name())
        {
            return Err(Error::not_found("This server is not in the room"));
        }
        Ok(room)
    }

    /// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`: a join
    /// event for `user` to fill in and sign, if the room would let them in.
    pub fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        versions: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        // A server that names no version speaks version 1 only.
        let offered = if versions.is_empty() {
            &[RoomVersionId::V1][..]
        } else {
            versions
        };
        self.make_membership(origin, room_id, user, Some(offered), MembershipState::Join)
    }

    /// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`.
    pub fn make_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        self.make_membership(origin, room_id, user, None, MembershipState::Leave)
    }

    /// The `make_*` answers: a `membership` event of `user` (a user of
    /// `origin`) for `origin` to fill in and sign, built on the room's
    /// heads and checked against its rules and Hotline's as if sent now;
    /// refused when the room's ACL denies `origin`, or when `offered` (the
    /// room versions `origin` speaks, when it says) lacks the room's.
    pub(super) fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        offered: Option<&[RoomVersionId]>,
        membership: MembershipState,
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        if user.server_name() != origin {
            return Err(Error::forbidden("A server may only act for its own users"));
        }
        let room = self.resident_room(room_id)?;
        self.check_server_acl(&room, origin)?;
        if offered.is_some_and(|o| !o.contains(&room.version)) {
            return Err(Error::IncompatibleRoomVersion(room.version.clone()));
        }
        if membership == MembershipState::Knock && !rules(&room.version)?.authorization.knocking {
            return Err(Error::forbidden(format!(
                "Room version {} does not allow knocking",
                room.version
            )));
        }
        self.membership_template(&room, user, membership)
    }

    /// The `send_*` checks: `pdu`, sent by `origin` for the room as the
    /// event `event_id`, is a well-formed, signed `membership` event of a
    /// user of `origin` for themselves; with the room it is for.
    pub(super) async fn received_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
        membership: MembershipState,
    ) -> Result<(Arc<Room>, CheckedPdu)> {
        let room = self.resident_room(room_id)?;
        self.check_server_acl(&room, origin)?;
        let checked = self.check_incoming_pdu(pdu, &room.version).await?;
        let event = &checked.event;
        if event.event_id != event_id {
            return Err(Error::invalid_param(
                "The event id does not match the event",
            ));
        }
        let is_own = event.pdu.kind == TimelineEventType::RoomMember
            && event.pdu.state_key.as_deref() == Some(event.pdu.sender.as_str())
            && event
                .content::<RoomMemberEventContent>()
                .is_ok_and(|c| c.membership == membership);
        if !is_own {
            return Err(Error::invalid_param(format!(
                "Not a {membership} event of its sender"
            )));
        }
        if event.pdu.sender.server_name() != origin {
            return Err(Error::invalid_param(
                "A server may only act for its own users",
            ));
        }
        Ok((room, checked))
    }

    /// A membership event of `user` for their server to fill in and sign.
    fn membership_template(
        &self,
        room: &Room,
        user: &UserId,
        membership: MembershipState,
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        let draft = EventDraft::new(
            TimelineEventType::RoomMember,
            &RoomMemberEventContent::new(membership),
            Some(user.to_string()),
        )?;
        let event = self.template_event(room, user, draft)?;
        let mut template = serde_json::to_value(&event.pdu)?;
        if let Some(t) = template.as_object_mut() {
            t.remove("hashes");
            t.remove("signatures");
        }
        Ok((
            room.version.clone(),
            serde_json::value::to_raw_value(&template)?,
        ))
    }

    /// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`: takes
    /// `origin`'s signed join into the room and answers with the state
    /// before it and its auth chain.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
        omit_members: bool,
    ) -> Result<JoinAnswer> {
        let (room, checked) = self
            .received_membership(origin, room_id, event_id, pdu, MembershipState::Join)
            .await?;
        let state = room.state();
        let json = checked.json.clone();
        let joiner = checked.event.pdu.state_key.clone().unwrap_or_default();
        let joiner = joiner.as_str();
        self.append_membership_from(origin, &room, checked).await?;
        let servers_in_room: Vec<OwnedServerName> = {
            let mut servers: Vec<OwnedServerName> = state
                .iter()
                .filter(|e| e.pdu.kind == TimelineEventType::RoomMember)
                .filter(|e| {
                    e.content::<RoomMemberEventContent>()
                        .is_ok_and(|c| c.membership == MembershipState::Join)
                })
                .filter_map(|e| UserId::parse(e.pdu.state_key.as_deref()?).ok())
                .map(|u| u.server_name().to_owned())
                .collect();
            servers.push(origin.to_owned());
            servers.sort();
            servers.dedup();
            servers
        };
        // A partial-state join: the room's state without its members, but
        // for the joining user's and a few others' (the heroes); the auth
        // chain is then the one of what is sent.
        let mut heroes = 0;
        let state_ids: Vec<OwnedEventId> = state
            .iter()
            .filter(|e| {
                if !omit_members || e.pdu.kind != TimelineEventType::RoomMember {
                    return true;
                }
                if e.pdu.state_key.as_deref() == Some(joiner) {
                    return true;
                }
                heroes += 1;
                heroes <= HEROES
            })
            .map(|e| e.event_id.clone())
            .collect();
        let auth_chain = self.auth_chain_rows(&state_ids)?;
        let mut out_state = Vec::with_capacity(state_ids.len());
        for id in &state_ids {
            if let Some(row) = self.store.get_event(id.as_str())? {
                out_state.push(self.outgoing_pdu(&row.json, &room.version, false)?);
            }
        }
        let mut out_chain = Vec::with_capacity(auth_chain.len());
        for (_, json) in auth_chain {
            out_chain.push(self.outgoing_pdu(&json, &room.version, false)?);
        }
        Ok(JoinAnswer {
            state: out_state,
            auth_chain: out_chain,
            event: self.outgoing_pdu(&json, &room.version, true)?,
            members_omitted: omit_members,
            servers_in_room,
        })
    }

    /// The events between the room's heads here and `latest`, asked of
    /// `origin` (`get_missing_events`, at most 10), checked, oldest first.
    /// None when the origin cannot say.
    async fn missing_events(
        &self,
        origin: &ServerName,
        room: &Room,
        latest: Vec<OwnedEventId>,
    ) -> Vec<CheckedPdu> {
        let mut ask = ruma::api::federation::event::get_missing_events::v1::Request::new(
            room.id.clone(),
            room.head_ids(),
            latest,
        );
        ask.limit = ruma::UInt::from(10u32);
        let answer = match self.federation_call(origin, ask).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(peer = %origin, room_id = %room.id, error = %e, "missing events could not be had");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for raw in &answer.events {
            match self.check_incoming_pdu(raw, &room.version).await {
                Ok(c) if c.event.room_id == room.id => out.push(c),
                Ok(_) => {}
                Err(e) => tracing::info!(peer = %origin, reason = %e, "a missing event is refused"),
            }
        }
        out.sort_by_key(|c| c.event.pdu.depth);
        out
    }

    /// A room id, or an alias resolved here or (for another server's
    /// alias) by its server, with the servers to join it through.
    pub async fn resolve_room_anywhere(
        &self,
        room: &ruma::RoomOrAliasId,
    ) -> Result<(ruma::OwnedRoomId, Vec<OwnedServerName>)> {
        let alias = match <&RoomId>::try_from(room) {
            Ok(id) => return Ok((id.to_owned(), Vec::new())),
            Err(alias) => alias,
        };
        if alias.server_name() == self.server_name() || !self.federation.enabled() {
            let room_id = self.resolve_alias(alias)?;
            let servers = self
                .room(&room_id)
                .map(|r| r.remote_servers(self.server_name()))
                .unwrap_or_default();
            return Ok((room_id, servers));
        }
        let answer = self
            .federation_call(
                alias.server_name(),
                ruma::api::federation::query::get_room_information::v1::Request::new(
                    alias.to_owned(),
                ),
            )
            .await?;
        Ok((answer.room_id, answer.servers))
    }

    /// `GET /_matrix/federation/v1/query/directory`: a local alias, and
    /// the servers in its room.
    pub fn directory_for_peer(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> Result<(ruma::OwnedRoomId, Vec<OwnedServerName>)> {
        if alias.server_name() != self.server_name() {
            return Err(Error::not_found("Not an alias of this server"));
        }
        let room_id = self.resolve_alias(alias)?;
        let mut servers = vec![self.server_name().to_owned()];
        if let Ok(room) = self.room(&room_id) {
            servers.extend(room.remote_servers(self.server_name()));
        }
        Ok((room_id, servers))
    }

    /// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`.
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
    ) -> Result<()> {
        let (room, checked) = self
            .received_membership(origin, room_id, event_id, pdu, MembershipState::Leave)
            .await?;
        self.append_membership_from(origin, &room, checked).await
    }

    /// A membership event `origin` handed this server (`send_join`,
    /// `send_knock`, `send_leave`), taken into the room and passed on to
    /// the room's other servers: `origin` sent it here alone.
    pub(crate) async fn append_membership_from(
        &self,
        origin: &ServerName,
        room: &Room,
        checked: CheckedPdu,
    ) -> Result<()> {
        let event_id = checked.event.event_id.clone();
        self.append_remote_events(room, vec![checked])
            .await
            .remove(0)
            .1?;
        let ops: Vec<WriteOp> = self
            .federation_destinations_of(room)
            .into_iter()
            .filter(|s| s != origin)
            .map(|destination| WriteOp::QueueFederation {
                destination: destination.to_string(),
                event_id: event_id.to_string(),
            })
            .collect();
        if !ops.is_empty() {
            self.store.write(WriteBatch { ops }).await?;
        }
        Ok(())
    }

    /// Leaves (or declines the invite into, or takes back the knock on) a
    /// room this server is not in, through the first of `via` that answers
    /// (`make_leave`, then `send_leave`); the leave is stored here too.
    pub(crate) async fn leave_remote(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<()> {
        self.through_first(via, room_id, "leave", |server| {
            self.leave_through(sender, room_id, server, reason.clone())
        })
        .await
    }

    async fn leave_through(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        server: &ServerName,
        reason: Option<String>,
    ) -> Result<()> {
        let made = self
            .federation_call(
                server,
                prepare_leave_event::v1::Request::new(room_id.to_owned(), sender.to_owned()),
            )
            .await?;
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        if !FEDERATED_VERSIONS.contains(&version) {
            return Err(Error::IncompatibleRoomVersion(version));
        }
        let mut content = RoomMemberEventContent::new(MembershipState::Leave);
        content.reason = reason;
        let (leave, json) =
            fill_template(server, &made.event, &version, sender, room_id, &content)?;
        let signed = self.outgoing_pdu(&json, &version, false)?;
        self.federation_call(
            server,
            create_leave_event::v2::Request::new(
                room_id.to_owned(),
                leave.event_id.clone(),
                signed.clone(),
            ),
        )
        .await?;
        let stored = CheckedPdu {
            event: Arc::new(leave),
            json: signed.get().to_owned(),
        };
        self.store
            .write(WriteBatch::one(WriteOp::AppendEvent(new_event(&stored)?)))
            .await?;
        Ok(())
    }

    /// Joins `sender` to a room this server is not in, through the first
    /// of `via` that lets them in (`make_join`, then `send_join`).
    pub(crate) async fn join_remote(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
    ) -> Result<()> {
        self.through_first(via, room_id, "join", |server| {
            self.join_through(sender, room_id, server)
        })
        .await
    }

    /// Runs `attempt` through each of `via` in turn (this server and
    /// repeats skipped) until one succeeds; the last failure otherwise.
    pub(super) async fn through_first<'a, F, Fut>(
        &self,
        via: &'a [OwnedServerName],
        room_id: &RoomId,
        what: &str,
        mut attempt: F,
    ) -> Result<()>
    where
        F: FnMut(&'a ServerName) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut last = Error::not_found(format!("No server in the room could be asked to {what}"));
        let mut asked = HashSet::new();
        for server in via {
            if server == self.server_name() || !asked.insert(server) {
                continue;
            }
            match attempt(server).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(peer = %server, %room_id, error = %e, what, "a membership change through this server failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn join_through(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        server: &ServerName,
    ) -> Result<()> {
        let mut ask = prepare_join_event::v1::Request::new(room_id.to_owned(), sender.to_owned());
        ask.ver = FEDERATED_VERSIONS.to_vec();
        let made = self.federation_call(server, ask).await?;
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        if !FEDERATED_VERSIONS.contains(&version) {
            return Err(Error::UnsupportedRoomVersion(format!(
                "Room version {version} is not supported for rooms across servers"
            )));
        }
        let content = self.member_content(sender, MembershipState::Join)?;
        let (join, json) = fill_template(server, &made.event, &version, sender, room_id, &content)?;
        let signed = self.outgoing_pdu(&json, &version, false)?;
        let answer = self
            .federation_call(
                server,
                create_join_event::v2::Request::new(
                    room_id.to_owned(),
                    join.event_id.clone(),
                    signed,
                ),
            )
            .await?;
        let state = answer.room_state;
        // Every event checked: signatures, hashes, format, its room.
        let mut events: HashMap<OwnedEventId, CheckedPdu> = HashMap::new();
        let mut state_ids = Vec::new();
        for (raw, is_state) in state
            .state
            .iter()
            .map(|r| (r, true))
            .chain(state.auth_chain.iter().map(|r| (r, false)))
        {
            let checked = self.check_incoming_pdu(raw, &version).await?;
            if checked.event.room_id != room_id {
                return Err(Error::forbidden(format!(
                    "{server} sent an event of another room"
                )));
            }
            if is_state {
                if checked.event.pdu.state_key.is_none() {
                    return Err(Error::forbidden(format!(
                        "{server} sent state that is not state"
                    )));
                }
                state_ids.push(checked.event.event_id.clone());
            }
            events.insert(checked.event.event_id.clone(), checked);
        }
        let joined = match &state.event {
            Some(raw) => {
                let c = self.check_incoming_pdu(raw, &version).await?;
                if c.event.event_id != join.event_id {
                    return Err(Error::forbidden(format!(
                        "{server} answered with another join event"
                    )));
                }
                c
            }
            None => CheckedPdu {
                event: Arc::new(join),
                json,
            },
        };
        let rules = rules(&version)?;
        // The room's version is what its create event says.
        let create = state_ids
            .iter()
            .filter_map(|id| events.get(id))
            .find(|c| c.event.pdu.kind == TimelineEventType::RoomCreate)
            .ok_or_else(|| Error::forbidden(format!("{server} sent no create event")))?;
        let created: Value = create.event.content()?;
        let claimed = created
            .get("room_version")
            .and_then(Value::as_str)
            .unwrap_or("1");
        if claimed != version.as_str() {
            return Err(Error::forbidden(format!(
                "{server} named room version {version}, the room is {claimed}"
            )));
        }
        // Each event is authorized by its own auth events; the join by the
        // state it joins.
        let fetch = |id: &EventId| events.get(id).map(|c| c.event.clone());
        for c in events.values() {
            authorized_by_its_auth_events(&rules, &c.event, Some(&create.event.event_id), fetch)
                .map_err(|r| {
                    Error::forbidden(format!("{server} sent an unauthorized event: {r}"))
                })?;
        }
        let state_map: HashMap<(String, String), Arc<PduEvent>> = state_ids
            .iter()
            .filter_map(|id| events.get(id))
            .map(|c| {
                let k = c.event.pdu.state_key.clone().unwrap_or_default();
                ((c.event.pdu.kind.to_string(), k), c.event.clone())
            })
            .collect();
        ruma::state_res::check_state_dependent_auth_rules(
            &rules.authorization,
            &joined.event,
            |t: &StateEventType, k: &str| state_map.get(&(t.to_string(), k.to_owned())).cloned(),
        )
        .map_err(|r| Error::forbidden(format!("The room does not let you in: {r}")))?;

        // History before the join, one page of it as the resident server
        // has it: a member who joins reads what was said before, as far as
        // the room's history visibility lets them.
        let (history, fetched) = self
            .history_before(server, room_id, &version, &joined.event, &events)
            .await;

        // Stored: the room, its state and history in depth order, then the
        // join.
        let mut ordered: Vec<&CheckedPdu> = state_ids
            .iter()
            .filter_map(|id| events.get(id))
            .chain(history.iter())
            .filter(|c| c.event.event_id != joined.event.event_id)
            .collect();
        ordered.sort_by_key(|c| (c.event.pdu.depth, c.event.pdu.origin_server_ts));
        let mut batch = WriteBatch::new();
        if self.store.get_room(room_id.as_str())?.is_none() {
            batch.push(WriteOp::CreateRoom(RoomRow {
                room_id: room_id.to_string(),
                room_version: version.to_string(),
            }));
        }
        // The store makes each key's last appended event current; where
        // that is an older event of the history, the state the resident
        // server sent is put back.
        let mut newest: HashMap<(String, String), &CheckedPdu> = HashMap::new();
        for c in ordered.iter().copied().chain(std::iter::once(&joined)) {
            if let Some(k) = &c.event.pdu.state_key {
                newest.insert((c.event.pdu.kind.to_string(), k.clone()), c);
            }
            if self.store.get_event(c.event.event_id.as_str())?.is_some() {
                continue;
            }
            batch.push(WriteOp::AppendEvent(new_event(c)?));
        }
        // The auth chain that is no longer state, and what was fetched to
        // check the history, outside the timeline.
        let state_ids: HashSet<&OwnedEventId> = state_ids.iter().collect();
        for c in events
            .values()
            .filter(|c| !state_ids.contains(&c.event.event_id))
            .chain(fetched.iter())
        {
            batch.push(super::backfill::outlier(c));
        }
        for (key, appended) in newest {
            if let Some(current) = state_map.get(&key) {
                if current.event_id != appended.event.event_id && key.1 != sender.as_str() {
                    batch.push(crate::rooms::set_current_state(room_id, &key, current));
                }
            }
        }
        // A room this process loaded before (the user left it) is loaded
        // again from what is now stored.
        self.rooms.forget(room_id);
        self.store.write(batch).await?;
        self.rooms.forget(room_id);
        Ok(())
    }

    /// `PUT /_matrix/federation/v1/send/{txnId}`: the PDUs and EDUs of a
    /// transaction from `origin`. Each PDU is checked and accepted or
    /// refused on its own; the answer names each one's fate. A PDU already
    /// stored is accepted again, so a transaction sent twice acts once.
    pub async fn receive_transaction(
        self: &Arc<Self>,
        origin: &ServerName,
        body: &[u8],
    ) -> Result<BTreeMap<String, Value>> {
        let txn: Transaction = serde_json::from_slice(body)
            .map_err(|e| Error::bad_json(format!("Not a transaction: {e}")))?;
        if txn.pdus.len() > MAX_TXN_PDUS || txn.edus.len() > MAX_TXN_EDUS {
            return Err(Error::bad_json(format!(
                "A transaction carries at most {MAX_TXN_PDUS} PDUs and {MAX_TXN_EDUS} EDUs"
            )));
        }
        self.federation.heard_from(origin);
        // To-device messages first: the room keys a transaction carries
        // are on the devices before the messages they open reach them (a
        // client that syncs in between would find a message it cannot
        // read yet). Receipts and the rest come after the events they name.
        let (to_device, edus): (Vec<Value>, Vec<Value>) = txn
            .edus
            .into_iter()
            .partition(|e| e["edu_type"] == "m.direct_to_device");
        for edu in to_device {
            self.receive_edu(origin, edu).await;
        }
        let mut results = BTreeMap::new();
        // In order, grouped by room as they come.
        let mut by_room: Vec<(OwnedRoomId, Vec<Box<RawValue>>)> = Vec::new();
        for raw in txn.pdus {
            #[derive(Deserialize)]
            struct RoomOf {
                room_id: OwnedRoomId,
            }
            let Ok(RoomOf { room_id }) = serde_json::from_str::<RoomOf>(raw.get()) else {
                tracing::info!(peer = %origin, "a PDU without a room is dropped");
                continue;
            };
            match by_room.iter_mut().find(|(r, _)| *r == room_id) {
                Some((_, list)) => list.push(raw),
                None => by_room.push((room_id, vec![raw])),
            }
        }
        for (room_id, raws) in by_room {
            let Ok(room) = self.resident_room(&room_id) else {
                tracing::info!(peer = %origin, %room_id, "PDUs for a room this server is not in are dropped");
                continue;
            };
            if let Err(e) = self.check_server_acl(&room, origin) {
                for raw in &raws {
                    if let Some(id) = event_id_of(raw, &room.version) {
                        results.insert(id, serde_json::json!({ "error": e.to_string() }));
                    }
                }
                continue;
            }
            let mut checked: Vec<CheckedPdu> = Vec::with_capacity(raws.len());
            for raw in raws {
                match self.check_incoming_pdu(&raw, &room.version).await {
                    Ok(c) => checked.push(c),
                    Err(e) => {
                        tracing::info!(peer = %origin, %room_id, reason = %e, "a PDU is refused");
                        if let Some(id) = event_id_of(&raw, &room.version) {
                            results.insert(id, serde_json::json!({ "error": e.to_string() }));
                        }
                    }
                }
            }
            // Events whose predecessors are not here: ask the origin for
            // what lies between (once per room and transaction).
            let here: HashSet<OwnedEventId> =
                checked.iter().map(|c| c.event.event_id.clone()).collect();
            let mut gaps = Vec::new();
            for c in &checked {
                let unknown =
                    c.event.pdu.prev_events.iter().any(|p| {
                        !here.contains(p) && self.known_event_row(p).ok().flatten().is_none()
                    });
                if unknown {
                    gaps.push(c.event.event_id.clone());
                }
            }
            if !gaps.is_empty() {
                let mut before = self.missing_events(origin, &room, gaps).await;
                before.retain(|c| !here.contains(&c.event.event_id));
                before.extend(checked);
                checked = before;
            }
            for (id, verdict) in self.append_remote_events(&room, checked).await {
                let answer = match verdict {
                    Ok(()) => serde_json::json!({}),
                    Err(e) => serde_json::json!({ "error": e.to_string() }),
                };
                results.insert(id.to_string(), answer);
            }
        }
        for edu in edus {
            self.receive_edu(origin, edu).await;
        }
        Ok(results)
    }
}

/// Whether `event` passes the room version's rules against its own auth
/// events (`fetch` finds them; from room version 12 the create event
/// `create` is implied): the check of a received event that is not checked
/// against the room's state here (a join's state and auth chain, history).
pub(super) fn authorized_by_its_auth_events(
    rules: &ruma::room_version_rules::RoomVersionRules,
    event: &Arc<PduEvent>,
    create: Option<&EventId>,
    fetch: impl Fn(&EventId) -> Option<Arc<PduEvent>>,
) -> std::result::Result<(), String> {
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, event, &fetch)?;
    let implied = create.filter(|_| rules.authorization.room_create_event_id_as_room_id);
    let auth: HashMap<(String, String), Arc<PduEvent>> = event
        .pdu
        .auth_events
        .iter()
        .map(|id| &**id)
        .chain(implied)
        .filter_map(&fetch)
        .filter_map(|e| Some(((e.pdu.kind.to_string(), e.pdu.state_key.clone()?), e)))
        .collect();
    ruma::state_res::check_state_dependent_auth_rules(
        &rules.authorization,
        event,
        |t: &StateEventType, k: &str| auth.get(&(t.to_string(), k.to_owned())).cloned(),
    )
}

/// A membership template from `server` (`make_join`, `make_leave`,
/// `make_knock`) filled
/// in with this server's `content` and time, hashed: the event and its
/// JSON.
pub(super) fn fill_template(
    server: &ServerName,
    made: &RawValue,
    version: &RoomVersionId,
    sender: &UserId,
    room_id: &RoomId,
    content: &RoomMemberEventContent,
) -> Result<(PduEvent, String)> {
    let mut template: serde_json::Map<String, Value> = serde_json::from_str(made.get())
        .map_err(|e| Error::Unavailable(format!("{server} sent an unreadable template: {e}")))?;
    let ok = template.get("type").and_then(Value::as_str) == Some("m.room.member")
        && template.get("state_key").and_then(Value::as_str) == Some(sender.as_str())
        && template.get("sender").and_then(Value::as_str) == Some(sender.as_str())
        && template.get("room_id").and_then(Value::as_str) == Some(room_id.as_str());
    // A template that names a membership names this one.
    let membership = serde_json::to_value(&content.membership)?;
    let ok = ok
        && template
            .get("content")
            .and_then(|c| c.get("membership"))
            .is_none_or(|m| *m == membership);
    if !ok {
        return Err(Error::Unavailable(format!(
            "{server} sent a template for something else"
        )));
    }
    template.insert("content".into(), serde_json::to_value(content)?);
    template.insert("origin_server_ts".into(), Value::from(crate::now_ms()));
    template.insert("hashes".into(), serde_json::json!({"sha256": ""}));
    template.insert("signatures".into(), serde_json::json!({}));
    template.remove("event_id");
    template.remove("unsigned");
    let pdu: Pdu = serde_json::from_value(Value::Object(template))
        .map_err(|e| Error::Unavailable(format!("{server} sent an unusable template: {e}")))?;
    PduEvent::seal(pdu, version)
}

/// The id a PDU would have, when it can be had (for a refusal's answer).
fn event_id_of(raw: &RawValue, version: &RoomVersionId) -> Option<String> {
    let mut object: ruma::CanonicalJsonObject = serde_json::from_str(raw.get()).ok()?;
    object.remove("unsigned");
    let rules = version.rules()?;
    let hash = ruma::signatures::reference_hash(&object, &rules).ok()?;
    Some(format!("${hash}"))
}

/// The write that appends a checked event.
pub(crate) fn new_event(c: &CheckedPdu) -> Result<NewEvent> {
    let e = &c.event;
    let membership = match (&e.pdu.state_key, &*e.pdu.kind) {
        (Some(k), TimelineEventType::RoomMember) => {
            let m: RoomMemberEventContent = e
                .content()
                .map_err(|_| Error::bad_json("Malformed membership"))?;
            Some((k.clone(), m.membership.to_string()))
        }
        _ => None,
    };
    Ok(NewEvent {
        event_id: e.event_id.to_string(),
        room_id: e.room_id.to_string(),
        sender: e.pdu.sender.to_string(),
        event_type: e.pdu.kind.to_string(),
        state_key: e.pdu.state_key.clone(),
        json: c.json.clone(),
        txn: None,
        redacts: None,
        membership,
        parsed: Attachment(Some(e.clone())),
    })
}
