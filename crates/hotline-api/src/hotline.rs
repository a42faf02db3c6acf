//! Hotline's own API (`/_hotline/v1`): enrolment, the directory of
//! attestations, line invites, aides on lines, the contact log, the
//! device's screenshot watermark tag. Documented in `docs/hotline-api.yaml`.
//! Also the server key endpoint `/_matrix/key/v2/server` (attestations are
//! checked against it), as on the federation listener.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use hotline_service::identity::{LineInviteRedemption, LineInviteRow, OfficialRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{Auth, ClientAddr, IpLimited, JsonBody, PathArgs, QueryArgs};
use crate::{ApiResult, AppState, Routes};

pub fn routes() -> Routes {
    Routes::new()
        .route(
            "/_matrix/key/v2/server",
            get(crate::federation::get_server_keys_route),
        )
        .route("/_hotline/v1/directory", get(get_directory_route))
        .route(
            "/_hotline/v1/directory/{server_name}",
            get(get_peer_directory_route),
        )
        .route("/_hotline/v1/resembles", get(get_resembled_official_route))
        .route(
            "/_hotline/v1/enrol/{code}",
            get(preview_enrolment_route).post(redeem_enrolment_route),
        )
        .route(
            "/_hotline/v1/line_invites",
            get(list_line_invites_route).post(create_line_invite_route),
        )
        .route(
            "/_hotline/v1/line_invites/{code}",
            get(preview_line_invite_route).delete(revoke_line_invite_route),
        )
        .route(
            "/_hotline/v1/line_invites/{code}/redeem",
            post(redeem_line_invite_route),
        )
        .route("/_hotline/v1/contact_log", get(get_contact_log_route))
        .route("/_hotline/v1/watermark", get(get_watermark_route))
        .route(
            "/_hotline/v1/lines/{room_id}/record",
            axum::routing::put(set_line_record_route),
        )
        .route(
            "/_hotline/v1/lines/{room_id}/urgent",
            get(get_urgent_quota_route),
        )
        .route(
            "/_hotline/v1/availability",
            axum::routing::put(set_own_availability_route),
        )
        .route(
            "/_hotline/v1/availability/{user_id}",
            get(get_availability_route).put(set_availability_route),
        )
        .route(
            "/_hotline/v1/lines/{room_id}/aides/{user_id}",
            axum::routing::put(add_line_aide_route).delete(remove_line_aide_route),
        )
}

/// `GET /_hotline/v1/watermark`: the requesting device's watermark tag
/// (32 bits, assigned on first use and kept), which the web app draws over
/// every view of a line so a leaked screenshot traces back to the device
/// (`hotline trace`). Only the device itself learns its tag.
pub async fn get_watermark_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    let tag = s
        .services
        .watermark_tag(sender.user_id.as_str(), sender.device_id.as_str())
        .await?;
    Ok(Json(json!({ "tag": tag })))
}

/// `GET /_hotline/v1/directory`: current attestations and revocations,
/// and the peers whose directories `/_hotline/v1/directory/{serverName}`
/// serves.
pub async fn get_directory_route(
    State(s): State<AppState>,
    Auth(_sender): Auth,
) -> ApiResult<Json<Value>> {
    let mut directory = s.services.directory()?;
    let peers = match s.services.federation.enabled() {
        true => s.services.federation.allowed(),
        false => Vec::new(),
    };
    directory["peers"] = json!(peers);
    Ok(Json(directory))
}

/// `GET /_hotline/v1/directory/{serverName}`: a peer government's
/// directory as its server signed it, with its key document and the keys
/// pinned here, for the client to verify.
pub async fn get_peer_directory_route(
    State(s): State<AppState>,
    Auth(_sender): Auth,
    PathArgs(server): PathArgs<ruma::OwnedServerName>,
) -> ApiResult<Json<Value>> {
    let d = s.services.peer_directory(&server).await?;
    Ok(Json(json!({
        "directory": d.directory,
        "server_keys": d.server_keys,
        "pinned_keys": d.pinned,
    })))
}

#[derive(Deserialize)]
pub struct ResemblesQuery {
    user_id: ruma::OwnedUserId,
    name: String,
}

/// `GET /_hotline/v1/resembles?user_id=U&name=N`: the official whose name
/// `N` (U's display name) passes for, if any but U themself: `{}` when
/// none.
pub async fn get_resembled_official_route(
    State(s): State<AppState>,
    Auth(_sender): Auth,
    QueryArgs(q): QueryArgs<ResemblesQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        match s.services.resembled_official(&q.user_id, &q.name)? {
            Some(o) => json!({"official": {
                "user_id": o.user_id, "name": o.name, "title": o.title, "country": o.country,
            }}),
            None => json!({}),
        },
    ))
}

