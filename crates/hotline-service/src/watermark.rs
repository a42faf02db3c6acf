//! Leak tracing: each device's watermark tag, and `hotline trace`, which
//! reads a screenshot's watermark (`hotline-trace`) and says whose device
//! showed it, on which line, in which minute.
//!
//! A tag is 32 random bits the server assigns a device the first time the
//! web app asks (`GET /_hotline/v1/watermark`) and keeps in the store's
//! metadata both ways (`watermark_device:USER|DEVICE` -> tag,
//! `watermark_tag:TAG` -> user, device and when it was issued), so the
//! same device always draws the same tag and a tag outlives its device: a
//! screenshot taken on a device since signed out still traces to it.
//!
//! A trace first decodes the watermark on its own (`hotline_trace::decode`,
//! the code's checks); when that finds nothing, it matches the image
//! against every tag this server issued, each with its user's lines and
//! the minutes since its issue (`hotline_trace::informed`): a leak too
//! damaged to decode blind still names its device when it is one of ours.
//!
//! **Invariant:** a trace names a device only when the decoder's checks
//! pass *and* the tag is one this server handed out, or when the match
//! against the issued tags clears its threshold (a bounded chance below
//! 1e-6 per image of naming a device that did not draw it); otherwise it
//! says no watermark was found.
//! **Invariant:** every trace request, allowed or refused, is written to
//! the audit log (actions `trace` and `trace_refused`) before its answer is
//! shown; `hotline admin trace-log` lists them.

use hotline_store::{AuditRow, WriteBatch, WriteOp};
use serde_json::json;

use crate::{Error, Result, Services};

const DEVICE_KEY: &str = "watermark_device:";
const TAG_KEY: &str = "watermark_tag:";
/// Audit actions of the trace log.
pub const TRACE: &str = "trace";
pub const TRACE_REFUSED: &str = "trace_refused";

/// What a trace found.
#[derive(Clone, Debug)]
pub enum TraceOutcome {
    /// No watermark (or one this server did not draw).
    NotFound,
    Found(Trace),
}

/// A traced screenshot.
#[derive(Clone, Debug)]
pub struct Trace {
    pub user_id: String,
    pub device_id: String,
    /// Whether the device still exists.
    pub device_exists: bool,
    /// The line's room id, when the view showed a line the user is or was
    /// on (`None` with `line_number` 0: a view without a line, such as the
    /// line list).
    pub room_id: Option<String>,
    pub line_number: u32,
    /// The minute shown: `[from_ms, from_ms + 60 000)`.
    pub from_ms: i64,
    pub confidence: f64,
    pub how: TraceMethod,
}

/// How a trace read the watermark.
#[derive(Clone, Debug)]
pub enum TraceMethod {
    /// Decoded on its own: the code's checks held, and the tag is ours.
    Decoded(hotline_trace::Detection),
    /// Matched against the tags this server issued (`candidates` of them,
    /// with their lines).
    Matched {
        found: hotline_trace::informed::Match,
        candidates: usize,
    },
}

/// A watermark read and resolved: the tag's (user, device), the line
/// number, the minute since the epoch, and how it was read.
type Read = ((String, String), u32, i64, TraceMethod);

/// How far a client's clock may be from the server's, in minutes: the
/// minute drawn is the client's.
const CLOCK_SKEW_MINUTES: i64 = 10;
/// The window of a tag issued before tags recorded when they were issued.
const UNDATED_TAG_MINUTES: i64 = 30 * 24 * 60;

impl Services {
    /// The device's watermark tag, assigned on first use.
    pub async fn watermark_tag(&self, user_id: &str, device_id: &str) -> Result<u32> {
        let key = format!("{DEVICE_KEY}{user_id}|{device_id}");
        if let Some(t) = self.store.get_meta(&key)? {
            return u32::from_str_radix(&t, 16).map_err(Error::internal);
        }
        let tag = loop {
            let t: u32 = rand::random();
            if t != 0 && self.store.get_meta(&format!("{TAG_KEY}{t:08x}"))?.is_none() {
                break t;
            }
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutMeta {
            key: format!("{TAG_KEY}{tag:08x}"),
            value:
                json!({"user_id": user_id, "device_id": device_id, "issued_ts": crate::now_ms()})
                    .to_string(),
        });
        batch.push(WriteOp::PutMeta {
            key,
            value: format!("{tag:08x}"),
        });
        self.store.write(batch).await?;
        Ok(tag)
    }

