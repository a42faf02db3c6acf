//! The room version 11 authorization rules, checked over raw HTTP against a
//! real server: who may kick, ban, unban, invite, join, knock, change power
//! levels, set state, redact and forget, and what redaction leaves of an
//! event. Each refusal is checked for its status, its errcode and for the
//! room's state staying as it was; each permitted change for the state it
//! leaves behind.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{Http, Server};
use serde_json::{json, Value};

static TXN: AtomicU64 = AtomicU64::new(0);

const FORBIDDEN: (u16, Option<&str>) = (403, Some("M_FORBIDDEN"));

struct User {
    id: String,
    token: String,
}

struct Hs {
    _server: Server,
    http: Http,
}

fn code(got: &(u16, Value)) -> (u16, Option<&str>) {
    (got.0, got.1["errcode"].as_str())
}

/// Asserts a `200` and returns the body.
fn ok(got: (u16, Value), what: &str) -> Value {
    assert_eq!(got.0, 200, "{what}: {}", got.1);
    got.1
}

/// Asserts a refusal with `status` and `errcode`.
fn refused(got: (u16, Value), expected: (u16, Option<&str>), what: &str) {
    assert_eq!(code(&got), expected, "{what}: {}", got.1);
}

impl Hs {
    async fn start() -> Hs {
        let server = Server::start().await;
        let http = Http::new(&server.url);
        Hs {
            _server: server,
            http,
        }
    }

    async fn user(&self, name: &str) -> User {
        User {
            token: self.http.register(name).await,
            id: format!("@{name}:localhost"),
        }
    }

    /// A request to `/_matrix/client/v3{path}`.
    async fn req(&self, method: &str, u: &User, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        self.http
            .call(
                method,
                &format!("/_matrix/client/v3{path}"),
                Some(&u.token),
                body.as_deref(),
            )
            .await
    }

    async fn create(&self, u: &User, body: Value) -> String {
        let v = ok(
            self.req("POST", u, "/createRoom", Some(body)).await,
            "createRoom",
        );
        v["room_id"].as_str().unwrap().to_owned()
    }

    async fn join(&self, u: &User, room: &str) -> (u16, Value) {
        self.req("POST", u, &format!("/rooms/{room}/join"), Some(json!({})))
            .await
    }

    async fn leave(&self, u: &User, room: &str) -> (u16, Value) {
        self.req("POST", u, &format!("/rooms/{room}/leave"), Some(json!({})))
            .await
    }

    /// `POST /rooms/{room}/{action}` (invite, kick, ban, unban) on `target`.
    async fn act(&self, u: &User, action: &str, room: &str, target: &User) -> (u16, Value) {
        self.req(
            "POST",
            u,
            &format!("/rooms/{room}/{action}"),
            Some(json!({"user_id": target.id, "reason": format!("{action} test")})),
        )
        .await
    }

    async fn get_state(&self, u: &User, room: &str, kind: &str, key: &str) -> (u16, Value) {
        self.req("GET", u, &format!("/rooms/{room}/state/{kind}/{key}"), None)
            .await
    }

    async fn put_state(
        &self,
        u: &User,
        room: &str,
        kind: &str,
        key: &str,
        content: Value,
    ) -> (u16, Value) {
        self.req(
            "PUT",
            u,
            &format!("/rooms/{room}/state/{kind}/{key}"),
            Some(content),
        )
        .await
    }

    /// `target`'s membership as `viewer` (a joined member) reads it; `None`
    /// when there is no member event.
    async fn membership(&self, viewer: &User, room: &str, target: &User) -> Option<String> {
        let (status, v) = self
            .get_state(viewer, room, "m.room.member", &target.id)
            .await;
        match status {
            200 => Some(v["membership"].as_str().unwrap().to_owned()),
            404 => {
                assert_eq!(v["errcode"], "M_NOT_FOUND", "{v}");
                None
            }
            _ => panic!("member state of {}: {status} {v}", target.id),
        }
    }

    async fn power_levels(&self, viewer: &User, room: &str) -> Value {
        ok(
            self.get_state(viewer, room, "m.room.power_levels", "")
                .await,
            "GET power levels",
        )
    }

    /// Puts the room's power levels with `edit` applied.
    async fn edit_power(
        &self,
        u: &User,
        room: &str,
        edit: impl FnOnce(&mut Value),
    ) -> (u16, Value) {
        let mut pl = self.power_levels(u, room).await;
        edit(&mut pl);
        self.put_state(u, room, "m.room.power_levels", "", pl).await
    }

    async fn send(&self, u: &User, room: &str, body: &str) -> String {
        let txn = TXN.fetch_add(1, Ordering::Relaxed);
        let v = ok(
            self.req(
                "PUT",
                u,
                &format!("/rooms/{room}/send/m.room.message/t{txn}"),
                Some(json!({"msgtype": "m.text", "body": body})),
            )
            .await,
            "send",
        );
        v["event_id"].as_str().unwrap().to_owned()
    }

