//! Reads of end-to-end encryption keys: device keys, one-time and fallback
//! keys, cross-signing keys and signatures, key changes, and the to-device
//! queues that carry key exchanges.

use crate::*;

/// End-to-end encryption keys and to-device messages.
pub trait KeyStore {
    /// `(device_id, json)` of every device of the user that uploaded keys.
    fn device_keys(&self, user_id: &str) -> Result<Vec<(String, String)>>;
    /// `(algorithm, count)` of the device's unclaimed one-time keys.
    fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<Vec<(String, i64)>>;
    /// Algorithms of the device's fallback keys not yet handed out.
    fn unused_fallback_algorithms(&self, user_id: &str, device_id: &str) -> Result<Vec<String>>;
    /// Some unclaimed one-time key `(key_id, json)` of `algorithm`.
    fn find_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>>;
    /// The device's fallback key `(key_id, json)` of `algorithm`.
    fn fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>>;
    /// `(key_type, json)` of the user's cross-signing keys.
    fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>>;
    /// Signatures over the user's keys.
    fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignatureRow>>;
    /// Users whose keys changed with `from < pos <= to`.
    fn key_changes(&self, from: i64, to: i64) -> Result<Vec<String>>;
    /// The device's queued to-device messages with `pos > after`, oldest first.
    fn to_device_since(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceRow>>;
    /// Position of the device's newest queued to-device message.
    fn to_device_latest(&self, user_id: &str, device_id: &str) -> Result<Option<i64>>;
}
