//! The `since` / `next_batch` token: `s{P}_{T}_{D}`, meaning everything up
//! to stream position `P`, typing serial `T` and to-device position `D` has
//! been delivered. A token without `D` reads it as 0; anything else that
//! does not parse is `M_INVALID_PARAM`.

use crate::{Error, Result};

/// A parsed `since` token.
#[derive(Clone, Copy, Debug)]
pub struct SyncToken {
    pub pos: i64,
    pub typing: u64,
    pub to_device: i64,
}

impl SyncToken {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid_param("Invalid since token");
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let mut parts = rest.split('_');
        let p = parts.next().ok_or_else(bad)?;
        let t = parts.next().ok_or_else(bad)?;
        let d = parts.next().unwrap_or("0");
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(SyncToken {
            pos: p.parse().map_err(|_| bad())?,
            typing: t.parse().map_err(|_| bad())?,
            to_device: d.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}_{}_{}", self.pos, self.typing, self.to_device)
    }
}
