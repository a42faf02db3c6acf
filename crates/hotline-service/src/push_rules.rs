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
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use ruma::events::{AnySyncTimelineEvent, TimelineEventType};
use ruma::push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx};
use ruma::room_version_rules::RoomPowerLevelsRules;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedUserId, UInt, UserId};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::pdu::PduEvent;
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
            .await?;
        // After the write: a reader that loaded the old rules meanwhile
        // either sees the generation move and keeps them out, or inserted
        // them before this replaces them.
        let cache = &self.push_rules_cache;
        let generation = cache.generation.fetch_add(1, Ordering::AcqRel) + 1;
        cache.put(
            user,
            InForce {
                generation,
                rules: Arc::new(Prepared::new(rules)),
            },
        );
        Ok(())
    }
}

/// Each user's rules in force, kept so that counting a sync's unread
/// notifications does not read the store. An edit replaces the user's entry
/// and takes a new generation; a reader that loaded the store while an
/// edit was under way does not insert what it read (the generation moved),
/// so an entry is never older than the stored rules.
#[derive(Default)]
pub(crate) struct RulesCache {
    users: parking_lot::Mutex<HashMap<OwnedUserId, InForce>>,
    generation: AtomicU64,
}

/// A user's rules and the generation they were read or written at; unread
/// counts taken under another generation are recounted.
#[derive(Clone)]
pub(crate) struct InForce {
    pub generation: u64,
    pub rules: Arc<Prepared>,
}

/// A user's rules, prepared for matching many events with ruma's matcher
/// while giving it less to do. Both cuts keep its verdict exactly:
/// - per event type, the rules that cannot match it (a `type` condition
///   naming another type, or disabled) are left out, and the first rule
///   that matches is the same;
/// - the event it flattens carries only the content fields some rule reads,
///   so an encrypted event's ciphertext is not copied into its map.
pub(crate) struct Prepared {
    rules: Ruleset,
    /// Top-level content keys that some condition reads (`None`: all).
    content_keys: Option<Vec<String>>,
    by_type: parking_lot::Mutex<HashMap<TimelineEventType, Arc<Ruleset>>>,
}

/// Content fields always kept: those read by the content rules and the
/// legacy mention rules (`body`), by the check that turns the legacy rules
/// off (`m.mentions`), and by rules of unstable features a build may carry
/// (`msgtype`, `m.relates_to`).
const CONTENT_ALWAYS: [&str; 4] = ["body", "m.mentions", "msgtype", "m.relates_to"];

/// Event types whose pruned rulesets are kept; past this (clients choose
/// event types) a pruned set is made and not kept.
const MAX_PRUNED_TYPES: usize = 64;

impl Prepared {
    pub(crate) fn new(rules: Ruleset) -> Self {
        Self {
            content_keys: content_keys(&rules),
            rules,
            by_type: Default::default(),
        }
    }

    /// The rules that can match an event of type `kind`, in order.
    fn for_type(&self, event_type: &TimelineEventType) -> Arc<Ruleset> {
        if let Some(r) = self.by_type.lock().get(event_type) {
            return r.clone();
        }
        let kind = event_type.to_string();
        let mut pruned = self.rules.clone();
        let may_match = |rule: &ConditionalPushRule| {
            rule.enabled
                && !rule.conditions.iter().any(|c| match c {
                    PushCondition::EventMatch(d) if d.key == "type" => {
                        !d.pattern.contains(['*', '?'])
                            && d.pattern.to_lowercase() != kind.to_lowercase()
                    }
                    _ => false,
                })
        };
        pruned.override_.retain(may_match);
        pruned.underride.retain(may_match);
        let pruned = Arc::new(pruned);
        let mut by_type = self.by_type.lock();
        if by_type.len() < MAX_PRUNED_TYPES {
            by_type.insert(event_type.clone(), pruned.clone());
        }
        pruned
    }