    async fn redact(&self, u: &User, room: &str, event: &str) -> (u16, Value) {
        let txn = TXN.fetch_add(1, Ordering::Relaxed);
        self.req(
            "PUT",
            u,
            &format!("/rooms/{room}/redact/{event}/r{txn}"),
            Some(json!({"reason": "rules test"})),
        )
        .await
    }

    async fn event(&self, u: &User, room: &str, event: &str) -> Value {
        ok(
            self.req("GET", u, &format!("/rooms/{room}/event/{event}"), None)
                .await,
            "GET event",
        )
    }

    /// A public room of `admin`'s with `mods` at power 50, everyone in
    /// `members` joined.
    async fn public_room(&self, admin: &User, mods: &[&User], members: &[&User]) -> String {
        let room = self.create(admin, json!({"preset": "public_chat"})).await;
        for m in members {
            ok(self.join(m, &room).await, "join the public room");
        }
        if !mods.is_empty() {
            ok(
                self.edit_power(admin, &room, |pl| {
                    for m in mods {
                        pl["users"][&m.id] = json!(50);
                    }
                })
                .await,
                "make moderators",
            );
        }
        room
    }
}

#[tokio::test]
async fn kick_needs_kick_power_and_a_target_of_lower_power() {
    let hs = Hs::start().await;
    let (alice, bob, carol, dave, eve) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
        hs.user("dave").await,
        hs.user("eve").await,
    );
    // alice 100; bob and dave moderators (50); carol and eve members (0).
    let room = hs
        .public_room(&alice, &[&bob, &dave], &[&bob, &carol, &dave, &eve])
        .await;

    refused(
        hs.act(&carol, "kick", &room, &eve).await,
        FORBIDDEN,
        "a member kicks a member",
    );
    assert_eq!(
        hs.membership(&alice, &room, &eve).await.as_deref(),
        Some("join")
    );
    refused(
        hs.act(&bob, "kick", &room, &dave).await,
        FORBIDDEN,
        "a moderator kicks an equal",
    );
    assert_eq!(
        hs.membership(&alice, &room, &dave).await.as_deref(),
        Some("join")
    );
    refused(
        hs.act(&bob, "kick", &room, &alice).await,
        FORBIDDEN,
        "a moderator kicks the admin",
    );
    assert_eq!(
        hs.membership(&alice, &room, &alice).await.as_deref(),
        Some("join")
    );

    ok(
        hs.act(&bob, "kick", &room, &carol).await,
        "a moderator kicks a member",
    );
    let member = ok(
        hs.get_state(&alice, &room, "m.room.member", &carol.id)
            .await,
        "carol's member event",
    );
    assert_eq!(member["membership"], "leave", "{member}");
    assert_eq!(member["reason"], "kick test", "{member}");
    let (status, joined) = hs
        .req(
            "GET",
            &alice,
            &format!("/rooms/{room}/joined_members"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(joined["joined"].get(&carol.id).is_none(), "{joined}");
    // The kicked member may no longer send.
    let sent = hs
        .req(
            "PUT",
            &carol,
            &format!("/rooms/{room}/send/m.room.message/after-kick"),
            Some(json!({"msgtype": "m.text", "body": "still here?"})),
        )
        .await;
    refused(sent, FORBIDDEN, "a kicked user sends");
}

#[tokio::test]
async fn a_kicked_user_may_rejoin_a_public_room_but_not_an_invite_only_one_uninvited() {
    let hs = Hs::start().await;
    let (alice, carol) = (hs.user("alice").await, hs.user("carol").await);

    let public = hs.public_room(&alice, &[], &[&carol]).await;
    ok(
        hs.act(&alice, "kick", &public, &carol).await,
        "kick from the public room",
    );
    assert_eq!(
        hs.membership(&alice, &public, &carol).await.as_deref(),
        Some("leave")
    );
    ok(hs.join(&carol, &public).await, "rejoin the public room");
    assert_eq!(
        hs.membership(&alice, &public, &carol).await.as_deref(),
        Some("join")
    );

    let private = hs.create(&alice, json!({"preset": "private_chat"})).await;
    ok(hs.act(&alice, "invite", &private, &carol).await, "invite");
    ok(hs.join(&carol, &private).await, "join when invited");
    ok(
        hs.act(&alice, "kick", &private, &carol).await,
        "kick from the invite-only room",
    );
    refused(
        hs.join(&carol, &private).await,
        FORBIDDEN,
        "rejoin uninvited",
    );
    assert_eq!(
        hs.membership(&alice, &private, &carol).await.as_deref(),
        Some("leave")
    );
    ok(
        hs.act(&alice, "invite", &private, &carol).await,
        "invite again",
    );
    assert_eq!(
        hs.membership(&alice, &private, &carol).await.as_deref(),
        Some("invite")
    );
    ok(hs.join(&carol, &private).await, "rejoin when invited again");
    assert_eq!(
        hs.membership(&alice, &private, &carol).await.as_deref(),
        Some("join")
    );
}

#[tokio::test]
async fn ban_needs_ban_power_and_a_target_of_lower_power() {
    let hs = Hs::start().await;
    let (alice, bob, carol, dave) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
        hs.user("dave").await,
    );
    let room = hs
        .public_room(&alice, &[&bob], &[&bob, &carol, &dave])
        .await;

    refused(
        hs.act(&carol, "ban", &room, &dave).await,
        FORBIDDEN,
        "a member bans",
    );
    assert_eq!(
        hs.membership(&alice, &room, &dave).await.as_deref(),
        Some("join")
    );
    refused(
        hs.act(&bob, "ban", &room, &alice).await,
        FORBIDDEN,
        "a moderator bans the admin",
    );
    assert_eq!(
        hs.membership(&alice, &room, &alice).await.as_deref(),
        Some("join")
    );

    ok(
        hs.act(&bob, "ban", &room, &carol).await,
        "a moderator bans a member",
    );
    let member = ok(
        hs.get_state(&alice, &room, "m.room.member", &carol.id)
            .await,
        "carol's member event",
    );
    assert_eq!(member["membership"], "ban", "{member}");
    assert_eq!(member["reason"], "ban test", "{member}");
}

