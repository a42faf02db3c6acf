//! The Matrix Server-Server API: what other servers ask of this one, on
//! the federation listener (TLS), and the client that asks them
//! ([`client`], the service's [`hotline_service::federation::Transport`]).
//!
//! **API Boundary:** every federation handler that needs to know who asks
//! takes [`Signed`], which checks the request's `X-Matrix` signature and
//! the allow-list (through the service) before the handler runs; the key
//! endpoints are the only unauthenticated ones, as the spec has them.

pub mod client;
mod events;
pub(crate) mod keys;
mod media;
mod membership;
mod query;
pub mod resolve;
mod transactions;
mod user;

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::Router;
use hotline_service::{Error, Services};
use ruma::api::federation as f;
use ruma::OwnedServerName;

use crate::extract::read_body;
use crate::{ApiError, AppState, RouterExt, Routes};

pub(crate) use keys::get_server_keys_route;

/// Every federation route.
pub fn routes() -> Routes {
    Routes::new()
        .endpoint::<f::discovery::get_server_version::v1::Request, _, _>(
            keys::get_server_version_route,
        )
        .endpoint::<f::discovery::get_server_keys::v2::Request, _, _>(get_server_keys_route)
        .endpoint::<f::discovery::get_remote_server_keys::v2::Request, _, _>(
            keys::get_remote_server_keys_route,
        )
        .endpoint::<f::discovery::get_remote_server_keys_batch::v2::Request, _, _>(
            keys::get_remote_server_keys_batch_route,
        )
        .endpoint::<f::query::get_profile_information::v1::Request, _, _>(
            query::get_profile_information_route,
        )
        .endpoint::<f::membership::prepare_join_event::v1::Request, _, _>(
            membership::prepare_join_event_route,
        )
        .endpoint::<f::membership::create_join_event::v2::Request, _, _>(
            membership::create_join_event_route,
        )
        .endpoint::<f::membership::create_invite::v2::Request, _, _>(
            membership::create_invite_route,
        )
        .endpoint::<f::membership::prepare_leave_event::v1::Request, _, _>(
            membership::prepare_leave_event_route,
        )
        .endpoint::<f::membership::create_leave_event::v2::Request, _, _>(
            membership::create_leave_event_route,
        )
        .endpoint::<f::membership::prepare_knock_event::v1::Request, _, _>(
            membership::prepare_knock_event_route,
        )
        .endpoint::<f::membership::create_knock_event::v1::Request, _, _>(
            membership::create_knock_event_route,
        )
        .endpoint::<f::query::get_room_information::v1::Request, _, _>(
            query::get_room_information_route,
        )
        .endpoint::<f::event::get_event::v1::Request, _, _>(events::get_event_route)
        .endpoint::<f::event::get_room_state_ids::v1::Request, _, _>(
            events::get_room_state_ids_route,
        )
        .endpoint::<f::event::get_room_state::v1::Request, _, _>(events::get_room_state_route)
        .endpoint::<f::authorization::get_event_authorization::v1::Request, _, _>(
            events::get_event_authorization_route,
        )
        .endpoint::<f::backfill::get_backfill::v1::Request, _, _>(events::get_backfill_route)
        .endpoint::<f::event::get_missing_events::v1::Request, _, _>(
            events::get_missing_events_route,
        )
        .endpoint::<f::device::get_devices::v1::Request, _, _>(user::get_devices_route)
        .endpoint::<f::keys::get_keys::v1::Request, _, _>(user::get_keys_route)
        .endpoint::<f::keys::claim_keys::v1::Request, _, _>(user::claim_keys_route)
        .endpoint::<f::transactions::send_transaction_message::v1::Request, _, _>(
            transactions::send_transaction_message_route,
        )
        .route(
            hotline_service::peer_officials::FEDERATION_DIRECTORY_PATH,
            axum::routing::get(query::get_hotline_directory_route),
        )
        .route(
            "/_hotline/federation/v1/line_invites/{code}",
            axum::routing::get(query::preview_line_invite_for_peer_route),
        )
        .route(
            "/_hotline/federation/v1/line_invites/{code}/redeem",
            axum::routing::post(query::redeem_line_invite_for_peer_route),
        )
        .endpoint::<f::authenticated_media::get_content::v1::Request, _, _>(
            media::get_content_route,
        )
        .endpoint::<f::authenticated_media::get_content_thumbnail::v1::Request, _, _>(
            media::get_content_thumbnail_route,
        )
}

/// The federation listener's application: the federation routes and
/// nothing else (no client API, no web app), counted into `metrics`.
pub fn app(services: Arc<Services>, metrics: Arc<crate::metrics::Metrics>) -> Router {
    let state = AppState {
        services,
        metrics,
        server_keys: Default::default(),
    };
    routes()
        .router
        .fallback(crate::unrecognized_route)
        .method_not_allowed_fallback(crate::method_not_allowed)
        .layer(axum::middleware::from_fn(crate::error::contain_failures))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// A federation request whose signature checked out: the origin server and
/// the body as sent (at most `max_request_bytes`).
pub struct Signed {
    pub origin: OwnedServerName,
    pub body: bytes::Bytes,
}

impl Signed {
    /// The body as one event (`send_join`, `send_leave`, `send_knock`).
    pub fn pdu(&self) -> Result<Box<serde_json::value::RawValue>, hotline_service::Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| hotline_service::Error::bad_json(format!("Not an event: {e}")))
    }
}

impl FromRequest<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let limit = state.services.config.max_request_bytes;
        let body = read_body(Request::from_parts(parts.clone(), body), limit).await?;
        let signed = http::Request::from_parts(parts, body);
        if !signed.body().is_empty()
            && serde_json::from_slice::<serde_json::Value>(signed.body()).is_err()
        {
            return Err(Error::NotJson.into());
        }
        let origin = state.services.authenticate_federation(&signed).await?;
        Ok(Signed {
            origin,
            body: signed.into_body(),
        })
    }
}
