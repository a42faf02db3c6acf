//! Media repository: files on disk under the data directory, metadata in the
//! store. Encrypted attachments arrive already encrypted; the server stores
//! bytes it cannot read.
//!
//! Thumbnails are derived from the stored file on first request and cached
//! in `thumbnails/` beside it, named `{media_id}-{w}x{h}-{method}`. Sizes
//! snap to a few presets, so one upload has at most ten cached thumbnails.
//!
//! **Architecture Invariant:** untrusted images are decoded only off the async
//! runtime, at most [`THUMBNAILERS`] at a time, under [`decode_limits`]: a
//! decompression bomb is refused (`413 M_TOO_LARGE`) before its pixels are
//! allocated, and bytes that are not an image never reach a decoder.

use std::io::{Read, Write};
use std::path::PathBuf;

use image::{DynamicImage, ImageDecoder, ImageFormat};
use rand::Rng;

use crate::{Error, Result};

/// Thumbnails generated at once. Each may hold up to [`MAX_DECODE_BYTES`] of
/// pixels plus the original file, so this bounds the memory they take.
const THUMBNAILERS: usize = 2;
/// Largest width or height of an image the server decodes.
const MAX_DECODE_SIDE: u32 = 10_000;
/// Most memory one decode may allocate (the decoded pixels included).
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// The sizes thumbnails are made in: Synapse's defaults (`thumbnail_sizes`),
/// smallest first. A request is served at the smallest size that covers it,
/// so the spec's "same as or larger than requested" holds up to 800×600 and
/// the cache holds at most one file per size and method. Unlike Synapse, a
/// crop may use every size (Synapse crops at 32×32 and 96×96 only), so a
/// crop bigger than 96×96 is not answered smaller than asked.
const THUMBNAIL_SIZES: [(u32, u32); 5] = [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600)];
/// JPEG thumbnails' quality: Synapse's.
const JPEG_QUALITY: u8 = 80;

/// How a thumbnail fits the requested box (the spec's `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThumbnailMethod {
    /// Fill the box exactly: scale, then cut the overflow off both sides.
    Crop,
    /// Fit inside the box, keeping the aspect ratio.
    Scale,
}

impl ThumbnailMethod {
    fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        }
    }
}

impl std::str::FromStr for ThumbnailMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "crop" => Ok(ThumbnailMethod::Crop),
            "scale" => Ok(ThumbnailMethod::Scale),
            _ => Err(Error::invalid_param("method must be 'crop' or 'scale'")),
        }
    }
}

/// An encoded thumbnail: PNG, or JPEG for a JPEG original (photos stay
/// small; everything else may have transparency).
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    /// `image/png` or `image/jpeg`: both may be served inline.
    pub content_type: &'static str,
}

pub struct Media {
    dir: PathBuf,
    thumbnails: PathBuf,
    thumbnailers: tokio::sync::Semaphore,
    /// Remote media being fetched, one lock per `(origin, media_id)`, so
    /// concurrent requests for it fetch it once (see `federation/media.rs`).
    pub(crate) fetching: parking_lot::Mutex<Fetching>,
    /// Uploads are failing for want of space (see [`Media::note_full`]).
    full: std::sync::atomic::AtomicBool,
}

/// The locks of remote media fetches in flight, by `(origin, media_id)`.
pub(crate) type Fetching =
    std::collections::HashMap<(String, String), std::sync::Weak<tokio::sync::Mutex<()>>>;

