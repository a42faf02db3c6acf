//! Hotline's trust promises, tried as an attacker would, through HTTP and
//! `matrix-sdk`: a line cannot be forged, a paused line stays paused, a
//! revoked official can do nothing, a principal is reached only through a
//! line, and no room event shows an official's name to pass for them.
//!
//! Each rule lives at one seam (`hotline_service::policy`); these tests try
//! every endpoint that leads to it.

use crate::common;

use common::{status_errcode, vouched, Http, Server};
use serde_json::{json, Value};

const ENC: &str = r#"{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA"}"#;

/// Two principals holding a line, an aide of the first, and a stranger.
struct Cast {
    server: Server,
    http: Http,
    macron: String,
    scholz: String,
    aide: String,
    stranger: String,
    line: String,
}

async fn cast() -> Cast {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        aide,
        stranger,
        line,
    } = http.line_cast(&server).await;
    Cast {
        server,
        http,
        macron,
        scholz,
        aide,
        stranger,
        line,
    }
}

impl Cast {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        self.http.call(method, path, Some(token), body).await
    }

    async fn send(
        &self,
        token: &str,
        room: &str,
        kind: &str,
        txn: &str,
        body: &str,
    ) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            token,
            Some(body),
        )
        .await
    }

    async fn put_state(
        &self,
        token: &str,
        room: &str,
        kind: &str,
        key: &str,
        body: &Value,
    ) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{key}"),
            token,
            Some(&body.to_string()),
        )
        .await
    }

    async fn line_state(&self) -> Value {
        let (s, v) = self
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/org.hotline.line/",
                    self.line
                ),
                &self.scholz,
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

