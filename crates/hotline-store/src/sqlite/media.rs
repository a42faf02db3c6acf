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

/// The same `(origin, media_id)` again replaces its row: a file fetched
/// again (its copy was lost) comes with the origin's current metadata.
pub(super) fn put_remote_media(c: &Connection, m: &RemoteMediaRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO remote_media (origin, media_id, content_type, filename, size, fetched_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (origin, media_id) DO UPDATE SET content_type = excluded.content_type, filename = excluded.filename, size = excluded.size, fetched_ts = excluded.fetched_ts",
    )?
    .execute(params![m.origin, m.media_id, m.content_type, m.filename, m.size, m.fetched_ts])?;
    Ok(())
}

fn remote_media_row(r: &Row<'_>) -> rusqlite::Result<RemoteMediaRow> {
    Ok(RemoteMediaRow {
        origin: r.get(0)?,
        media_id: r.get(1)?,
        content_type: r.get(2)?,
        filename: r.get(3)?,
        size: r.get(4)?,
        fetched_ts: r.get(5)?,
    })
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

    fn get_remote_media(&self, origin: &str, media_id: &str) -> Result<Option<RemoteMediaRow>> {
        self.query_one(
            "SELECT origin, media_id, content_type, filename, size, fetched_ts FROM remote_media WHERE origin = ?1 AND media_id = ?2",
            params![origin, media_id],
            remote_media_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remote_media_is_kept_per_origin_and_replaced_when_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite"), Durability::Normal).unwrap();
        crate::traits::remote_media_is_kept_per_origin_and_replaced_when_fetched_again(&*store)
            .await;
        store.close();
    }
}