/// Whether an I/O error means the disk (`ENOSPC`) or a quota (`EDQUOT`) is
/// full.
fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl Media {
    pub fn new(dir: PathBuf) -> Result<Self> {
        let thumbnails = dir.join("thumbnails");
        std::fs::create_dir_all(&thumbnails).map_err(Error::internal)?;
        Ok(Self {
            dir,
            thumbnails,
            thumbnailers: tokio::sync::Semaphore::new(THUMBNAILERS),
            fetching: Default::default(),
            full: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A fresh media id: 24 random alphanumerics.
    pub fn new_id() -> String {
        rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect()
    }

    fn path(&self, media_id: &str) -> Result<PathBuf> {
        check_id(media_id)?;
        Ok(self.dir.join(media_id))
    }

    /// Where another server's media is kept: `remote/{origin}/{media_id}`
    /// (see [`MediaKey::stem`]).
    fn remote_path(&self, origin: &str, media_id: &str) -> Result<PathBuf> {
        Ok(self.dir.join(MediaKey::Remote(origin, media_id).stem()?))
    }

    /// The file of `key`.
    fn file_path(&self, key: MediaKey<'_>) -> Result<PathBuf> {
        match key {
            MediaKey::Local(id) => self.path(id),
            MediaKey::Remote(origin, id) => self.remote_path(origin, id),
        }
    }

    /// Writes the file and makes it durable (its bytes, then its name in
    /// the directory) before the metadata is committed, so a `200` never
    /// points at a missing file. Off the async runtime: a 50 MB write and
    /// its fsync would stall every request on the worker. A write that
    /// fails (a full disk: [`Error::StorageFull`]) leaves no file behind.
    pub async fn write_file(
        &self,
        media_id: &str,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<()> {
        self.write_at(self.path(media_id)?, bytes).await
    }

    /// Keeps another server's media file, as [`Media::write_file`] does an
    /// upload (its directory made first).
    pub(crate) async fn write_remote_file(
        &self,
        origin: &str,
        media_id: &str,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<()> {
        self.write_at(self.remote_path(origin, media_id)?, bytes)
            .await
    }

    async fn write_at(
        &self,
        path: PathBuf,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<()> {
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            let tmp = path.with_extension("part");
            let written = (|| {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(bytes.as_ref())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&dir)?.sync_all()
            })();
            if written.is_err() {
                // Whichever step failed, neither name may keep a file the
                // store has no row for (a half-written one least of all).
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(&path);
            }
            written
        })
        .await
        .map_err(Error::internal)?;
        written.map_err(|e| {
            if is_no_space(&e) {
                self.note_full(&e);
                Error::StorageFull
            } else {
                Error::internal(e)
            }
        })?;
        self.note_space();
        Ok(())
    }

    /// Removes a stored file whose metadata could not be committed.
    async fn remove_file(&self, media_id: &str) {
        if let Ok(path) = self.path(media_id) {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        }
    }

    /// An upload failed for want of space: logged when an episode starts,
    /// not for every upload refused during it.
    fn note_full(&self, e: &std::io::Error) {
        if !self.full.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                error = %e,
                "media storage full: uploads are refused (M_RESOURCE_LIMIT_EXCEEDED) until space returns"
            );
        }
    }

    /// An upload was stored: an episode of a full disk, if any, is over.
    fn note_space(&self) {
        if self.full.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("media storage has space again: uploads succeed");
        }
    }

    pub async fn read_file(&self, media_id: &str) -> Result<Vec<u8>> {
        self.read_key(MediaKey::Local(media_id)).await
    }

    /// The file of `key`; `NotFound` when there is none.
    pub(crate) async fn read_key(&self, key: MediaKey<'_>) -> Result<Vec<u8>> {
        let path = self.file_path(key)?;
        tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(Error::internal)?
            .map_err(|_| Error::not_found("Unknown media"))
    }

    /// Where the thumbnail of `media_id` at `size` by `method` is cached.
    fn thumbnail_path(
        &self,
        key: MediaKey<'_>,
        (w, h): (u32, u32),
        method: ThumbnailMethod,
    ) -> Result<PathBuf> {
        // `stem` checks the names: nothing outside the media directory is named.
        Ok(self
            .thumbnails
            .join(format!("{}-{w}x{h}-{}", key.stem()?, method.as_str())))
    }

    /// The cached thumbnail, if there is a whole one. Its type is read from
    /// its own first bytes, so the name needs no extension.
    async fn cached_thumbnail(&self, path: &std::path::Path) -> Option<Thumbnail> {
        let path = path.to_owned();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .ok()?
            .ok()?;
        let content_type = match image::guess_format(&bytes).ok()? {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            _ => return None,
        };
        Some(Thumbnail {
            bytes,
            content_type,
        })
    }

    /// Caches a thumbnail: written to a unique temporary name, then renamed,
    /// so a reader sees the whole file or none (two requests making the
    /// same thumbnail write the same bytes; the last rename wins). Derived
    /// data: not fsynced, a crash at worst costs a regeneration. A failure
    /// is logged and the thumbnail served anyway.
    async fn cache_thumbnail(&self, path: PathBuf, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let tmp = path.with_extension(format!("{}.part", Self::new_id()));
        let (written, bytes) = tokio::task::spawn_blocking(move || {
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&tmp, &bytes))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            (written, bytes)
        })
        .await
        .map_err(Error::internal)?;
        if let Err(e) = written {
            tracing::warn!(error = %e, "thumbnail not cached");
        }
        Ok(bytes)
    }

    /// Makes a thumbnail of the stored file, off the async runtime.
    /// `CannotThumbnail` when the file is not a PNG, JPEG, GIF or WebP image, or cannot be
    /// decoded: its first bytes are checked before the rest is read, so an
    /// encrypted attachment costs one small read.
    async fn make_thumbnail(
        &self,
        key: MediaKey<'_>,
        size: (u32, u32),
        method: ThumbnailMethod,
    ) -> Result<Thumbnail> {
        let path = self.file_path(key)?;
        tokio::task::spawn_blocking(move || -> Result<Thumbnail> {
            let mut file =
                std::fs::File::open(path).map_err(|_| Error::not_found("Unknown media"))?;
            let mut bytes = Vec::new();
            (&mut file)
                .take(16)
                .read_to_end(&mut bytes)
                .map_err(Error::internal)?;
            let format = match image::guess_format(&bytes) {
                Ok(
                    f @ (ImageFormat::Png
                    | ImageFormat::Jpeg
                    | ImageFormat::Gif
                    | ImageFormat::WebP),
                ) => f,
                _ => return Err(Error::CannotThumbnail),
            };
            file.read_to_end(&mut bytes).map_err(Error::internal)?;
            render(&bytes, format, size, method)
        })
        .await
        .map_err(Error::internal)?
    }
}