#[tokio::test]
async fn a_banned_user_cannot_join_or_be_invited_until_unbanned_and_unban_means_leave() {
    let hs = Hs::start().await;
    let (alice, bob, carol, dave) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
        hs.user("dave").await,
    );
    let room = hs
        .public_room(&alice, &[&bob], &[&bob, &carol, &dave])
        .await;
    ok(hs.act(&bob, "ban", &room, &carol).await, "ban");

    refused(
        hs.join(&carol, &room).await,
        FORBIDDEN,
        "a banned user joins",
    );
    assert_eq!(
        hs.membership(&alice, &room, &carol).await.as_deref(),
        Some("ban")
    );
    refused(
        hs.act(&alice, "invite", &room, &carol).await,
        FORBIDDEN,
        "invite a banned user",
    );
    assert_eq!(
        hs.membership(&alice, &room, &carol).await.as_deref(),
        Some("ban")
    );
    refused(
        hs.act(&dave, "unban", &room, &carol).await,
        FORBIDDEN,
        "a member unbans",
    );
    assert_eq!(
        hs.membership(&alice, &room, &carol).await.as_deref(),
        Some("ban")
    );

    ok(
        hs.act(&bob, "unban", &room, &carol).await,
        "a moderator unbans",
    );
    assert_eq!(
        hs.membership(&alice, &room, &carol).await.as_deref(),
        Some("leave"),
        "unban returns the user to leave, not join"
    );
    ok(hs.join(&carol, &room).await, "join after the unban");
    assert_eq!(
        hs.membership(&alice, &room, &carol).await.as_deref(),
        Some("join")
    );
}

#[tokio::test]
async fn invite_only_rooms_refuse_uninvited_joins_and_accept_invited_ones() {
    let hs = Hs::start().await;
    let (alice, bob, carol) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
    );
    let room = hs.create(&alice, json!({"preset": "private_chat"})).await;
    let rules = ok(
        hs.get_state(&alice, &room, "m.room.join_rules", "").await,
        "join rules",
    );
    assert_eq!(rules["join_rule"], "invite");

    refused(hs.join(&carol, &room).await, FORBIDDEN, "an uninvited join");
    assert_eq!(
        hs.membership(&alice, &room, &carol).await,
        None,
        "no member event"
    );

    ok(hs.act(&alice, "invite", &room, &bob).await, "invite bob");
    ok(hs.join(&bob, &room).await, "an invited join");
    assert_eq!(
        hs.membership(&alice, &room, &bob).await.as_deref(),
        Some("join")
    );
    refused(
        hs.join(&carol, &room).await,
        FORBIDDEN,
        "still refused uninvited",
    );
}

#[tokio::test]
async fn a_public_join_rule_accepts_anyone() {
    let hs = Hs::start().await;
    let (alice, bob, carol) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
    );
    let room = hs.create(&alice, json!({"preset": "public_chat"})).await;
    let rules = ok(
        hs.get_state(&alice, &room, "m.room.join_rules", "").await,
        "join rules",
    );
    assert_eq!(rules["join_rule"], "public");
    for u in [&bob, &carol] {
        ok(hs.join(u, &room).await, "join a public room uninvited");
        assert_eq!(
            hs.membership(&alice, &room, u).await.as_deref(),
            Some("join")
        );
    }
}

