//! Media metadata (the files live on disk beside the database).

use super::writer::Applied;
use super::Conn;
use crate::*;

pub(crate) async fn put_media(c: &Conn, m: &MediaRow) -> Applied {
    todo!()
}
