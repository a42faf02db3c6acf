//! Reads of media metadata (the files themselves live on disk, outside the
//! store).

use crate::*;

/// Media metadata.
pub trait MediaStore {
    fn get_media(&self, media_id: &str) -> Result<Option<MediaRow>>;
}
