//! Profiles, account data and filters.

use axum::extract::State;
use axum::Json;
use hotline_service::Error;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{json, Value};

use crate::extract::{Auth, JsonBody, PathArgs, RawJsonObject};
use crate::{ApiResult, AppState};

/// `GET /profile/{userId}`.
pub async fn get_profile_route(
    State(s): State<AppState>,
    PathArgs(user): PathArgs<OwnedUserId>,
) -> ApiResult<Json<Value>> {
    let (d, a) = s.services.profile_anywhere(&user).await?;
    let mut out = json!({});
    if let Some(d) = d {
        out["displayname"] = json!(d);
    }
    if let Some(a) = a {
        out["avatar_url"] = json!(a);
    }
    Ok(Json(out))
}

/// `GET /profile/{userId}/{field}` (`displayname`, `avatar_url`).
pub async fn get_profile_field_route(
    State(s): State<AppState>,
    PathArgs((user, field)): PathArgs<(OwnedUserId, String)>,
) -> ApiResult<Json<Value>> {
    let (d, a) = s.services.profile_anywhere(&user).await?;
    let v = match field.as_str() {
        "displayname" => d,
        "avatar_url" => a,
        _ => None,
    };
    match v {
        Some(v) => Ok(Json(json!({ field: v }))),
        None => Err(Error::not_found("Profile field not set").into()),
    }
}

/// `PUT /profile/{userId}/{field}`.
pub async fn set_profile_field_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, field)): PathArgs<(OwnedUserId, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    if user != sender.user_id {
        return Err(Error::forbidden("You may only change your own profile").into());
    }
    let value = match body.get(&field) {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(_) => return Err(Error::bad_json(format!("{field} must be a string")).into()),
    };
    match field.as_str() {
        "displayname" => s.services.set_profile(&user, Some(value), None).await?,
        "avatar_url" => s.services.set_profile(&user, None, Some(value)).await?,
        _ => return Err(Error::invalid_param("Unknown profile field").into()),
    }
    Ok(Json(json!({})))
}

fn own(sender: &hotline_service::accounts::Sender, user: &OwnedUserId) -> ApiResult<()> {
    if &sender.user_id != user {
        return Err(Error::forbidden("You may only access your own account data").into());
    }
    Ok(())
}

fn raw(content: String) -> ApiResult<Json<Box<serde_json::value::RawValue>>> {
    Ok(Json(
        serde_json::value::RawValue::from_string(content).map_err(Error::from)?,
    ))
}

/// `PUT /user/{userId}/account_data/{type}`.
pub async fn set_global_account_data_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, kind)): PathArgs<(OwnedUserId, String)>,
    RawJsonObject(body): RawJsonObject,
) -> ApiResult<Json<Value>> {
    own(&sender, &user)?;
    s.services
        .put_account_data(&user, None, &kind, body.get().to_owned())
        .await?;
    Ok(Json(json!({})))
}

/// `GET /user/{userId}/account_data/{type}`.
pub async fn get_global_account_data_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, kind)): PathArgs<(OwnedUserId, String)>,
) -> ApiResult<Json<Box<serde_json::value::RawValue>>> {
    own(&sender, &user)?;
    raw(s.services.get_account_data(&user, None, &kind)?)
}

/// `PUT /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub async fn set_room_account_data_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, room, kind)): PathArgs<(OwnedUserId, OwnedRoomId, String)>,
    RawJsonObject(body): RawJsonObject,
) -> ApiResult<Json<Value>> {
    own(&sender, &user)?;
    s.services
        .put_account_data(&user, Some(&room), &kind, body.get().to_owned())
        .await?;
    Ok(Json(json!({})))
}

/// `GET /user/{userId}/rooms/{roomId}/account_data/{type}`.
pub async fn get_room_account_data_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, room, kind)): PathArgs<(OwnedUserId, OwnedRoomId, String)>,
) -> ApiResult<Json<Box<serde_json::value::RawValue>>> {
    own(&sender, &user)?;
    raw(s.services.get_account_data(&user, Some(&room), &kind)?)
}

/// `POST /user/{userId}/filter`.
pub async fn create_filter_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(user): PathArgs<OwnedUserId>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    own(&sender, &user)?;
    hotline_service::sync::SyncFilter::from_json(&body)?;
    let id = s.services.create_filter(&user, body.to_string()).await?;
    Ok(Json(json!({ "filter_id": id })))
}

/// `GET /user/{userId}/filter/{filterId}`.
pub async fn get_filter_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, id)): PathArgs<(OwnedUserId, String)>,
) -> ApiResult<Json<Box<serde_json::value::RawValue>>> {
    own(&sender, &user)?;
    raw(s.services.get_filter(&user, &id)?)
}

/// `GET /user/{userId}/rooms/{roomId}/tags`.
pub async fn get_room_tags_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, room)): PathArgs<(OwnedUserId, OwnedRoomId)>,
) -> ApiResult<Json<Value>> {
    own(&sender, &user)?;
    Ok(Json(json!({ "tags": s.services.room_tags(&user, &room)? })))
}

/// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub async fn set_room_tag_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, room, tag)): PathArgs<(OwnedUserId, OwnedRoomId, String)>,
    JsonBody(info): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    own(&sender, &user)?;
    s.services.set_room_tag(&user, &room, &tag, info).await?;
    Ok(Json(json!({})))
}

/// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`.
pub async fn delete_room_tag_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((user, room, tag)): PathArgs<(OwnedUserId, OwnedRoomId, String)>,
) -> ApiResult<Json<Value>> {
    own(&sender, &user)?;
    s.services.delete_room_tag(&user, &room, &tag).await?;
    Ok(Json(json!({})))
}