/// A media id as this server names its files: letters, digits, `_`, `-`
/// (what the spec's `mxc://` grammar allows); anything else is unknown.
fn check_id(media_id: &str) -> Result<()> {
    if media_id.is_empty()
        || media_id.len() > 255
        || !media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::not_found("Unknown media"));
    }
    Ok(())
}

/// Which media file: an upload of this server, or another server's
/// (`origin`, `media_id`) kept here.
#[derive(Clone, Copy, Debug)]
pub enum MediaKey<'a> {
    Local(&'a str),
    Remote(&'a str, &'a str),
}

impl MediaKey<'_> {
    /// The file's name under the media directory (and its thumbnails' under
    /// `thumbnails/`): the media id, or `remote/{origin}/{media_id}` with
    /// the origin's `:` written `+` (a server name has letters, digits,
    /// `.`, `-`, `:` and the brackets of an IPv6 literal; `+` never, so two
    /// origins never share a directory). A name that could leave the
    /// directory is `NotFound`.
    fn stem(self) -> Result<String> {
        match self {
            MediaKey::Local(id) => {
                check_id(id)?;
                Ok(id.to_owned())
            }
            MediaKey::Remote(origin, id) => {
                check_id(id)?;
                if origin.is_empty()
                    || origin.len() > 255
                    || origin.starts_with('.')
                    || !origin
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                {
                    return Err(Error::not_found("Unknown media"));
                }
                Ok(format!("remote/{}/{id}", origin.replace(':', "+")))
            }
        }
    }
}