async fn knock(hs: &Hs, u: &User, room: &str) -> (u16, Value) {
    hs.req(
        "POST",
        u,
        &format!("/knock/{room}"),
        Some(json!({"reason": "let me in"})),
    )
    .await
}

#[tokio::test]
async fn a_knock_is_refused_unless_the_join_rule_is_knock_and_is_answered_by_invite_or_kick() {
    let hs = Hs::start().await;
    let (alice, carol) = (hs.user("alice").await, hs.user("carol").await);
    for preset in ["private_chat", "public_chat"] {
        let room = hs.create(&alice, json!({"preset": preset})).await;
        refused(
            knock(&hs, &carol, &room).await,
            FORBIDDEN,
            &format!("knock on a {preset} room"),
        );
        assert_eq!(
            hs.membership(&alice, &room, &carol).await,
            None,
            "no knock recorded"
        );
    }
    // Where the join rule is knock, the same request is a knock.
    let room = hs
        .create(
            &alice,
            json!({"preset": "private_chat", "initial_state": [
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
            ]}),
        )
        .await;
    let v = ok(knock(&hs, &carol, &room).await, "knock on a knock room");
    assert_eq!(v["room_id"], room.as_str(), "{v}");
    assert_eq!(
        hs.membership(&alice, &room, &carol).await.as_deref(),
        Some("knock")
    );
    // The knocker's /sync lists the room under `knock`, with its join rule
    // and the knock itself.
    let sync = ok(hs.req("GET", &carol, "/sync", None).await, "carol syncs");
    let state = sync["rooms"]["knock"][room.as_str()]["knock_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("a knock_state: {sync}"))
        .clone();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "knock"),
        "{state:?}"
    );
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == carol.id.as_str()
            && e["content"]["membership"] == "knock"),
        "{state:?}"
    );
    assert!(sync["rooms"]["join"].get(room.as_str()).is_none(), "{sync}");
    // A knock is answered with an invite, which the knocker accepts...
    let invite = json!({"user_id": carol.id});
    ok(
        hs.req(
            "POST",
            &alice,
            &format!("/rooms/{room}/invite"),
            Some(invite),
        )
        .await,
        "invite the knocker",
    );
    ok(
        hs.req(
            "POST",
            &carol,
            &format!("/rooms/{room}/join"),
            Some(json!({})),
        )
        .await,
        "join after the invite",
    );
    assert_eq!(
        hs.membership(&alice, &room, &carol).await.as_deref(),
        Some("join")
    );
    // ...or refused with a kick.
    let dave = hs.user("dave").await;
    ok(knock(&hs, &dave, &room).await, "dave knocks");
    ok(
        hs.req(
            "POST",
            &alice,
            &format!("/rooms/{room}/kick"),
            Some(json!({"user_id": dave.id})),
        )
        .await,
        "refuse dave's knock",
    );
    assert_eq!(
        hs.membership(&alice, &room, &dave).await.as_deref(),
        Some("leave")
    );
    // A member cannot knock on a room they are in.
    refused(
        knock(&hs, &carol, &room).await,
        FORBIDDEN,
        "knock while joined",
    );
}

/// A room where bob is a moderator (50) who may send `m.room.power_levels`
/// (its level lowered to 50), dave another moderator, carol a member.
async fn power_room(hs: &Hs, alice: &User, bob: &User, carol: &User, dave: &User) -> String {
    let room = hs
        .public_room(alice, &[bob, dave], &[bob, carol, dave])
        .await;
    ok(
        hs.edit_power(alice, &room, |pl| {
            pl["events"]["m.room.power_levels"] = json!(50);
        })
        .await,
        "let moderators send power levels",
    );
    room
}

