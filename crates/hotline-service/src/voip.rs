//! TURN credentials for calls (`/voip/turnServer`), minted with the TURN REST
//! API scheme coturn implements: username `{expiry}:{user}`, password
//! `base64(HMAC-SHA1(secret, username))`. The secret never leaves the server
//! and coturn; credentials expire on their own.

use base64::Engine;
use hmac::{Hmac, Mac};
use hotline_store::{WriteBatch, WriteOp};
use ruma::UserId;
use serde_json::{json, Value};

use crate::config::Turn;
use crate::{Error, Result, Services};

const META_SECRET: &str = "turn_shared_secret";
const META_URIS: &str = "turn_uris";

/// The username and password for `user` valid until `expiry` (Unix seconds).
pub fn turn_credentials(secret: &str, user: &UserId, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{user}");
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

impl Services {
    /// The TURN settings in force: the config file's, else those stored by
    /// `hotline turn-config`.
    pub fn turn_settings(&self) -> Result<Option<Turn>> {
        if let Some(t) = &self.config.turn {
            return Ok(Some(t.clone()));
        }
        let (Some(secret), Some(uris)) = (
            self.store.get_meta(META_SECRET)?,
            self.store.get_meta(META_URIS)?,
        ) else {
            return Ok(None);
        };
        let uris: Vec<String> = serde_json::from_str(&uris).map_err(Error::internal)?;
        Ok(Some(Turn {
            uris,
            shared_secret: secret,
            ttl_seconds: 86_400,
        }))
    }

    /// `GET /voip/turnServer`. Without TURN configured the answer is `{}`,
    /// which clients read as "no TURN server".
    pub fn turn_server(&self, user: &UserId) -> Result<Value> {
        let Some(turn) = self.turn_settings()? else {
            return Ok(json!({}));
        };
        let expiry = (crate::now_ms() / 1000) as u64 + turn.ttl_seconds;
        let (username, password) = turn_credentials(&turn.shared_secret, user, expiry);
        Ok(json!({
            "username": username,
            "password": password,
            "uris": turn.uris,
            "ttl": turn.ttl_seconds,
        }))
    }

    /// Stores the TURN URIs and returns the shared secret, creating it on
    /// first use (`hotline turn-config`).
    pub async fn configure_turn(&self, uris: &[String]) -> Result<String> {
        let secret = match self.store.get_meta(META_SECRET)? {
            Some(s) => s,
            None => crate::accounts::random_string(48),
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutMeta {
            key: META_SECRET.into(),
            value: secret.clone(),
        });
        batch.push(WriteOp::PutMeta {
            key: META_URIS.into(),
            value: serde_json::to_string(uris)?,
        });
        self.store.write(batch).await?;
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme coturn checks: known secret and username give this password
    /// (computed independently with `openssl dgst -sha1 -hmac`).
    #[test]
    fn turn_password_is_base64_hmac_sha1_of_the_username() {
        let user = UserId::parse("@alice:localhost").unwrap();
        let (u, p) = turn_credentials("s3cret", &user, 1_700_000_000);
        assert_eq!(u, "1700000000:@alice:localhost");
        assert_eq!(p, "II1XEO81eVden3YXxLdIDuhL5W4=");
    }
}
