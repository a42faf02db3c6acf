//! Media for other servers: `/_matrix/federation/v1/media/download` and
//! `/media/thumbnail`, the uploads of this server only (never media this
//! server keeps for another), answered `multipart/mixed` as the spec has
//! it: a JSON metadata part (`{}`) and the content with its type and
//! disposition (ruma's encoding).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hotline_service::Error;
use ruma::api::federation::authenticated_media::{
    get_content, get_content_thumbnail, Content, ContentMetadata, FileOrLocation,
};
use ruma::api::OutgoingResponse;
use ruma::http_headers::{ContentDisposition, ContentDispositionType};

use super::Signed;
use crate::client::media::{media_headers, ThumbnailQuery};
use crate::extract::{PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

/// The spec's two parts, as one response.
fn multipart(answer: impl OutgoingResponse) -> ApiResult<Response> {
    let http = answer
        .try_into_http_response::<Vec<u8>>()
        .map_err(Error::internal)?;
    let mut resp = http.map(axum::body::Body::from).into_response();
    media_headers(&mut resp);
    Ok(resp)
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`.
pub async fn get_content_route(
    State(s): State<AppState>,
    PathArgs(media_id): PathArgs<String>,
    signed: Signed,
) -> ApiResult<Response> {
    let (meta, bytes) = s.services.download_media(&media_id).await?;
    tracing::debug!(peer = %signed.origin, %media_id, "media served to a peer");
    let disposition =
        ContentDisposition::new(ContentDispositionType::Attachment).with_filename(meta.filename);
    let content = Content::new(
        bytes,
        meta.content_type
            .unwrap_or_else(|| "application/octet-stream".into()),
        disposition,
    );
    multipart(get_content::v1::Response::new(
        ContentMetadata::new(),
        FileOrLocation::File(content),
    ))
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`: the thumbnail a
/// local client would get (see the client route), inline.
pub async fn get_content_thumbnail_route(
    State(s): State<AppState>,
    PathArgs(media_id): PathArgs<String>,
    QueryArgs(q): QueryArgs<ThumbnailQuery>,
    signed: Signed,
) -> ApiResult<Response> {
    let (width, height, method) = q.parsed()?;
    let thumb = s
        .services
        .media_thumbnail(&media_id, width, height, method)
        .await?;
    tracing::debug!(peer = %signed.origin, %media_id, "thumbnail served to a peer");
    let name = if thumb.content_type == "image/jpeg" {
        "thumbnail.jpg"
    } else {
        "thumbnail.png"
    };
    let disposition = ContentDisposition::new(ContentDispositionType::Inline)
        .with_filename(Some(name.to_owned()));
    let content = Content::new(thumb.bytes, thumb.content_type.to_owned(), disposition);
    multipart(get_content_thumbnail::v1::Response::new(
        ContentMetadata::new(),
        FileOrLocation::File(content),
    ))
}