/// Limits for decoding an untrusted image: a small file claiming 100,000 ×
/// 100,000 pixels is refused from its header, before any allocation.
fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// The preset size a request for `width` × `height` is served at: the
/// smallest covering it, else the largest (the spec lets a server answer
/// smaller than asked only when it must; 800×600 is where it must).
pub fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    THUMBNAIL_SIZES
        .into_iter()
        .find(|&(w, h)| w >= width && h >= height)
        .unwrap_or(THUMBNAIL_SIZES[THUMBNAIL_SIZES.len() - 1])
}

/// `n × num / den`, rounded, at least 1: integer arithmetic, so a side that
/// is meant to equal another comes out equal.
fn ratio(n: u32, num: u32, den: u32) -> u32 {
    let den = u64::from(den.max(1));
    ((u64::from(n) * u64::from(num) + den / 2) / den).clamp(1, u64::from(u32::MAX)) as u32
}

/// `Scale`: the largest size within the box with the original's aspect ratio,
/// never larger than the original (the spec: servers MUST NOT upscale).
fn scaled_dims((ow, oh): (u32, u32), (bw, bh): (u32, u32)) -> (u32, u32) {
    if ow <= bw && oh <= bh {
        return (ow, oh);
    }
    // Whichever side is the tighter fit sets the scale.
    if u64::from(bw) * u64::from(oh) <= u64::from(bh) * u64::from(ow) {
        (bw, ratio(oh, bw, ow).min(bh))
    } else {
        (ratio(ow, bh, oh).min(bw), bh)
    }
}

/// `Crop`: the output size (the box, shrunk to fit inside the original
/// with the box's aspect ratio when the original is smaller: no upscaling)
/// and the centred region of the original, with that aspect ratio, that is
/// scaled down to it.
fn crop_plan((ow, oh): (u32, u32), (bw, bh): (u32, u32)) -> ((u32, u32), (u32, u32, u32, u32)) {
    // The largest region of the original with the box's aspect ratio.
    let (rw, rh) = if u64::from(ow) * u64::from(bh) > u64::from(oh) * u64::from(bw) {
        (ratio(oh, bw, bh).min(ow), oh)
    } else {
        (ow, ratio(ow, bh, bw).min(oh))
    };
    let out = if bw <= rw && bh <= rh {
        (bw, bh)
    } else {
        (rw, rh)
    };
    (out, ((ow - rw) / 2, (oh - rh) / 2, rw, rh))
}

/// Decodes `bytes`, resizes and encodes the thumbnail. Blocking: CPU-bound.
/// The EXIF orientation is applied, since re-encoding drops the EXIF data
/// (and with it a photo's location) that told viewers to rotate it.
fn render(
    bytes: &[u8],
    format: ImageFormat,
    size: (u32, u32),
    method: ThumbnailMethod,
) -> Result<Thumbnail> {
    let decoded = (|| -> image::ImageResult<DynamicImage> {
        let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        reader.limits(decode_limits());
        let mut decoder = reader.into_decoder()?;
        // `into_decoder` sets the limits but, unlike `decode`, does not
        // reserve the output buffer against them.
        decode_limits().reserve(decoder.total_bytes())?;
        let orientation = decoder.orientation()?;
        let mut img = DynamicImage::from_decoder(decoder)?;
        img.apply_orientation(orientation);
        Ok(img)
    })();
    let img = match decoded {
        Ok(img) => img,
        Err(image::ImageError::Limits(_)) => {
            return Err(Error::TooLarge("Content is too large to thumbnail".into()))
        }
        Err(e) => {
            tracing::debug!(error = %e, "media not thumbnailable");
            return Err(Error::CannotThumbnail);
        }
    };
    let original = (img.width(), img.height());
    let filter = image::imageops::FilterType::Triangle;
    let thumb = match method {
        ThumbnailMethod::Scale => {
            let (w, h) = scaled_dims(original, size);
            if (w, h) == original {
                img
            } else {
                img.resize_exact(w, h, filter)
            }
        }
        ThumbnailMethod::Crop => {
            let ((w, h), (x, y, rw, rh)) = crop_plan(original, size);
            let region = img.crop_imm(x, y, rw, rh);
            if (w, h) == (rw, rh) {
                region
            } else {
                region.resize_exact(w, h, filter)
            }
        }
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let content_type = if format == ImageFormat::Jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
            .encode_image(&thumb.to_rgb8())
            .map_err(Error::internal)?;
        "image/jpeg"
    } else {
        let thumb = if thumb.color().has_alpha() {
            DynamicImage::ImageRgba8(thumb.to_rgba8())
        } else {
            DynamicImage::ImageRgb8(thumb.to_rgb8())
        };
        thumb
            .write_to(&mut out, ImageFormat::Png)
            .map_err(Error::internal)?;
        "image/png"
    };
    Ok(Thumbnail {
        bytes: out.into_inner(),
        content_type,
    })
}

