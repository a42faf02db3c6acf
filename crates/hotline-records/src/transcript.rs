//! The readable transcript of a package: one HTML page, every value
//! escaped, no script, no external resource.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::canonical::utc;
use crate::package::{attachment_name, Filter};
use crate::read::Record;

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// What the entry says, as escaped HTML.
fn record_text(e: &Value, attachments: &BTreeMap<u64, (String, Vec<u8>)>, seq: u64) -> String {
    let c = &e["content"];
    match s(e, "kind") {
        "message" => escape(s(c, "body")),
        "edit" => {
            let new = c
                .get("m.new_content")
                .map(|n| s(n, "body"))
                .unwrap_or(s(c, "body"));
            let of = c
                .get("m.relates_to")
                .map(|r| s(r, "event_id"))
                .unwrap_or("");
            format!("<i>edit of {}:</i> {}", escape(of), escape(new))
        }
        "redaction" => {
            let mut t = format!("<i>redacted {}</i>", escape(s(c, "redacts")));
            if !s(c, "reason").is_empty() {
                let _ = write!(t, " (reason: {})", escape(s(c, "reason")));
            }
            t
        }
        "attachment" => {
            let a = &e["attachment"];
            let mut t = format!(
                "<i>attachment:</i> {} ({}, {} bytes, SHA-256 {})",
                escape(&attachment_name(e)),
                escape(c.get("info").map(|i| s(i, "mimetype")).unwrap_or("")),
                a["size"].as_u64().unwrap_or(0),
                escape(s(a, "sha256")),
            );
            if let Some((name, _)) = attachments.get(&seq) {
                let _ = write!(
                    t,
                    " — <a href=\"attachments/{0}\">attachments/{0}</a>",
                    escape(name)
                );
            }
            t
        }
        "call" => {
            let mut t = format!(
                "<i>call {}</i> (call {})",
                escape(s(c, "event")),
                escape(s(c, "call_id"))
            );
            if let Some(ms) = c.get("duration_ms").and_then(Value::as_i64) {
                let secs = ms / 1000;
                let _ = write!(t, ", lasted {} min {} s", secs / 60, secs % 60);
            }
            t
        }
        "undecryptable" => format!("<i>could not be decrypted</i> ({})", escape(s(c, "reason"))),
        other => format!("<i>{}</i>", escape(other)),
    }
}

pub(crate) fn render(
    filter: &Filter,
    manifest: &Value,
    records: &[&Record],
    attachments: &BTreeMap<u64, (String, Vec<u8>)>,
) -> String {
    let window = match (filter.from, filter.to) {
        (None, None) => "all time".to_owned(),
        (f, t) => format!(
            "from {} to {}",
            f.map_or("the start".into(), utc),
            t.map_or("the end".into(), utc)
        ),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Official record: {line}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}\
         td,th{{border-bottom:1px solid #ccc;padding:.4em;text-align:left;vertical-align:top}}\
         td.text{{white-space:pre-wrap}}.who small{{color:#555}}</style></head><body>\n\
         <h1>Official record</h1>\n<p>Line <code>{line}</code>, {window}. {n} entries. \
         Archive <code>{archive}</code>, entries 1 to {last} chained and signed; \
         check with <code>hotline records verify</code>.</p>\n\
         <table><thead><tr><th>#</th><th>Time (UTC)</th><th>From</th><th>Kind</th><th>Record</th></tr></thead><tbody>\n",
        line = escape(&filter.line),
        window = escape(&window),
        n = records.len(),
        archive = escape(s(manifest, "archive_id")),
        last = manifest["last_seq"],
    );
    for r in records {
        let e = &r.entry;
        let mut who = String::new();
        if !s(e, "sender_name").is_empty() {
            let _ = write!(who, "<b>{}</b><br>", escape(s(e, "sender_name")));
        }
        if !s(e, "sender_title").is_empty() {
            let _ = write!(who, "{}<br>", escape(s(e, "sender_title")));
        }
        let _ = write!(who, "<small>{}</small>", escape(s(e, "sender")));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"who\">{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
            r.seq,
            utc(r.ts),
            who,
            escape(s(e, "kind")),
            record_text(e, attachments, r.seq)
                + &e
                    .get("resolves")
                    .and_then(Value::as_u64)
                    .map(|m| format!(" <i>(decrypted later: resolves entry {m})</i>"))
                    .unwrap_or_default()
        );
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}
