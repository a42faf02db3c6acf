//! Federation's outgoing queue.

use tokio_postgres::Row;

use super::writer::Applied;
use super::{Conn, PgResult, PostgresStore};
use crate::*;

pub(crate) async fn queue(c: &Conn, destination: &str, event_id: &str) -> Applied {
    c.exec(
        "INSERT INTO federation_outbox (destination, event_id) VALUES ($1, $2)",
        &[&destination, &event_id],
    )
    .await?;
    Ok(())
}

pub(crate) async fn dequeue(c: &Conn, destination: &str, upto: i64) -> Applied {
    c.exec(
        "DELETE FROM federation_outbox WHERE destination = $1 AND seq <= $2",
        &[&destination, &upto],
    )
    .await?;
    Ok(())
}

pub(crate) async fn queue_edu(c: &Conn, destination: &str, edu: &str) -> Applied {
    c.exec(
        "INSERT INTO federation_edu_outbox (destination, edu) VALUES ($1, $2)",
        &[&destination, &edu],
    )
    .await?;
    Ok(())
}

pub(crate) async fn dequeue_edus(c: &Conn, destination: &str, upto: i64) -> Applied {
    c.exec(
        "DELETE FROM federation_edu_outbox WHERE destination = $1 AND seq <= $2",
        &[&destination, &upto],
    )
    .await?;
    Ok(())
}

fn outbox_row(r: &Row) -> PgResult<OutboxRow> {
    Ok(OutboxRow {
        seq: r.try_get(0)?,
        destination: r.try_get(1)?,
        event_id: r.try_get(2)?,
    })
}

impl FederationStore for PostgresStore {
    fn federation_outbox(
        &self,
        destination: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        self.query_all(
            "SELECT seq, destination, event_id FROM federation_outbox WHERE destination = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&destination, &after, &(limit as i64)],
            outbox_row,
        )
    }

    fn federation_edu_outbox(
        &self,
        destination: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEdu>> {
        self.query_all(
            "SELECT seq, edu FROM federation_edu_outbox WHERE destination = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&destination, &after, &(limit as i64)],
            |r| {
                Ok(OutboxEdu {
                    seq: r.try_get(0)?,
                    edu: r.try_get(1)?,
                })
            },
        )
    }

    fn federation_destinations(&self) -> Result<Vec<String>> {
        self.query_all(
            "SELECT destination FROM federation_outbox UNION SELECT destination FROM federation_edu_outbox",
            &[],
            |r| r.try_get(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;

    #[tokio::test]
    async fn the_outgoing_queue_keeps_order_per_destination_and_never_reuses_a_number() {
        let store = fresh_store();
        crate::traits::queue_keeps_order_per_destination_and_never_reuses_a_number(&*store).await;
        store.close();
    }
}
