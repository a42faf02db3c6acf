//! Reads of federation state: the queue of events waiting to go to each
//! other server.

use crate::*;

/// Federation: the outgoing queue, one ordered queue per destination.
pub trait FederationStore {
    /// The oldest entries queued for `destination` after `after` (a
    /// `seq`; 0 for all), in queue order, at most `limit`.
    fn federation_outbox(
        &self,
        destination: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>>;
    /// Every destination with something queued.
    fn federation_destinations(&self) -> Result<Vec<String>>;
}

/// The queue's contract, run against each engine by its tests.
#[cfg(test)]
pub(crate) async fn queue_keeps_order_per_destination_and_never_reuses_a_number(store: &dyn Store) {
    let queue = |d: &str, e: &str| WriteOp::QueueFederation {
        destination: d.into(),
        event_id: e.into(),
    };
    store
        .write(WriteBatch {
            ops: vec![
                queue("b.example", "$1"),
                queue("c.example", "$2"),
                queue("b.example", "$3"),
            ],
        })
        .await
        .unwrap();
    let ids = |rows: Vec<OutboxRow>| rows.into_iter().map(|r| r.event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.federation_outbox("b.example", 0, 10).unwrap()),
        ["$1", "$3"]
    );
    assert_eq!(
        ids(store.federation_outbox("b.example", 0, 1).unwrap()),
        ["$1"]
    );
    let mut dests = store.federation_destinations().unwrap();
    dests.sort();
    assert_eq!(dests, ["b.example", "c.example"]);
    // Delivered up to the last: b's queue is empty, c's untouched.
    let last = store.federation_outbox("b.example", 0, 10).unwrap()[1].seq;
    store
        .write(WriteBatch::one(WriteOp::DequeueFederation {
            destination: "b.example".into(),
            upto: last,
        }))
        .await
        .unwrap();
    assert!(store
        .federation_outbox("b.example", 0, 10)
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(store.federation_outbox("c.example", 0, 10).unwrap()),
        ["$2"]
    );
    // A number is never handed out again, even with the queue emptied.
    store
        .write(WriteBatch::one(queue("b.example", "$4")))
        .await
        .unwrap();
    assert!(store.federation_outbox("b.example", 0, 10).unwrap()[0].seq > last);
}
