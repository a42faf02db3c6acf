//! The in-memory caches `/sync` keeps between calls: parsed filters, the
//! member events each device was sent (lazy loading), and each user's
//! unread counts per room. All of them only save work or repetition, so
//! each is bounded and starts over when full:
//!
//! - filters: 256 KiB of keys (inline filters are keyed by their JSON
//!   text, so a client sending ever-new ones cannot grow it without bound);
//! - lazy-loaded members: 4,096 per device and 32,768 per shard;
//! - unread counts: 16,384 (user, room) entries per shard.
//!
//! The per-user maps are split into 16 shards by user, so that syncs of
//! different users rarely wait on one another.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::unread::Unread;
use super::SyncFilter;

/// The caches `/sync` keeps between calls: parsed filters, the member
/// events each device was sent (lazy loading), and unread counts.
pub type FilterCache = SyncCaches;

/// Parsed `/sync` filters, so that a client's every long-poll does not
/// re-read and re-parse the same one. Filters never change once uploaded
/// (a new definition gets a new id), so an entry is never stale: inline
/// filters are keyed by their JSON text, stored ones by user and id.
///
/// Also, per device, which `m.room.member` events it was sent (so lazy
/// loading sends each once), and per user and room the unread counts,
/// kept up to date from the events each sync brings. Both only save work
/// or repetition: when an entry is dropped (they are bounded), the next
/// sync sends a member event again (redundant members are allowed) or
/// counts again from the read marker.
#[derive(Default)]
pub struct SyncCaches {
    /// Entries and the bytes of their keys.
    inner: Mutex<(HashMap<String, Arc<SyncFilter>>, usize)>,
    lazy: Shards<LazyShard>,
    unread: Shards<UnreadShard>,
}

/// Key bytes past which the cache starts over: it holds what the clients
/// of the moment use, and a client sending ever-new inline filters cannot
/// grow it without bound.
const FILTER_CACHE_BYTES: usize = 256 * 1024;

const SHARDS: usize = 16;

/// A map split by user, so that syncs of different users rarely wait on
/// one another.
struct Shards<T>([Mutex<T>; SHARDS]);

impl<T: Default> Default for Shards<T> {
    fn default() -> Self {
        Shards(std::array::from_fn(|_| Mutex::default()))
    }
}

impl<T> Shards<T> {
    fn of(&self, user: &UserId) -> &Mutex<T> {
        // FNV-1a: cheap, and users spread well enough.
        let h = user.as_bytes().iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        });
        &self.0[(h % SHARDS as u64) as usize]
    }
}

/// A member event a device was sent: its position, and the position of the
/// sync response that carried it (`at`). A client that syncs from a token
/// at or past `at` has it; a response lost on the way proves nothing.
#[derive(Clone, Copy)]
pub(super) struct LazySent {
    pub(super) pos: i64,
    pub(super) at: i64,
}

/// Per device: a hash of (room, member) → what it was sent. A hash
/// collision can only make a member event look unsent (two events never
/// share a position), so it costs a redundant send, never a missing one.
#[derive(Default)]
struct LazyShard {
    devices: HashMap<OwnedUserId, HashMap<OwnedDeviceId, HashMap<u64, LazySent>>>,
    entries: usize,
}

/// Members remembered per device, and per shard, past which the device's
/// (or the shard's) memory starts over.
const LAZY_PER_DEVICE: usize = 4096;
const LAZY_PER_SHARD: usize = 32 * 1024;

pub(super) fn member_key(room: &RoomId, member: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    room.as_str().hash(&mut h);
    member.hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct UnreadShard {
    users: HashMap<OwnedUserId, HashMap<OwnedRoomId, Unread>>,
    entries: usize,
}

const UNREAD_PER_SHARD: usize = 16 * 1024;

impl SyncCaches {
    pub(super) fn get(&self, key: &str) -> Option<Arc<SyncFilter>> {
        self.inner.lock().0.get(key).cloned()
    }

    pub(super) fn insert(&self, key: String, filter: Arc<SyncFilter>) {
        let mut inner = self.inner.lock();
        if inner.1 + key.len() > FILTER_CACHE_BYTES {
            *inner = Default::default();
        }
        inner.1 += key.len();
        inner.0.insert(key, filter);
    }

    /// Forgets what a device was sent (it starts a new sync sequence).
    pub(super) fn lazy_forget(&self, user: &UserId, device: &DeviceId) {
        let mut shard = self.lazy.of(user).lock();
        let removed = shard
            .devices
            .get_mut(user)
            .and_then(|d| d.remove(device))
            .map_or(0, |m| m.len());
        shard.entries = shard.entries.saturating_sub(removed);
    }

    pub(super) fn lazy_sent(&self, user: &UserId, device: &DeviceId, key: u64) -> Option<LazySent> {
        self.lazy
            .of(user)
            .lock()
            .devices
            .get(user)
            .and_then(|d| d.get(device))
            .and_then(|m| m.get(&key))
            .copied()
    }

    pub(super) fn lazy_record(
        &self,
        user: &UserId,
        device: &DeviceId,
        sent: &[(u64, i64)],
        at: i64,
    ) {
        if sent.is_empty() {
            return;
        }
        let mut guard = self.lazy.of(user).lock();
        let shard = &mut *guard;
        if shard.entries + sent.len() > LAZY_PER_SHARD {
            shard.devices.clear();
            shard.entries = 0;
        }
        if !shard.devices.contains_key(user) {
            shard.devices.insert(user.to_owned(), HashMap::new());
        }
        let Some(devices) = shard.devices.get_mut(user) else {
            return;
        };
        if !devices.contains_key(device) {
            devices.insert(device.to_owned(), HashMap::new());
        }
        let Some(map) = devices.get_mut(device) else {
            return;
        };
        if map.len() + sent.len() > LAZY_PER_DEVICE {
            shard.entries = shard.entries.saturating_sub(map.len());
            map.clear();
        }
        for &(key, pos) in sent {
            if map.insert(key, LazySent { pos, at }).is_none() {
                shard.entries += 1;
            }
        }
    }

    pub(super) fn unread_get(&self, user: &UserId, room: &RoomId) -> Option<Unread> {
        self.unread
            .of(user)
            .lock()
            .users
            .get(user)
            .and_then(|r| r.get(room))
            .cloned()
    }

    pub(super) fn unread_put(&self, user: &UserId, room: &RoomId, u: Unread) {
        let mut guard = self.unread.of(user).lock();
        let shard = &mut *guard;
        if let Some(slot) = shard.users.get_mut(user).and_then(|r| r.get_mut(room)) {
            *slot = u;
            return;
        }
        if shard.entries >= UNREAD_PER_SHARD {
            shard.users.clear();
            shard.entries = 0;
        }
        shard
            .users
            .entry(user.to_owned())
            .or_default()
            .insert(room.to_owned(), u);
        shard.entries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_cache_starts_over_past_its_byte_budget() {
        let cache = FilterCache::default();
        let key = |i: usize| format!("{{\"n\":{i:0>1000}}}");
        let fit = FILTER_CACHE_BYTES / key(0).len();
        for i in 0..fit {
            cache.insert(key(i), Default::default());
        }
        assert!(cache.get(&key(0)).is_some() && cache.get(&key(fit - 1)).is_some());
        cache.insert(key(fit), Default::default());
        assert!(cache.get(&key(0)).is_none(), "old entries are dropped");
        assert!(cache.get(&key(fit)).is_some(), "the new one is kept");
        assert!(cache.inner.lock().1 <= FILTER_CACHE_BYTES);
    }
}
