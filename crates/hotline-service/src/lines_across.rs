//! Lines between governments (docs/DESIGN.md capability 5 across servers):
//! a line invite issued on one server, redeemed by a principal of another
//! through their own server.
//!
//! The redeemer's server asks the issuing server over signed federation
//! (`GET /_hotline/federation/v1/line_invites/{code}` for who is calling,
//! `POST .../redeem` to open the line). The issuing server holds the
//! invite, so it alone decides: binding, expiry, uses and revocation hold
//! as they do locally, and its refusal (in its words) is what the redeemer
//! sees. It takes the redeemer for a principal only when the redeemer's own
//! government vouches for them (their server's directory, read and checked
//! with the pinned key, [`crate::peer_officials`]). It opens the line room
//! (encrypted, `org.hotline.line`) as its principal, invites the redeemer
//! (the invite's consent is the office's, as locally), records the line and
//! the use, and answers the room. The redeemer's server then records the
//! line on its side (so the reach rule lets the other principal's keys and
//! messages through) and joins the redeemer through the issuing server.
//! Both servers' audit logs record the redemption.

use ruma::events::room::member::MembershipState;
use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{json, Value};

use hotline_store::{LineRow, WriteBatch, WriteOp};

use crate::accounts::Sender;
use crate::identity::{audit, line_pair, LineInvitePreview};
use crate::{now_ms, Error, Result, Services};

/// Where a server answers for its line invites to its peers.
pub const FEDERATION_LINE_INVITES_PATH: &str = "/_hotline/federation/v1/line_invites";

impl Services {
    /// `GET /_hotline/v1/line_invites/{code}?server=S` for an invite of
    /// another server: who is calling, as `server` says.
    pub async fn preview_remote_line_invite(
        &self,
        sender: &UserId,
        code: &str,
        server: &ServerName,
    ) -> Result<LineInvitePreview> {
        let path = format!(
            "{FEDERATION_LINE_INVITES_PATH}/{}?redeemer={}",
            urlencoding(code),
            urlencoding(sender.as_str())
        );
        let answer = self.federation_get_json(server, &path).await?;
        let s = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
        let principal = s("principal");
        if UserId::parse(&principal).map_or(true, |p| p.server_name() != server) {
            return Err(Error::Unavailable(format!(
                "{server} named someone else's official as its own"
            )));
        }
        Ok(LineInvitePreview {
            principal,
            name: s("name"),
            title: s("title"),
            country: s("country"),
            office: s("office"),
            expires_ts: answer["expires_ts"].as_i64(),
        })
    }

    /// `GET /_hotline/federation/v1/line_invites/{code}?redeemer=U` from
    /// `origin`: the preview a user of `origin` would get here.
    pub fn preview_line_invite_for_peer(
        &self,
        origin: &ServerName,
        code: &str,
        redeemer: &UserId,
    ) -> Result<LineInvitePreview> {
        if redeemer.server_name() != origin {
            return Err(Error::forbidden("A server asks for its own users only"));
        }
        self.preview_line_invite(redeemer, code)
    }

