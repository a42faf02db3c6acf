//! Reads of media metadata (the files themselves live on disk, outside the
//! store).

use crate::*;

/// Media metadata.
pub trait MediaStore {
    fn get_media(&self, media_id: &str) -> Result<Option<MediaRow>>;
    /// Another server's media, if it was fetched and kept here.
    fn get_remote_media(&self, origin: &str, media_id: &str) -> Result<Option<RemoteMediaRow>>;
}

/// The remote media contract, run against each engine by its tests.
#[cfg(test)]
pub(crate) async fn remote_media_is_kept_per_origin_and_replaced_when_fetched_again(
    store: &dyn Store,
) {
    let row = |origin: &str, content_type: Option<&str>, size| RemoteMediaRow {
        origin: origin.into(),
        media_id: "abc".into(),
        content_type: content_type.map(Into::into),
        filename: Some("cat.png".into()),
        size,
        fetched_ts: 1_700_000_000_000,
    };
    assert!(store
        .get_remote_media("a.example", "abc")
        .unwrap()
        .is_none());
    store
        .write(WriteBatch {
            ops: vec![
                WriteOp::PutRemoteMedia(row("a.example", Some("image/png"), 10)),
                WriteOp::PutRemoteMedia(row("b.example:8448", None, 20)),
            ],
        })
        .await
        .unwrap();
    // A local upload with the same id is another file.
    assert!(store.get_media("abc").unwrap().is_none());
    let a = store.get_remote_media("a.example", "abc").unwrap().unwrap();
    assert_eq!(
        (a.origin.as_str(), a.media_id.as_str()),
        ("a.example", "abc")
    );
    assert_eq!(
        (a.content_type.as_deref(), a.filename.as_deref(), a.size),
        (Some("image/png"), Some("cat.png"), 10)
    );
    let b = store
        .get_remote_media("b.example:8448", "abc")
        .unwrap()
        .unwrap();
    assert_eq!((b.content_type, b.size), (None, 20));
    // Fetched again: replaced, not a conflict.
    store
        .write(WriteBatch::one(WriteOp::PutRemoteMedia(row(
            "a.example",
            Some("image/jpeg"),
            30,
        ))))
        .await
        .unwrap();
    let a = store.get_remote_media("a.example", "abc").unwrap().unwrap();
    assert_eq!(
        (a.content_type.as_deref(), a.size),
        (Some("image/jpeg"), 30)
    );
    assert!(store
        .get_remote_media("c.example", "abc")
        .unwrap()
        .is_none());
}
