//! The impersonation guard on every name a user shows outside room events,
//! over HTTP on the real server: the profile display name, the username at
//! registration, the device name (at registration, at login and by
//! `PUT /devices`), and room aliases. Each refuses a name that passes for an
//! enrolled official's name or user id with `403 M_FORBIDDEN`, and allows the
//! official themself and a really different name ("Maria Castellano").

use crate::common;

use common::{Http, Server};
use serde_json::{json, Value};

const C: &str = "/_matrix/client/v3";
const PW: &str = "correct horse";

/// Names that pass for Maria Castell, `@president.avalon:localhost`.
const IMPERSONATIONS: &[&str] = &[
    "Maria Castell",
    "MARIA CASTELL",
    "Maria CasteII",
    "Maria Caste11",
    "M\u{0430}ria C\u{0430}stell",
    "\u{FF2D}\u{FF41}\u{FF52}\u{FF49}\u{FF41} Castell",
    "President Maria Castell",
    "H.E. Maria Castell",
    "Maria.Castell@gov",
    "MariaCastell",
    "Maria_Castell",
    "@president.avalon:localhost",
    "president_avalon",
];

/// Names that only look close to hers and belong to other people.
const DIFFERENT: &[&str] = &["Maria Castellano", "Mariana Castell", "Maria"];

/// Enrols Maria Castell and redeems her code; returns her access token.
async fn enrol_castell(server: &Server, http: &Http) -> String {
    let out = server.admin(&[
        "enroll",
        "president.avalon",
        "--name",
        "Maria Castell",
        "--title",
        "President",
        "--country",
        "Avalon",
        "--office",
        "Office of the President",
        "--role",
        "principal",
        "--hours",
        "72",
    ]);
    let code = out.lines().find_map(|l| l.strip_prefix("code ")).unwrap();
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/enrol/{code}"),
            None,
            Some(
                &json!({"password": PW, "initial_device_display_name": "Maria Castell's phone"})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

fn forbidden(r: &(u16, Value)) -> bool {
    r.0 == 403 && r.1["errcode"] == "M_FORBIDDEN"
}

async fn set_displayname(http: &Http, token: &str, user: &str, name: &str) -> (u16, Value) {
    http.call(
        "PUT",
        &format!("{C}/profile/{user}/displayname"),
        Some(token),
        Some(&json!({"displayname": name}).to_string()),
    )
    .await
}

async fn login(http: &Http, user: &str, device_name: &str) -> (u16, Value) {
    http.call(
        "POST",
        &format!("{C}/login"),
        None,
        Some(
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                "password": PW, "initial_device_display_name": device_name})
            .to_string(),
        ),
    )
    .await
}

async fn register(http: &Http, username: &str, device_name: Option<&str>) -> (u16, Value) {
    let mut body = json!({"username": username, "password": PW, "auth": {"type": "m.login.dummy"}});
    if let Some(d) = device_name {
        body["initial_device_display_name"] = json!(d);
    }
    http.call(
        "POST",
        &format!("{C}/register"),
        None,
        Some(&body.to_string()),
    )
    .await
}

async fn rename_device(http: &Http, token: &str, device: &str, name: &str) -> (u16, Value) {
    http.call(
        "PUT",
        &format!("{C}/devices/{device}"),
        Some(token),
        Some(&json!({"display_name": name}).to_string()),
    )
    .await
}

