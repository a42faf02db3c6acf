//! Media metadata (the files live on disk beside the database).

use tokio_postgres::Row;

use super::writer::Applied;
use super::{Conn, PgResult, PostgresStore};
use crate::*;

pub(crate) async fn put_media(c: &Conn, m: &MediaRow) -> Applied {
    c.exec(
        "INSERT INTO media (media_id, uploader, content_type, filename, size, created_ts) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&m.media_id, &m.uploader, &m.content_type, &m.filename, &m.size, &m.created_ts],
    )
    .await?;
    Ok(())
}

/// The same `(origin, media_id)` again replaces its row (see the SQLite
/// engine's).
pub(crate) async fn put_remote_media(c: &Conn, m: &RemoteMediaRow) -> Applied {
    c.exec(
        "INSERT INTO remote_media (origin, media_id, content_type, filename, size, fetched_ts) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (origin, media_id) DO UPDATE SET content_type = excluded.content_type, filename = excluded.filename, size = excluded.size, fetched_ts = excluded.fetched_ts",
        &[&m.origin, &m.media_id, &m.content_type, &m.filename, &m.size, &m.fetched_ts],
    )
    .await?;
    Ok(())
}

fn remote_media_row(r: &Row) -> PgResult<RemoteMediaRow> {
    Ok(RemoteMediaRow {
        origin: r.try_get(0)?,
        media_id: r.try_get(1)?,
        content_type: r.try_get(2)?,
        filename: r.try_get(3)?,
        size: r.try_get(4)?,
        fetched_ts: r.try_get(5)?,
    })
}

fn media_row(r: &Row) -> PgResult<MediaRow> {
    Ok(MediaRow {
        media_id: r.try_get(0)?,
        uploader: r.try_get(1)?,
        content_type: r.try_get(2)?,
        filename: r.try_get(3)?,
        size: r.try_get(4)?,
        created_ts: r.try_get(5)?,
    })
}

impl MediaStore for PostgresStore {
    fn get_media(&self, media_id: &str) -> Result<Option<MediaRow>> {
        self.query_one(
            "SELECT media_id, uploader, content_type, filename, size, created_ts FROM media WHERE media_id = $1",
            &[&media_id],
            media_row,
        )
    }

    fn get_remote_media(&self, origin: &str, media_id: &str) -> Result<Option<RemoteMediaRow>> {
        self.query_one(
            "SELECT origin, media_id, content_type, filename, size, fetched_ts FROM remote_media WHERE origin = $1 AND media_id = $2",
            &[&origin, &media_id],
            remote_media_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;
    use super::*;

    fn media(id: &str, content_type: Option<&str>, filename: Option<&str>) -> MediaRow {
        MediaRow {
            media_id: id.into(),
            uploader: "@alice:hl".into(),
            content_type: content_type.map(Into::into),
            filename: filename.map(Into::into),
            size: 5_000_000_000,
            created_ts: 1_700_000_000_000,
        }
    }

    #[tokio::test]
    async fn stored_media_reads_back_whole_with_its_optional_fields() {
        let store = fresh_store();
        assert!(store.get_media("m1").unwrap().is_none());
        store
            .write(WriteBatch {
                ops: vec![
                    WriteOp::PutMedia(media("m1", Some("image/png"), Some("cat.png"))),
                    WriteOp::PutMedia(media("m2", None, None)),
                ],
            })
            .await
            .unwrap();
        let m = store.get_media("m1").unwrap().unwrap();
        assert_eq!(m.media_id, "m1");
        assert_eq!(m.uploader, "@alice:hl");
        assert_eq!(m.content_type.as_deref(), Some("image/png"));
        assert_eq!(m.filename.as_deref(), Some("cat.png"));
        assert_eq!(m.size, 5_000_000_000);
        assert_eq!(m.created_ts, 1_700_000_000_000);
        let m = store.get_media("m2").unwrap().unwrap();
        assert_eq!((m.content_type, m.filename), (None, None));
        store.close();
    }

    #[tokio::test]
    async fn remote_media_is_kept_per_origin_and_replaced_when_fetched_again() {
        let store = fresh_store();
        crate::traits::remote_media_is_kept_per_origin_and_replaced_when_fetched_again(&*store)
            .await;
        store.close();
    }

    #[tokio::test]
    async fn a_taken_media_id_fails_its_batch_with_a_conflict_and_keeps_the_first() {
        let store = fresh_store();
        store
            .write(WriteBatch::one(WriteOp::PutMedia(media(
                "m1",
                Some("a/b"),
                None,
            ))))
            .await
            .unwrap();
        let e = store
            .write(WriteBatch {
                ops: vec![
                    WriteOp::PutMedia(media("m2", None, None)),
                    WriteOp::PutMedia(media("m1", Some("c/d"), None)),
                ],
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(store.get_media("m2").unwrap().is_none());
        let m = store.get_media("m1").unwrap().unwrap();
        assert_eq!(m.content_type.as_deref(), Some("a/b"));
        store.close();
    }
}
