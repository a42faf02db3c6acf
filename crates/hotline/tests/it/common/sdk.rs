//! `matrix-sdk` devices for tests: signed in, syncing in the background,
//! collecting what they decrypt. A module beside `common` (`crate::sdk`):
//! its futures need the binary's `#![recursion_limit = "256"]`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::uiaa::{AuthData, Password, UserIdentifier};
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use matrix_sdk::{Client, Room};

pub const PASSWORD: &str = "correct horse battery";

/// A signed-in device with a background sync loop and the message bodies it
/// has decrypted.
pub struct Device {
    pub client: Client,
    pub seen: Arc<Mutex<Vec<String>>>,
    pub sync: tokio::task::JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

pub async fn register(url: &str, name: &str) {
    crate::common::sdk_register(url, name, PASSWORD).await;
}

pub async fn login(url: &str, name: &str, device: &str) -> Device {
    let client = Client::builder().homeserver_url(url).build().await.unwrap();
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .device_id(device)
        .initial_device_display_name(device)
        .send()
        .await
        .unwrap();
    client
        .encryption()
        .wait_for_e2ee_initialization_tasks()
        .await;
    Device::syncing(client)
}

impl Device {
    /// A signed-in client, syncing in the background from now on and
    /// collecting the message bodies it decrypts.
    pub fn syncing(client: Client) -> Device {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(ev.content.body().to_owned());
            }
        });
        let c = client.clone();
        let sync = tokio::spawn(async move {
            let _ = c
                .sync(SyncSettings::default().timeout(Duration::from_secs(2)))
                .await;
        });
        Device { client, seen, sync }
    }
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_seen(d: &Device, body: &str) {
    let who = format!(
        "{} {} decrypts {body:?}",
        d.client.user_id().unwrap(),
        d.client.device_id().unwrap()
    );
    eventually(&who, || async {
        d.seen.lock().unwrap().iter().any(|b| b == body)
    })
    .await;
}

pub async fn joined_room(d: &Device, room: &OwnedRoomId) -> Room {
    eventually("the room is known", || async {
        d.client.get_room(room).is_some()
    })
    .await;
    d.client.get_room(room).unwrap()
}

/// Alice opens an encrypted DM with Bob; Bob's first device joins.
pub async fn encrypted_dm(alice: &Device, bob: &Device) -> OwnedRoomId {
    let bob_id = bob.client.user_id().unwrap().to_owned();
    let room = alice.client.create_dm(&bob_id).await.unwrap();
    let id = room.room_id().to_owned();
    eventually("Bob sees the invite", || async {
        bob.client.get_room(&id).is_some()
    })
    .await;
    bob.client.join_room_by_id(&id).await.unwrap();
    // Bob's member event, not the room summary's count: a server sends the
    // summary only to clients that lazy-load members (Synapse), and these
    // do not.
    eventually("Alice sees Bob joined", || async {
        let r = alice.client.get_room(&id).unwrap();
        r.get_member_no_sync(&bob_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|m| *m.membership() == MembershipState::Join)
    })
    .await;
    id
}

pub fn password_auth(user: &OwnedUserId) -> AuthData {
    AuthData::Password(Password::new(
        UserIdentifier::from(user),
        PASSWORD.to_owned(),
    ))
}