#[tokio::test]
async fn power_levels_cannot_be_raised_above_ones_own_or_changed_at_or_above_it() {
    let hs = Hs::start().await;
    let (alice, bob, carol, dave) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
        hs.user("dave").await,
    );
    let room = power_room(&hs, &alice, &bob, &carol, &dave).await;
    let before = hs.power_levels(&alice, &room).await;

    type Edit = Box<dyn FnOnce(&mut Value)>;
    let (c, d, a, b) = (
        carol.id.clone(),
        dave.id.clone(),
        alice.id.clone(),
        bob.id.clone(),
    );
    let d2 = d.clone();
    let cases: Vec<(&str, Edit)> = vec![
        (
            "raise a member above the sender",
            Box::new(move |pl| pl["users"][&c] = json!(75)),
        ),
        (
            "raise oneself above one's level",
            Box::new(move |pl| pl["users"][&b] = json!(100)),
        ),
        (
            "lower an equal",
            Box::new(move |pl| pl["users"][&d] = json!(0)),
        ),
        (
            "remove an equal",
            Box::new(move |pl| {
                pl["users"].as_object_mut().unwrap().remove(&d2);
            }),
        ),
        (
            "lower the admin",
            Box::new(move |pl| pl["users"][&a] = json!(50)),
        ),
        (
            "users_default above one's level",
            Box::new(|pl| pl["users_default"] = json!(75)),
        ),
        (
            "state_default above one's level",
            Box::new(|pl| pl["state_default"] = json!(75)),
        ),
        (
            "kick above one's level",
            Box::new(|pl| pl["kick"] = json!(75)),
        ),
    ];
    for (what, edit) in cases {
        refused(hs.edit_power(&bob, &room, edit).await, FORBIDDEN, what);
        assert_eq!(
            hs.power_levels(&alice, &room).await,
            before,
            "unchanged after: {what}"
        );
    }
    // A member (0) may not touch power levels at all, not even their own.
    let c = carol.id.clone();
    refused(
        hs.edit_power(&carol, &room, move |pl| pl["users"][&c] = json!(100))
            .await,
        FORBIDDEN,
        "a member raises themselves",
    );
    assert_eq!(hs.power_levels(&alice, &room).await, before);

    // Raising someone up to one's own level is allowed.
    let c = carol.id.clone();
    ok(
        hs.edit_power(&bob, &room, move |pl| pl["users"][&c] = json!(50))
            .await,
        "raise a member to the sender's level",
    );
    assert_eq!(hs.power_levels(&alice, &room).await["users"][&carol.id], 50);
}

#[tokio::test]
async fn power_levels_events_entries_need_power_over_their_old_and_new_levels() {
    let hs = Hs::start().await;
    let (alice, bob, carol, dave) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
        hs.user("dave").await,
    );
    let room = power_room(&hs, &alice, &bob, &carol, &dave).await;
    let before = hs.power_levels(&alice, &room).await;
    assert_eq!(before["events"]["m.room.tombstone"], 100, "{before}");

    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "lower an entry above one's level",
            Box::new(|pl| pl["events"]["m.room.tombstone"] = json!(50)),
        ),
        (
            "remove an entry above one's level",
            Box::new(|pl| {
                pl["events"]
                    .as_object_mut()
                    .unwrap()
                    .remove("m.room.encryption");
            }),
        ),
        (
            "add an entry above one's level",
            Box::new(|pl| pl["events"]["m.room.topic"] = json!(75)),
        ),
        (
            "raise an entry above one's level",
            Box::new(|pl| pl["events"]["m.room.name"] = json!(75)),
        ),
    ];
    for (what, edit) in cases {
        refused(hs.edit_power(&bob, &room, edit).await, FORBIDDEN, what);
        assert_eq!(
            hs.power_levels(&alice, &room).await,
            before,
            "unchanged after: {what}"
        );
    }
    ok(
        hs.edit_power(&bob, &room, |pl| pl["events"]["m.room.name"] = json!(0))
            .await,
        "lower an entry at one's level",
    );
    assert_eq!(
        hs.power_levels(&alice, &room).await["events"]["m.room.name"],
        0
    );
}

#[tokio::test]
async fn state_below_state_default_is_refused_and_a_moderator_may_set_it() {
    let hs = Hs::start().await;
    let (alice, bob, carol) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
    );
    // carol moderator (50 = state_default), bob member (0).
    let room = hs.public_room(&alice, &[&carol], &[&bob, &carol]).await;
    let pl = hs.power_levels(&alice, &room).await;
    assert_eq!(pl["state_default"], 50, "{pl}");

    for (kind, content) in [
        ("m.room.topic", json!({"topic": "bob's topic"})),
        ("m.room.name", json!({"name": "bob's room"})),
        ("org.example.setting", json!({"on": true})),
    ] {
        refused(
            hs.put_state(&bob, &room, kind, "", content).await,
            FORBIDDEN,
            &format!("a member puts {kind}"),
        );
        let got = hs.get_state(&alice, &room, kind, "").await;
        assert_eq!(
            code(&got),
            (404, Some("M_NOT_FOUND")),
            "{kind} not set: {}",
            got.1
        );
    }
    // A member may still send messages (events_default 0).
    hs.send(&bob, &room, "just talking").await;

    for (kind, content) in [
        ("m.room.topic", json!({"topic": "carol's topic"})),
        ("m.room.name", json!({"name": "carol's room"})),
    ] {
        let v = ok(
            hs.put_state(&carol, &room, kind, "", content.clone()).await,
            &format!("a moderator puts {kind}"),
        );
        assert!(v["event_id"].as_str().unwrap().starts_with('$'), "{v}");
        let got = ok(hs.get_state(&bob, &room, kind, "").await, kind);
        assert_eq!(got, content);
    }
}

