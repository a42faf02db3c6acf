//! Leak tracing: each device's watermark tag, and `hotline trace`, which
//! reads a screenshot's watermark (`hotline-trace`) and says whose device
//! showed it, on which line, in which minute.
//!
//! A tag is 32 random bits the server assigns a device the first time the
//! web app asks (`GET /_hotline/v1/watermark`) and keeps in the store's
//! metadata both ways (`watermark_device:USER|DEVICE` -> tag,
//! `watermark_tag:TAG` -> user and device), so the same device always draws
//! the same tag and a tag outlives its device: a screenshot taken on a
//! device since signed out still traces to it.
//!
//! **Invariant:** a trace names a device only when the decoder's checks
//! pass (`hotline_trace::decode`) *and* the tag is one this server handed
//! out; otherwise it says no watermark was found.
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
    pub detection: hotline_trace::Detection,
}

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
            value: json!({"user_id": user_id, "device_id": device_id}).to_string(),
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
        let outcome = match hotline_trace::decode::decode_bytes(image) {
            Err(e) => {
                self.log_trace(TRACE, actor, &hash, json!({"result": "unreadable image"}))
                    .await?;
                return Err(Error::invalid_param(format!(
                    "not a PNG or JPEG image: {e}"
                )));
            }
            Ok(None) => TraceOutcome::NotFound,
            Ok(Some(d)) => match self.watermark_owner(d.payload.tag)? {
                None => TraceOutcome::NotFound,
                Some((user_id, device_id)) => {
                    let device_exists = self.store.get_device(&user_id, &device_id)?.is_some();
                    let room_id = match d.payload.line {
                        0 => None,
                        n => self
                            .store
                            .memberships_of_user(&user_id)?
                            .into_iter()
                            .map(|m| m.room_id)
                            .find(|r| hotline_trace::line_hash(r) == n),
                    };
                    let minute =
                        hotline_trace::payload::full_minute(d.payload.minute, crate::now_ms());
                    TraceOutcome::Found(Trace {
                        user_id,
                        device_id,
                        device_exists,
                        room_id,
                        line_number: d.payload.line,
                        from_ms: minute * 60_000,
                        confidence: d.confidence(),
                        detection: d,
                    })
                }
            },
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
            }),
        };
        self.log_trace(TRACE, actor, &hash, detail).await?;
        Ok(outcome)
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
