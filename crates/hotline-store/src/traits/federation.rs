//! Reads of federation state: the queue of events waiting to go to each
//! other server.

use crate::*;

/// Federation: the outgoing queue, one ordered queue per destination.
pub trait FederationStore {
    /// The oldest entries queued for `destination`, in queue order, at
    /// most `limit`.
    fn federation_outbox(&self, destination: &str, limit: usize) -> Result<Vec<OutboxRow>>;
    /// Every destination with something queued.
    fn federation_destinations(&self) -> Result<Vec<String>>;
}
