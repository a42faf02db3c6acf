//! Media repository: files on disk under the data directory, metadata in the
//! store. Encrypted attachments arrive already encrypted; the server stores
//! bytes it cannot read.

use std::io::Write;
use std::path::PathBuf;

use rand::Rng;

use crate::{Error, Result};

pub struct Media {
    dir: PathBuf,
}

impl Media {
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(Error::internal)?;
        Ok(Self { dir })
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
        if media_id.is_empty()
            || !media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::not_found("Unknown media"));
        }
        Ok(self.dir.join(media_id))
    }

    /// Writes the file and makes it durable (its bytes, then its name in
    /// the directory) before the metadata is committed, so a `200` never
    /// points at a missing file. Off the async runtime: a 50 MB write and
    /// its fsync would stall every request on the worker.
    pub async fn write_file(
        &self,
        media_id: &str,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<()> {
        let path = self.path(media_id)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = path.with_extension("part");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes.as_ref())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)
    }

    pub async fn read_file(&self, media_id: &str) -> Result<Vec<u8>> {
        let path = self.path(media_id)?;
        tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(Error::internal)?
            .map_err(|_| Error::not_found("Unknown media"))
    }
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
        self.store
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
            .await?;
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
}