#[derive(Deserialize)]
pub struct EnrolBody {
    password: String,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// `GET /_hotline/v1/enrol/{code}`: whose enrolment the code opens (name,
/// title, country, office, role, user id, expiry). No token: the person
/// enrolling has none yet. Each look is a code probe for the address.
pub async fn preview_enrolment_route(
    State(s): State<AppState>,
    _: IpLimited,
    ClientAddr(ip): ClientAddr,
    PathArgs(code): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    // Without a user, the address stands for one in the per-user bucket too.
    let who = ip.map_or_else(|| "anonymous".to_owned(), |ip| format!("anonymous@{ip}"));
    s.services.ratelimit.check_code_probe(&who, ip)?;
    let o = s.services.preview_enrolment(&code)?;
    let mut v = official_json(&o);
    v["user_id"] = json!(o.user_id);
    v["expires_ts"] = json!(o.enrol_expires_ts);
    Ok(Json(v))
}

/// Whose enrolment it is, as the office enrolled them.
fn official_json(o: &OfficialRow) -> Value {
    json!({
        "name": o.name,
        "title": o.title,
        "country": o.country,
        "office": o.office,
        "role": o.role,
    })
}

/// `POST /_hotline/v1/enrol/{code}`: set the password, get a session.
pub async fn redeem_enrolment_route(
    State(s): State<AppState>,
    _: IpLimited,
    PathArgs(code): PathArgs<String>,
    JsonBody(body): JsonBody<EnrolBody>,
) -> ApiResult<Json<Value>> {
    let (session, official) = s
        .services
        .redeem_enrolment(
            &code,
            body.password,
            body.device_id,
            body.initial_device_display_name,
        )
        .await?;
    Ok(Json(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        // Whose enrolment this is, for the enrolment screens.
        "official": official_json(&official),
    })))
}

fn invite_json(s: &AppState, i: &LineInviteRow, redeemed_by: &[LineInviteRedemption]) -> Value {
    let base = s
        .services
        .config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", s.services.config.listen));
    json!({
        "code": i.code,
        // The issuing server is named, so a principal of another server
        // redeems it through their own.
        "url": format!(
            "{}/#/line/{}/{}",
            base.trim_end_matches('/'),
            i.code,
            s.services.server_name()
        ),
        "server": s.services.server_name(),
        "principal": i.principal,
        "created_by": i.created_by,
        "for_user": i.for_user,
        "max_uses": i.uses_allowed,
        "uses": i.uses,
        "expires_ts": i.expires_ts,
        "revoked": i.revoked,
        "created_ts": i.created_ts,
        "redeemed_by": redeemed_by
            .iter()
            .map(|r| json!({"user_id": r.user_id, "ts": r.ts}))
            .collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
pub struct CreateInviteBody {
    max_uses: Option<i64>,
    expires_in_ms: Option<i64>,
    for_user: Option<String>,
}

/// `POST /_hotline/v1/line_invites`.
pub async fn create_line_invite_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<CreateInviteBody>,
) -> ApiResult<Json<Value>> {
    let row = s
        .services
        .create_line_invite(
            &sender.user_id,
            body.max_uses,
            body.expires_in_ms,
            body.for_user,
        )
        .await?;
    Ok(Json(invite_json(&s, &row, &[])))
}

/// `GET /_hotline/v1/line_invites`.
pub async fn list_line_invites_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    let invites: Vec<Value> = s
        .services
        .line_invites(&sender.user_id)?
        .iter()
        .map(|(i, by)| invite_json(&s, i, by))
        .collect();
    Ok(Json(json!({ "invites": invites })))
}

/// `GET /_hotline/v1/line_invites/{code}`: who is calling (the inviting
/// principal and the expiry), for any signed-in user holding the code.
/// A probe of a guessable code: limited per user and per address on top of
/// the request limits.
pub async fn preview_line_invite_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    ClientAddr(ip): ClientAddr,
    PathArgs(code): PathArgs<String>,
    QueryArgs(q): QueryArgs<IssuerQuery>,
) -> ApiResult<Json<Value>> {
    s.services
        .ratelimit
        .check_code_probe(sender.user_id.as_str(), ip)?;
    let p = match issuing_server(&s, &q) {
        Some(server) => {
            s.services
                .preview_remote_line_invite(&sender.user_id, &code, server)
                .await?
        }
        None => s.services.preview_line_invite(&sender.user_id, &code)?,
    };
    Ok(Json(hotline_service::lines_across::preview_json(&p)))
}

/// `?server=S`: the server that issued a line invite, when not this one.
#[derive(Deserialize, Default)]
pub struct IssuerQuery {
    server: Option<ruma::OwnedServerName>,
}

fn issuing_server<'a>(s: &AppState, q: &'a IssuerQuery) -> Option<&'a ruma::ServerName> {
    q.server
        .as_deref()
        .filter(|server| *server != s.services.server_name())
}