async fn put_alias(http: &Http, token: &str, localpart: &str, room: &str) -> (u16, Value) {
    http.call(
        "PUT",
        &format!("{C}/directory/room/%23{localpart}:localhost"),
        Some(token),
        Some(&json!({"room_id": room}).to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_name_that_passes_for_an_official_is_refused() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let castell = enrol_castell(&server, &http).await;
    let mallory = http.register("mallory").await;
    for name in IMPERSONATIONS {
        let r = set_displayname(&http, &mallory, "@mallory:localhost", name).await;
        assert!(forbidden(&r), "{name:?}: {r:?}");
        assert!(
            r.1["error"].as_str().unwrap().contains("Maria Castell"),
            "{r:?}"
        );
    }
    for name in DIFFERENT {
        let r = set_displayname(&http, &mallory, "@mallory:localhost", name).await;
        assert_eq!(r.0, 200, "{name:?}: {r:?}");
    }
    let r = set_displayname(
        &http,
        &castell,
        "@president.avalon:localhost",
        "President Maria Castell",
    )
    .await;
    assert_eq!(r.0, 200, "the official themself: {r:?}");
    // Each refusal is in the audit log, with the field it was made in.
    let audit = server.admin(&["audit"]);
    assert!(
        audit.contains("impersonation_refused") && audit.contains("display name"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_whose_skeleton_is_an_officials_is_refused() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    enrol_castell(&server, &http).await;
    for username in [
        "presldent.ava1on",
        "president_avalon",
        "president-avalon",
        "presidentavalon",
        "maria.castell",
        "rnaria_caste11",
    ] {
        let r = register(&http, username, None).await;
        assert!(forbidden(&r), "{username}: {r:?}");
        // Nothing was created: the name is still available.
        let (s, v) = http
            .call(
                "GET",
                &format!("{C}/register/available?username={username}"),
                None,
                None,
            )
            .await;
        assert_eq!(s, 200, "{username}: {v}");
    }
    for username in ["maria.castellano", "avalon.fan"] {
        let r = register(&http, username, None).await;
        assert_eq!(r.0, 200, "{username}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_name_that_passes_for_an_official_is_refused_at_register_login_and_rename() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    enrol_castell(&server, &http).await;

    // At registration: refused before the account exists.
    let r = register(&http, "mallory", Some("Maria Castell's phone")).await;
    assert!(forbidden(&r), "{r:?}");
    let r = register(&http, "mallory", Some("Maria Castellano's phone")).await;
    assert_eq!(r.0, 200, "{r:?}");
    let mallory = r.1["access_token"].as_str().unwrap().to_owned();
    let device = r.1["device_id"].as_str().unwrap().to_owned();

    // At login.
    for name in IMPERSONATIONS {
        let r = login(&http, "mallory", name).await;
        assert!(forbidden(&r), "login {name:?}: {r:?}");
    }
    for name in DIFFERENT {
        let r = login(&http, "mallory", name).await;
        assert_eq!(r.0, 200, "login {name:?}: {r:?}");
    }
    let r = login(&http, "president.avalon", "Maria Castell's laptop").await;
    assert_eq!(r.0, 200, "the official themself: {r:?}");

    // By PUT /devices/{deviceId}.
    for name in IMPERSONATIONS {
        let r = rename_device(&http, &mallory, &device, name).await;
        assert!(forbidden(&r), "rename {name:?}: {r:?}");
    }
    let (_, v) = http
        .call(
            "GET",
            &format!("{C}/devices/{device}"),
            Some(&mallory),
            None,
        )
        .await;
    assert_eq!(v["display_name"], "Maria Castellano's phone", "{v}");
    for name in DIFFERENT {
        let r = rename_device(&http, &mallory, &device, name).await;
        assert_eq!(r.0, 200, "rename {name:?}: {r:?}");
    }
    let audit = server.admin(&["audit"]);
    assert!(audit.contains("device name"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_alias_that_passes_for_an_official_is_refused() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let castell = enrol_castell(&server, &http).await;
    let mallory = http.register("mallory").await;
    let room = http.create_room(&mallory).await;
    for localpart in [
        "president.avalon",
        "president_avalon",
        "presldent.ava1on",
        "maria.castell",
        "MariaCastell",
        "President-Maria-Castell",
    ] {
        let r = put_alias(&http, &mallory, localpart, &room).await;
        assert!(forbidden(&r), "#{localpart}: {r:?}");
        let (s, _) = http
            .call(
                "GET",
                &format!("{C}/directory/room/%23{localpart}:localhost"),
                None,
                None,
            )
            .await;
        assert_eq!(s, 404, "#{localpart} was not created");
    }
    for localpart in ["maria.castellano", "avalon-fans"] {
        let r = put_alias(&http, &mallory, localpart, &room).await;
        assert_eq!(r.0, 200, "#{localpart}: {r:?}");
    }
    let own = http.create_room(&castell).await;
    let r = put_alias(&http, &castell, "president.avalon", &own).await;
    assert_eq!(r.0, 200, "the official themself: {r:?}");
}