fn forbidden(r: &(u16, Value), what: &str) {
    assert_eq!(status_errcode(r), (403, "M_FORBIDDEN"), "{what}: {}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_hotline_state_is_written_by_the_server_only() {
    let c = cast().await;
    let forged =
        json!({"principals": ["@macron:localhost", "@stranger:localhost"], "official": true});

    // createRoom's initial_state, any org.hotline.* type, any state key.
    for (kind, key) in [
        ("org.hotline.line", ""),
        ("org.hotline.line", "x"),
        ("org.hotline.anything", ""),
    ] {
        let body = json!({"initial_state": [{"type": kind, "state_key": key, "content": forged}]});
        let r = c
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                &c.stranger,
                Some(&body.to_string()),
            )
            .await;
        forbidden(&r, &format!("createRoom initial_state {kind}/{key}"));
    }

    // A state PUT in the sender's own room, where they hold power 100.
    let own = c.http.create_room(&c.stranger).await;
    for (kind, key) in [
        ("org.hotline.line", ""),
        ("org.hotline.line", "k"),
        ("org.hotline.other", ""),
    ] {
        forbidden(
            &c.put_state(&c.stranger, &own, kind, key, &forged).await,
            &format!("PUT {kind}/{key}"),
        );
    }
    // Not even after raising the type's power level to the sender's.
    let r = c
        .put_state(
            &c.stranger,
            &own,
            "m.room.power_levels",
            "",
            &json!({"users": {"@stranger:localhost": 100}, "events": {"org.hotline.line": 0}}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    forbidden(
        &c.put_state(&c.stranger, &own, "org.hotline.line", "", &forged)
            .await,
        "PUT after power change",
    );

    // In a real line, neither principal can change or strip the line's state.
    let before = c.line_state().await;
    for (who, token) in [("macron", &c.macron), ("scholz", &c.scholz)] {
        for content in [
            json!({"principals": [], "official": true}),
            json!({"principals": ["@macron:localhost", "@scholz:localhost"], "official": false}),
            json!({}),
        ] {
            forbidden(
                &c.put_state(token, &c.line, "org.hotline.line", "", &content)
                    .await,
                &format!("{who} overwrites the line"),
            );
        }
    }
    let (_, state) = c
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{}/state", c.line),
            &c.macron,
            None,
        )
        .await;
    let line_event = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "org.hotline.line")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{}/redact/{line_event}/r1", c.line),
            &c.macron,
            Some("{}"),
        )
        .await;
    forbidden(&r, "redacting the line's state");
    assert_eq!(
        c.line_state().await,
        before,
        "the line's state is unchanged"
    );

    // Only state is the server's: an ordinary org.hotline.* message is not.
    let r = c
        .send(
            &c.stranger,
            &own,
            "org.hotline.note",
            "n1",
            r#"{"text": "hello"}"#,
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_in_a_paused_line_is_refused_but_leaving_and_verification() {
    let c = cast().await;
    let _m = vouched(&c.server, &c.http, &c.macron, "macron").await;
    let first = c
        .send(&c.scholz, &c.line, "m.room.encrypted", "e0", ENC)
        .await;
    assert_eq!(first.0, 200, "the line is open: {}", first.1);
    let earlier = first.1["event_id"].as_str().unwrap().to_owned();

    // The office revokes Macron's attestation: the line pauses.
    c.server.admin(&["revoke", "macron"]);
    let line = c.line.clone();
    let attempts: Vec<(&str, (u16, Value))> = vec![
        ("encrypted message", c.send(&c.scholz, &line, "m.room.encrypted", "e1", ENC).await),
        ("plain message", c.send(&c.scholz, &line, "m.room.message", "m1", r#"{"msgtype": "m.text", "body": "hi"}"#).await),
        ("reaction", c.send(&c.scholz, &line, "m.reaction", "r1", &json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": earlier, "key": "+"}}).to_string()).await),
        ("call invite", c.send(&c.scholz, &line, "m.call.invite", "c1", r#"{"call_id": "1", "version": "1", "lifetime": 60000, "offer": {"type": "offer", "sdp": "v=0"}}"#).await),
        ("custom event", c.send(&c.macron, &line, "org.example.thing", "x1", "{}").await),
        ("topic", c.put_state(&c.scholz, &line, "m.room.topic", "", &json!({"topic": "t"})).await),
        ("name", c.put_state(&c.macron, &line, "m.room.name", "", &json!({"name": "n"})).await),
        ("power levels", c.put_state(&c.macron, &line, "m.room.power_levels", "", &json!({"users": {"@macron:localhost": 100, "@scholz:localhost": 100}})).await),
        ("redaction", c.call("PUT", &format!("/_matrix/client/v3/rooms/{line}/redact/{earlier}/d1"), &c.scholz, Some("{}")).await),
        ("invite", c.call("POST", &format!("/_matrix/client/v3/rooms/{line}/invite"), &c.macron, Some(r#"{"user_id": "@aide:localhost"}"#)).await),
        ("own member event", c.put_state(&c.scholz, &line, "m.room.member", "@scholz:localhost", &json!({"membership": "join", "displayname": "S"})).await),
    ];
    for (what, r) in &attempts {
        forbidden(r, what);
        assert!(
            r.1["error"].as_str().unwrap().contains("paused"),
            "{what}: {}",
            r.1
        );
    }
    let r = c
        .put_state(
            &c.scholz,
            &line,
            "org.hotline.line",
            "",
            &json!({"principals": ["@scholz:localhost"], "official": true}),
        )
        .await;
    forbidden(&r, "un-pausing by overwriting the line");
    // Still paused after all that.
    forbidden(
        &c.send(&c.scholz, &line, "m.room.encrypted", "e2", ENC)
            .await,
        "still paused",
    );
    // In-room key verification stays open: it is how the parties re-verify.
    let r = c
        .send(&c.scholz, &line, "m.key.verification.ready", "v1", r#"{"from_device": "D", "methods": ["m.sas.v1"], "m.relates_to": {"rel_type": "m.reference", "event_id": "$x"}}"#)
        .await;
    assert_eq!(r.0, 200, "verification in a paused line: {}", r.1);

    // The office vouches again: the line reopens.
    let key = common::master_key(&c.http, &c.macron, "@macron:localhost").await;
    c.server.admin(&["vouch", "macron", "--master-key", &key]);
    let r = c
        .send(&c.scholz, &line, "m.room.encrypted", "e3", ENC)
        .await;
    assert_eq!(r.0, 200, "reopened: {}", r.1);

    // Paused again, a member may still leave.
    c.server.admin(&["revoke", "macron"]);
    forbidden(
        &c.send(&c.scholz, &line, "m.room.encrypted", "e4", ENC)
            .await,
        "paused again",
    );
    let r = c
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{line}/leave"),
            &c.scholz,
            Some("{}"),
        )
        .await;
    assert_eq!(r.0, 200, "leaving a paused line: {}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_away_what_the_role_granted_on_the_next_request() {
    let c = cast().await;
    let meloni = c
        .http
        .enrolled(&c.server, "meloni", "Giorgia Meloni", "principal", None)
        .await;
    let _m = vouched(&c.server, &c.http, &c.macron, "macron").await;
    let _a = vouched(&c.server, &c.http, &c.aide, "aide").await;

    // Before: the aide joins the line, invites are made, rooms opened.
    let r = c
        .call(
            "PUT",
            &format!("/_hotline/v1/lines/{}/aides/@aide:localhost", c.line),
            &c.macron,
            Some("{}"),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = c
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/join", c.line),
            &c.aide,
            Some("{}"),
        )
        .await;
    assert_eq!(r.0, 200, "the aide joins their principal's line: {}", r.1);
    let r = c
        .call("POST", "/_hotline/v1/line_invites", &c.aide, Some("{}"))
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let (_, inv) = c
        .call("POST", "/_hotline/v1/line_invites", &meloni, Some("{}"))
        .await;
    let meloni_code = inv["code"].as_str().unwrap().to_owned();

    // Scholz's sync, to see the revocation arrive.
    let (_, sync) = c
        .call("GET", "/_matrix/client/v3/sync?timeout=0", &c.scholz, None)
        .await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // The aide's attestation is revoked: the aide acts for nobody.
    c.server.admin(&["revoke", "aide"]);
    forbidden(
        &c.call("POST", "/_hotline/v1/line_invites", &c.aide, Some("{}"))
            .await,
        "a revoked aide creates an invite",
    );
    forbidden(
        &c.call("GET", "/_hotline/v1/line_invites", &c.aide, None)
            .await,
        "a revoked aide lists invites",
    );
    forbidden(
        &c.call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", c.line),
            &c.aide,
            Some(r#"{"user_id": "@stranger:localhost"}"#),
        )
        .await,
        "a revoked aide invites into the line",
    );
    forbidden(
        &c.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            &c.aide,
            Some(r#"{"invite": ["@macron:localhost"]}"#),
        )
        .await,
        "a revoked aide opens a room with their principal",
    );

    // The principal's attestation is revoked: no invites, no reach through
    // the line, no redeeming, and the aide of a revoked principal is
    // nobody's aide either.
    c.server.admin(&["revoke", "macron"]);
    forbidden(
        &c.call("POST", "/_hotline/v1/line_invites", &c.macron, Some("{}"))
            .await,
        "a revoked principal creates an invite",
    );
    forbidden(
        &c.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            &c.macron,
            Some(r#"{"invite": ["@scholz:localhost"]}"#),
        )
        .await,
        "a revoked principal opens a room with a principal they hold a line with",
    );
    forbidden(
        &c.call(
            "POST",
            &format!("/_hotline/v1/line_invites/{meloni_code}/redeem"),
            &c.macron,
            None,
        )
        .await,
        "a revoked principal redeems an invite",
    );
    forbidden(
        &c.call(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1",
            &c.macron,
            Some(r#"{"messages": {"@scholz:localhost": {"*": {"ciphertext": "x"}}}}"#),
        )
        .await,
        "a revoked principal reaches a principal's devices",
    );

    // Those sharing a room hear of it in /sync (the directory changed), as
    // soon as the server sees the admin process's commit.
    let mut changed = Vec::new();
    let mut since = since;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(changed.contains(&json!("@macron:localhost"))
        && changed.contains(&json!("@aide:localhost")))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "device_lists.changed so far: {changed:?}"
        );
        let (_, sync) = c
            .call(
                "GET",
                &format!("/_matrix/client/v3/sync?timeout=2000&since={since}"),
                &c.scholz,
                None,
            )
            .await;
        changed.extend(
            sync["device_lists"]["changed"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_is_reached_only_through_a_line_on_every_path() {
    let c = cast().await;

    // A public room of Macron's, with an alias, knockable too.
    let (s, v) = c
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            &c.macron,
            Some(r#"{"preset": "public_chat", "room_alias_name": "elysee"}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let public = v["room_id"].as_str().unwrap().to_owned();
    forbidden(
        &c.call(
            "POST",
            &format!("/_matrix/client/v3/join/{public}"),
            &c.stranger,
            Some("{}"),
        )
        .await,
        "join by id",
    );
    forbidden(
        &c.call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{public}/join"),
            &c.stranger,
            Some("{}"),
        )
        .await,
        "join by room path",
    );
    forbidden(
        &c.call(
            "POST",
            "/_matrix/client/v3/join/%23elysee:localhost",
            &c.stranger,
            Some("{}"),
        )
        .await,
        "join by alias",
    );
    let (s, v) = c
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            &c.macron,
            Some("{}"),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let knockable = v["room_id"].as_str().unwrap().to_owned();
    let r = c
        .put_state(
            &c.macron,
            &knockable,
            "m.room.join_rules",
            "",
            &json!({"join_rule": "knock"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    forbidden(
        &c.call(
            "POST",
            &format!("/_matrix/client/v3/knock/{knockable}"),
            &c.stranger,
            Some("{}"),
        )
        .await,
        "knock",
    );
    // Scholz holds a line with Macron: he may join.
    let r = c
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{public}"),
            &c.scholz,
            Some("{}"),
        )
        .await;
    assert_eq!(r.0, 200, "a line holder joins: {}", r.1);
    // Someone Macron's office invites may join: the invitation is consent.
    let r = c
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{knockable}/invite"),
            &c.aide,
            Some(r#"{"user_id": "@stranger:localhost"}"#),
        )
        .await;
    assert_eq!(r.0, 403, "the aide is not in the room yet: {}", r.1);
    let r = c
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{knockable}/invite"),
            &c.macron,
            Some(r#"{"user_id": "@stranger:localhost"}"#),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = c
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{knockable}"),
            &c.stranger,
            Some("{}"),
        )
        .await;
    assert_eq!(r.0, 200, "invited by the principal: {}", r.1);

    // A line holds its principals and their marked aides: a principal
    // cannot invite a stranger into it, and the stranger cannot join.
    forbidden(
        &c.call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", c.line),
            &c.macron,
            Some(r#"{"user_id": "@stranger:localhost"}"#),
        )
        .await,
        "invite a stranger into a line",
    );
    forbidden(
        &c.call(
            "POST",
            &format!("/_matrix/client/v3/join/{}", c.line),
            &c.stranger,
            Some("{}"),
        )
        .await,
        "join a line",
    );

    // One-time keys: a stranger gets none, and takes none away.
    let m = common::sdk_login_official(&c.server.url, "macron").await;
    let device = m.device_id().unwrap().to_string();
    let count = |token: String| {
        let http = &c.http;
        async move {
            let (_, v) = http
                .call(
                    "POST",
                    "/_matrix/client/v3/keys/upload",
                    Some(&token),
                    Some("{}"),
                )
                .await;
            v["one_time_key_counts"]["signed_curve25519"]
                .as_u64()
                .unwrap_or(0)
        }
    };
    // The client uploads its one-time keys on its first sync.
    m.sync_once(Default::default()).await.unwrap();
    let macron_token = m.access_token().unwrap();
    let before = count(macron_token.clone()).await;
    assert!(before > 0, "macron's device uploaded one-time keys");
    let claim =
        json!({"one_time_keys": {"@macron:localhost": {device.as_str(): "signed_curve25519"}}})
            .to_string();
    for _ in 0..3 {
        let (s, v) = c
            .call(
                "POST",
                "/_matrix/client/v3/keys/claim",
                &c.stranger,
                Some(&claim),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["one_time_keys"],
            json!({}),
            "a stranger claims no key: {v}"
        );
    }
    assert_eq!(
        count(macron_token.clone()).await,
        before,
        "no key was used up"
    );
    let (_, v) = c
        .call(
            "POST",
            "/_matrix/client/v3/keys/claim",
            &c.scholz,
            Some(&claim),
        )
        .await;
    assert!(
        v["one_time_keys"]["@macron:localhost"][device.as_str()].is_object(),
        "a line holder claims one: {v}"
    );
    assert_eq!(count(macron_token).await, before - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_room_event_shows_an_officials_name_to_pass_for_them() {
    let c = cast().await;
    let own = c.http.create_room(&c.stranger).await;
    let name = "Emmanuel Macron";
    for (what, r) in [
        ("member display name", c.put_state(&c.stranger, &own, "m.room.member", "@stranger:localhost", &json!({"membership": "join", "displayname": name})).await),
        ("room name", c.put_state(&c.stranger, &own, "m.room.name", "", &json!({"name": name})).await),
        ("topic", c.put_state(&c.stranger, &own, "m.room.topic", "", &json!({"topic": name})).await),
        ("alternative alias", c.put_state(&c.stranger, &own, "m.room.canonical_alias", "", &json!({"alt_aliases": ["#emmanuel.macron:localhost"]})).await),
        ("createRoom topic", c.call("POST", "/_matrix/client/v3/createRoom", &c.stranger, Some(&json!({"topic": name}).to_string())).await),
        ("createRoom initial topic", c.call("POST", "/_matrix/client/v3/createRoom", &c.stranger, Some(&json!({"initial_state": [{"type": "m.room.topic", "content": {"topic": name}}]}).to_string())).await),
    ] {
        forbidden(&r, what);
    }
    // The official may show their own name; a different name is fine.
    let r = c
        .put_state(
            &c.macron,
            &c.line,
            "m.room.topic",
            "",
            &json!({"topic": name}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = c
        .put_state(
            &c.stranger,
            &own,
            "m.room.member",
            "@stranger:localhost",
            &json!({"membership": "join", "displayname": "Emma Marcon"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = c
        .put_state(
            &c.stranger,
            &own,
            "m.room.topic",
            "",
            &json!({"topic": "Budget talks"}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
}

/// 20 principals redeem one single-use invite at once, 50 rounds: exactly
/// one line each round, the others told it is used up, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_principals_racing_for_one_single_use_invite_open_exactly_one_line() {
    const RACERS: usize = 20;
    const ROUNDS: usize = 50;
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let mut racers = Vec::new();
    for i in 0..RACERS {
        racers.push(
            http.enrolled(
                &server,
                &format!("racer{i}"),
                &format!("Racer Number{i}"),
                "principal",
                None,
            )
            .await,
        );
    }
    for round in 0..ROUNDS {
        let office = http
            .enrolled(
                &server,
                &format!("office{round}"),
                &format!("Office Holder{round}"),
                "principal",
                None,
            )
            .await;
        let (s, inv) = http
            .call(
                "POST",
                "/_hotline/v1/line_invites",
                Some(&office),
                Some(r#"{"max_uses": 1}"#),
            )
            .await;
        assert_eq!(s, 200, "{inv}");
        let path = format!(
            "/_hotline/v1/line_invites/{}/redeem",
            inv["code"].as_str().unwrap()
        );
        let results = futures_util::future::join_all(
            racers
                .iter()
                .map(|t| http.call("POST", &path, Some(t), None)),
        )
        .await;
        let won: Vec<&(u16, Value)> = results.iter().filter(|r| r.0 == 200).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one line: {results:?}");
        for r in results.iter().filter(|r| r.0 != 200) {
            assert_eq!(
                status_errcode(r),
                (403, "M_FORBIDDEN"),
                "round {round}: {}",
                r.1
            );
            assert!(
                r.1["error"].as_str().unwrap().contains("used up"),
                "round {round}: {}",
                r.1
            );
        }
        let (_, rooms) = http
            .call(
                "GET",
                "/_matrix/client/v3/joined_rooms",
                Some(&office),
                None,
            )
            .await;
        assert_eq!(
            rooms["joined_rooms"],
            json!([won[0].1["room_id"]]),
            "round {round}: the office holds one line"
        );
    }
}

/// A principal who redeems the same invite several times at once gets one
/// line, the same room every time, and never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_redeeming_at_once_many_times_gets_one_line() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let office = http
        .enrolled(&server, "office", "Office Holder", "principal", None)
        .await;
    let me = http
        .enrolled(&server, "me", "Some Principal", "principal", None)
        .await;
    let (_, inv) = http
        .call(
            "POST",
            "/_hotline/v1/line_invites",
            Some(&office),
            Some(r#"{"max_uses": 1}"#),
        )
        .await;
    let path = format!(
        "/_hotline/v1/line_invites/{}/redeem",
        inv["code"].as_str().unwrap()
    );
    let results =
        futures_util::future::join_all((0..10).map(|_| http.call("POST", &path, Some(&me), None)))
            .await;
    let first = &results[0].1["room_id"];
    assert!(first.is_string(), "{results:?}");
    for r in &results {
        assert_eq!((r.0, &r.1["room_id"]), (200, first), "{results:?}");
    }
    let (_, rooms) = http
        .call("GET", "/_matrix/client/v3/joined_rooms", Some(&me), None)
        .await;
    assert_eq!(rooms["joined_rooms"], json!([first]));
    let (_, members) = http
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                first.as_str().unwrap()
            ),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 2, "{members}");
}
