//! What released clients still send, answered as the reference homeserver
//! answers it: each request goes to a Hotline and to a Synapse started side
//! by side, and the two answers must agree (status, `errcode`, and the
//! fields a client reads).
//!
//! - user-interactive auth resubmitted with only its `session` (a client
//!   asking where the flow stands): the plain `401` challenge, no
//!   `errcode`, the session echoed; for registration, device deletion and a
//!   password change alike;
//! - the deprecated media endpoints (`/_matrix/media/v3/config`,
//!   `download`, `thumbnail`), with authenticated media on.

use crate::common;

use common::{FederatedServer, Http, SynapseServer, TestCa};
use serde_json::{json, Value};

/// One server under test: its client, a user's token, device and media.
struct Side {
    label: &'static str,
    http: Http,
    token: String,
    device: String,
    mxc: String,
}

impl Side {
    async fn new(label: &'static str, url: &str, user: &str) -> Side {
        let http = Http::new(url);
        let token = http.register(user).await;
        let device = http.device_id(&token).await;
        let mxc = http
            .upload(&token, common::png(1, 1), "image/png", "one.png")
            .await;
        Side {
            label,
            http,
            token,
            device,
            mxc,
        }
    }

    /// `(server, media id)` of the upload.
    fn media(&self) -> (String, String) {
        let rest = self.mxc.strip_prefix("mxc://").unwrap();
        let (server, id) = rest.split_once('/').unwrap();
        (server.to_owned(), id.to_owned())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: bool,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let body = body.map(Value::to_string);
        self.http
            .call(
                method,
                path,
                token.then_some(self.token.as_str()),
                body.as_deref(),
            )
            .await
    }

    /// A UIA flow begun (a `401` with a session), then the same request
    /// again with `auth` carrying only that session.
    async fn session_only(
        &self,
        method: &str,
        path: &str,
        token: bool,
        body: Value,
    ) -> (Value, Value) {
        let (status, first) = self.call(method, path, token, Some(&body)).await;
        assert_eq!(
            status, 401,
            "{}: {method} {path} begins a flow: {first}",
            self.label
        );
        let session = first["session"].as_str().unwrap().to_owned();
        let mut again = body;
        again["auth"] = json!({ "session": session });
        let (status, second) = self.call(method, path, token, Some(&again)).await;
        assert_eq!(
            status, 401,
            "{}: {method} {path} with only the session: {second}",
            self.label
        );
        (first, second)
    }
}

/// `(status, errcode)`: what a client branches on.
fn verdict(answer: &(u16, Value)) -> (u16, Option<String>) {
    (answer.0, answer.1["errcode"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_uia_resubmission_with_only_its_session_and_the_deprecated_media_endpoints_are_answered_as_synapse_answers_them(
) {
    let ca = TestCa::new();
    let (ps, _) = FederatedServer::reserve();
    let synapse = SynapseServer::start(&ca, ps, &[]).await;
    let hotline_server = common::Server::start_with(&["--allow-registration"]).await;
    let sides = [
        Side::new("hotline", &hotline_server.url, "uia").await,
        Side::new("synapse", &synapse.url, "uia").await,
    ];

    // User-interactive auth: the plain challenge again, session echoed.
    for s in &sides {
        let flows = [
            (
                "POST",
                "/_matrix/client/v3/register".to_owned(),
                false,
                json!({"username": "another", "password": "correct horse battery"}),
            ),
            (
                "DELETE",
                format!("/_matrix/client/v3/devices/{}", s.device),
                true,
                json!({}),
            ),
            (
                "POST",
                "/_matrix/client/v3/account/password".to_owned(),
                true,
                json!({"new_password": "a new correct horse"}),
            ),
        ];
        for (method, path, token, body) in flows {
            let (first, second) = s.session_only(method, &path, token, body).await;
            assert!(
                second.get("errcode").is_none(),
                "{}: {path}: no errcode: {second}",
                s.label
            );
            assert_eq!(second["session"], first["session"], "{}: {path}", s.label);
            assert_eq!(second["flows"], first["flows"], "{}: {path}", s.label);
            assert!(
                second["completed"].as_array().is_none_or(|c| c.is_empty()),
                "{}: {path}: nothing completed: {second}",
                s.label
            );
        }
    }
    // The account and device are untouched by it: the token still works.
    for s in &sides {
        let (status, _) = s
            .call("GET", "/_matrix/client/v3/account/whoami", true, None)
            .await;
        assert_eq!(status, 200, "{}", s.label);
    }

    // The deprecated media endpoints, each server asked of its own upload.
    let mut answers: Vec<Vec<(String, (u16, Option<String>))>> = Vec::new();
    for s in &sides {
        let (server, id) = s.media();
        let asks = [
            (
                "config, with a token",
                "/_matrix/media/v3/config".to_owned(),
                true,
            ),
            (
                "config, without",
                "/_matrix/media/v3/config".to_owned(),
                false,
            ),
            (
                "download",
                format!("/_matrix/media/v3/download/{server}/{id}"),
                false,
            ),
            (
                "download, with a token",
                format!("/_matrix/media/v3/download/{server}/{id}"),
                true,
            ),
            (
                "download as a file name",
                format!("/_matrix/media/v3/download/{server}/{id}/one.png"),
                false,
            ),
            (
                "thumbnail",
                format!("/_matrix/media/v3/thumbnail/{server}/{id}?width=32&height=32"),
                false,
            ),
            (
                "download of no such file",
                format!("/_matrix/media/v3/download/{server}/nosuchfile"),
                false,
            ),
        ];
        let mut got = Vec::new();
        for (what, path, token) in asks {
            let answer = s.call("GET", &path, token, None).await;
            if what == "config, with a token" {
                assert!(
                    answer.1["m.upload.size"].as_u64().is_some_and(|n| n > 0),
                    "{}: {answer:?}",
                    s.label
                );
            }
            got.push((what.to_owned(), verdict(&answer)));
        }
        // The authenticated endpoint serves the same file.
        let served = s
            .http
            .get_bytes(
                &format!("/_matrix/client/v1/media/download/{server}/{id}"),
                &s.token,
            )
            .await;
        assert_eq!(
            (served.status, served.body),
            (200, common::png(1, 1)),
            "{}",
            s.label
        );
        answers.push(got);
    }
    assert_eq!(
        answers[0], answers[1],
        "Hotline's answers (left) are Synapse's (right)"
    );
}
