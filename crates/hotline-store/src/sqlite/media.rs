//! Media metadata in SQLite (the files themselves are on disk, written by
//! the service).

use rusqlite::{params, Connection, Row};

use super::SqliteStore;
use crate::*;

pub(super) fn put_media(c: &Connection, m: &MediaRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO media (media_id, uploader, content_type, filename, size, created_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![m.media_id, m.uploader, m.content_type, m.filename, m.size, m.created_ts])?;
    Ok(())
}

fn media_row(r: &Row<'_>) -> rusqlite::Result<MediaRow> {
    Ok(MediaRow {
        media_id: r.get(0)?,
        uploader: r.get(1)?,
        content_type: r.get(2)?,
        filename: r.get(3)?,
        size: r.get(4)?,
        created_ts: r.get(5)?,
    })
}

impl MediaStore for SqliteStore {
    fn get_media(&self, media_id: &str) -> Result<Option<MediaRow>> {
        self.query_one(
            "SELECT media_id, uploader, content_type, filename, size, created_ts FROM media WHERE media_id = ?1",
            params![media_id],
            media_row,
        )
    }
}
