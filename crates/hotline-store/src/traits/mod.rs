//! The storage interface by domain. [`crate::Store`] is the sum of these
//! traits plus the write path; an engine implements every one of them, each
//! in the engine's own file for that domain (the SQLite engine's are
//! `sqlite/accounts.rs`, `sqlite/rooms.rs`, ...).
//!
//! Calling a method of these traits needs the trait in scope:
//! `use hotline_store::prelude::*;` brings them all.

mod accounts;
mod ephemeral;
mod federation;
mod identity;
mod key_backup;
mod keys;
mod media;
mod rooms;

pub use accounts::AccountStore;
pub use ephemeral::EphemeralStore;
#[cfg(test)]
pub(crate) use federation::queue_keeps_order_per_destination_and_never_reuses_a_number;
pub use federation::FederationStore;
pub use identity::IdentityStore;
pub use key_backup::KeyBackupStore;
pub use keys::KeyStore;
#[cfg(test)]
pub(crate) use media::remote_media_is_kept_per_origin_and_replaced_when_fetched_again;
pub use media::MediaStore;
#[cfg(test)]
pub(crate) use rooms::backfilled_events_go_before_all_others_and_outliers_stay_out_of_the_timeline;
pub use rooms::RoomStore;
