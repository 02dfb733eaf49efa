//! What the console's dashboard reads from the store: each listener's messages of the last
//! hour (accepted and refused, and the time of the last one) and the senders seen in it.
//!
//! Both read a time range from `messages_received_at`, so their cost grows with the traffic
//! of the range asked for, not with the size of the store. No message content, no patient
//! field.

use std::time::SystemTime;

use super::read::time;
use super::sqlite::micros;
use super::{Reader, StoreError};

/// One listener's stored messages in a time range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerTraffic {
    /// The listener's name.
    pub listener: String,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages refused and kept (rejected, error).
    pub refused: u64,
    /// When the last one came.
    pub last_at: Option<SystemTime>,
}

/// One sender (MSH-3/MSH-4, and its client certificate under mutual TLS) seen on a listener
/// in a time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSeen {
    /// The listener.
    pub listener: String,
    /// MSH-3 as received.
    pub sending_application: String,
    /// MSH-4 as received.
    pub sending_facility: String,
    /// SHA-256 thumbprint of the client certificate, under mutual TLS.
    pub client_thumbprint: Option<String>,
    /// Messages stored from it in the range.
    pub messages: u64,
    /// When its last message came.
    pub last_at: SystemTime,
}

impl Reader {
    /// Per listener: the messages stored since `since`, accepted and refused, and when the
    /// last one came; listeners with none are not listed.
    pub fn traffic_since(&self, since: SystemTime) -> Result<Vec<ListenerTraffic>, StoreError> {
        let run = || -> rusqlite::Result<Vec<ListenerTraffic>> {
            let mut statement = self.conn.prepare(
                "SELECT listener, SUM(status = 'accepted'), SUM(status <> 'accepted'), MAX(received_at) \
                 FROM messages WHERE received_at >= ?1 GROUP BY listener ORDER BY listener",
            )?;
            let rows = statement.query_map([micros(since)], |row| {
                Ok(ListenerTraffic {
                    listener: row.get(0)?,
                    accepted: row.get::<_, i64>(1)? as u64,
                    refused: row.get::<_, i64>(2)? as u64,
                    last_at: row.get::<_, Option<i64>>(3)?.map(time),
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.error(&e))
    }

    /// The senders seen since `since`, the most recent first, at most `limit` of them.
    pub fn senders_since(&self, since: SystemTime, limit: u64) -> Result<Vec<SenderSeen>, StoreError> {
        let run = || -> rusqlite::Result<Vec<SenderSeen>> {
            let mut statement = self.conn.prepare(
                "SELECT listener, sending_application, sending_facility, client_thumbprint, COUNT(*), \
                 MAX(received_at) AS last FROM messages WHERE received_at >= ?1 \
                 GROUP BY listener, sending_application, sending_facility, client_thumbprint \
                 ORDER BY last DESC LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = statement.query_map(rusqlite::params![micros(since), limit], |row| {
                Ok(SenderSeen {
                    listener: row.get(0)?,
                    sending_application: row.get(1)?,
                    sending_facility: row.get(2)?,
                    client_thumbprint: row.get(3)?,
                    messages: row.get::<_, i64>(4)? as u64,
                    last_at: time(row.get(5)?),
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.error(&e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hl7_proto::refusal::Refusal;

    use super::*;
    use crate::store::{test_message, Disposition, MessageStore, SqliteOptions, SqliteStore};

    #[test]
    fn traffic_and_senders_of_the_last_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let accepted = || Disposition::Accepted { duplicate_window: None };
        let refused = || Disposition::Refused(Refusal::FrameBadEnd);
        for (id, disposition) in [("A1", accepted()), ("A2", accepted()), ("R1", refused())] {
            let mut m = test_message(
                id,
                format!("MSH|^~\\&|REG|MCM|||||ADT^A01|{id}|P|2.5").as_bytes(),
                None,
                disposition,
            );
            m.sending_application = "REG".into();
            m.sending_facility = "MCM".into();
            rt.block_on(store.append(m)).unwrap();
        }
        store.close();
        let reader = Reader::open(dir.path()).unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let traffic = reader.traffic_since(hour_ago).unwrap();
        assert_eq!(traffic.len(), 1);
        assert_eq!((traffic[0].accepted, traffic[0].refused), (2, 1));
        assert!(traffic[0].last_at.is_some());
        let senders = reader.senders_since(hour_ago, 10).unwrap();
        assert_eq!(senders.len(), 1);
        assert_eq!((senders[0].sending_application.as_str(), senders[0].messages), ("REG", 3));
        // A range after every message has nothing.
        let later = SystemTime::now() + Duration::from_secs(60);
        assert!(reader.traffic_since(later).unwrap().is_empty());
        assert!(reader.senders_since(later, 10).unwrap().is_empty());
    }
}
