//! Room tags, push rules, presence and the published room directory, each
//! rule of the spec checked over HTTP against the real binary (error paths
//! included), and a `matrix-sdk` client shown to read what the server
//! serves.

use crate::common;

use std::time::{Duration, Instant};

use common::{Http, Server};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// `(status, errcode)` of a response, for compact assertions.
fn code(r: &(u16, Value)) -> (u16, Option<&str>) {
    (r.0, r.1["errcode"].as_str())
}

async fn get(http: &Http, token: &str, path: &str) -> (u16, Value) {
    http.call("GET", &format!("{V3}{path}"), Some(token), None)
        .await
}

async fn put(http: &Http, token: &str, path: &str, body: &str) -> (u16, Value) {
    http.call("PUT", &format!("{V3}{path}"), Some(token), Some(body))
        .await
}

async fn delete(http: &Http, token: &str, path: &str) -> (u16, Value) {
    http.call("DELETE", &format!("{V3}{path}"), Some(token), None)
        .await
}

async fn post(http: &Http, token: &str, path: &str, body: &str) -> (u16, Value) {
    http.call("POST", &format!("{V3}{path}"), Some(token), Some(body))
        .await
}

/// `/sync` from `since` (initial when `None`), waiting up to `timeout_ms`.
async fn sync(http: &Http, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!("/sync?timeout={timeout_ms}");
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    let (status, v) = get(http, token, &path).await;
    assert_eq!(status, 200, "sync: {v}");
    v
}

fn next_batch(v: &Value) -> String {
    v["next_batch"].as_str().unwrap().to_owned()
}

/// The room's `account_data` event of `kind` in a sync response.
fn room_account_data<'a>(v: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    v["rooms"]["join"][room]["account_data"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
}

fn global_account_data<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v["account_data"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
}

fn presence_of<'a>(v: &'a Value, user: &str) -> Option<&'a Value> {
    v["presence"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.presence" && e["sender"] == user)
}

async fn join(http: &Http, token: &str, room: &str) {
    let r = post(http, token, &format!("/rooms/{room}/join"), "{}").await;
    assert_eq!(r.0, 200, "join: {}", r.1);
}

/// A room anyone may join (not published in the directory).
async fn public_room(http: &Http, token: &str) -> String {
    create_room(http, token, json!({"preset": "public_chat"})).await
}

async fn create_room(http: &Http, token: &str, body: Value) -> String {
    let r = post(http, token, "/createRoom", &body.to_string()).await;
    assert_eq!(r.0, 200, "createRoom: {}", r.1);
    r.1["room_id"].as_str().unwrap().to_owned()
}

// ----- room tags -----

#[tokio::test]
async fn tags_are_room_account_data_m_tag_and_reach_sync() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let tags = format!("/user/@alice:localhost/rooms/{room}/tags");

    let r = get(&http, &alice, &tags).await;
    assert_eq!((r.0, &r.1), (200, &json!({"tags": {}})), "no tags at first");
    let first = sync(&http, &alice, None, 0).await;

    assert_eq!(
        put(
            &http,
            &alice,
            &format!("{tags}/u.work"),
            r#"{"order": 0.25}"#
        )
        .await
        .0,
        200
    );
    assert_eq!(
        put(&http, &alice, &format!("{tags}/m.favourite"), "{}")
            .await
            .0,
        200
    );
    let r = get(&http, &alice, &tags).await;
    assert_eq!(
        r.1,
        json!({"tags": {"u.work": {"order": 0.25}, "m.favourite": {}}})
    );
    // The same document is the room account data `m.tag`...
    let doc = get(
        &http,
        &alice,
        &format!("/user/@alice:localhost/rooms/{room}/account_data/m.tag"),
    )
    .await;
    assert_eq!(doc.1, r.1, "GET account_data/m.tag is the tags document");
    // ...and arrives in the room's account_data on /sync.
    let s = sync(&http, &alice, Some(&next_batch(&first)), 0).await;
    let ev = room_account_data(&s, &room, "m.tag").expect("m.tag in the room's account_data");
    assert_eq!(ev["content"], r.1);

    // Deleting a tag removes it, and the change syncs too.
    assert_eq!(
        delete(&http, &alice, &format!("{tags}/u.work")).await.0,
        200
    );
    let r = get(&http, &alice, &tags).await;
    assert_eq!(r.1, json!({"tags": {"m.favourite": {}}}));
    let s2 = sync(&http, &alice, Some(&next_batch(&s)), 0).await;
    let ev = room_account_data(&s2, &room, "m.tag").expect("m.tag after the delete");
    assert_eq!(ev["content"], json!({"tags": {"m.favourite": {}}}));
    // Deleting a tag the room does not have changes nothing and succeeds.
    assert_eq!(
        delete(&http, &alice, &format!("{tags}/u.none")).await.0,
        200
    );
    let s3 = sync(&http, &alice, Some(&next_batch(&s2)), 0).await;
    assert!(
        room_account_data(&s3, &room, "m.tag").is_none(),
        "nothing changed: {s3}"
    );
}

#[tokio::test]
async fn a_tag_change_wakes_a_waiting_sync() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let since = next_batch(&sync(&http, &alice, None, 0).await);
    let waiting = {
        let http = Http::new(&server.url);
        let alice = alice.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (sync(&http, &alice, Some(&since), 20_000).await, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tag = format!("/user/@alice:localhost/rooms/{room}/tags/u.later");
    assert_eq!(put(&http, &alice, &tag, "{}").await.0, 200);
    let (s, waited) = waiting.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "woken, not timed out: {waited:?}"
    );
    assert!(room_account_data(&s, &room, "m.tag").is_some(), "{s}");
}

#[tokio::test]
async fn only_the_user_themself_may_read_or_change_their_tags() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let tags = format!("/user/@alice:localhost/rooms/{room}/tags");
    assert_eq!(
        put(&http, &alice, &format!("{tags}/u.mine"), "{}").await.0,
        200
    );
    for r in [
        get(&http, &bob, &tags).await,
        put(&http, &bob, &format!("{tags}/u.theirs"), "{}").await,
        delete(&http, &bob, &format!("{tags}/u.mine")).await,
    ] {
        assert_eq!(code(&r), (403, Some("M_FORBIDDEN")), "{}", r.1);
    }
    let r = get(&http, &alice, &tags).await;
    assert_eq!(r.1, json!({"tags": {"u.mine": {}}}), "bob changed nothing");
}