    /// `event` with only the content fields some rule reads.
    fn matched_form(&self, event: Matched<'_, &RawValue>) -> Option<Raw<AnySyncTimelineEvent>> {
        let full = event.content;
        let fields = self.content_keys.as_ref().and_then(|keys| {
            let mut fields =
                serde_json::from_str::<BTreeMap<Cow<'_, str>, &RawValue>>(full.get()).ok()?;
            fields.retain(|k, _| keys.iter().any(|kept| kept == k));
            Some(fields)
        });
        let raw = match &fields {
            Some(fields) => event.with_content(fields),
            // Not an object, or a rule reads all of it: as it is.
            None => event.with_content(full),
        };
        raw.ok().map(Raw::from_json)
    }
}

/// The top-level content keys the conditions of `rules` read, besides
/// [`CONTENT_ALWAYS`]; `None` when one reads `content` whole.
fn content_keys(rules: &Ruleset) -> Option<Vec<String>> {
    let mut keys: Vec<String> = CONTENT_ALWAYS.iter().map(|k| (*k).to_owned()).collect();
    let conditions = rules
        .override_
        .iter()
        .chain(rules.underride.iter())
        .flat_map(|r| r.conditions.iter());
    for c in conditions {
        let key = match c {
            PushCondition::EventMatch(d) => &d.key,
            PushCondition::EventPropertyIs(d) => &d.key,
            PushCondition::EventPropertyContains(d) => &d.key,
            _ => continue,
        };
        if key == "content" {
            return None;
        }
        if let Some(rest) = key.strip_prefix("content.") {
            let first = first_segment(rest);
            if !keys.contains(&first) {
                keys.push(first);
            }
        }
    }
    Some(keys)
}

/// The first segment of a dotted key path, unescaped (`\.` is a dot in a
/// name, `\\` a backslash: the spec's escaping of `event_match` keys).
fn first_segment(path: &str) -> String {
    let mut out = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '.' => break,
            c => out.push(c),
        }
    }
    out
}

impl RulesCache {
    /// Users beyond which the cache is dropped wholesale: it only saves reads.
    const MAX_USERS: usize = 16 * 1024;

    /// Drops the user's entry: their stored rules changed (another
    /// process's edit, replayed by the commit hook). A new generation keeps
    /// out what a reader loaded before.
    pub(crate) fn forget(&self, user: &UserId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.users.lock().remove(user);
    }

    fn put(&self, user: &UserId, entry: InForce) {
        let mut users = self.users.lock();
        if users.len() >= Self::MAX_USERS && !users.contains_key(user) {
            users.clear();
        }
        users.insert(user.to_owned(), entry);
    }
}

/// How one event counts towards a user's unread notifications, by their
/// push rules: the room as it is now (members, power levels, the user's
/// display name), built once per count.
pub(crate) struct PushEval {
    rules: Arc<Prepared>,
    ctx: PushConditionRoomCtx,
}

impl PushEval {
    pub(crate) fn new(
        rules: Arc<Prepared>,
        room: &crate::rooms::Room,
        user: &UserId,
        display_name: Option<&str>,
    ) -> Self {
        let pl = room.power_levels();
        let power = PushConditionPowerLevelsCtx::new(
            pl.users,
            pl.users_default,
            pl.notifications,
            RoomPowerLevelsRules::new(&room.authorization_rules(), room.creators()),
        );
        let members = UInt::try_from(room.joined_count()).unwrap_or(UInt::MAX);
        let ctx = PushConditionRoomCtx::new(
            room.id.clone(),
            members,
            user.to_owned(),
            display_name.unwrap_or_default().to_owned(),
        )
        .with_power_levels(power);
        Self { rules, ctx }
    }

    /// `(notifies, highlights)`: what the first matching rule's actions say
    /// of `event`. Someone's own events never count.
    pub(crate) fn weigh(&self, event: &PduEvent) -> (bool, bool) {
        let actions = self.actions(event);
        (
            actions.iter().any(Action::should_notify),
            actions.iter().any(Action::is_highlight),
        )
    }

    /// The first matching rule's actions for `event` (none for someone's
    /// own events).
    pub(crate) fn actions(&self, event: &PduEvent) -> Vec<Action> {
        self.actions_of(Matched {
            kind: &event.pdu.kind,
            sender: &event.pdu.sender,
            content: &*event.pdu.content,
            state_key: event.pdu.state_key.as_deref(),
            room_id: &event.room_id,
        })
    }

