//! Signing in, once: the archiver keeps one device for good. Its id is
//! chosen and written down before the first login (`device_id`), so the
//! encrypted store and the session always name the same device; the
//! session (user, device, access token) is kept in `session.json` (0600)
//! and restored at each start. A token the server no longer takes is
//! replaced by logging in again as the same device, which keeps its keys.

use std::path::Path;

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::ruma::api::client::uiaa::{AuthData, Password, UserIdentifier};
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::OwnedUserId;
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::Client;
use rand::Rng;

use crate::state::{write_private, Secrets};
use crate::{Config, Error};

const SESSION_FILE: &str = "session.json";
const DEVICE_FILE: &str = "device_id";
const STORE_DIR: &str = "store";

/// This archiver's device id: read, or chosen and written down.
fn device_id(state: &Path) -> Result<String, Error> {
    let path = state.join(DEVICE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    let mut rng = rand::thread_rng();
    let id: String = (0..10)
        .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
        .collect();
    let id = format!("ARCHIVER{id}");
    write_private(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

async fn build(config: &Config, secrets: &Secrets) -> Result<Client, Error> {
    Client::builder()
        .homeserver_url(&config.homeserver)
        .sqlite_store(
            config.state.join(STORE_DIR),
            Some(&secrets.store_passphrase),
        )
        .build()
        .await
        .map_err(|e| Error::Matrix(format!("setting up the client: {e}")))
}

fn unknown_token(e: &matrix_sdk::HttpError) -> bool {
    matches!(e.client_api_error_kind(), Some(ErrorKind::UnknownToken(_)))
}

/// A signed-in client with its end-to-end encryption ready.
pub(crate) async fn connect(config: &Config, secrets: &Secrets) -> Result<Client, Error> {
    let user: OwnedUserId = config
        .user
        .parse()
        .map_err(|_| Error::Config(format!("--user {}: not a user id", config.user)))?;
    let device = device_id(&config.state)?;
    let session_path = config.state.join(SESSION_FILE);
    let stored: Option<MatrixSession> = match std::fs::read(&session_path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config(format!("{}: {e}", session_path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&session_path, e)),
    };
    if let Some(session) = stored {
        if session.meta.user_id != user || session.meta.device_id.as_str() != device {
            return Err(Error::Config(format!(
                "{} holds the session of {} {}, not of {user} {device}; use another --state directory",
                session_path.display(),
                session.meta.user_id,
                session.meta.device_id
            )));
        }
        let client = build(config, secrets).await?;
        client
            .matrix_auth()
            .restore_session(session, RoomLoadSettings::default())
            .await
            .map_err(|e| Error::Matrix(format!("restoring the session: {e}")))?;
        match client.whoami().await {
            Ok(_) => {
                client
                    .encryption()
                    .wait_for_e2ee_initialization_tasks()
                    .await;
                tracing::info!(%user, device = %device, "session restored");
                return Ok(client);
            }
            Err(e) if unknown_token(&e) => {
                tracing::warn!(%user, device = %device, "the server no longer takes the stored token; signing in again as the same device");
            }
            Err(e) => return Err(Error::Matrix(format!("checking the session: {e}"))),
        }
    }
    let client = build(config, secrets).await?;
    client
        .matrix_auth()
        .login_username(user.as_str(), &secrets.password)
        .device_id(&device)
        .initial_device_display_name("Records office archiver")
        .send()
        .await
        .map_err(|e| Error::Matrix(format!("signing in as {user}: {e}")))?;
    let session = client
        .matrix_auth()
        .session()
        .ok_or_else(|| Error::Matrix("signed in, but no session".into()))?;
    if session.meta.user_id != user {
        return Err(Error::Config(format!(
            "signed in as {}, not as {user}",
            session.meta.user_id
        )));
    }
    write_private(
        &session_path,
        &serde_json::to_vec(&session).expect("a session serializes"),
    )?;
    client
        .encryption()
        .wait_for_e2ee_initialization_tasks()
        .await;
    tracing::info!(%user, device = %device, "signed in");
    Ok(client)
}

/// Creates the account's cross-signing keys if it has none (so offices can
/// verify the archiver's device), with the password for the server's
/// user-interactive auth. Idempotent: an account with an identity is left
/// as it is.
pub(crate) async fn bootstrap_cross_signing(
    client: &Client,
    secrets: &Secrets,
) -> Result<(), Error> {
    let user = client
        .user_id()
        .ok_or_else(|| Error::Matrix("not signed in".into()))?
        .to_owned();
    let auth = AuthData::Password(Password::new(
        UserIdentifier::from(user),
        secrets.password.clone(),
    ));
    client
        .encryption()
        .bootstrap_cross_signing_if_needed(Some(auth))
        .await
        .map_err(|e| Error::Matrix(format!("cross-signing: {e}")))
}