#[tokio::test]
async fn a_tag_order_is_a_number_between_0_and_1() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let tags = format!("/user/@alice:localhost/rooms/{room}/tags");
    let tag = format!("{tags}/u.t");
    let long = format!("{tags}/u.{}", "x".repeat(254));
    let cases = [
        (tag.as_str(), r#"{"order": "high"}"#, 400, "M_BAD_JSON"),
        (tag.as_str(), r#"{"order": 1.5}"#, 400, "M_INVALID_PARAM"),
        (tag.as_str(), r#"{"order": -0.1}"#, 400, "M_INVALID_PARAM"),
        (tag.as_str(), "[0.5]", 400, "M_BAD_JSON"),
        (tag.as_str(), "{order: 0.5", 400, "M_NOT_JSON"),
        (long.as_str(), "{}", 400, "M_INVALID_PARAM"),
    ];
    for (path, body, status, errcode) in cases {
        let r = put(&http, &alice, path, body).await;
        assert_eq!(code(&r), (status, Some(errcode)), "{body}: {}", r.1);
    }
    let r = get(&http, &alice, &tags).await;
    assert_eq!(r.1, json!({"tags": {}}), "no refused tag was stored");
    // The bounds themselves are fine.
    for order in ["0", "1", "0.5"] {
        let r = put(&http, &alice, &tag, &format!(r#"{{"order": {order}}}"#)).await;
        assert_eq!(r.0, 200, "order {order}: {}", r.1);
    }
}

#[tokio::test]
async fn tags_of_an_unknown_room_are_not_found() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let tags = "/user/@alice:localhost/rooms/!nowhere:localhost/tags";
    for r in [
        get(&http, &alice, tags).await,
        put(&http, &alice, &format!("{tags}/u.x"), "{}").await,
        delete(&http, &alice, &format!("{tags}/u.x")).await,
    ] {
        assert_eq!(code(&r), (404, Some("M_NOT_FOUND")), "{}", r.1);
    }
    let r = get(
        &http,
        &alice,
        "/user/@alice:localhost/rooms/not-a-room/tags",
    )
    .await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
}

// ----- push rules -----

const DEFAULT_OVERRIDE: &[&str] = &[
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.contains_display_name",
    ".m.rule.is_room_mention",
    ".m.rule.roomnotif",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
];
const DEFAULT_UNDERRIDE: &[&str] = &[
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
];

fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset[kind]
        .as_array()
        .unwrap_or_else(|| panic!("{kind} is an array: {ruleset}"))
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_default_push_rules_are_the_full_predefined_set() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let all = get(&http, &alice, "/pushrules/").await;
    assert_eq!(all.0, 200);
    let global = &all.1["global"];
    assert_eq!(rule_ids(global, "override"), DEFAULT_OVERRIDE);
    assert_eq!(rule_ids(global, "underride"), DEFAULT_UNDERRIDE);
    assert_eq!(rule_ids(global, "content"), [".m.rule.contains_user_name"]);
    assert_eq!(
        global["content"][0]["pattern"], "alice",
        "the legacy user-name rule matches the localpart"
    );
    for kind in ["room", "sender"] {
        assert_eq!(global[kind], json!([]), "{kind} is present and empty");
    }
    for kind in ["override", "content", "underride"] {
        for rule in global[kind].as_array().unwrap() {
            assert_eq!(rule["default"], true, "{rule}");
            assert!(
                rule["enabled"].is_boolean() && rule["actions"].is_array(),
                "{rule}"
            );
        }
    }
    let mention = get(
        &http,
        &alice,
        "/pushrules/global/override/.m.rule.is_user_mention",
    )
    .await;
    assert_eq!(
        mention.1["conditions"][0]["value"], "@alice:localhost",
        "the mention rule names its user: {}",
        mention.1
    );
    let scope = get(&http, &alice, "/pushrules/global/").await;
    assert_eq!((scope.0, &scope.1), (200, global), "GET /pushrules/global/");
}

#[tokio::test]
async fn a_user_rule_is_created_placed_read_and_deleted() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let base = "/pushrules/global/content";
    let rule = |pattern: &str| json!({"pattern": pattern, "actions": ["notify"]}).to_string();
    assert_eq!(
        put(&http, &alice, &format!("{base}/cake"), &rule("cake*"))
            .await
            .0,
        200
    );
    let got = get(&http, &alice, &format!("{base}/cake")).await;
    assert_eq!(
        got.1,
        json!({"rule_id": "cake", "pattern": "cake*", "actions": ["notify"], "default": false, "enabled": true})
    );
    // A new rule goes first; `before`/`after` place it among user rules.
    assert_eq!(
        put(&http, &alice, &format!("{base}/pie"), &rule("pie"))
            .await
            .0,
        200
    );
    let r = put(
        &http,
        &alice,
        &format!("{base}/tart?after=cake"),
        &rule("tart"),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = put(
        &http,
        &alice,
        &format!("{base}/bun?before=pie"),
        &rule("bun"),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let all = get(&http, &alice, "/pushrules/").await.1;
    assert_eq!(
        rule_ids(&all["global"], "content"),
        ["bun", "pie", "cake", "tart", ".m.rule.contains_user_name"]
    );
    // Placing relative to an unknown rule is refused and changes nothing.
    let r = put(
        &http,
        &alice,
        &format!("{base}/scone?before=nope"),
        &rule("scone"),
    )
    .await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
    // Replacing keeps `enabled` as it was.
    let r = put(
        &http,
        &alice,
        &format!("{base}/cake/enabled"),
        r#"{"enabled": false}"#,
    )
    .await;
    assert_eq!(r.0, 200);
    assert_eq!(
        put(&http, &alice, &format!("{base}/cake"), &rule("cake!"))
            .await
            .0,
        200
    );
    let got = get(&http, &alice, &format!("{base}/cake")).await.1;
    assert_eq!(
        (got["pattern"].as_str(), got["enabled"].as_bool()),
        (Some("cake!"), Some(false))
    );
    // Deleted, it is gone.
    assert_eq!(delete(&http, &alice, &format!("{base}/cake")).await.0, 200);
    let r = get(&http, &alice, &format!("{base}/cake")).await;
    assert_eq!(code(&r), (404, Some("M_NOT_FOUND")));
    let all = get(&http, &alice, "/pushrules/").await.1;
    assert_eq!(
        rule_ids(&all["global"], "content"),
        ["bun", "pie", "tart", ".m.rule.contains_user_name"]
    );
    // Room and sender rules are named by a room id and a user id.
    let r = put(
        &http,
        &alice,
        "/pushrules/global/room/!r:localhost",
        r#"{"actions": []}"#,
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = put(
        &http,
        &alice,
        "/pushrules/global/sender/@bob:localhost",
        r#"{"actions": []}"#,
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let all = get(&http, &alice, "/pushrules/").await.1;
    assert_eq!(rule_ids(&all["global"], "room"), ["!r:localhost"]);
    assert_eq!(rule_ids(&all["global"], "sender"), ["@bob:localhost"]);
}

#[tokio::test]
async fn server_default_rules_cannot_be_replaced_or_deleted_but_can_be_switched_and_retuned() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let message = "/pushrules/global/underride/.m.rule.message";
    let r = put(&http, &alice, message, r#"{"actions": []}"#).await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
    let r = put(
        &http,
        &alice,
        "/pushrules/global/override/.my.rule",
        r#"{"actions": []}"#,
    )
    .await;
    assert_eq!(
        code(&r),
        (400, Some("M_INVALID_PARAM")),
        "a new '.' rule: {}",
        r.1
    );
    let r = delete(&http, &alice, message).await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
    let r = put(
        &http,
        &alice,
        "/pushrules/global/override/mine?after=.m.rule.master",
        r#"{"actions": []}"#,
    )
    .await;
    assert_eq!(
        code(&r),
        (400, Some("M_INVALID_PARAM")),
        "placed by a default rule: {}",
        r.1
    );
    assert!(
        get(&http, &alice, message).await.1["default"] == true,
        "still there"
    );

    assert_eq!(
        get(&http, &alice, &format!("{message}/enabled")).await.1,
        json!({"enabled": true})
    );
    let r = put(
        &http,
        &alice,
        &format!("{message}/enabled"),
        r#"{"enabled": false}"#,
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        get(&http, &alice, &format!("{message}/enabled")).await.1,
        json!({"enabled": false})
    );

    let actions = json!({"actions": ["notify", {"set_tweak": "sound", "value": "bing"}]});
    let r = put(
        &http,
        &alice,
        &format!("{message}/actions"),
        &actions.to_string(),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        get(&http, &alice, &format!("{message}/actions")).await.1,
        actions
    );
    let rule = get(&http, &alice, message).await.1;
    assert_eq!(
        (
            rule["enabled"].clone(),
            rule["actions"].clone(),
            rule["default"].clone()
        ),
        (json!(false), actions["actions"].clone(), json!(true))
    );
    // The master rule is still first.
    let all = get(&http, &alice, "/pushrules/").await.1;
    assert_eq!(rule_ids(&all["global"], "override")[0], ".m.rule.master");
}

#[tokio::test]
async fn push_rule_requests_are_checked() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        (
            "GET",
            "/pushrules/global/bogus/x",
            None,
            400,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/pushrules/global/bogus/x",
            Some(r#"{"actions": []}"#),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "GET",
            "/pushrules/global/override/nope",
            None,
            404,
            "M_NOT_FOUND",
        ),
        (
            "DELETE",
            "/pushrules/global/override/nope",
            None,
            404,
            "M_NOT_FOUND",
        ),
        (
            "GET",
            "/pushrules/global/override/nope/enabled",
            None,
            404,
            "M_NOT_FOUND",
        ),
        (
            "PUT",
            "/pushrules/global/override/nope/enabled",
            Some(r#"{"enabled": true}"#),
            404,
            "M_NOT_FOUND",
        ),
        (
            "GET",
            "/pushrules/global/override/nope/actions",
            None,
            404,
            "M_NOT_FOUND",
        ),
        (
            "PUT",
            "/pushrules/global/override/nope/actions",
            Some(r#"{"actions": []}"#),
            404,
            "M_NOT_FOUND",
        ),
        (
            "PUT",
            "/pushrules/global/override/r",
            Some(r#"{"conditions": []}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/pushrules/global/override/r",
            Some(r#"{"actions": "notify"}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/pushrules/global/override/r",
            Some(r#"{"actions": [], "conditions": {}}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/pushrules/global/override/r",
            Some("{actions"),
            400,
            "M_NOT_JSON",
        ),
        (
            "PUT",
            "/pushrules/global/content/r",
            Some(r#"{"actions": []}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/pushrules/global/room/not-a-room",
            Some(r#"{"actions": []}"#),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/pushrules/global/sender/not-a-user",
            Some(r#"{"actions": []}"#),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            "/pushrules/global/override/.m.rule.master/enabled",
            Some(r#"{"enabled": "yes"}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            "/pushrules/global/override/.m.rule.master/actions",
            Some(r#"{}"#),
            400,
            "M_BAD_JSON",
        ),
        // The document is the server's: clients edit it through /pushrules.
        (
            "PUT",
            "/user/@alice:localhost/account_data/m.push_rules",
            Some(r#"{"global": {}}"#),
            405,
            "M_BAD_JSON",
        ),
    ];
    for (method, path, body, status, errcode) in cases {
        let r = http
            .call(method, &format!("{V3}{path}"), Some(&alice), body)
            .await;
        assert_eq!(
            code(&r),
            (status, Some(errcode)),
            "{method} {path}: {}",
            r.1
        );
    }
    let r = http
        .call("GET", &format!("{V3}/pushrules/"), None, None)
        .await;
    assert_eq!(code(&r), (401, Some("M_MISSING_TOKEN")));
    // Nothing refused above was stored.
    let all = get(&http, &alice, "/pushrules/").await.1;
    assert_eq!(rule_ids(&all["global"], "override"), DEFAULT_OVERRIDE);
    assert_eq!(
        rule_ids(&all["global"], "content"),
        [".m.rule.contains_user_name"]
    );
}

#[tokio::test]
async fn push_rule_changes_reach_sync_as_m_push_rules_and_unread_counts_keep_counting() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;

    // A fresh client gets the rules in force, defaults included.
    let first = sync(&http, &alice, None, 0).await;
    let ev = global_account_data(&first, "m.push_rules").expect("m.push_rules on initial sync");
    assert_eq!(
        rule_ids(&ev["content"]["global"], "override"),
        DEFAULT_OVERRIDE
    );
    let r = get(
        &http,
        &alice,
        "/user/@alice:localhost/account_data/m.push_rules",
    )
    .await;
    assert_eq!(
        (r.0, &r.1),
        (200, &ev["content"]),
        "account data GET agrees"
    );

    // A change wakes a waiting sync and arrives as the whole document.
    let since = next_batch(&first);
    let waiting = {
        let http = Http::new(&server.url);
        let alice = alice.clone();
        tokio::spawn(async move { sync(&http, &alice, Some(&since), 20_000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("/pushrules/global/room/{room}");
    assert_eq!(
        put(&http, &alice, &path, r#"{"actions": ["notify"]}"#)
            .await
            .0,
        200
    );
    let s = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting sync was woken")
        .unwrap();
    let ev = global_account_data(&s, "m.push_rules").expect("m.push_rules after the change");
    assert_eq!(rule_ids(&ev["content"]["global"], "room"), [room.clone()]);
    assert_eq!(
        rule_ids(&ev["content"]["global"], "override"),
        DEFAULT_OVERRIDE
    );

    // Unread counts still count bob's messages for alice.
    for i in 0..2 {
        let r = put(
            &http,
            &bob,
            &format!("/rooms/{room}/send/m.room.message/t{i}"),
            r#"{"msgtype": "m.text", "body": "hi"}"#,
        )
        .await;
        assert_eq!(r.0, 200);
    }
    let s2 = sync(&http, &alice, Some(&next_batch(&s)), 0).await;
    assert_eq!(
        s2["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 2,
        "{s2}"
    );
}

// ----- presence -----

#[tokio::test]
async fn presence_is_set_by_oneself_and_seen_by_those_sharing_a_room() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let status = "/presence/@alice:localhost/status";

    // Before any change: offline.
    let r = get(&http, &bob, status).await;
    assert_eq!((r.0, &r.1["presence"]), (200, &json!("offline")), "{}", r.1);

    let r = put(
        &http,
        &alice,
        status,
        r#"{"presence": "online", "status_msg": "at my desk"}"#,
    )
    .await;
    assert_eq!((r.0, &r.1), (200, &json!({})));
    for viewer in [&alice, &bob] {
        let r = get(&http, viewer, status).await;
        assert_eq!(r.0, 200, "{}", r.1);
        assert_eq!(r.1["presence"], "online");
        assert_eq!(r.1["status_msg"], "at my desk");
        assert_eq!(r.1["currently_active"], true);
        assert!(
            r.1["last_active_ago"]
                .as_i64()
                .is_some_and(|a| (0..60_000).contains(&a)),
            "{}",
            r.1
        );
    }
    let r = put(&http, &alice, status, r#"{"presence": "unavailable"}"#).await;
    assert_eq!(r.0, 200);
    let r = get(&http, &bob, status).await;
    assert_eq!(r.1["presence"], "unavailable");
    assert!(
        r.1.get("status_msg").is_none() && r.1.get("currently_active").is_none(),
        "{}",
        r.1
    );

    // Carol shares no room with alice; nobody may set another's presence.
    let r = get(&http, &carol, status).await;
    assert_eq!(code(&r), (403, Some("M_FORBIDDEN")), "{}", r.1);
    let r = get(&http, &carol, "/presence/@ghost:localhost/status").await;
    assert_eq!(
        code(&r),
        (403, Some("M_FORBIDDEN")),
        "an unknown user looks the same: {}",
        r.1
    );
    let r = put(&http, &bob, status, r#"{"presence": "offline"}"#).await;
    assert_eq!(code(&r), (403, Some("M_FORBIDDEN")), "{}", r.1);
    assert_eq!(
        get(&http, &alice, status).await.1["presence"],
        "unavailable",
        "bob changed nothing"
    );
}

#[tokio::test]
async fn presence_requests_are_checked() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let status = "/presence/@alice:localhost/status";
    let long = json!({"presence": "online", "status_msg": "x".repeat(2000)}).to_string();
    let cases = [
        (r#"{"presence": "away"}"#, 400, "M_INVALID_PARAM"),
        (r#"{"status_msg": "hi"}"#, 400, "M_BAD_JSON"),
        (
            r#"{"presence": "online", "status_msg": 7}"#,
            400,
            "M_BAD_JSON",
        ),
        (r#"{"presence": "#, 400, "M_NOT_JSON"),
        (long.as_str(), 400, "M_INVALID_PARAM"),
    ];
    for (body, status_code, errcode) in cases {
        let r = put(&http, &alice, status, body).await;
        assert_eq!(code(&r), (status_code, Some(errcode)), "{body}: {}", r.1);
    }
    assert_eq!(
        get(&http, &alice, status).await.1["presence"],
        "offline",
        "nothing stored"
    );
    let r = get(&http, &alice, "/presence/not-a-user/status").await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")));
}

#[tokio::test]
async fn a_presence_change_wakes_the_syncs_of_room_sharers_only() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let bob_since = next_batch(&sync(&http, &bob, None, 0).await);
    let carol_since = next_batch(&sync(&http, &carol, None, 0).await);

    let spawn_sync = |token: String, since: String, timeout: u64| {
        let http = Http::new(&server.url);
        tokio::spawn(async move {
            let t = Instant::now();
            (
                sync(&http, &token, Some(&since), timeout).await,
                t.elapsed(),
            )
        })
    };
    let bob_wait = spawn_sync(bob.clone(), bob_since, 20_000);
    let carol_wait = spawn_sync(carol.clone(), carol_since, 2_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = put(
        &http,
        &alice,
        "/presence/@alice:localhost/status",
        r#"{"presence": "online", "status_msg": "hello"}"#,
    )
    .await;
    assert_eq!(r.0, 200);

    let (s, waited) = bob_wait.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "bob was woken: {waited:?}"
    );
    let ev = presence_of(&s, "@alice:localhost").expect("alice's presence at bob");
    assert_eq!(ev["content"]["presence"], "online");
    assert_eq!(ev["content"]["status_msg"], "hello");
    assert_eq!(ev["content"]["currently_active"], true);
    let (c, waited) = carol_wait.await.unwrap();
    assert!(
        presence_of(&c, "@alice:localhost").is_none(),
        "carol shares no room: {c}"
    );
    assert!(
        waited >= Duration::from_millis(1_500),
        "carol's sync waited its timeout: {waited:?}"
    );

    // Said once: the next incremental sync does not repeat it.
    let s2 = sync(&http, &bob, Some(&next_batch(&s)), 0).await;
    assert!(presence_of(&s2, "@alice:localhost").is_none(), "{s2}");

    // Carol joins later: her next sync brings alice's current presence.
    let carol_since = next_batch(&c);
    join(&http, &carol, &room).await;
    let c2 = sync(&http, &carol, Some(&carol_since), 0).await;
    let ev = presence_of(&c2, "@alice:localhost").expect("alice's presence at carol after joining");
    assert_eq!(ev["content"]["status_msg"], "hello");
    // A fresh client sees it on its initial sync; a filter can leave it out.
    let fresh = sync(&http, &carol, None, 0).await;
    assert!(presence_of(&fresh, "@alice:localhost").is_some(), "{fresh}");
    let filter = r#"{"presence":{"types":[]}}"#;
    let (st, filtered) = get(
        &http,
        &carol,
        &format!("/sync?filter={}", urlencode(filter)),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        filtered["presence"]["events"],
        json!([]),
        "presence filtered out"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn an_acknowledged_presence_change_survives_kill_9() {
    let mut server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let bob_since = next_batch(&sync(&http, &bob, None, 0).await);
    let r = put(
        &http,
        &alice,
        "/presence/@alice:localhost/status",
        r#"{"presence": "unavailable", "status_msg": "lunch"}"#,
    )
    .await;
    assert_eq!(r.0, 200);

    server.kill9();
    server.spawn().await;
    let http = Http::new(&server.url);
    let r = get(&http, &bob, "/presence/@alice:localhost/status").await;
    assert_eq!(
        (r.1["presence"].as_str(), r.1["status_msg"].as_str()),
        (Some("unavailable"), Some("lunch")),
        "{}",
        r.1
    );
    // A token from before the restart still learns of the change.
    let s = sync(&http, &bob, Some(&bob_since), 0).await;
    let ev = presence_of(&s, "@alice:localhost").expect("the change, after the restart");
    assert_eq!(ev["content"]["presence"], "unavailable");
}

// ----- published room directory -----

#[tokio::test]
async fn create_room_with_public_visibility_publishes_it_with_its_details() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = create_room(
        &http,
        &alice,
        json!({
            "visibility": "public", "preset": "public_chat", "name": "Lobby", "topic": "Say hi",
            "room_alias_name": "lobby", "creation_content": {"type": "m.space"},
            "initial_state": [
                {"type": "m.room.avatar", "content": {"url": "mxc://localhost/abc"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}
            ]
        }),
    )
    .await;
    join(&http, &bob, &room).await;
    let private = http.create_room(&alice).await;

    let r = http
        .call(
            "GET",
            &format!("{V3}/directory/list/room/{room}"),
            None,
            None,
        )
        .await;
    assert_eq!((r.0, &r.1), (200, &json!({"visibility": "public"})));
    let r = http
        .call(
            "GET",
            &format!("{V3}/directory/list/room/{private}"),
            None,
            None,
        )
        .await;
    assert_eq!((r.0, &r.1), (200, &json!({"visibility": "private"})));
    let r = http
        .call(
            "GET",
            &format!("{V3}/directory/list/room/!nowhere:localhost"),
            None,
            None,
        )
        .await;
    assert_eq!(code(&r), (404, Some("M_NOT_FOUND")));

    // Listed without an access token, with every field.
    let r = http
        .call("GET", &format!("{V3}/publicRooms"), None, None)
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        r.1,
        json!({
            "chunk": [{
                "room_id": room, "name": "Lobby", "topic": "Say hi", "canonical_alias": "#lobby:localhost",
                "num_joined_members": 2, "world_readable": true, "guest_can_join": true,
                "join_rule": "public", "room_type": "m.space", "avatar_url": "mxc://localhost/abc"
            }],
            "total_room_count_estimate": 1
        })
    );
}

#[tokio::test]
async fn only_a_member_with_alias_power_or_the_creator_may_change_visibility() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let room = create_room(&http, &alice, json!({"preset": "public_chat"})).await;
    join(&http, &bob, &room).await;
    let list = format!("/directory/list/room/{room}");
    let visibility = || async { http.call("GET", &format!("{V3}{list}"), None, None).await.1 };

    for who in [&bob, &carol] {
        let r = put(&http, who, &list, r#"{"visibility": "public"}"#).await;
        assert_eq!(code(&r), (403, Some("M_FORBIDDEN")), "{}", r.1);
    }
    assert_eq!(visibility().await, json!({"visibility": "private"}));
    let r = put(&http, &alice, &list, r#"{"visibility": "hidden"}"#).await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
    let r = put(&http, &alice, &list, r#"{"visibility": 1}"#).await;
    assert_eq!(code(&r), (400, Some("M_BAD_JSON")), "{}", r.1);
    let r = put(
        &http,
        &alice,
        "/directory/list/room/!nowhere:localhost",
        r#"{"visibility": "public"}"#,
    )
    .await;
    assert_eq!(code(&r), (404, Some("M_NOT_FOUND")), "{}", r.1);
    let r = http
        .call(
            "PUT",
            &format!("{V3}{list}"),
            None,
            Some(r#"{"visibility": "public"}"#),
        )
        .await;
    assert_eq!(code(&r), (401, Some("M_MISSING_TOKEN")));

    // The creator publishes (visibility defaults to public).
    assert_eq!(put(&http, &alice, &list, "{}").await.0, 200);
    assert_eq!(visibility().await, json!({"visibility": "public"}));
    // Given the power to set the canonical alias, bob may unpublish it.
    let pl = get(
        &http,
        &alice,
        &format!("/rooms/{room}/state/m.room.power_levels/"),
    )
    .await
    .1;
    let mut pl = pl.clone();
    pl["users"]["@bob:localhost"] = json!(50);
    let r = put(
        &http,
        &alice,
        &format!("/rooms/{room}/state/m.room.power_levels/"),
        &pl.to_string(),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = put(&http, &bob, &list, r#"{"visibility": "private"}"#).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(visibility().await, json!({"visibility": "private"}));
}

#[tokio::test]
async fn public_rooms_are_paged_by_size_and_filtered() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let mut members = Vec::new();
    for i in 0..4 {
        members.push(http.register(&format!("m{i}")).await);
    }
    // Room i has i + 1 joined members; room 4 is a space.
    let mut rooms = Vec::new();
    for i in 0..5 {
        let mut body =
            json!({"visibility": "public", "preset": "public_chat", "name": format!("Room {i}")});
        if i == 4 {
            body["creation_content"] = json!({"type": "m.space"});
            body["topic"] = json!("Gardening tips");
        }
        let room = create_room(&http, &alice, body).await;
        for m in members.iter().take(i.min(4)) {
            join(&http, m, &room).await;
        }
        rooms.push(room);
    }
    // A published room that is invite-only is not listed.
    let closed = create_room(
        &http,
        &alice,
        json!({"visibility": "public", "preset": "private_chat"}),
    )
    .await;

    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    for page in 0..5 {
        let mut path = "/publicRooms?limit=2".to_owned();
        if let Some(s) = &since {
            path.push_str(&format!("&since={s}"));
        }
        let r = http.call("GET", &format!("{V3}{path}"), None, None).await;
        assert_eq!(r.0, 200, "{}", r.1);
        assert_eq!(r.1["total_room_count_estimate"], 5);
        assert!(r.1["chunk"].as_array().unwrap().len() <= 2);
        assert_eq!(
            r.1.get("prev_batch").is_some(),
            page > 0,
            "prev_batch on page {page}: {}",
            r.1
        );
        for c in r.1["chunk"].as_array().unwrap() {
            seen.push((
                c["room_id"].as_str().unwrap().to_owned(),
                c["num_joined_members"].as_u64().unwrap(),
            ));
        }
        match r.1["next_batch"].as_str() {
            Some(n) => since = Some(n.to_owned()),
            None => break,
        }
    }
    let expected: Vec<(String, u64)> = [4usize, 3, 2, 1, 0]
        .iter()
        .map(|&i| (rooms[i].clone(), i.min(4) as u64 + 1))
        .collect();
    assert_eq!(seen, expected, "every room once, most members first");
    assert!(!seen.iter().any(|(r, _)| r == &closed));

    // POST: search term (name, topic, alias; any case) and room types.
    let query = |body: Value| {
        let http = &http;
        let alice = &alice;
        async move {
            let r = post(http, alice, "/publicRooms", &body.to_string()).await;
            assert_eq!(r.0, 200, "{}", r.1);
            r.1["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["room_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        query(json!({"filter": {"generic_search_term": "room 2"}})).await,
        [rooms[2].clone()]
    );
    assert_eq!(
        query(json!({"filter": {"generic_search_term": "GARDEN"}})).await,
        [rooms[4].clone()]
    );
    assert_eq!(
        query(json!({"filter": {"room_types": ["m.space"]}})).await,
        [rooms[4].clone()]
    );
    assert_eq!(
        query(json!({"filter": {"room_types": [null]}})).await.len(),
        4
    );
    assert_eq!(
        query(json!({"limit": 1, "since": "o1"})).await,
        [rooms[3].clone()]
    );
    assert_eq!(
        query(json!({"third_party_instance_id": "irc"})).await,
        Vec::<String>::new()
    );
    let r = post(&http, &alice, "/publicRooms?server=localhost", "{}").await;
    assert_eq!(
        r.1["chunk"].as_array().map(Vec::len),
        Some(5),
        "this server by name"
    );

    // Refusals.
    let r = http
        .call(
            "GET",
            &format!("{V3}/publicRooms?since=garbage"),
            None,
            None,
        )
        .await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
    let r = http
        .call("GET", &format!("{V3}/publicRooms?limit=many"), None, None)
        .await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
    let r = http
        .call(
            "GET",
            &format!("{V3}/publicRooms?server=elsewhere.example"),
            None,
            None,
        )
        .await;
    assert_eq!(
        code(&r),
        (400, Some("M_INVALID_PARAM")),
        "no federation: {}",
        r.1
    );
    let r = post(
        &http,
        &alice,
        "/publicRooms",
        r#"{"include_all_networks": true, "third_party_instance_id": "irc"}"#,
    )
    .await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);
    let r = post(&http, &alice, "/publicRooms", r#"{"limit": "ten"}"#).await;
    assert_eq!(code(&r), (400, Some("M_BAD_JSON")), "{}", r.1);
    let r = http
        .call("POST", &format!("{V3}/publicRooms"), None, Some("{}"))
        .await;
    assert_eq!(
        code(&r),
        (401, Some("M_MISSING_TOKEN")),
        "POST needs a token"
    );
}

// ----- a real client -----

mod sdk {
    use std::time::Duration;

    use matrix_sdk::config::SyncSettings;
    use matrix_sdk::notification_settings::RoomNotificationMode;
    use matrix_sdk::ruma::api::client::account::register::v3::Request as RegisterRequest;
    use matrix_sdk::ruma::api::client::presence::set_presence;
    use matrix_sdk::ruma::api::client::room::create_room::v3::{
        Request as CreateRoomRequest, RoomPreset,
    };
    use matrix_sdk::ruma::api::client::room::Visibility;
    use matrix_sdk::ruma::api::client::uiaa::{AuthData, Dummy};
    use matrix_sdk::ruma::events::presence::PresenceEvent;
    use matrix_sdk::ruma::events::tag::{TagInfo, TagName, UserTagName};
    use matrix_sdk::ruma::presence::PresenceState;
    use matrix_sdk::Client;

    const PASSWORD: &str = "correct horse battery";

    async fn register(url: &str, name: &str) -> Client {
        let client = Client::builder().homeserver_url(url).build().await.unwrap();
        let mut req = RegisterRequest::new();
        req.username = Some(name.to_owned());
        req.password = Some(PASSWORD.to_owned());
        req.auth = Some(AuthData::Dummy(Dummy::new()));
        client.matrix_auth().register(req).await.unwrap();
        client
    }

    async fn login(url: &str, name: &str) -> Client {
        let client = Client::builder().homeserver_url(url).build().await.unwrap();
        client
            .matrix_auth()
            .login_username(name, PASSWORD)
            .send()
            .await
            .unwrap();
        client
    }

    async fn sync(c: &Client) -> matrix_sdk::sync::SyncResponse {
        c.sync_once(SyncSettings::default().timeout(Duration::from_millis(0)))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn matrix_sdk_reads_tags_push_rules_presence_and_the_directory() {
        let server = super::Server::start().await;
        let alice = register(&server.url, "alice").await;
        let bob = register(&server.url, "bob").await;
        let mut req = CreateRoomRequest::new();
        req.name = Some("Town square".to_owned());
        req.preset = Some(RoomPreset::PublicChat);
        req.visibility = Visibility::Public;
        let room = alice.create_room(req).await.unwrap();
        let room_id = room.room_id().to_owned();
        bob.join_room_by_id(&room_id).await.unwrap();
        sync(&alice).await;
        sync(&bob).await;

        // Tags set by one device are read by another of the same user.
        let room = alice.get_room(&room_id).unwrap();
        let mut info = TagInfo::new();
        info.order = Some(0.25);
        room.set_tag(
            TagName::User("u.work".parse::<UserTagName>().unwrap()),
            info,
        )
        .await
        .unwrap();
        room.set_is_favourite(true, None).await.unwrap();
        // Push rules through the SDK's notification settings: mute, then
        // "all messages" (a room rule, the override rule deleted).
        let settings = alice.notification_settings().await;
        settings
            .set_room_notification_mode(&room_id, RoomNotificationMode::Mute)
            .await
            .unwrap();
        settings
            .set_room_notification_mode(&room_id, RoomNotificationMode::AllMessages)
            .await
            .unwrap();

        let other = login(&server.url, "alice").await;
        sync(&other).await;
        let other_room = other
            .get_room(&room_id)
            .expect("the room on the other device");
        let tags = other_room.tags().await.unwrap().expect("tags synced");
        let work = tags
            .iter()
            .find(|(name, _)| name.to_string() == "u.work")
            .map(|(_, info)| info.order);
        assert_eq!(work, Some(Some(0.25)));
        assert!(other_room.is_favourite(), "m.favourite synced");
        let mode = other
            .notification_settings()
            .await
            .get_user_defined_room_notification_mode(&room_id)
            .await;
        assert_eq!(
            mode,
            Some(RoomNotificationMode::AllMessages),
            "push rules synced"
        );
        let rules = other.account().push_rules().await.unwrap();
        assert!(
            !rules
                .override_
                .iter()
                .any(|r| r.rule_id == room_id.as_str()),
            "the mute rule was deleted"
        );

        // Presence set by alice reaches bob's sync as a typed event.
        let mut req = set_presence::v3::Request::new(
            alice.user_id().unwrap().to_owned(),
            PresenceState::Unavailable,
        );
        req.status_msg = Some("in a meeting".to_owned());
        alice.send(req).await.unwrap();
        let resp = sync(&bob).await;
        let seen: Vec<PresenceEvent> = resp
            .presence
            .iter()
            .filter_map(|e| e.deserialize().ok())
            .filter(|e| e.sender == alice.user_id().unwrap())
            .collect();
        assert_eq!(seen.len(), 1, "one presence event from alice");
        assert_eq!(seen[0].content.presence, PresenceState::Unavailable);
        assert_eq!(seen[0].content.status_msg.as_deref(), Some("in a meeting"));

        // The directory lists the room.
        let page = bob.public_rooms(Some(10), None, None).await.unwrap();
        assert_eq!(page.chunk.len(), 1);
        assert_eq!(page.chunk[0].room_id, room_id);
        assert_eq!(page.chunk[0].name.as_deref(), Some("Town square"));
        assert_eq!(u64::from(page.chunk[0].num_joined_members), 2);
    }
}

/// The value of the exposition line starting with `prefix`, if any.
fn metric(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status() {
    // `/metrics` is served on the main listener only with its token.
    let mut server = Server::start_configured(
        &["--allow-registration"],
        "metrics_token = \"scrape\"\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let events_before = {
        let (status, text) = http.call("GET", "/metrics", Some("scrape"), None).await;
        assert_eq!(status, 200);
        let text = text.as_str().expect("plain text").to_owned();
        // createRoom wrote the room's first events.
        metric(&text, "hotline_events_stored ")
            .filter(|n| *n >= 5)
            .expect(&text)
    };
    for i in 0..3 {
        let r = put(
            &http,
            &alice,
            &format!("/rooms/{room}/send/m.room.message/m{i}"),
            r#"{"msgtype":"m.text","body":"hi"}"#,
        )
        .await;
        assert_eq!(r.0, 200, "{}", r.1);
    }
    let r = put(
        &http,
        &alice,
        "/rooms/!nowhere:localhost/send/m.room.message/x",
        "{}",
    )
    .await;
    assert_eq!(code(&r), (404, Some("M_NOT_FOUND")), "{}", r.1);
    let r = http
        .call("GET", "/_matrix/client/v3/account/whoami", None, None)
        .await;
    assert_eq!(r.0, 401);

    let (status, text) = http.call("GET", "/metrics", Some("scrape"), None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("plain text");
    let send = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}";
    let counter = |method: &str, path: &str, status: u16| {
        metric(
            text,
            &format!("hotline_http_requests_total{{method=\"{method}\",path=\"{path}\",status=\"{status}\"}} "),
        )
    };
    assert_eq!(counter("PUT", send, 200), Some(3), "{text}");
    assert_eq!(counter("PUT", send, 404), Some(1), "{text}");
    assert_eq!(
        counter("GET", "/_matrix/client/v3/account/whoami", 401),
        Some(1),
        "{text}"
    );
    let count = format!("hotline_http_request_duration_seconds_count{{path=\"{send}\"}} ");
    assert_eq!(metric(text, &count), Some(4), "{text}");
    let inf =
        format!("hotline_http_request_duration_seconds_bucket{{path=\"{send}\",le=\"+Inf\"}} ");
    assert_eq!(metric(text, &inf), Some(4), "{text}");
    assert_eq!(metric(text, "hotline_sync_waiters "), Some(0), "{text}");
    assert!(
        metric(text, "hotline_stream_position ").is_some_and(|p| p >= 3),
        "{text}"
    );
    // Three messages stored; the refused send stored nothing.
    assert_eq!(
        metric(text, "hotline_events_stored "),
        Some(events_before + 3),
        "{text}"
    );

    // After a restart the count starts from what the database holds.
    server.kill9();
    server.spawn().await;
    let http = Http::new(&server.url);
    let (status, text) = http.call("GET", "/metrics", Some("scrape"), None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("plain text");
    assert_eq!(
        metric(text, "hotline_events_stored "),
        Some(events_before + 3),
        "{text}"
    );
}

#[tokio::test]
async fn a_syncing_client_marks_its_user_online_unless_told_otherwise() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let status = "/presence/@alice:localhost/status";
    let presence = |r: (u16, Value)| {
        assert_eq!(r.0, 200, "{}", r.1);
        r.1
    };
    let bob_since = next_batch(&sync(&http, &bob, None, 0).await);

    // `offline` changes nothing; an unknown value is refused.
    let (st, _) = get(&http, &alice, "/sync?timeout=0&set_presence=offline").await;
    assert_eq!(st, 200);
    assert_eq!(
        presence(get(&http, &bob, status).await)["presence"],
        "offline"
    );
    let r = get(&http, &alice, "/sync?timeout=0&set_presence=away").await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{}", r.1);

    // A plain sync marks alice online, and bob hears of it.
    sync(&http, &alice, None, 0).await;
    let p = presence(get(&http, &bob, status).await);
    assert_eq!(
        (&p["presence"], &p["currently_active"]),
        (&json!("online"), &json!(true)),
        "{p}"
    );
    let s = sync(&http, &bob, Some(&bob_since), 0).await;
    let ev = presence_of(&s, "@alice:localhost").expect("alice online at bob");
    assert_eq!(ev["content"]["presence"], "online");

    // Syncing again within the refresh interval writes nothing new.
    let bob_since = next_batch(&s);
    sync(&http, &alice, None, 0).await;
    let s = sync(&http, &bob, Some(&bob_since), 0).await;
    assert!(presence_of(&s, "@alice:localhost").is_none(), "{s}");

    // What she sets herself stays; her status message survives her syncs.
    let r = put(
        &http,
        &alice,
        status,
        r#"{"presence": "unavailable", "status_msg": "away"}"#,
    )
    .await;
    assert_eq!(r.0, 200);
    sync(&http, &alice, None, 0).await;
    let p = presence(get(&http, &bob, status).await);
    assert_eq!(
        (&p["presence"], &p["status_msg"]),
        (&json!("unavailable"), &json!("away")),
        "{p}"
    );
    put(
        &http,
        &alice,
        status,
        r#"{"presence": "offline", "status_msg": "back soon"}"#,
    )
    .await;
    sync(&http, &alice, None, 0).await;
    let p = presence(get(&http, &bob, status).await);
    assert_eq!(
        (&p["presence"], &p["status_msg"]),
        (&json!("online"), &json!("back soon")),
        "{p}"
    );
    get(&http, &alice, "/sync?timeout=0&set_presence=unavailable").await;
    assert_eq!(
        presence(get(&http, &bob, status).await)["presence"],
        "unavailable"
    );
}

#[tokio::test]
async fn a_user_whose_clients_stop_syncing_goes_offline_keeping_the_status_message() {
    let conf = tempfile::tempdir().unwrap();
    let conf_path = conf.path().join("hotline.toml");
    std::fs::write(&conf_path, "offline_after_seconds = 1\n").unwrap();
    let mut server = Server::start_with(&[
        "--allow-registration",
        "--config",
        conf_path.to_str().unwrap(),
    ])
    .await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let status = "/presence/@alice:localhost/status";
    let alice_state = |http: &Http| {
        let http = Http::new(&http.base);
        let bob = bob.clone();
        async move {
            let (st, v) = get(&http, &bob, status).await;
            assert_eq!(st, 200, "{v}");
            v
        }
    };
    let r = put(
        &http,
        &alice,
        status,
        r#"{"presence": "online", "status_msg": "on the line"}"#,
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);

    // A long-poll in flight keeps her present past the timeout.
    let alice_since = next_batch(&sync(&http, &alice, None, 0).await);
    let started = Instant::now();
    let poll = {
        let (http, alice) = (Http::new(&server.url), alice.clone());
        tokio::spawn(async move { sync(&http, &alice, Some(&alice_since), 2_500).await })
    };
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    assert_eq!(alice_state(&http).await["presence"], "online");
    let polled = poll.await.unwrap();
    // Nothing flickered meanwhile: her own presence change would have
    // ended the poll early.
    assert!(
        started.elapsed() >= Duration::from_millis(2_400),
        "alice's long-poll ended after {:?}: {polled}",
        started.elapsed()
    );

    // Once it ended, she goes offline within the timeout and a check
    // round; bob's long-poll is woken with it; her status message stays.
    let bob_since = next_batch(&sync(&http, &bob, None, 0).await);
    let ended = Instant::now();
    let s = sync(&http, &bob, Some(&bob_since), 5_000).await;
    let ev = presence_of(&s, "@alice:localhost").expect("bob hears alice went offline");
    assert_eq!(ev["content"]["presence"], "offline", "{ev}");
    assert!(
        ended.elapsed() < Duration::from_millis(4_000),
        "offline after {:?}",
        ended.elapsed()
    );
    let v = alice_state(&http).await;
    assert_eq!(
        (&v["presence"], &v["status_msg"]),
        (&json!("offline"), &json!("on the line")),
        "{v}"
    );

    // Syncing brings her back.
    sync(&http, &alice, None, 0).await;
    assert_eq!(alice_state(&http).await["presence"], "online");

    // Stored as online when the server stops, she is timed out after a
    // restart if no client of hers comes back.
    server.kill9();
    server.spawn().await;
    let http = Http::new(&server.url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = alice_state(&http).await;
        if v["presence"] == "offline" {
            assert_eq!(v["status_msg"], "on the line", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "still {v} after a restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