    /// `POST /_hotline/v1/line_invites/{code}/redeem?server=S` for an
    /// invite of another server: the line opened there, recorded and
    /// joined here (or the one the two principals already hold).
    pub async fn redeem_remote_line_invite(
        &self,
        sender: &Sender,
        code: &str,
        server: &ServerName,
    ) -> Result<OwnedRoomId> {
        let me = &sender.user_id;
        self.principal_of(me)?.filter(|p| p == me).ok_or_else(|| {
            Error::forbidden("Only an enrolled principal can redeem a line invite")
        })?;
        // The other government's officials as they are now (its principal
        // may have been vouched for since it was last read), so that
        // principal may reach the redeemer here once the line is recorded.
        self.forget_peer_directory(server);
        self.peer_directory(server).await?;
        let path = format!(
            "{FEDERATION_LINE_INVITES_PATH}/{}/redeem",
            urlencoding(code)
        );
        let answer = self
            .federation_json(
                http::Method::POST,
                server,
                &path,
                Some(json!({ "redeemer": me })),
            )
            .await?;
        let room_id = answer["room_id"]
            .as_str()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
            .ok_or_else(|| Error::Unavailable(format!("{server} answered no line")))?;
        let theirs = answer["principal"]
            .as_str()
            .and_then(|p| UserId::parse(p).ok())
            .filter(|p| p.server_name() == server)
            .ok_or_else(|| Error::Unavailable(format!("{server} answered no principal")))?;
        let _one_at_a_time = self.line_redeem_lock.lock().await;
        if self.store.get_line(me.as_str(), theirs.as_str())?.is_none() {
            let (a, b) = line_pair(me, &theirs);
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::PutLine(LineRow {
                principal_a: a.to_string(),
                principal_b: b.to_string(),
                room_id: room_id.to_string(),
                created_ts: now_ms(),
            }));
            batch.push(audit(
                me.as_str(),
                "line_invite_redeemed",
                theirs.as_str(),
                json!({"code_prefix": &code[..4.min(code.len())], "room_id": room_id, "server": server}),
            ));
            self.store.write(batch).await?;
        }
        drop(_one_at_a_time);
        // Their master key, so the line pauses here when it changes.
        if let Err(e) = self.fetch_remote_master_key(&theirs).await {
            tracing::info!(user = %theirs, error = %e, "a principal's master key could not be had");
        }
        let joined = self
            .room(&room_id)
            .is_ok_and(|r| r.membership(me) == Some(MembershipState::Join));
        if !joined {
            let via: Vec<OwnedServerName> = vec![server.to_owned()];
            self.join_remote(me, &room_id, &via).await?;
        }
        // The other side sees this principal's availability from the
        // line's start (theirs was written where the line was opened).
        self.spread_availability(&room_id, &[me]).await?;
        self.add_direct_room(me, std::slice::from_ref(&theirs), &room_id)
            .await?;
        Ok(room_id)
    }

    /// `POST /_hotline/federation/v1/line_invites/{code}/redeem` from
    /// `origin`, for its principal `redeemer`: the line, opened here with
    /// the redeemer invited (or the one they already hold), and this
    /// server's principal on it.
    pub async fn redeem_line_invite_for_peer(
        &self,
        origin: &ServerName,
        code: &str,
        redeemer: &UserId,
    ) -> Result<(OwnedRoomId, OwnedUserId)> {
        if redeemer.server_name() != origin {
            return Err(Error::forbidden("A server redeems for its own users only"));
        }
        // Their own government vouches for them as a principal, or nothing
        // (asked again when the directory read last does not say so: they
        // may have been vouched for since).
        let is_principal = |d: &crate::peer_officials::PeerDirectory| {
            d.officials
                .iter()
                .any(|a| a.user_id == redeemer.as_str() && a.role == "principal")
        };
        // A directory that cannot be had vouches for nobody.
        let unread = |e: Error| {
            Error::forbidden(format!(
                "The directory of {origin} could not be read here ({e}), so nobody it vouches for is known"
            ))
        };
        let mut vouched = is_principal(&*self.peer_directory(origin).await.map_err(unread)?);
        if !vouched {
            self.forget_peer_directory(origin);
            vouched = is_principal(&*self.peer_directory(origin).await.map_err(unread)?);
        }
        if !vouched {
            return Err(Error::forbidden(
                "Only a principal their own government vouches for can redeem a line invite",
            ));
        }
        let _one_at_a_time = self.line_redeem_lock.lock().await;
        let inv = self.line_invite_for(code, redeemer)?;
        let theirs = UserId::parse(inv.principal.as_str()).map_err(Error::internal)?;
        if let Some(line) = self.store.get_line(redeemer.as_str(), theirs.as_str())? {
            let room_id = OwnedRoomId::try_from(line.room_id).map_err(Error::internal)?;
            self.invite_to_line(&theirs, redeemer, &room_id).await?;
            return Ok((room_id, theirs));
        }
        crate::identity::check_redeemable(&inv)?;
        let room_id = self
            .create_line_room(
                &theirs,
                Vec::new(),
                redeemer,
                &theirs,
                &inv,
                json!({"server": origin}),
            )
            .await?;
        self.invite_to_line(&theirs, redeemer, &room_id).await?;
        // The redeemer sees this principal's availability from the line's
        // start; their server writes theirs once they have joined.
        self.spread_availability(&room_id, &[&theirs]).await?;
        self.add_direct_room(&theirs, &[redeemer.to_owned()], &room_id)
            .await?;
        // Their master key, so the line pauses here when it changes.
        if let Err(e) = self.fetch_remote_master_key(redeemer).await {
            tracing::info!(user = %redeemer, error = %e, "a principal's master key could not be had");
        }
        Ok((room_id, theirs))
    }

    /// The office's consent, as an invite from its principal: written by
    /// the server (the redeemer's server joins them through it, so no
    /// invite needs to cross).
    async fn invite_to_line(
        &self,
        principal: &UserId,
        redeemer: &UserId,
        room_id: &ruma::RoomId,
    ) -> Result<()> {
        let room = self.room(room_id)?;
        if matches!(
            room.membership(redeemer),
            Some(MembershipState::Invite | MembershipState::Join)
        ) {
            return Ok(());
        }
        let content = json!({"membership": "invite", "is_direct": true});
        let draft = crate::pdu::EventDraft::new(
            TimelineEventType::RoomMember,
            &content,
            Some(redeemer.to_string()),
        )?;
        self.append_server_events(&room, principal, vec![draft])
            .await?;
        Ok(())
    }
}

/// `s` for a URL path segment or query value.
fn urlencoding(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The JSON a preview is answered with, here and across servers.
pub fn preview_json(p: &LineInvitePreview) -> Value {
    json!({
        "principal": p.principal,
        "name": p.name,
        "title": p.title,
        "country": p.country,
        "office": p.office,
        "expires_ts": p.expires_ts,
    })
}
