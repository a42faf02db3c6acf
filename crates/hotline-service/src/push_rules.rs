//! Push rules: the spec's server-default rule set, and each user's edits.
//!
//! A user's rules live in their global account data `m.push_rules`
//! (`{"global": ruleset}`), so every change reaches their clients through
//! `/sync` like Synapse's. A user who never edited a rule has no document:
//! the defaults (`ruma::push::Ruleset::server_default`) are served, and a
//! stored ruleset is refreshed against them on each read, so a new server
//! default appears without a migration while the user's `enabled` and
//! `actions` choices on default rules are kept.
//!
//! **Architecture Invariant:** server-default rules (ids starting with `.`)
//! can be switched on or off and given other actions, never replaced or
//! deleted; edits are read-modify-writes under the user's document lock, so
//! concurrent edits do not lose each other.

use ruma::power_levels::NotificationPowerLevelsKey;
use ruma::push::{
    Action, ConditionalPushRule, ConditionalPushRuleInit, EventMatchConditionData,
    HighlightTweakValue, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule,
    NewPushRule, NewSimplePushRule, PatternedPushRule, PatternedPushRuleInit, PushCondition,
    RemovePushRuleError, RuleKind, Ruleset, SenderNotificationPermissionConditionData,
    SoundTweakValue, Tweak,
};
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{json, Value};

use crate::{Error, Result, Services};

/// The account data type holding a user's push rules.
pub const PUSH_RULES: &str = "m.push_rules";

/// The rule kinds of the `global` scope, in the spec's order of evaluation
/// (override first); each is always present in what is served.
const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// The body of `PUT /pushrules/global/{kind}/{ruleId}`; which fields count
/// depends on the kind.
#[derive(Debug, serde::Deserialize)]
pub struct NewRuleBody {
    pub actions: Vec<Action>,
    #[serde(default)]
    pub conditions: Option<Vec<PushCondition>>,
    #[serde(default)]
    pub pattern: Option<String>,
}

/// A rule kind from a path: one of the five the spec defines.
fn kind(kind: &str) -> Result<RuleKind> {
    if KINDS.contains(&kind) {
        Ok(RuleKind::from(kind))
    } else {
        Err(Error::invalid_param(format!(
            "Unknown push rule kind {kind:?}"
        )))
    }
}

fn rule_not_found() -> Error {
    Error::not_found("The push rule was not found")
}

/// The predefined rules for `user`: ruma's (the current spec's), with the
/// three legacy mention rules of the spec versions this server advertises
/// (up to v1.12; deprecated in v1.7 for `m.mentions`, removed in v1.17).
/// Synapse still serves them and matrix-js-sdk warns when they are missing;
/// clients skip them for events that carry `m.mentions`.
///
/// ruma adds rules of unstable proposals when their features are on (a
/// dependency can switch them on), so only stable `.m.rule.*` rules are
/// kept: what is served does not depend on how the server was built.
fn server_default(user: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user);
    let stable = |id: &str| id.starts_with(".m.rule.");
    let mention = vec![
        Action::Notify,
        Action::SetTweak(Tweak::Sound(SoundTweakValue::Default)),
        Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)),
    ];
    let legacy = |rule_id: &str, conditions, actions| {
        ConditionalPushRule::from(ConditionalPushRuleInit {
            actions,
            default: true,
            enabled: true,
            rule_id: rule_id.to_owned(),
            conditions,
        })
    };
    let mut over = Vec::with_capacity(rules.override_.len() + 2);
    for rule in std::mem::take(&mut rules.override_) {
        if !stable(&rule.rule_id) {
            continue;
        }
        let after = rule.rule_id.clone();
        over.push(rule);
        if after == ".m.rule.is_user_mention" {
            #[allow(deprecated)] // a legacy rule, on purpose (see above)
            over.push(legacy(
                ".m.rule.contains_display_name",
                vec![PushCondition::ContainsDisplayName],
                mention.clone(),
            ));
        } else if after == ".m.rule.is_room_mention" {
            over.push(legacy(
                ".m.rule.roomnotif",
                vec![
                    PushCondition::EventMatch(EventMatchConditionData::new(
                        "content.body".into(),
                        "@room".into(),
                    )),
                    PushCondition::SenderNotificationPermission(
                        SenderNotificationPermissionConditionData::new(
                            NotificationPowerLevelsKey::Room,
                        ),
                    ),
                ],
                vec![
                    Action::Notify,
                    Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)),
                ],
            ));
        }
    }
    rules.override_ = over.into_iter().collect();
    rules.underride.retain(|r| stable(&r.rule_id));
    rules.content.retain(|r| stable(&r.rule_id));
    rules
        .content
        .insert(PatternedPushRule::from(PatternedPushRuleInit {
            actions: mention,
            default: true,
            enabled: true,
            rule_id: ".m.rule.contains_user_name".into(),
            pattern: user.localpart().into(),
        }));
    rules
}

