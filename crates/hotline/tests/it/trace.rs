//! Leak tracing: each device's watermark tag (`GET /_hotline/v1/watermark`),
//! and `hotline trace IMAGE` beside the running server: a screenshot drawn
//! with a device's watermark names that device, its line and its minute; a
//! screenshot without one, or with a tag this server never handed out,
//! names nobody; who may trace is configurable; every request is logged.
//! (The real web app's screenshots, leaked five ways, are traced by
//! web/test/watermark.mjs.)

use crate::common;

use common::{status_errcode, Http, Server};
use hotline_trace::payload::{line_hash, minute_of, Payload, CELL_CSS_PX};
use image::{Rgba, RgbaImage};

async fn tag(http: &Http, token: &str) -> u32 {
    let (s, v) = http
        .call("GET", "/_hotline/v1/watermark", Some(token), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["tag"].as_u64().expect("a number") as u32
}

/// A chat-like screenshot (white page, grey bubbles with dark "text")
/// with the watermark of `p` drawn over it, as PNG.
fn screenshot(p: Option<&Payload>) -> Vec<u8> {
    let mut img = RgbaImage::from_pixel(1200, 760, Rgba([255, 255, 255, 255]));
    for (i, y) in (60..700).step_by(90).enumerate() {
        let x0 = if i % 2 == 0 { 340 } else { 640 };
        for yy in y..y + 56 {
            for xx in x0..x0 + 420 {
                let glyph =
                    (yy - y) % 20 > 6 && (yy - y) % 20 < 16 && (xx / 7) % 5 != 0 && xx > x0 + 10;
                let v = if glyph { 40 } else { 238 };
                img.put_pixel(xx, yy, Rgba([v, v, v + 10, 255]));
            }
        }
    }
    if let Some(p) = p {
        hotline_trace::tools::draw(&mut img, p, CELL_CSS_PX as u32, 0, 0);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn trace(
    server: &Server,
    files: &[&std::path::Path],
    env: &[(&str, &str)],
    by: Option<&str>,
) -> (bool, String) {
    let mut c = server.command();
    for (k, v) in env {
        c.env(k, v);
    }
    c.arg("trace").args(files);
    if let Some(b) = by {
        c.args(["--by", b]);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn a_device_keeps_its_watermark_tag_and_devices_differ() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let a = http.register("wmalice").await;
    let first = tag(&http, &a).await;
    assert_eq!(
        tag(&http, &a).await,
        first,
        "the same device draws the same tag"
    );
    let other = http.login("wmalice", "correct horse").await;
    assert_ne!(
        tag(&http, &other).await,
        first,
        "another device of the same user has its own"
    );
    let r = http.call("GET", "/_hotline/v1/watermark", None, None).await;
    assert_eq!(status_errcode(&r), (401, "M_MISSING_TOKEN"));
}

#[tokio::test]
async fn a_screenshot_traces_to_its_device_line_and_minute_beside_the_running_server() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http.register("wmviewer").await;
    let device = http.device_id(&token).await;
    let room = http.create_room(&token).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let p = Payload {
        tag: tag(&http, &token).await,
        line: line_hash(&room),
        minute: minute_of(now),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leak.png");
    std::fs::write(&file, screenshot(Some(&p))).unwrap();
    let (ok, out) = trace(&server, &[&file], &[], Some("duty officer"));
    assert!(ok, "{out}");
    assert!(out.contains("watermark found"), "{out}");
    assert!(out.contains(&format!("user        @wmviewer:")), "{out}");
    assert!(out.contains(&format!("device      {device}\n")), "{out}");
    assert!(out.contains(&format!("line        {room}\n")), "{out}");
    let minute = now / 60_000 * 60_000;
    let from = out
        .lines()
        .find(|l| l.trim_start().starts_with("time"))
        .unwrap();
    let (h, m) = ((minute / 3_600_000) % 24, (minute / 60_000) % 60);
    assert!(
        from.contains(&format!("{h:02}:{m:02} to")),
        "{from} (expected {h:02}:{m:02})"
    );
    let log = server.admin(&["trace-log"]);
    assert!(log.contains("\tduty officer\tsha256:"), "{log}");
    assert!(log.contains(&device), "{log}");
    assert!(log.contains(r#""method":"decoded""#), "{log}");
}

#[tokio::test]
async fn no_watermark_and_unknown_tags_name_no_device() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http.register("wminnocent").await;
    let _ = tag(&http, &token).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.png");
    std::fs::write(&plain, screenshot(None)).unwrap();
    // A well-formed watermark whose tag this server never handed out.
    let forged = dir.path().join("forged.png");
    let p = Payload {
        tag: 0x0bad_f00d,
        line: 7,
        minute: 1,
    };
    std::fs::write(&forged, screenshot(Some(&p))).unwrap();
    let (ok, out) = trace(&server, &[&plain, &forged], &[], None);
    assert!(ok, "{out}");
    assert_eq!(out.matches("no watermark found").count(), 2, "{out}");
    assert!(!out.contains("wminnocent"), "{out}");
}

#[tokio::test]
async fn only_listed_trace_operators_may_trace_and_refusals_are_logged() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.png");
    std::fs::write(&plain, screenshot(None)).unwrap();
    let env = [("HOTLINE_TRACE__OPERATORS", "officer a,officer b")];
    let (ok, out) = trace(&server, &[&plain], &env, Some("intruder"));
    assert!(!ok, "{out}");
    assert!(out.contains("may not trace"), "{out}");
    let (ok, out) = trace(&server, &[&plain], &env, None);
    assert!(
        !ok,
        "an unnamed tracer is refused when operators are listed: {out}"
    );
    let (ok, out) = trace(&server, &[&plain], &env, Some("officer b"));
    assert!(ok, "{out}");
    let log = server.admin(&["trace-log"]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains("\tintruder\t") && lines[0].contains("\ttrace_refused\t"),
        "{log}"
    );
    assert!(
        lines[2].contains("\tofficer b\t") && lines[2].contains("no watermark found"),
        "{log}"
    );
}

#[tokio::test]
async fn a_leak_too_damaged_to_decode_is_matched_against_the_issued_tags_and_only_those() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http.register("wmdamaged").await;
    let device = http.device_id(&token).await;
    let room = http.create_room(&token).await;
    // Other devices the server issued tags to: the match must pick ours.
    for i in 0..5 {
        let t = http.register(&format!("wmother{i}")).await;
        let _ = tag(&http, &t).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ours = Payload {
        tag: tag(&http, &token).await,
        line: line_hash(&room),
        minute: minute_of(now),
    };
    let forged = Payload {
        tag: 0x0bad_f00d,
        ..ours
    };
    // Cropped to 320 x 240 around a message, scaled to a third, recompressed
    // at quality 50: beyond the code alone (0 of 200 synthetic tags decode).
    let leak = |p: &Payload| {
        let img = image::load_from_memory(&screenshot(Some(p))).unwrap();
        let t = hotline_trace::tools::Transform {
            crop: Some((360, 130, 320, 240)),
            scale: Some(0.33),
            jpeg: Some(50),
        };
        hotline_trace::tools::transform(&img, &t).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let (ours_file, forged_file) = (dir.path().join("ours.jpg"), dir.path().join("forged.jpg"));
    std::fs::write(&ours_file, leak(&ours)).unwrap();
    std::fs::write(&forged_file, leak(&forged)).unwrap();
    assert_eq!(
        hotline_trace::decode_bytes(&leak(&ours)).unwrap(),
        None,
        "the code alone cannot read this leak (else this test proves nothing new)"
    );
    let (ok, out) = trace(&server, &[&ours_file, &forged_file], &[], None);
    assert!(ok, "{out}");
    let (first, second) = out.split_once("forged.jpg").unwrap();
    assert!(first.contains("watermark found"), "{out}");
    assert!(first.contains(&format!("device      {device}\n")), "{out}");
    assert!(first.contains(&format!("line        {room}\n")), "{out}");
    assert!(first.contains("matched against"), "{out}");
    let log = server.admin(&["trace-log"]);
    assert!(log.contains(r#""method":"matched""#), "{log}");
    let minute = now / 60_000 * 60_000;
    let (h, m) = ((minute / 3_600_000) % 24, (minute / 60_000) % 60);
    assert!(first.contains(&format!("{h:02}:{m:02} to")), "{out}");
    assert!(
        second.contains("no watermark found"),
        "a tag the server never issued names nobody, however it is read: {out}"
    );
}