#[tokio::test]
async fn members_redact_their_own_events_but_others_need_redact_power() {
    let hs = Hs::start().await;
    let (alice, bob, carol, dave) = (
        hs.user("alice").await,
        hs.user("bob").await,
        hs.user("carol").await,
        hs.user("dave").await,
    );
    let room = hs
        .public_room(&alice, &[&dave], &[&bob, &carol, &dave])
        .await;
    let mine = hs.send(&bob, &room, "bob's own").await;
    let theirs = hs.send(&carol, &room, "carol's").await;

    let v = ok(
        hs.redact(&bob, &room, &mine).await,
        "redact one's own event",
    );
    assert!(v["event_id"].as_str().unwrap().starts_with('$'), "{v}");
    let ev = hs.event(&alice, &room, &mine).await;
    assert_eq!(ev["content"], json!({}), "{ev}");
    assert_eq!(
        ev["unsigned"]["redacted_because"]["event_id"], v["event_id"],
        "{ev}"
    );

    refused(
        hs.redact(&bob, &room, &theirs).await,
        FORBIDDEN,
        "a member redacts another's event",
    );
    let ev = hs.event(&alice, &room, &theirs).await;
    assert_eq!(ev["content"]["body"], "carol's", "untouched: {ev}");
    assert!(ev["unsigned"].get("redacted_because").is_none(), "{ev}");

    let v = ok(
        hs.redact(&dave, &room, &theirs).await,
        "a moderator redacts another's event",
    );
    let ev = hs.event(&bob, &room, &theirs).await;
    assert_eq!(ev["content"], json!({}), "{ev}");
    assert_eq!(
        ev["unsigned"]["redacted_because"]["sender"],
        dave.id.as_str(),
        "{ev}"
    );
    // v11: the redaction event names its target in its content.
    let redaction = hs.event(&bob, &room, v["event_id"].as_str().unwrap()).await;
    assert_eq!(redaction["type"], "m.room.redaction");
    assert_eq!(
        redaction["content"]["redacts"],
        theirs.as_str(),
        "{redaction}"
    );
}