    /// The actions for an event of `kind` from `sender` in the room, with
    /// empty content: how the user's rules weigh something the server
    /// decides to push where no rule names the event itself (a MatrixRTC
    /// call membership rings as a call invite from its sender would: a
    /// muted room, a room rule without actions or the master rule keep it
    /// silent). None for the user's own.
    pub(crate) fn actions_as(
        &self,
        kind: &TimelineEventType,
        sender: &UserId,
        room_id: &ruma::RoomId,
    ) -> Vec<Action> {
        let Ok(empty) = serde_json::from_str::<&RawValue>("{}") else {
            return Vec::new();
        };
        self.actions_of(Matched {
            kind,
            sender,
            content: empty,
            state_key: None,
            room_id,
        })
    }

    fn actions_of(&self, event: Matched<'_, &RawValue>) -> Vec<Action> {
        if event.sender == self.ctx.user_id {
            return Vec::new();
        }
        let kind = event.kind;
        let Some(raw) = self.rules.matched_form(event) else {
            return Vec::new();
        };
        let rules = self.rules.for_type(kind);
        // Without the thread-subscription condition (an unstable feature
        // the server leaves off), no condition awaits anything: the future
        // is ready on its first poll.
        rules
            .get_actions(&raw, &self.ctx)
            .now_or_never()
            .map(<[Action]>::to_vec)
            .unwrap_or_default()
    }
}

/// The event as the rules see it: its type, sender, state key, room and
/// content (cut by [`Prepared::matched_form`]).
#[derive(serde::Serialize)]
struct Matched<'a, C: serde::Serialize> {
    #[serde(rename = "type")]
    kind: &'a TimelineEventType,
    sender: &'a UserId,
    content: C,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    room_id: &'a ruma::RoomId,
}

impl<'a> Matched<'a, &'a RawValue> {
    fn with_content(&self, content: impl serde::Serialize) -> serde_json::Result<Box<RawValue>> {
        serde_json::value::to_raw_value(&Matched {
            kind: self.kind,
            sender: self.sender,
            content,
            state_key: self.state_key,
            room_id: self.room_id,
        })
    }
}

