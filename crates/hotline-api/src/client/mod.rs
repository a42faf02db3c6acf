//! The Matrix Client-Server API, one module per spec area.

mod account;
mod backup;
mod directory;
mod discovery;
mod keys;
pub(crate) mod media;
mod membership;
mod message;
mod presence;
mod push;
mod room;
mod session;
mod sync;
mod user_data;

use ruma::api::client as c;

use crate::{RouterExt, Routes};

pub fn routes() -> Routes {
    deprecated_media(Routes::new())
        // discovery
        .endpoint::<c::discovery::get_supported_versions::Request, _, _>(
            discovery::get_supported_versions_route,
        )
        .endpoint::<c::discovery::discover_homeserver::Request, _, _>(
            discovery::discover_homeserver_route,
        )
        .endpoint::<ruma::api::federation::discovery::discover_homeserver::Request, _, _>(
            discovery::discover_federation_server_route,
        )
        .endpoint::<c::discovery::get_capabilities::v3::Request, _, _>(
            discovery::get_capabilities_route,
        )
        .endpoint::<c::voip::get_turn_server_info::v3::Request, _, _>(
            discovery::get_turn_server_info_route,
        )
        // session
        .endpoint::<c::session::get_login_types::v3::Request, _, _>(session::get_login_types_route)
        .endpoint::<c::session::login::v3::Request, _, _>(session::login_route)
        .endpoint::<c::session::logout::v3::Request, _, _>(session::logout_route)
        .endpoint::<c::session::logout_all::v3::Request, _, _>(session::logout_all_route)
        .endpoint::<c::account::whoami::v3::Request, _, _>(session::whoami_route)
        // account and devices
        .endpoint::<c::account::register::v3::Request, _, _>(account::register_route)
        .endpoint::<c::account::get_username_availability::v3::Request, _, _>(
            account::get_username_availability_route,
        )
        .endpoint::<c::account::check_registration_token_validity::v1::Request, _, _>(
            account::check_registration_token_validity_route,
        )
        .endpoint::<c::account::change_password::v3::Request, _, _>(account::change_password_route)
        .endpoint::<c::device::get_devices::v3::Request, _, _>(account::get_devices_route)
        .endpoint::<c::device::get_device::v3::Request, _, _>(account::get_device_route)
        .endpoint::<c::device::update_device::v3::Request, _, _>(account::update_device_route)
        .endpoint::<c::device::delete_device::v3::Request, _, _>(account::delete_device_route)
        .endpoint::<c::device::delete_devices::v3::Request, _, _>(account::delete_devices_route)
        // profile, account data, filters
        .endpoint::<c::profile::get_profile::v3::Request, _, _>(user_data::get_profile_route)
        .endpoint::<c::profile::get_profile_field::v3::Request, _, _>(
            user_data::get_profile_field_route,
        )
        .endpoint::<c::profile::set_profile_field::v3::Request, _, _>(
            user_data::set_profile_field_route,
        )
        .endpoint::<c::config::set_global_account_data::v3::Request, _, _>(
            user_data::set_global_account_data_route,
        )
        .endpoint::<c::config::get_global_account_data::v3::Request, _, _>(
            user_data::get_global_account_data_route,
        )
        .endpoint::<c::config::set_room_account_data::v3::Request, _, _>(
            user_data::set_room_account_data_route,
        )
        .endpoint::<c::config::get_room_account_data::v3::Request, _, _>(
            user_data::get_room_account_data_route,
        )
        .endpoint::<c::tag::get_tags::v3::Request, _, _>(user_data::get_room_tags_route)
        .endpoint::<c::tag::create_tag::v3::Request, _, _>(user_data::set_room_tag_route)
        .endpoint::<c::tag::delete_tag::v3::Request, _, _>(user_data::delete_room_tag_route)
        .endpoint::<c::filter::create_filter::v3::Request, _, _>(user_data::create_filter_route)
        .endpoint::<c::filter::get_filter::v3::Request, _, _>(user_data::get_filter_route)
        // push rules
        .endpoint::<c::push::get_pushers::v3::Request, _, _>(push::get_pushers_route)
        .endpoint::<c::push::set_pusher::v3::Request, _, _>(push::set_pusher_route)
        .endpoint::<c::push::get_pushrules_all::v3::Request, _, _>(push::get_pushrules_all_route)
        .endpoint::<c::push::get_pushrules_global_scope::v3::Request, _, _>(
            push::get_push_rules_global_route,
        )
        .endpoint::<c::push::get_pushrule::v3::Request, _, _>(push::get_push_rule_route)
        .endpoint::<c::push::set_pushrule::v3::Request, _, _>(push::set_push_rule_route)
        .endpoint::<c::push::delete_pushrule::v3::Request, _, _>(push::delete_push_rule_route)
        .endpoint::<c::push::get_pushrule_enabled::v3::Request, _, _>(
            push::is_push_rule_enabled_route,
        )
        .endpoint::<c::push::set_pushrule_enabled::v3::Request, _, _>(
            push::set_push_rule_enabled_route,
        )
        .endpoint::<c::push::get_pushrule_actions::v3::Request, _, _>(
            push::get_push_rule_actions_route,
        )
        .endpoint::<c::push::set_pushrule_actions::v3::Request, _, _>(
            push::set_push_rule_actions_route,
        )
        // presence
        .endpoint::<c::presence::get_presence::v3::Request, _, _>(presence::get_presence_route)
        .endpoint::<c::presence::set_presence::v3::Request, _, _>(presence::set_presence_route)
        // published room directory
        .endpoint::<c::directory::get_room_visibility::v3::Request, _, _>(
            directory::get_room_visibility_on_directory_route,
        )
        .endpoint::<c::directory::set_room_visibility::v3::Request, _, _>(
            directory::set_room_visibility_on_directory_route,
        )
        .endpoint::<c::directory::get_public_rooms::v3::Request, _, _>(
            directory::get_public_rooms_route,
        )
        .endpoint::<c::directory::get_public_rooms_filtered::v3::Request, _, _>(
            directory::query_public_rooms_route,
        )
        // rooms
        .endpoint::<c::room::create_room::v3::Request, _, _>(room::create_room_route)
        .endpoint::<c::membership::joined_rooms::v3::Request, _, _>(room::joined_rooms_route)
        .endpoint::<c::room::get_room_event::v3::Request, _, _>(room::get_room_event_route)
        .endpoint::<c::context::get_context::v3::Request, _, _>(room::get_context_route)
        .endpoint::<c::membership::get_member_events::v3::Request, _, _>(
            room::get_member_events_route,
        )
        .endpoint::<c::membership::joined_members::v3::Request, _, _>(room::joined_members_route)
        .endpoint::<c::state::get_state_events::v3::Request, _, _>(room::get_state_events_route)
        .endpoint::<c::state::get_state_event_for_key::v3::Request, _, _>(
            room::get_state_event_for_key_route,
        )
        .endpoint::<c::state::send_state_event::v3::Request, _, _>(room::send_state_event_route)
        // The empty state key: `/state/{type}` and `/state/{type}/` (axum
        // path segments cannot be empty, so ruma's `{stateKey}` misses them).
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
            axum::routing::get(room::get_state_event_empty_key_route)
                .put(room::send_state_event_empty_key_route),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
            axum::routing::get(room::get_state_event_empty_key_route)
                .put(room::send_state_event_empty_key_route),
        )
        .endpoint::<c::alias::create_alias::v3::Request, _, _>(room::create_alias_route)
        .endpoint::<c::alias::get_alias::v3::Request, _, _>(room::get_alias_route)
        .endpoint::<c::alias::delete_alias::v3::Request, _, _>(room::delete_alias_route)
        // membership
        .endpoint::<c::membership::invite_user::v3::Request, _, _>(membership::invite_user_route)
        .endpoint::<c::membership::join_room_by_id::v3::Request, _, _>(
            membership::join_room_by_id_route,
        )
        .endpoint::<c::membership::join_room_by_id_or_alias::v3::Request, _, _>(
            membership::join_room_by_id_or_alias_route,
        )
        .endpoint::<c::knock::knock_room::v3::Request, _, _>(membership::knock_room_route)
        .endpoint::<c::membership::leave_room::v3::Request, _, _>(membership::leave_room_route)
        .endpoint::<c::membership::kick_user::v3::Request, _, _>(membership::kick_user_route)
        .endpoint::<c::membership::ban_user::v3::Request, _, _>(membership::ban_user_route)
        .endpoint::<c::membership::unban_user::v3::Request, _, _>(membership::unban_user_route)
        .endpoint::<c::membership::forget_room::v3::Request, _, _>(membership::forget_room_route)
        // messages
        .endpoint::<c::message::send_message_event::v3::Request, _, _>(
            message::send_message_event_route,
        )
        .endpoint::<c::message::get_message_events::v3::Request, _, _>(
            message::get_message_events_route,
        )
        .endpoint::<c::redact::redact_event::v3::Request, _, _>(message::redact_event_route)
        .endpoint::<c::typing::create_typing_event::v3::Request, _, _>(
            message::create_typing_event_route,
        )
        .endpoint::<c::receipt::create_receipt::v3::Request, _, _>(message::create_receipt_route)
        .endpoint::<c::read_marker::set_read_marker::v3::Request, _, _>(
            message::set_read_marker_route,
        )
        // sync
        .endpoint::<c::sync::sync_events::v3::Request, _, _>(sync::sync_events_route)
        .endpoint::<c::sync::sync_events::v5::Request, _, _>(sync::sync_events_v5_route)
        // end-to-end encryption
        .endpoint::<c::keys::upload_keys::v3::Request, _, _>(keys::upload_keys_route)
        .endpoint::<c::keys::get_keys::v3::Request, _, _>(keys::get_keys_route)
        .endpoint::<c::keys::claim_keys::v3::Request, _, _>(keys::claim_keys_route)
        .endpoint::<c::keys::get_key_changes::v3::Request, _, _>(keys::get_key_changes_route)
        .endpoint::<c::keys::upload_signing_keys::v3::Request, _, _>(
            keys::upload_signing_keys_route,
        )
        .endpoint::<c::keys::upload_signatures::v3::Request, _, _>(keys::upload_signatures_route)
        .endpoint::<c::to_device::send_event_to_device::v3::Request, _, _>(
            keys::send_event_to_device_route,
        )
        // key backup
        .endpoint::<c::backup::create_backup_version::v3::Request, _, _>(
            backup::create_backup_version_route,
        )
        .endpoint::<c::backup::get_latest_backup_info::v3::Request, _, _>(
            backup::get_latest_backup_info_route,
        )
        .endpoint::<c::backup::get_backup_info::v3::Request, _, _>(backup::get_backup_info_route)
        .endpoint::<c::backup::update_backup_version::v3::Request, _, _>(
            backup::update_backup_version_route,
        )
        .endpoint::<c::backup::delete_backup_version::v3::Request, _, _>(
            backup::delete_backup_version_route,
        )
        .endpoint::<c::backup::add_backup_keys::v3::Request, _, _>(backup::add_backup_keys_route)
        .endpoint::<c::backup::add_backup_keys_for_room::v3::Request, _, _>(
            backup::add_backup_keys_for_room_route,
        )
        .endpoint::<c::backup::add_backup_keys_for_session::v3::Request, _, _>(
            backup::add_backup_keys_for_session_route,
        )
        .endpoint::<c::backup::get_backup_keys::v3::Request, _, _>(backup::get_backup_keys_route)
        .endpoint::<c::backup::get_backup_keys_for_room::v3::Request, _, _>(
            backup::get_backup_keys_for_room_route,
        )
        .endpoint::<c::backup::get_backup_keys_for_session::v3::Request, _, _>(
            backup::get_backup_keys_for_session_route,
        )
        .endpoint::<c::backup::delete_backup_keys::v3::Request, _, _>(
            backup::delete_backup_keys_route,
        )
        .endpoint::<c::backup::delete_backup_keys_for_room::v3::Request, _, _>(
            backup::delete_backup_keys_for_room_route,
        )
        .endpoint::<c::backup::delete_backup_keys_for_session::v3::Request, _, _>(
            backup::delete_backup_keys_for_session_route,
        )
        // media
        .endpoint::<c::media::create_content::v3::Request, _, _>(media::create_content_route)
        .endpoint::<c::authenticated_media::get_content::v1::Request, _, _>(
            media::get_content_route,
        )
        .endpoint::<c::authenticated_media::get_content_as_filename::v1::Request, _, _>(
            media::get_content_as_filename_route,
        )
        .endpoint::<c::authenticated_media::get_content_thumbnail::v1::Request, _, _>(
            media::get_content_thumbnail_route,
        )
        .endpoint::<c::authenticated_media::get_media_config::v1::Request, _, _>(
            media::get_media_config_route,
        )
}

/// The deprecated media endpoints released clients still call, answered as
/// Synapse answers them with authenticated media on (`media::get_content_v3_route`).
#[allow(deprecated)]
fn deprecated_media(routes: Routes) -> Routes {
    routes
        .endpoint::<c::media::get_media_config::v3::Request, _, _>(media::get_media_config_v3_route)
        .endpoint::<c::media::get_content::v3::Request, _, _>(media::get_content_v3_route)
        .endpoint::<c::media::get_content_as_filename::v3::Request, _, _>(
            media::get_content_v3_route,
        )
        .endpoint::<c::media::get_content_thumbnail::v3::Request, _, _>(media::get_content_v3_route)
}
