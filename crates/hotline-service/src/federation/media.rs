//! Media across servers: another server's media fetched for a local
//! client over signed federation (`/_matrix/federation/v1/media/download`),
//! checked, and kept here so it is fetched once.
//!
//! A remote file is kept under `media/remote/{origin}/{media_id}` with its
//! row in `remote_media`; the file is written before the row, and a row
//! whose file is gone (a backup copies local media only) is fetched again.
//! Thumbnails of remote media are made here from the kept original, by the
//! same thumbnailer as local media (under its limits and into its cache),
//! so the other server's thumbnails are never asked for.
//!
//! **Architecture Invariant:** remote media is asked only of the server
//! that names it (the `mxc://` server name), and only when that server is
//! an allowed peer ([`Services::federation_peer`]); an answer that points
//! elsewhere (a `Location`) is not followed.

use ruma::api::federation::authenticated_media::{get_content, FileOrLocation};
use ruma::ServerName;

use crate::media::{MediaKey, Thumbnail, ThumbnailMethod};
use crate::{Error, Result, Services};

/// A media file and what it is, local or another server's.
pub struct MediaFile {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
}

/// The longest content type or file name kept from another server.
const MAX_NAME_LEN: usize = 255;

/// Another server's `Content-Type` if it is one (`type/subtype`, tokens,
/// optional parameters, printable ASCII): anything else is dropped and the
/// file served as `application/octet-stream`.
fn checked_content_type(value: Option<String>) -> Option<String> {
    let value = value?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = value.split(';').next()?.trim();
    let (kind, sub) = essence.split_once('/')?;
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    (value.len() <= MAX_NAME_LEN && printable && token(kind) && token(sub)).then_some(value)
}

/// Another server's file name, without control characters, at most
/// [`MAX_NAME_LEN`] characters.
fn checked_filename(name: Option<String>) -> Option<String> {
    let name: String = name?
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_LEN)
        .collect();
    (!name.is_empty()).then_some(name)
}

impl Services {
    /// The media `mxc://{server}/{media_id}`: an upload of this server, or
    /// another server's, fetched over federation the first time and kept.
    ///
    /// `404 M_NOT_FOUND` when it is unknown here or there, or `server` is
    /// not an allowed peer; `502` when the peer cannot be reached or gives
    /// nothing usable (`M_TOO_LARGE` when the file is over the upload
    /// limit).
    pub async fn media_file(&self, server: &str, media_id: &str) -> Result<MediaFile> {
        if server == self.server_name().as_str() {
            let (meta, bytes) = self.download_media(media_id).await?;
            return Ok(MediaFile {
                content_type: meta.content_type,
                filename: meta.filename,
                bytes,
            });
        }
        let origin = ServerName::parse(server).map_err(|_| Error::not_found("Unknown media"))?;
        self.remote_media(&origin, media_id).await
    }

    /// A thumbnail of `mxc://{server}/{media_id}`; another server's media is
    /// fetched and kept first (see the module docs).
    pub async fn media_thumbnail_of(
        &self,
        server: &str,
        media_id: &str,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
    ) -> Result<Thumbnail> {
        if server == self.server_name().as_str() {
            return self.media_thumbnail(media_id, width, height, method).await;
        }
        let origin = ServerName::parse(server).map_err(|_| Error::not_found("Unknown media"))?;
        self.remote_media(&origin, media_id).await?;
        self.thumbnail_of(
            MediaKey::Remote(origin.as_str(), media_id),
            width,
            height,
            method,
        )
        .await
    }

    /// Another server's media: from what is kept here, else fetched once
    /// (concurrent requests for the same media wait for one fetch).
    async fn remote_media(&self, origin: &ServerName, media_id: &str) -> Result<MediaFile> {
        let key = MediaKey::Remote(origin.as_str(), media_id);
        if let Err(e) = self.federation_peer(origin) {
            tracing::debug!(peer = %origin, reason = %e, "remote media refused");
            return Err(Error::not_found(format!(
                "Media of {origin} is not available: it is not a federation peer of this server"
            )));
        }
        if let Some(kept) = self.kept_remote_media(key).await? {
            return Ok(kept);
        }
        let lock = {
            let mut fetching = self.media.fetching.lock();
            fetching.retain(|_, w| w.strong_count() > 0);
            let entry = fetching
                .entry((origin.as_str().to_owned(), media_id.to_owned()))
                .or_default();
            entry.upgrade().unwrap_or_else(|| {
                let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                *entry = std::sync::Arc::downgrade(&lock);
                lock
            })
        };
        let _fetching = lock.lock().await;
        // Fetched by the request this one waited for.
        if let Some(kept) = self.kept_remote_media(key).await? {
            return Ok(kept);
        }
        self.fetch_remote_media(origin, media_id).await
    }

