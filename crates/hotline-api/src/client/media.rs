//! Media: upload, authenticated download, thumbnail, config.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hotline_service::media::ThumbnailMethod;
use hotline_service::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{read_body, Auth, PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

/// `POST /_matrix/media/v3/upload`. Bodies over the configured limit are
/// refused before they are read whole.
pub async fn create_content_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<UploadQuery>,
    req: Request,
) -> ApiResult<Json<Value>> {
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = read_body(req, s.services.config.max_upload_bytes).await?;
    let media_id = s
        .services
        .upload_media(&sender.user_id, content_type, q.filename, bytes)
        .await?;
    Ok(Json(
        json!({ "content_uri": format!("mxc://{}/{}", s.services.server_name(), media_id) }),
    ))
}

/// The policy every media response carries: whatever a file holds, it
/// never runs script in the server's origin. Stricter than Synapse's
/// (which also allows inline styles and same-origin media and objects):
/// `default-src 'none'` covers scripts, objects, frames and styles alike.
const SANDBOX_POLICY: &str = "sandbox; default-src 'none'";

/// The headers every media response carries besides its type: the policy
/// above, and `nosniff`, so a browser never takes an upload for another
/// type than the one it is served as (an "image" that parses as script or
/// HTML), as Synapse sends.
pub(crate) fn media_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(SANDBOX_POLICY),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
}

async fn serve(
    s: &AppState,
    server: &str,
    media_id: &str,
    filename: Option<String>,
) -> ApiResult<Response> {
    // Local, or another server's fetched over federation once and kept.
    let file = s.services.media_file(server, media_id).await?;
    let ct = file
        .content_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let name = filename
        .or(file.filename)
        .unwrap_or_else(|| media_id.to_owned());
    let safe = safe_filename(&name);
    // Served as attachments with a strict policy: uploaded HTML never runs in our origin.
    let mut resp = (
        [
            (http::header::CONTENT_TYPE, ct),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}\""),
            ),
        ],
        file.bytes,
    )
        .into_response();
    media_headers(&mut resp);
    Ok(resp)
}

/// A file name as it may go into `Content-Disposition` unquoted-safe:
/// ASCII letters, digits, `.`, `_`, `-` and spaces.
pub(crate) fn safe_filename(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._- ".contains(*c))
        .collect()
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`.
pub async fn get_content_route(
    State(s): State<AppState>,
    Auth(_): Auth,
    PathArgs((server, media_id)): PathArgs<(String, String)>,
) -> ApiResult<Response> {
    serve(&s, &server, &media_id, None).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`.
pub async fn get_content_as_filename_route(
    State(s): State<AppState>,
    Auth(_): Auth,
    PathArgs((server, media_id, name)): PathArgs<(String, String, String)>,
) -> ApiResult<Response> {
    serve(&s, &server, &media_id, Some(name)).await
}

#[derive(Deserialize)]
pub struct ThumbnailQuery {
    // Strings, parsed below, so each bad value gets its own message.
    pub(crate) width: Option<String>,
    pub(crate) height: Option<String>,
    pub(crate) method: Option<String>,
}

impl ThumbnailQuery {
    /// The width, height and method asked for (`scale` when none).
    pub(crate) fn parsed(&self) -> Result<(u32, u32, ThumbnailMethod), Error> {
        let width = dimension("width", self.width.as_deref())?;
        let height = dimension("height", self.height.as_deref())?;
        let method = self.method.as_deref().unwrap_or("scale").parse()?;
        Ok((width, height, method))
    }
}

/// A required positive dimension: missing is `M_MISSING_PARAM` (the spec's
/// errcode for it, and Synapse's), anything but a positive integer is
/// `M_INVALID_PARAM`.
fn dimension(name: &str, value: Option<&str>) -> Result<u32, Error> {
    let value =
        value.ok_or_else(|| Error::MissingParam(format!("Missing query parameter '{name}'")))?;
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid_param(format!(
            "'{name}' must be a positive integer"
        ))),
    }
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`: a PNG
/// (or JPEG, for a JPEG original) of at least the requested size where the
/// original allows, never upscaled. `method` is optional in the spec;
/// without it the thumbnail is scaled, as Synapse does. `animated` is
/// accepted and ignored: thumbnails are always still, which the spec
/// allows. Media that is not an image (an encrypted attachment, a PDF, a
/// corrupt file) is the spec's `400` with `M_UNKNOWN`.
pub async fn get_content_thumbnail_route(
    State(s): State<AppState>,
    Auth(_): Auth,
    PathArgs((server, media_id)): PathArgs<(String, String)>,
    QueryArgs(q): QueryArgs<ThumbnailQuery>,
) -> ApiResult<Response> {
    let (width, height, method) = q.parsed()?;
    // Another server's media is fetched and kept whole, then thumbnailed
    // here like local media.
    let thumb = s
        .services
        .media_thumbnail_of(&server, &media_id, width, height, method)
        .await?;
    let name = if thumb.content_type == "image/jpeg" {
        "thumbnail.jpg"
    } else {
        "thumbnail.png"
    };
    // Inline, as the spec requires (only image types the spec allows inline
    // are ever produced), under the same policy as downloads.
    let mut resp = (
        [
            (http::header::CONTENT_TYPE, thumb.content_type.to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
        ],
        thumb.bytes,
    )
        .into_response();
    media_headers(&mut resp);
    Ok(resp)
}

/// `GET /_matrix/client/v1/media/config`.
pub async fn get_media_config_route(State(s): State<AppState>, Auth(_): Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": s.services.config.max_upload_bytes }))
}

/// `GET /_matrix/media/v3/config` (deprecated for
/// `/_matrix/client/v1/media/config`, still called by released clients):
/// the same answer, to the same callers.
pub async fn get_media_config_v3_route(state: State<AppState>, auth: Auth) -> Json<Value> {
    get_media_config_route(state, auth).await
}

/// `GET /_matrix/media/v3/download/…` and `/_matrix/media/v3/thumbnail/…`,
/// unauthenticated (deprecated by authenticated media, MSC3916): every
/// file here was uploaded under authenticated media, so, as Synapse answers
/// for such media, `404 M_NOT_FOUND`, the same whether or not the file
/// exists (nothing about a file is told to a caller without a token).
/// Clients move to `/_matrix/client/v1/media/…` on that answer.
pub async fn get_content_v3_route() -> ApiResult<Response> {
    Err(Error::not_found("Not found").into())
}