impl Services {
    /// The user's rules in force, from memory after the first read.
    pub(crate) fn push_rules_in_force(&self, user: &UserId) -> Result<InForce> {
        let cache = &self.push_rules_cache;
        if let Some(hit) = cache.users.lock().get(user) {
            return Ok(hit.clone());
        }
        let generation = cache.generation.load(Ordering::Acquire);
        let entry = InForce {
            generation,
            rules: Arc::new(Prepared::new(self.push_rules(user)?)),
        };
        if cache.generation.load(Ordering::Acquire) == generation {
            cache.put(user, entry.clone());
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{owned_room_id, owned_user_id};

    /// The prepared rules (pruned by type, content cut to what rules read)
    /// must give ruma's verdict on the whole event under the whole ruleset,
    /// for every event and ruleset here.
    #[test]
    fn prepared_rules_give_the_same_actions_as_the_whole_ruleset_on_the_whole_event() {
        let bob = owned_user_id!("@bob:example.org");
        let room = owned_room_id!("!room:example.org");
        let defaults = server_default(&bob);
        let mut rulesets = vec![defaults.clone()];
        let mut edited = defaults.clone();
        let mute = NewConditionalPushRule::new(
            room.to_string(),
            vec![PushCondition::EventMatch(EventMatchConditionData::new(
                "room_id".into(),
                room.to_string(),
            ))],
            vec![],
        );
        edited
            .insert(NewPushRule::Override(mute), None, None)
            .unwrap();
        rulesets.push(edited);
        let mut custom = defaults.clone();
        // Inserted first is matched last; each gives other actions, so
        // matching the wrong one shows.
        let highlight = || Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes));
        for (id, key, pattern, actions) in [
            (
                "nested",
                r"content.x\.y.z",
                "deep*",
                vec![Action::Notify, highlight()],
            ),
            ("typed", "type", "org.example.*", vec![highlight()]),
            (
                "exact_type",
                "type",
                "ORG.EXAMPLE.PING",
                vec![Action::Notify],
            ),
        ] {
            let rule = NewConditionalPushRule::new(
                id.into(),
                vec![PushCondition::EventMatch(EventMatchConditionData::new(
                    key.into(),
                    pattern.into(),
                ))],
                actions,
            );
            custom
                .insert(NewPushRule::Override(rule), None, None)
                .unwrap();
        }
        let keyword = NewPatternedPushRule::new("kw".into(), "budget".into(), vec![Action::Notify]);
        custom
            .insert(NewPushRule::Content(keyword), None, None)
            .unwrap();
        custom
            .set_enabled(RuleKind::Underride, ".m.rule.message", false)
            .unwrap();
        rulesets.push(custom);

        let alice = "@alice:example.org";
        let events: Vec<(&str, &str, serde_json::Value, Option<&str>)> = vec![
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.text", "body": "hi"}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.text", "body": "hey Bob", "extra": {"a": 1}}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.notice", "body": "bot"}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.text", "body": "bob", "m.mentions": {}}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.text", "body": "x", "m.mentions": {"user_ids": ["@bob:example.org"]}}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.text", "body": "@room now", "m.mentions": {"room": true}}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.text", "body": "the budget"}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"body": "* e", "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}),
                None,
            ),
            (
                "m.room.message",
                alice,
                json!({"msgtype": "m.text", "body": "n", "x.y": {"z": "deeply"}}),
                None,
            ),
            (
                "m.room.message",
                "@bob:example.org",
                json!({"msgtype": "m.text", "body": "bob"}),
                None,
            ),
            (
                "m.room.encrypted",
                alice,
                json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "s"}),
                None,
            ),
            (
                "m.room.encrypted",
                alice,
                json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}),
                None,
            ),
            (
                "m.reaction",
                alice,
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e", "key": "x"}}),
                None,
            ),
            (
                "m.room.member",
                alice,
                json!({"membership": "invite"}),
                Some("@bob:example.org"),
            ),
            (
                "m.room.member",
                alice,
                json!({"membership": "join"}),
                Some(alice),
            ),
            ("m.call.invite", alice, json!({"call_id": "c"}), None),
            (
                "m.room.tombstone",
                alice,
                json!({"body": "gone", "replacement_room": "!n:x"}),
                Some(""),
            ),
            ("org.example.ping", alice, json!({}), None),
            ("m.room.message", alice, json!("not an object"), None),
        ];
        for (i, rules) in rulesets.into_iter().enumerate() {
            let prepared = Prepared::new(rules.clone());
            for members in [2u32, 5] {
                let ctx = PushConditionRoomCtx::new(
                    room.clone(),
                    members.into(),
                    bob.clone(),
                    "Robert".into(),
                );
                for (kind, sender, content, state_key) in &events {
                    let mut whole = json!({"type": kind, "sender": sender, "content": content,
                        "room_id": room, "event_id": "$x", "origin_server_ts": 1});
                    if let Some(k) = state_key {
                        whole["state_key"] = json!(k);
                    }
                    let whole = Raw::<AnySyncTimelineEvent>::from_json(
                        serde_json::value::to_raw_value(&whole).unwrap(),
                    );
                    let expected = rules.get_actions(&whole, &ctx).now_or_never().unwrap();
                    let kind_t = TimelineEventType::from(*kind);
                    let sender_id = <&UserId>::try_from(*sender).unwrap();
                    let content_raw = serde_json::value::to_raw_value(content).unwrap();
                    let matched = prepared
                        .matched_form(Matched {
                            kind: &kind_t,
                            sender: sender_id,
                            content: &content_raw,
                            state_key: *state_key,
                            room_id: &room,
                        })
                        .unwrap();
                    let pruned = prepared.for_type(&kind_t);
                    let got = pruned.get_actions(&matched, &ctx).now_or_never().unwrap();
                    assert_eq!(
                        serde_json::to_value(got).unwrap(),
                        serde_json::to_value(expected).unwrap(),
                        "ruleset {i}, {members} members, {kind} {content}"
                    );
                }
            }
        }
    }
}