/// `DELETE /_hotline/v1/line_invites/{code}`.
pub async fn revoke_line_invite_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(code): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    s.services
        .revoke_line_invite(&sender.user_id, &code)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /_hotline/v1/line_invites/{code}/redeem`: opens the line; with
/// `?server=S`, the line an invite of that server opens, asked of it over
/// federation.
pub async fn redeem_line_invite_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(code): PathArgs<String>,
    QueryArgs(q): QueryArgs<IssuerQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = match issuing_server(&s, &q) {
        Some(server) => {
            s.services
                .redeem_remote_line_invite(&sender, &code, server)
                .await?
        }
        None => s.services.redeem_line_invite(&sender, &code).await?,
    };
    Ok(Json(json!({ "room_id": room_id })))
}

/// `PUT /_hotline/v1/lines/{roomId}/aides/{userId}`: a principal of the line
/// brings their aide onto it, marked as their aide for everyone to see.
pub async fn add_line_aide_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room_id, user_id)): PathArgs<(ruma::OwnedRoomId, ruma::OwnedUserId)>,
) -> ApiResult<Json<Value>> {
    s.services
        .add_line_aide(
            hotline_service::line_aides::Actor::Principal(&sender.user_id),
            &room_id,
            &user_id,
        )
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /_hotline/v1/lines/{roomId}/aides/{userId}`: either principal of
/// the line takes an aide off it.
pub async fn remove_line_aide_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room_id, user_id)): PathArgs<(ruma::OwnedRoomId, ruma::OwnedUserId)>,
) -> ApiResult<Json<Value>> {
    s.services
        .remove_line_aide(
            hotline_service::line_aides::Actor::Principal(&sender.user_id),
            &room_id,
            &user_id,
        )
        .await?;
    Ok(Json(json!({})))
}

/// `?principal=&from=&to=&format=`.
#[derive(Deserialize, Default)]
pub struct ContactLogQuery {
    principal: Option<ruma::OwnedUserId>,
    from: Option<i64>,
    to: Option<i64>,
    format: Option<String>,
}

/// `GET /_hotline/v1/contact_log`: a principal's texts and calls, metadata
/// only, for the principal and their aides; `format=csv` for a file.
pub async fn get_contact_log_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<ContactLogQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(hotline_service::Error::invalid_param("format is json or csv").into())
        }
    };
    let principal = s
        .services
        .contact_log_subject(&sender.user_id, q.principal.as_deref())?;
    let window = hotline_service::contact_log::Window {
        from: q.from,
        to: q.to,
    };
    let entries = s.services.contact_log(&principal, window)?;
    if csv {
        let file = format!(
            "attachment; filename=\"contact-log-{}.csv\"",
            principal.localpart()
        );
        return Ok((
            [
                (
                    http::header::CONTENT_TYPE,
                    "text/csv; charset=utf-8".to_owned(),
                ),
                (http::header::CONTENT_DISPOSITION, file),
            ],
            hotline_service::contact_log::to_csv(&entries),
        )
            .into_response());
    }
    Ok(Json(json!({ "principal": principal, "entries": entries })).into_response())
}

#[derive(Deserialize)]
pub struct LineRecordBody {
    official: bool,
}

/// `PUT /_hotline/v1/lines/{roomId}/record`: a principal asks for the line
/// to be official (alone) or personal (both principals together).
pub async fn set_line_record_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room_id): PathArgs<ruma::OwnedRoomId>,
    JsonBody(body): JsonBody<LineRecordBody>,
) -> ApiResult<Json<Value>> {
    let official = s
        .services
        .set_line_record(&sender.user_id, &room_id, body.official)
        .await?;
    Ok(Json(json!({ "official": official })))
}

/// `PUT /_hotline/v1/availability`: the availability of the principal the
/// sender acts for (themself, or the principal whose aide they are).
pub async fn set_own_availability_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<hotline_service::availability::SetAvailability>,
) -> ApiResult<Json<Value>> {
    let principal = s.services.principal_of(&sender.user_id)?.ok_or_else(|| {
        hotline_service::Error::forbidden("Availability is set by a principal and their aides")
    })?;
    let set = s
        .services
        .set_availability(&sender.user_id, &principal, body)
        .await?;
    Ok(Json(set))
}

/// `PUT /_hotline/v1/availability/{userId}`: a principal's availability,
/// set by them or their aide.
pub async fn set_availability_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(user_id): PathArgs<ruma::OwnedUserId>,
    JsonBody(body): JsonBody<hotline_service::availability::SetAvailability>,
) -> ApiResult<Json<Value>> {
    let set = s
        .services
        .set_availability(&sender.user_id, &user_id, body)
        .await?;
    Ok(Json(set))
}

/// `GET /_hotline/v1/availability/{userId}`: a principal's availability,
/// for them, their aides and those sharing a line with them.
pub async fn get_availability_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(user_id): PathArgs<ruma::OwnedUserId>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.services.get_availability(&sender.user_id, &user_id)?,
    ))
}

/// `GET /_hotline/v1/lines/{roomId}/urgent`: the sender's side's urgent
/// contacts left on the line, and when the next comes back.
pub async fn get_urgent_quota_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room_id): PathArgs<ruma::OwnedRoomId>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.services.urgent_remaining(&sender.user_id, &room_id)?,
    ))
}