impl crate::Services {
    /// Stores an upload; the file is durable before its id is returned.
    pub async fn upload_media(
        &self,
        uploader: &ruma::UserId,
        content_type: Option<String>,
        filename: Option<String>,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<String> {
        let size = bytes.as_ref().len();
        if size > self.config.max_upload_bytes {
            return Err(Error::TooLarge("Upload too large".into()));
        }
        let media_id = Media::new_id();
        self.media.write_file(&media_id, bytes).await?;
        let stored = self
            .store
            .write(hotline_store::WriteBatch::one(
                hotline_store::WriteOp::PutMedia(hotline_store::MediaRow {
                    media_id: media_id.clone(),
                    uploader: uploader.to_string(),
                    content_type,
                    filename,
                    size: size as i64,
                    created_ts: crate::now_ms(),
                }),
            ))
            .await;
        if let Err(e) = stored {
            // A full disk committed nothing: no row names the file, which
            // would only take space. (Other failures may come after the
            // commit, when the file is needed.)
            if matches!(e, hotline_store::StoreError::Full(_)) {
                self.media.remove_file(&media_id).await;
            }
            return Err(e.into());
        }
        Ok(media_id)
    }

    pub async fn download_media(
        &self,
        media_id: &str,
    ) -> Result<(hotline_store::MediaRow, Vec<u8>)> {
        let meta = self
            .store
            .get_media(media_id)?
            .ok_or_else(|| Error::not_found("Unknown media"))?;
        Ok((meta, self.media.read_file(media_id).await?))
    }

    /// A thumbnail of local media at least `width` × `height` where the
    /// original allows (see [`thumbnail_size`]), from the cache when it was
    /// made before. Media that is not an image the server can thumbnail is
    /// `CannotThumbnail`; unknown media is `NotFound`.
    pub async fn media_thumbnail(
        &self,
        media_id: &str,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
    ) -> Result<Thumbnail> {
        self.store
            .get_media(media_id)?
            .ok_or_else(|| Error::not_found("Unknown media"))?;
        self.thumbnail_of(MediaKey::Local(media_id), width, height, method)
            .await
    }

    /// A thumbnail of a stored file (local, or remote and kept here), from
    /// the cache when it was made before.
    pub(crate) async fn thumbnail_of(
        &self,
        key: MediaKey<'_>,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
    ) -> Result<Thumbnail> {
        let size = thumbnail_size(width, height);
        let path = self.media.thumbnail_path(key, size, method)?;
        if let Some(cached) = self.media.cached_thumbnail(&path).await {
            return Ok(cached);
        }
        let _permit = self
            .media
            .thumbnailers
            .acquire()
            .await
            .map_err(Error::internal)?;
        // Another request may have made it while this one waited.
        if let Some(cached) = self.media.cached_thumbnail(&path).await {
            return Ok(cached);
        }
        let thumb = self.media.make_thumbnail(key, size, method).await?;
        let bytes = self.media.cache_thumbnail(path, thumb.bytes).await?;
        Ok(Thumbnail { bytes, ..thumb })
    }
}