    /// The kept copy of another server's media, if its row and file are
    /// both here.
    async fn kept_remote_media(&self, key: MediaKey<'_>) -> Result<Option<MediaFile>> {
        let MediaKey::Remote(origin, media_id) = key else {
            return Ok(None);
        };
        let Some(row) = self.store.get_remote_media(origin, media_id)? else {
            return Ok(None);
        };
        match self.media.read_key(key).await {
            Ok(bytes) => Ok(Some(MediaFile {
                content_type: row.content_type,
                filename: row.filename,
                bytes,
            })),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks `origin` for its media over signed federation, checks the
    /// answer, and keeps it (file, then row).
    async fn fetch_remote_media(&self, origin: &ServerName, media_id: &str) -> Result<MediaFile> {
        let answer = self
            .federation_call(origin, get_content::v1::Request::new(media_id.to_owned()))
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::not_found("Unknown media"),
                Error::Forbidden(said) => {
                    tracing::info!(peer = %origin, %said, "remote media refused by its server");
                    Error::Unavailable(format!("{origin} refused to serve its media"))
                }
                e => e,
            })?;
        let content = match answer.content {
            FileOrLocation::File(content) => content,
            FileOrLocation::Location(_) => {
                tracing::info!(peer = %origin, %media_id, "remote media answered with a Location, not followed");
                return Err(Error::Unavailable(format!(
                    "{origin} answered with a redirect, which this server does not follow"
                )));
            }
            _ => {
                return Err(Error::Unavailable(format!(
                    "{origin} gave an unreadable answer"
                )))
            }
        };
        let size = content.file.len();
        if size > self.config.max_upload_bytes {
            tracing::info!(peer = %origin, %media_id, size, "remote media over the upload limit");
            return Err(Error::RemoteTooLarge(format!(
                "The media is larger than this server's limit of {} bytes",
                self.config.max_upload_bytes
            )));
        }
        let content_type = checked_content_type(content.content_type);
        let filename = checked_filename(content.content_disposition.and_then(|d| d.filename));
        let bytes = std::sync::Arc::new(content.file);
        self.media
            .write_remote_file(origin.as_str(), media_id, RemoteBytes(bytes.clone()))
            .await?;
        self.store
            .write(hotline_store::WriteBatch::one(
                hotline_store::WriteOp::PutRemoteMedia(hotline_store::RemoteMediaRow {
                    origin: origin.as_str().to_owned(),
                    media_id: media_id.to_owned(),
                    content_type: content_type.clone(),
                    filename: filename.clone(),
                    size: size as i64,
                    fetched_ts: crate::now_ms(),
                }),
            ))
            .await?;
        tracing::info!(peer = %origin, %media_id, size, "remote media fetched and kept");
        Ok(MediaFile {
            content_type,
            filename,
            bytes: std::sync::Arc::try_unwrap(bytes).unwrap_or_else(|b| (*b).clone()),
        })
    }
}

/// Shared bytes handed to the blocking writer and kept for the answer.
struct RemoteBytes(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for RemoteBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_content_type_is_kept_only_when_it_is_one() {
        let ct = |s: &str| checked_content_type(Some(s.to_owned()));
        assert_eq!(ct("image/png").as_deref(), Some("image/png"));
        assert_eq!(
            ct("text/plain; charset=utf-8").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(ct("image/svg+xml").as_deref(), Some("image/svg+xml"));
        for bad in [
            "",
            "png",
            "/png",
            "image/",
            "image/p ng",
            "image/png\r\nX: y",
            "a/b\u{7f}",
        ] {
            assert_eq!(ct(bad), None, "{bad:?}");
        }
        assert_eq!(ct(&format!("a/{}", "b".repeat(300))), None);
        assert_eq!(checked_content_type(None), None);
    }

    #[test]
    fn a_remote_file_name_loses_control_characters_and_length() {
        assert_eq!(
            checked_filename(Some("cat\r\n.png".into())).as_deref(),
            Some("cat.png")
        );
        assert_eq!(checked_filename(Some("\u{0}".into())), None);
        assert_eq!(
            checked_filename(Some("é".repeat(400))).map(|n| n.chars().count()),
            Some(MAX_NAME_LEN)
        );
    }
}
