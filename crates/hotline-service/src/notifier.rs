//! Wakes long-polling `/sync` requests the moment something arrives for
//! their user. One watch channel per user with waiters: a wake costs one
//! hash lookup per concerned user, never a scan of all waiters.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<u64>>>,
}

impl Notifier {
    /// A receiver that changes whenever `user` is woken. Take it *before*
    /// looking for news, so that nothing arriving in between is missed.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock();
        users
            .entry(user.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn wake(&self, user: &UserId) {
        let mut users = self.users.lock();
        if let Some(tx) = users.get(user) {
            if tx.receiver_count() == 0 {
                users.remove(user);
            } else {
                tx.send_modify(|v| *v += 1);
            }
        }
    }

    /// Number of users with a waiting `/sync`, for metrics.
    pub fn waiters(&self) -> usize {
        self.users
            .lock()
            .values()
            .map(|tx| tx.receiver_count())
            .sum()
    }
}
