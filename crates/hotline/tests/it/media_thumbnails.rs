//! `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`, rule by
//! rule: real PNG and JPEG uploads, thumbnails decoded and measured.

use crate::common;

use std::io::Cursor;

use common::{Http, Server};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// Uploads `bytes` as `content_type`; returns `(server name, media id)`.
async fn upload(http: &Http, token: &str, content_type: &str, bytes: Vec<u8>) -> (String, String) {
    let resp = http
        .client
        .post(format!("{}/_matrix/media/v3/upload", http.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let uri = v["content_uri"].as_str().unwrap();
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

/// The thumbnail endpoint with `query`; `token` may be absent.
async fn thumbnail(
    http: &Http,
    token: Option<&str>,
    (server, id): &(String, String),
    query: &str,
) -> reqwest::Response {
    let mut req = http.client.get(format!(
        "{}/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}",
        http.base
    ));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// A successful thumbnail: its content type and the decoded image, after
/// checking it is served inline under the sandbox policy.
async fn decoded(resp: reqwest::Response) -> (String, DynamicImage) {
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .unwrap_or_else(|| panic!("{name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let content_type = header("content-type");
    let disposition = header("content-disposition");
    assert!(
        disposition.starts_with("inline; filename=\"thumbnail."),
        "{disposition}"
    );
    assert_eq!(
        header("content-security-policy"),
        "sandbox; default-src 'none'"
    );
    let bytes = resp.bytes().await.unwrap();
    let format = match content_type.as_str() {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        other => panic!("unexpected content type {other}"),
    };
    let img = image::load_from_memory_with_format(&bytes, format).unwrap();
    (content_type, img)
}

/// The `(status, errcode)` of an error answer.
async fn error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap();
    (status, v["errcode"].as_str().unwrap_or_default().to_owned())
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A `w` × `h` PNG with transparency: red in the left quarter, blue in the
/// right quarter, green between, so a centred crop shows only green.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = RgbaImage::from_fn(w, h, |x, _| {
        if x < w / 4 {
            Rgba([255, 0, 0, 255])
        } else if x >= w - w / 4 {
            Rgba([0, 0, 255, 200])
        } else {
            Rgba([0, 255, 0, 255])
        }
    });
    encode(DynamicImage::ImageRgba8(img), ImageFormat::Png)
}

/// A `w` × `h` JPEG, a smooth gradient (photo-like).
fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg)
}

async fn setup() -> (Server, Http, String) {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http.register("alice").await;
    (server, http, token)
}

#[tokio::test]
async fn scale_keeps_the_aspect_ratio_and_fits_the_box() {
    let (_server, http, token) = setup().await;
    let wide = upload(&http, &token, "image/png", png(1000, 500)).await;
    let (ct, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &wide,
            "width=320&height=240&method=scale",
        )
        .await,
    )
    .await;
    assert_eq!(ct, "image/png", "PNG stays PNG");
    assert_eq!((img.width(), img.height()), (320, 160));
    assert!(img.color().has_alpha(), "transparency kept");

    let tall = upload(&http, &token, "image/jpeg", jpeg(600, 1200)).await;
    let (ct, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &tall,
            "width=640&height=480&method=scale",
        )
        .await,
    )
    .await;
    assert_eq!(ct, "image/jpeg", "a photo stays JPEG");
    assert_eq!((img.width(), img.height()), (240, 480));

    // No `method`: the spec makes it optional; scale is the default.
    let (_, img) =
        decoded(thumbnail(&http, Some(&token), &tall, "width=640&height=480").await).await;
    assert_eq!((img.width(), img.height()), (240, 480));
}

#[tokio::test]
async fn crop_fills_the_requested_box_exactly_from_the_centre() {
    let (_server, http, token) = setup().await;
    let media = upload(&http, &token, "image/png", png(1000, 500)).await;
    for (w, h) in [(96, 96), (320, 240)] {
        let (_, img) = decoded(
            thumbnail(
                &http,
                Some(&token),
                &media,
                &format!("width={w}&height={h}&method=crop"),
            )
            .await,
        )
        .await;
        assert_eq!((img.width(), img.height()), (w, h));
    }
    // The square crop is the middle 500×500: green, no red or blue edge.
    let (_, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &media,
            "width=96&height=96&method=crop",
        )
        .await,
    )
    .await;
    let img = img.to_rgba8();
    for (x, y) in [(0, 0), (95, 0), (0, 95), (95, 95), (48, 48)] {
        let p = img.get_pixel(x, y).0;
        assert!(
            p[1] > 200 && p[0] < 50 && p[2] < 50,
            "pixel ({x},{y}) is {p:?}"
        );
    }
    // A size between presets is served at the next one up: never smaller
    // than asked, with the requested (square) shape.
    let (_, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &media,
            "width=50&height=50&method=crop",
        )
        .await,
    )
    .await;
    assert_eq!((img.width(), img.height()), (96, 96));
    let jpeg_media = upload(&http, &token, "image/jpeg", jpeg(1200, 900)).await;
    let (ct, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &jpeg_media,
            "width=32&height=32&method=crop",
        )
        .await,
    )
    .await;
    assert_eq!(
        (ct.as_str(), img.width(), img.height()),
        ("image/jpeg", 32, 32)
    );
}

