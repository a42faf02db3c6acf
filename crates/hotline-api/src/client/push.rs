//! Pushers (where notifications go), and push rules: the whole ruleset,
//! and one rule at a time (its body, whether it is enabled, its actions).

use axum::extract::State;
use axum::Json;
use hotline_service::push_rules::NewRuleBody;
use ruma::push::Action;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{Auth, JsonBody, PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

/// `GET /pushrules/`: the `global` ruleset, server defaults included.
pub async fn get_pushrules_all_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "global": s.services.push_rules_global(&sender.user_id)? }),
    ))
}

/// `GET /pushrules/global/`.
pub async fn get_push_rules_global_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.services.push_rules_global(&sender.user_id)?))
}

/// `GET /pushrules/global/{kind}/{ruleId}`.
pub async fn get_push_rule_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((kind, rule_id)): PathArgs<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.services.push_rule(
        &sender.user_id,
        &kind,
        &rule_id,
    )?))
}

#[derive(Deserialize)]
pub struct PlacementQuery {
    before: Option<String>,
    after: Option<String>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}`: creates or replaces a
/// user-defined rule.
pub async fn set_push_rule_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((kind, rule_id)): PathArgs<(String, String)>,
    QueryArgs(q): QueryArgs<PlacementQuery>,
    JsonBody(body): JsonBody<NewRuleBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .set_push_rule(
            &sender.user_id,
            &kind,
            &rule_id,
            body,
            q.before.as_deref(),
            q.after.as_deref(),
        )
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /pushrules/global/{kind}/{ruleId}`.
pub async fn delete_push_rule_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((kind, rule_id)): PathArgs<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.services
        .delete_push_rule(&sender.user_id, &kind, &rule_id)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /pushrules/global/{kind}/{ruleId}/enabled`.
pub async fn is_push_rule_enabled_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((kind, rule_id)): PathArgs<(String, String)>,
) -> ApiResult<Json<Value>> {
    let enabled = s
        .services
        .push_rule_enabled(&sender.user_id, &kind, &rule_id)?;
    Ok(Json(json!({ "enabled": enabled })))
}

#[derive(Deserialize)]
pub struct EnabledBody {
    enabled: bool,
}

/// `PUT /pushrules/global/{kind}/{ruleId}/enabled`.
pub async fn set_push_rule_enabled_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((kind, rule_id)): PathArgs<(String, String)>,
    JsonBody(body): JsonBody<EnabledBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .set_push_rule_enabled(&sender.user_id, &kind, &rule_id, body.enabled)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /pushrules/global/{kind}/{ruleId}/actions`.
pub async fn get_push_rule_actions_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((kind, rule_id)): PathArgs<(String, String)>,
) -> ApiResult<Json<Value>> {
    let actions = s
        .services
        .push_rule_actions(&sender.user_id, &kind, &rule_id)?;
    Ok(Json(json!({ "actions": actions })))
}

#[derive(Deserialize)]
pub struct ActionsBody {
    actions: Vec<Action>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}/actions`: also for server-default rules.
pub async fn set_push_rule_actions_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((kind, rule_id)): PathArgs<(String, String)>,
    JsonBody(body): JsonBody<ActionsBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .set_push_rule_actions(&sender.user_id, &kind, &rule_id, body.actions)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /pushers`: the caller's pushers.
pub async fn get_pushers_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "pushers": s.services.pushers(&sender.user_id)? }),
    ))
}

/// `POST /pushers/set`: creates, replaces or deletes one of the caller's
/// pushers.
pub async fn set_pusher_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<hotline_service::pushers::SetPusher>,
) -> ApiResult<Json<Value>> {
    s.services.set_pusher(&sender, body).await?;
    Ok(Json(json!({})))
}