/// The ruleset as the spec serves it: exactly the five kinds, each an
/// array (ruma leaves empty ones out).
fn ruleset_json(rules: &Ruleset) -> Result<Value> {
    let v = serde_json::to_value(rules).map_err(Error::internal)?;
    let mut out = serde_json::Map::new();
    for k in KINDS {
        out.insert(k.to_owned(), v.get(k).cloned().unwrap_or_else(|| json!([])));
    }
    Ok(Value::Object(out))
}

impl Services {
    /// The user's rules in force: their stored edits over the server defaults.
    pub fn push_rules(&self, user: &UserId) -> Result<Ruleset> {
        let defaults = server_default(user);
        let Some(row) = self.store.get_account_data(user.as_str(), "", PUSH_RULES)? else {
            return Ok(defaults);
        };
        #[derive(serde::Deserialize)]
        struct Doc {
            global: Ruleset,
        }
        match serde_json::from_str::<Doc>(&row.content) {
            Ok(mut doc) => {
                doc.global.update_with_server_default(defaults);
                Ok(doc.global)
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "unreadable m.push_rules: serving the defaults");
                Ok(defaults)
            }
        }
    }

    /// `GET /pushrules/global/`: the ruleset with every kind present.
    pub fn push_rules_global(&self, user: &UserId) -> Result<Value> {
        ruleset_json(&self.push_rules(user)?)
    }

    /// The `m.push_rules` account data content: `{"global": ruleset}`.
    pub(crate) fn push_rules_content(&self, user: &UserId) -> Result<Value> {
        Ok(json!({ "global": self.push_rules_global(user)? }))
    }

    /// `GET /pushrules/global/{kind}/{ruleId}`.
    pub fn push_rule(&self, user: &UserId, kind_name: &str, rule_id: &str) -> Result<Value> {
        kind(kind_name)?;
        let rules = self.push_rules_global(user)?;
        rules[kind_name]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["rule_id"] == rule_id))
            .cloned()
            .ok_or_else(rule_not_found)
    }

    /// `GET /pushrules/global/{kind}/{ruleId}/enabled`.
    pub fn push_rule_enabled(&self, user: &UserId, kind_name: &str, rule_id: &str) -> Result<bool> {
        let rules = self.push_rules(user)?;
        rules
            .get(kind(kind_name)?, rule_id)
            .map(|r| r.enabled())
            .ok_or_else(rule_not_found)
    }

    /// `GET /pushrules/global/{kind}/{ruleId}/actions`.
    pub fn push_rule_actions(
        &self,
        user: &UserId,
        kind_name: &str,
        rule_id: &str,
    ) -> Result<Vec<Action>> {
        let rules = self.push_rules(user)?;
        rules
            .get(kind(kind_name)?, rule_id)
            .map(|r| r.actions().to_vec())
            .ok_or_else(rule_not_found)
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}`: creates or replaces a
    /// user-defined rule, placed by `before`/`after` (user rules only).
    pub async fn set_push_rule(
        &self,
        user: &UserId,
        kind_name: &str,
        rule_id: &str,
        body: NewRuleBody,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<()> {
        let new = match kind(kind_name)? {
            RuleKind::Override | RuleKind::Underride => {
                let r = NewConditionalPushRule::new(
                    rule_id.to_owned(),
                    body.conditions.unwrap_or_default(),
                    body.actions,
                );
                if kind_name == "override" {
                    NewPushRule::Override(r)
                } else {
                    NewPushRule::Underride(r)
                }
            }
            RuleKind::Content => {
                let pattern = body
                    .pattern
                    .ok_or_else(|| Error::bad_json("A content rule needs a pattern"))?;
                NewPushRule::Content(NewPatternedPushRule::new(
                    rule_id.to_owned(),
                    pattern,
                    body.actions,
                ))
            }
            RuleKind::Room => {
                let room = OwnedRoomId::try_from(rule_id)
                    .map_err(|_| Error::invalid_param("The rule id of a room rule is a room id"))?;
                NewPushRule::Room(NewSimplePushRule::new(room, body.actions))
            }
            RuleKind::Sender => {
                let sender = OwnedUserId::try_from(rule_id).map_err(|_| {
                    Error::invalid_param("The rule id of a sender rule is a user id")
                })?;
                NewPushRule::Sender(NewSimplePushRule::new(sender, body.actions))
            }
            _ => return Err(Error::invalid_param("Unknown push rule kind")),
        };
        self.edit_push_rules(user, |rules| {
            rules.insert(new, after, before).map_err(|e| match e {
                InsertPushRuleError::ServerDefaultRuleId => Error::invalid_param(
                    "Rule ids starting with '.' are reserved for server-default rules",
                ),
                InsertPushRuleError::InvalidRuleId => {
                    Error::invalid_param("Rule ids may not contain '/' or '\\'")
                }
                InsertPushRuleError::RelativeToServerDefaultRule => Error::invalid_param(
                    "A rule cannot be placed relative to a server-default rule",
                ),
                InsertPushRuleError::UnknownRuleId => {
                    Error::invalid_param("The before/after rule was not found")
                }
                InsertPushRuleError::BeforeHigherThanAfter => {
                    Error::invalid_param("before names a more important rule than after")
                }
                e => Error::invalid_param(e.to_string()),
            })
        })
        .await
    }

    /// `DELETE /pushrules/global/{kind}/{ruleId}`.
    pub async fn delete_push_rule(
        &self,
        user: &UserId,
        kind_name: &str,
        rule_id: &str,
    ) -> Result<()> {
        let k = kind(kind_name)?;
        self.edit_push_rules(user, |rules| {
            rules.remove(k, rule_id).map_err(|e| match e {
                RemovePushRuleError::ServerDefault => {
                    Error::invalid_param("Server-default rules cannot be deleted")
                }
                _ => rule_not_found(),
            })
        })
        .await
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}/enabled`.
    pub async fn set_push_rule_enabled(
        &self,
        user: &UserId,
        kind_name: &str,
        rule_id: &str,
        enabled: bool,
    ) -> Result<()> {
        let k = kind(kind_name)?;
        self.edit_push_rules(user, |rules| {
            rules
                .set_enabled(k, rule_id, enabled)
                .map_err(|_| rule_not_found())
        })
        .await
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}/actions`.
    pub async fn set_push_rule_actions(
        &self,
        user: &UserId,
        kind_name: &str,
        rule_id: &str,
        actions: Vec<Action>,
    ) -> Result<()> {
        let k = kind(kind_name)?;
        self.edit_push_rules(user, |rules| {
            rules
                .set_actions(k, rule_id, actions)
                .map_err(|_| rule_not_found())
        })
        .await
    }

    /// Reads the user's rules, applies `edit`, and stores the result as
    /// `m.push_rules`, all under the user's document lock.
    async fn edit_push_rules(
        &self,
        user: &UserId,
        edit: impl FnOnce(&mut Ruleset) -> Result<()>,
    ) -> Result<()> {
        let _edit = self.doc_locks.lock(user).await;
        let mut rules = self.push_rules(user)?;
        edit(&mut rules)?;
        let content = json!({ "global": ruleset_json(&rules)? });
        self.write_account_data(user, None, PUSH_RULES, content.to_string())
            .await
    }
}
