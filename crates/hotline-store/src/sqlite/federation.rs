//! Federation's outgoing queue in SQLite.

use rusqlite::{params, Connection, Row};

use super::{column, SqliteStore};
use crate::*;

pub(super) fn queue(c: &Connection, destination: &str, event_id: &str) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO federation_outbox (destination, event_id) VALUES (?1, ?2)")?
        .execute(params![destination, event_id])?;
    Ok(())
}

pub(super) fn dequeue(c: &Connection, destination: &str, upto: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM federation_outbox WHERE destination = ?1 AND seq <= ?2")?
        .execute(params![destination, upto])?;
    Ok(())
}

pub(super) fn queue_edu(c: &Connection, destination: &str, edu: &str) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO federation_edu_outbox (destination, edu) VALUES (?1, ?2)")?
        .execute(params![destination, edu])?;
    Ok(())
}

pub(super) fn dequeue_edus(c: &Connection, destination: &str, upto: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM federation_edu_outbox WHERE destination = ?1 AND seq <= ?2")?
        .execute(params![destination, upto])?;
    Ok(())
}

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        seq: r.get(0)?,
        destination: r.get(1)?,
        event_id: r.get(2)?,
    })
}

impl FederationStore for SqliteStore {
    fn federation_outbox(
        &self,
        destination: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        self.query_all(
            "SELECT seq, destination, event_id FROM federation_outbox WHERE destination = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            params![destination, after, limit as i64],
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
            "SELECT seq, edu FROM federation_edu_outbox WHERE destination = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            params![destination, after, limit as i64],
            |r| {
                Ok(OutboxEdu {
                    seq: r.get(0)?,
                    edu: r.get(1)?,
                })
            },
        )
    }

    fn federation_destinations(&self) -> Result<Vec<String>> {
        self.query_all(
            "SELECT destination FROM federation_outbox UNION SELECT destination FROM federation_edu_outbox",
            [],
            column,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_outgoing_queue_keeps_order_per_destination_and_never_reuses_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal).unwrap();
        crate::traits::queue_keeps_order_per_destination_and_never_reuses_a_number(&*store).await;
        store.close();
    }
}
