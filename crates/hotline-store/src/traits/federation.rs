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
    /// The oldest EDUs queued for `destination` after `after` (a `seq`; 0
    /// for all), in queue order, at most `limit`.
    fn federation_edu_outbox(
        &self,
        destination: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEdu>>;
    /// Every destination with something queued (events or EDUs).
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
    // EDUs queue the same way, on a queue of their own; a destination with
    // only EDUs queued is a destination.
    let edu = |d: &str, e: &str| WriteOp::QueueFederationEdu {
        destination: d.into(),
        edu: e.into(),
    };
    store
        .write(WriteBatch {
            ops: vec![edu("d.example", "{\"n\":1}"), edu("d.example", "{\"n\":2}")],
        })
        .await
        .unwrap();
    let edus = store.federation_edu_outbox("d.example", 0, 10).unwrap();
    assert_eq!(
        edus.iter().map(|e| e.edu.as_str()).collect::<Vec<_>>(),
        ["{\"n\":1}", "{\"n\":2}"]
    );
    assert!(store
        .federation_destinations()
        .unwrap()
        .contains(&"d.example".to_owned()));
    store
        .write(WriteBatch::one(WriteOp::DequeueFederationEdus {
            destination: "d.example".into(),
            upto: edus[0].seq,
        }))
        .await
        .unwrap();
    let rest = store.federation_edu_outbox("d.example", 0, 10).unwrap();
    assert_eq!((rest.len(), rest[0].seq), (1, edus[1].seq));
}