    /// The user and device a tag was handed to.
    pub fn watermark_owner(&self, tag: u32) -> Result<Option<(String, String)>> {
        let Some(v) = self.store.get_meta(&format!("{TAG_KEY}{tag:08x}"))? else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&v)?;
        Ok(match (v["user_id"].as_str(), v["device_id"].as_str()) {
            (Some(u), Some(d)) => Some((u.to_owned(), d.to_owned())),
            _ => None,
        })
    }

    /// `hotline trace IMAGE --by NAME`: checks that `by` may trace
    /// (`[trace] operators`), decodes, resolves, and writes the request to
    /// the trace log. `image` is the file's bytes (PNG or JPEG).
    pub async fn trace_image(&self, image: &[u8], by: Option<&str>) -> Result<TraceOutcome> {
        let hash = {
            use sha2::Digest;
            sha2::Sha256::digest(image)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let actor = by.unwrap_or("(unnamed)");
        let operators = &self.config.trace.operators;
        if !operators.is_empty() && !by.is_some_and(|b| operators.iter().any(|o| o == b)) {
            self.log_trace(
                TRACE_REFUSED,
                actor,
                &hash,
                json!({"reason": "not a trace operator"}),
            )
            .await?;
            return Err(Error::forbidden(format!(
                "{actor} may not trace: [trace] operators does not list them"
            )));
        }
        let img = match image::load_from_memory(image) {
            Ok(i) => i,
            Err(e) => {
                self.log_trace(TRACE, actor, &hash, json!({"result": "unreadable image"}))
                    .await?;
                return Err(Error::invalid_param(format!(
                    "not a PNG or JPEG image: {e}"
                )));
            }
        };
        let now = crate::now_ms();
        // Decoded with a tag of ours, else matched against our tags.
        let decoded = match hotline_trace::decode(&img) {
            Some(d) => self.watermark_owner(d.payload.tag)?.map(|owner| {
                let minute = hotline_trace::payload::full_minute(d.payload.minute, now);
                (owner, d.payload.line, minute, TraceMethod::Decoded(d))
            }),
            None => None,
        };
        let read = match decoded {
            Some(r) => Some(r),
            None => self.match_issued(&img, now)?,
        };
        let outcome = match read {
            None => TraceOutcome::NotFound,
            Some(((user_id, device_id), line, minute, how)) => {
                let device_exists = self.store.get_device(&user_id, &device_id)?.is_some();
                let room_id = match line {
                    0 => None,
                    n => self
                        .store
                        .memberships_of_user(&user_id)?
                        .into_iter()
                        .map(|m| m.room_id)
                        .find(|r| hotline_trace::line_hash(r) == n),
                };
                let confidence = match &how {
                    TraceMethod::Decoded(d) => d.confidence(),
                    TraceMethod::Matched { found, .. } => found.confidence(),
                };
                TraceOutcome::Found(Trace {
                    user_id,
                    device_id,
                    device_exists,
                    room_id,
                    line_number: line,
                    from_ms: minute * 60_000,
                    confidence,
                    how,
                })
            }
        };
        let detail = match &outcome {
            TraceOutcome::NotFound => json!({"result": "no watermark found"}),
            TraceOutcome::Found(t) => json!({
                "result": "found",
                "user_id": t.user_id,
                "device_id": t.device_id,
                "room_id": t.room_id,
                "from_ms": t.from_ms,
                "confidence": (t.confidence * 1000.0).round() / 1000.0,
                "method": match t.how {
                    TraceMethod::Decoded(_) => "decoded",
                    TraceMethod::Matched { .. } => "matched",
                },
            }),
        };
        self.log_trace(TRACE, actor, &hash, detail).await?;
        Ok(outcome)
    }

    /// Every tag this server issued, with its owner's lines and its minutes.
    fn issued_tags(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(hotline_trace::informed::Issued, (String, String))>> {
        let now = now_ms.div_euclid(60_000);
        let mut lines_of: std::collections::HashMap<String, Vec<u32>> = Default::default();
        let mut out = Vec::new();
        for (key, value) in self.store.meta_with_prefix(TAG_KEY)? {
            let Ok(tag) = u32::from_str_radix(&key[TAG_KEY.len()..], 16) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&value)?;
            let (Some(user_id), Some(device_id)) = (v["user_id"].as_str(), v["device_id"].as_str())
            else {
                continue;
            };
            let from = match v["issued_ts"].as_i64() {
                Some(ts) => ts.div_euclid(60_000) - CLOCK_SKEW_MINUTES,
                None => now - UNDATED_TAG_MINUTES,
            };
            if !lines_of.contains_key(user_id) {
                let mut lines = vec![0];
                lines.extend(
                    self.store
                        .memberships_of_user(user_id)?
                        .iter()
                        .map(|m| hotline_trace::line_hash(&m.room_id)),
                );
                lines.sort_unstable();
                lines.dedup();
                lines_of.insert(user_id.to_owned(), lines);
            }
            out.push((
                hotline_trace::informed::Issued {
                    tag,
                    lines: lines_of[user_id].clone(),
                    from_minute: from,
                    to_minute: now + CLOCK_SKEW_MINUTES,
                },
                (user_id.to_owned(), device_id.to_owned()),
            ));
        }
        Ok(out)
    }

    /// The match of `img` against the issued tags, when one clears its
    /// threshold.
    fn match_issued(&self, img: &image::DynamicImage, now_ms: i64) -> Result<Option<Read>> {
        let (tags, owners): (Vec<_>, Vec<_>) = self.issued_tags(now_ms)?.into_iter().unzip();
        if tags.is_empty() {
            return Ok(None);
        }
        let tiles = hotline_trace::decode::soft_tiles(img, hotline_trace::decode::INFORMED_SIZES);
        let Some(found) = hotline_trace::informed::search(&tiles, &tags) else {
            return Ok(None);
        };
        let owner = tags
            .iter()
            .position(|t| t.tag == found.payload.tag)
            .map(|i| owners[i].clone());
        let candidates = tags.iter().map(|t| t.lines.len()).sum();
        Ok(owner.map(|o| {
            (
                o,
                found.payload.line,
                found.minute,
                TraceMethod::Matched { found, candidates },
            )
        }))
    }

    async fn log_trace(
        &self,
        action: &str,
        actor: &str,
        hash: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.push(crate::identity::audit(
            actor,
            action,
            &format!("sha256:{hash}"),
            detail,
        ));
        self.store.write(batch).await?;
        Ok(())
    }

    /// `hotline admin trace-log`: every trace request, oldest first.
    pub fn trace_log(&self) -> Result<Vec<AuditRow>> {
        Ok(self
            .store
            .audit_log()?
            .into_iter()
            .filter(|e| e.action == TRACE || e.action == TRACE_REFUSED)
            .collect())
    }
}