#[tokio::test]
async fn a_small_image_is_never_upscaled() {
    let (_server, http, token) = setup().await;
    let small = upload(&http, &token, "image/png", png(40, 20)).await;
    let (_, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &small,
            "width=800&height=600&method=scale",
        )
        .await,
    )
    .await;
    assert_eq!(
        (img.width(), img.height()),
        (40, 20),
        "served at its own size"
    );
    let (_, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &small,
            "width=96&height=96&method=crop",
        )
        .await,
    )
    .await;
    assert_eq!(
        (img.width(), img.height()),
        (20, 20),
        "the square crop shrinks to fit"
    );
    let (_, img) = decoded(
        thumbnail(
            &http,
            Some(&token),
            &small,
            "width=320&height=240&method=crop",
        )
        .await,
    )
    .await;
    // 4:3 within 40×20, not blown up to 320×240.
    assert_eq!((img.width(), img.height()), (27, 20));
}

#[tokio::test]
async fn media_that_is_not_an_image_is_400_m_unknown_not_500() {
    let (server, http, token) = setup().await;
    // An encrypted attachment: opaque bytes.
    let opaque: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let encrypted = upload(&http, &token, "application/octet-stream", opaque).await;
    // A PNG cut off after its header, labelled as a PNG.
    let mut corrupt = png(200, 100);
    corrupt.truncate(60);
    corrupt.extend_from_slice(&[0xAB; 64]);
    let corrupt = upload(&http, &token, "image/png", corrupt).await;
    for media in [&encrypted, &corrupt] {
        let resp = thumbnail(&http, Some(&token), media, "width=96&height=96&method=crop").await;
        assert_eq!(
            error(resp).await,
            (400, "M_UNKNOWN".to_owned()),
            "{media:?}"
        );
    }
    let cached = std::fs::read_dir(server.data.join("media/thumbnails"))
        .unwrap()
        .count();
    assert_eq!(cached, 0, "nothing cached for media that has no thumbnail");
}

#[tokio::test]
async fn an_image_over_the_decode_limits_is_413_m_too_large() {
    let (_server, http, token) = setup().await;
    // 10,001 pixels wide: a few hundred bytes of PNG, over the 10,000 limit.
    let bomb = encode(DynamicImage::new_luma8(10_001, 1), ImageFormat::Png);
    let media = upload(&http, &token, "image/png", bomb).await;
    let resp = thumbnail(
        &http,
        Some(&token),
        &media,
        "width=32&height=32&method=crop",
    )
    .await;
    assert_eq!(error(resp).await, (413, "M_TOO_LARGE".to_owned()));
}

#[tokio::test]
async fn bad_parameters_are_400_m_invalid_param() {
    let (_server, http, token) = setup().await;
    let media = upload(&http, &token, "image/png", png(100, 100)).await;
    for query in [
        "width=96&height=96&method=stretch",
        "width=abc&height=96&method=crop",
        "width=0&height=96&method=crop",
        "width=96&height=-5&method=scale",
    ] {
        let resp = thumbnail(&http, Some(&token), &media, query).await;
        assert_eq!(
            error(resp).await,
            (400, "M_INVALID_PARAM".to_owned()),
            "{query}"
        );
    }
    // A required parameter left out is the spec's M_MISSING_PARAM.
    for query in ["height=96&method=crop", "width=96"] {
        let resp = thumbnail(&http, Some(&token), &media, query).await;
        assert_eq!(
            error(resp).await,
            (400, "M_MISSING_PARAM".to_owned()),
            "{query}"
        );
    }
}

#[tokio::test]
async fn a_missing_token_is_401_m_missing_token() {
    let (_server, http, token) = setup().await;
    let media = upload(&http, &token, "image/png", png(100, 100)).await;
    let resp = thumbnail(&http, None, &media, "width=96&height=96&method=crop").await;
    assert_eq!(error(resp).await, (401, "M_MISSING_TOKEN".to_owned()));
}

#[tokio::test]
async fn unknown_media_is_404_m_not_found() {
    let (_server, http, token) = setup().await;
    let (server_name, _) = upload(&http, &token, "image/png", png(10, 10)).await;
    for id in ["NoSuchMediaId123", "..%2F..%2Fhotline.db"] {
        let resp = thumbnail(
            &http,
            Some(&token),
            &(server_name.clone(), id.to_owned()),
            "width=96&height=96",
        )
        .await;
        assert_eq!(error(resp).await, (404, "M_NOT_FOUND".to_owned()), "{id}");
    }
}

#[tokio::test]
async fn the_second_request_is_served_from_the_cache() {
    let (server, http, token) = setup().await;
    let media = upload(&http, &token, "image/png", png(1000, 500)).await;
    let query = "width=300&height=200&method=scale";
    let first = thumbnail(&http, Some(&token), &media, query).await;
    assert_eq!(first.status(), 200);
    let first = first.bytes().await.unwrap();
    // 300×200 is served at the 320×240 preset; the file is named after it.
    let cache = server
        .data
        .join(format!("media/thumbnails/{}-320x240-scale", media.1));
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        first,
        "the cached file is what was served"
    );
    let leftovers: Vec<_> = std::fs::read_dir(cache.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
    // Swap the cached file for a recognisable one: the next answer must be
    // it, which shows the original was not decoded again.
    std::fs::write(
        &cache,
        encode(DynamicImage::new_rgb8(7, 5), ImageFormat::Png),
    )
    .unwrap();
    let (_, img) = decoded(thumbnail(&http, Some(&token), &media, query).await).await;
    assert_eq!((img.width(), img.height()), (7, 5));
}