/// The id of the current state event `(kind, key)`.
async fn state_event_id(hs: &Hs, u: &User, room: &str, kind: &str, key: &str) -> String {
    let state = ok(
        hs.req("GET", u, &format!("/rooms/{room}/state"), None)
            .await,
        "GET state",
    );
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == key)
        .unwrap_or_else(|| panic!("no {kind}/{key} in {state}"))["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn redaction_keeps_only_the_keys_room_v11_allows() {
    let hs = Hs::start().await;
    let (alice, bob) = (hs.user("alice").await, hs.user("bob").await);
    ok(
        hs.req(
            "PUT",
            &bob,
            &format!("/profile/{}/displayname", bob.id),
            Some(json!({"displayname": "Bob B"})),
        )
        .await,
        "set displayname",
    );
    let room = hs
        .create(
            &alice,
            json!({"preset": "public_chat", "room_version": "11",
                   "creation_content": {"org.example.custom": "kept", "m.federate": true}}),
        )
        .await;
    ok(hs.join(&bob, &room).await, "join");
    ok(
        hs.put_state(&alice, &room, "m.room.topic", "", json!({"topic": "gone"}))
            .await,
        "topic",
    );
    ok(
        hs.put_state(
            &alice,
            &room,
            "m.room.join_rules",
            "",
            json!({"join_rule": "public", "org.example.extra": 1}),
        )
        .await,
        "join rules",
    );
    let create_before = ok(
        hs.get_state(&alice, &room, "m.room.create", "").await,
        "create",
    );
    assert_eq!(create_before["room_version"], "11");
    let pl_before = hs.power_levels(&alice, &room).await;
    assert!(
        pl_before["notifications"].is_object() && pl_before["invite"].is_number(),
        "{pl_before}"
    );
    let member_before = ok(
        hs.get_state(&alice, &room, "m.room.member", &bob.id).await,
        "member",
    );
    assert_eq!(member_before["displayname"], "Bob B", "{member_before}");
    let message = hs.send(&bob, &room, "secret words").await;

    // (type, state key, the content expected after redaction)
    let mut pl_kept = pl_before.clone();
    pl_kept.as_object_mut().unwrap().remove("notifications");
    let cases = [
        (
            "m.room.member",
            bob.id.clone(),
            json!({"membership": "join"}),
        ),
        ("m.room.create", String::new(), create_before.clone()),
        ("m.room.power_levels", String::new(), pl_kept),
        (
            "m.room.join_rules",
            String::new(),
            json!({"join_rule": "public"}),
        ),
        ("m.room.topic", String::new(), json!({})),
    ];
    let mut stale = Vec::new();
    for (kind, key, expected) in &cases {
        let id = state_event_id(&hs, &alice, &room, kind, key).await;
        ok(
            hs.redact(&alice, &room, &id).await,
            &format!("redact {kind}"),
        );
        let ev = hs.event(&alice, &room, &id).await;
        assert_eq!(&ev["content"], expected, "{kind} after redaction: {ev}");
        assert_eq!(ev["type"], *kind);
        assert_eq!(ev["state_key"], key.as_str());
        assert!(ev["unsigned"]["redacted_because"].is_object(), "{ev}");
        // The redacted event is the room's current state for its key: the
        // single state event, the whole state and a fresh /sync show it
        // redacted.
        let now = ok(hs.get_state(&alice, &room, kind, key).await, kind);
        if &now != expected {
            stale.push(format!("GET /state/{kind}/{key}: {now}"));
        }
        let all = ok(
            hs.req("GET", &alice, &format!("/rooms/{room}/state"), None)
                .await,
            "GET state",
        );
        let listed = all
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_id"] == id.as_str())
            .map(|e| e["content"].clone());
        if listed.as_ref() != Some(expected) {
            stale.push(format!("GET /state lists {kind}/{key} as {listed:?}"));
        }
        let synced = ok(hs.req("GET", &bob, "/sync?timeout=0", None).await, "sync");
        let room_sync = &synced["rooms"]["join"][&room];
        let in_sync = ["state", "timeline"]
            .iter()
            .flat_map(|section| {
                room_sync[section]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|e| e["event_id"] == id.as_str())
            .map(|e| e["content"].clone());
        if in_sync.is_some() && in_sync.as_ref() != Some(expected) {
            stale.push(format!("initial /sync has {kind}/{key} as {in_sync:?}"));
        }
    }
    assert!(
        stale.is_empty(),
        "redacted state events still served unredacted as current state:\n{}",
        stale.join("\n")
    );
    // The power levels kept their meaning: alice still administers the room.
    assert_eq!(
        hs.power_levels(&alice, &room).await["users"][&alice.id],
        100
    );

    ok(hs.redact(&alice, &room, &message).await, "redact a message");
    let ev = hs.event(&bob, &room, &message).await;
    assert_eq!(ev["content"], json!({}), "{ev}");
    for key in ["event_id", "type", "room_id", "sender", "origin_server_ts"] {
        assert!(!ev[key].is_null(), "{key} is kept: {ev}");
    }
}

/// The rooms in the `leave` section of an initial `/sync` with `include_leave`.
async fn left_rooms(hs: &Hs, u: &User) -> Vec<String> {
    let filter = r#"{"room":{"include_leave":true}}"#;
    let v = ok(
        hs.req("GET", u, &format!("/sync?timeout=0&filter={filter}"), None)
            .await,
        "sync with include_leave",
    );
    v["rooms"]["leave"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn forget_needs_leaving_first_and_then_hides_the_room() {
    let hs = Hs::start().await;
    let (alice, bob) = (hs.user("alice").await, hs.user("bob").await);
    let room = hs.public_room(&alice, &[], &[&bob]).await;
    hs.send(&alice, &room, "before bob left").await;
    let forget = format!("/rooms/{room}/forget");
    let messages = format!("/rooms/{room}/messages?dir=b&limit=50");
    // leaving.yaml: 400 "The user has not left the room"; its example's
    // errcode is M_UNKNOWN, Hotline answers the more precise M_BAD_STATE
    // (checked last, so the rules below are checked anyway).
    let early = hs.req("POST", &bob, &forget, Some(json!({}))).await;
    assert_eq!(early.0, 400, "forget a joined room: {}", early.1);
    assert_eq!(
        hs.membership(&alice, &room, &bob).await.as_deref(),
        Some("join")
    );
    ok(
        hs.req("GET", &bob, &messages, None).await,
        "a member reads history",
    );

    ok(hs.leave(&bob, &room).await, "leave");
    assert_eq!(
        left_rooms(&hs, &bob).await,
        vec![room.clone()],
        "left room in sync's leave section"
    );
    let page = ok(
        hs.req("GET", &bob, &messages, None).await,
        "history up to the leave",
    );
    assert!(
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "before bob left"),
        "{page}"
    );

    let v = ok(
        hs.req("POST", &bob, &forget, Some(json!({}))).await,
        "forget after leaving",
    );
    assert_eq!(v, json!({}));
    assert!(
        left_rooms(&hs, &bob).await.is_empty(),
        "a forgotten room is gone from sync's leave section"
    );
    refused(
        hs.req("GET", &bob, &messages, None).await,
        FORBIDDEN,
        "/messages of a forgotten room",
    );
    // Forgetting is bob's alone: he left, he is not erased from the room.
    assert_eq!(
        hs.membership(&alice, &room, &bob).await.as_deref(),
        Some("leave")
    );
    refused(early, (400, Some("M_BAD_STATE")), "forget a joined room");
}

#[tokio::test]
async fn a_state_key_naming_another_user_is_refused() {
    let hs = Hs::start().await;
    let (alice, bob) = (hs.user("alice").await, hs.user("bob").await);
    let room = hs.public_room(&alice, &[], &[&bob]).await;

    refused(
        hs.put_state(&alice, &room, "org.example.note", &bob.id, json!({"n": 1}))
            .await,
        FORBIDDEN,
        "even the admin may not use another user's id as a state key",
    );
    let got = hs
        .get_state(&alice, &room, "org.example.note", &bob.id)
        .await;
    assert_eq!(code(&got), (404, Some("M_NOT_FOUND")), "{}", got.1);

    ok(
        hs.put_state(
            &alice,
            &room,
            "org.example.note",
            &alice.id,
            json!({"n": 2}),
        )
        .await,
        "one's own user id as a state key",
    );
    let got = ok(
        hs.get_state(&bob, &room, "org.example.note", &alice.id)
            .await,
        "read it back",
    );
    assert_eq!(got, json!({"n": 2}));
    // A key that only starts like a user id but is someone else's is the same case.
    refused(
        hs.put_state(
            &alice,
            &room,
            "org.example.note",
            "@mallory:localhost",
            json!({"n": 3}),
        )
        .await,
        FORBIDDEN,
        "a state key naming a user who is not the sender",
    );
}

#[tokio::test]
async fn nobody_may_send_m_room_create_into_an_existing_room() {
    let hs = Hs::start().await;
    let (alice, bob) = (hs.user("alice").await, hs.user("bob").await);
    let room = hs.public_room(&alice, &[], &[&bob]).await;
    let before = ok(
        hs.get_state(&alice, &room, "m.room.create", "").await,
        "create",
    );
    for u in [&bob, &alice] {
        refused(
            hs.put_state(u, &room, "m.room.create", "", json!({"room_version": "10"}))
                .await,
            FORBIDDEN,
            &format!("{} sends m.room.create", u.id),
        );
        let now = ok(
            hs.get_state(&alice, &room, "m.room.create", "").await,
            "create",
        );
        assert_eq!(now, before, "the create event is unchanged");
    }
}

#[tokio::test]
async fn the_creator_of_a_room_is_its_power_100_admin() {
    let hs = Hs::start().await;
    let (alice, bob) = (hs.user("alice").await, hs.user("bob").await);
    let room = hs.create(&alice, json!({})).await;
    let create_id = state_event_id(&hs, &alice, &room, "m.room.create", "").await;
    let create = hs.event(&alice, &room, &create_id).await;
    assert_eq!(create["sender"], alice.id.as_str(), "{create}");
    assert_eq!(create["content"]["room_version"], "11", "{create}");
    assert!(
        create["content"].get("creator").is_none(),
        "v11 has no creator key: {create}"
    );
    let pl = hs.power_levels(&alice, &room).await;
    assert_eq!(pl["users"][&alice.id], 100, "{pl}");

    // The admin may do what needs 100: change power levels, invite, ban.
    let b = bob.id.clone();
    ok(
        hs.edit_power(&alice, &room, move |pl| pl["users"][&b] = json!(100))
            .await,
        "the creator changes power levels",
    );
    assert_eq!(hs.power_levels(&alice, &room).await["users"][&bob.id], 100);
    ok(
        hs.put_state(
            &alice,
            &room,
            "m.room.history_visibility",
            "",
            json!({"history_visibility": "joined"}),
        )
        .await,
        "the creator sets a power-100 state event",
    );
}

#[tokio::test]
async fn a_state_event_keeps_the_type_its_client_wrote_even_a_stable_name_of_an_unstable_one() {
    // `m.call.member` (MSC4143) is what ruma reads as an alias of MSC3401's
    // `org.matrix.msc3401.call.member`; a MatrixRTC client looks for the
    // name it wrote.
    let hs = Hs::start().await;
    let alice = hs.user("alice").await;
    let room = hs.create(&alice, json!({"preset": "private_chat"})).await;
    let key = format!("_{}_DEVICE", alice.id);
    for kind in ["m.call.member", "org.matrix.msc3401.call.member"] {
        let sent = ok(
            hs.put_state(
                &alice,
                &room,
                kind,
                &key,
                json!({"application": "m.call", "kind": kind}),
            )
            .await,
            kind,
        );
        let event = hs
            .event(&alice, &room, sent["event_id"].as_str().unwrap())
            .await;
        assert_eq!(event["type"], kind, "{event}");
        let content = ok(hs.get_state(&alice, &room, kind, &key).await, kind);
        assert_eq!(
            content["kind"], kind,
            "each name is its own state: {content}"
        );
    }
    let all = ok(
        hs.req("GET", &alice, &format!("/rooms/{room}/state"), None)
            .await,
        "state",
    );
    let kinds: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state_key"] == key.as_str())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{all}");
    assert!(kinds.contains(&"m.call.member") && kinds.contains(&"org.matrix.msc3401.call.member"));
}
