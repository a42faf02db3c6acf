//! Reads of accounts: users, access tokens, devices, registration tokens,
//! filters and the server's own key-value metadata.

use crate::*;

/// Accounts: users, access tokens, devices, registration tokens, filters,
/// server metadata.
pub trait AccountStore {
    fn get_user(&self, user_id: &str) -> Result<Option<UserRow>>;
    fn count_users(&self) -> Result<i64>;
    fn find_token(&self, token_hash: &str) -> Result<Option<TokenRow>>;
    fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRow>>;
    fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>>;
    fn get_registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRow>>;
    fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>>;
    fn get_meta(&self, key: &str) -> Result<Option<String>>;
    /// Every metadata entry whose key starts with `prefix`, by key.
    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>>;
    fn pushers_of(&self, user_id: &str) -> Result<Vec<PusherRow>>;
    fn all_pushers(&self) -> Result<Vec<PusherRow>>;
}
