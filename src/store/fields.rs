//! [`KeyFields`]: the values read out of a message at ingest (by [`hl7_proto::extract`]) that
//! the store keeps in columns of their own, so that a search by patient, visit, order or
//! message time uses an index instead of reading every message.
//!
//! Owns the mapping from [`Extracted`] to the schema's columns, and the lane keys of a
//! message ([`lanes_of`], [`lanes_of_stored`]). It never fails: a value that is missing or
//! malformed in the message is `None` (NULL in the column).

use hl7_proto::charset::Charset;
use hl7_proto::extract::{self, Extracted};
use hl7_proto::keys::{lane_key, LaneOrder};
use hl7_proto::msh::Msh;
use rusqlite::{Row, ToSql};

/// The searchable key fields of one message, one per column of schema version 3 (the lane
/// keys aside: see [`KeyFields::lane_sender`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyFields {
    /// PID-3 CX.1 (`patient_id`).
    pub patient_id: Option<String>,
    /// PID-3 CX.4, the assigning authority (`patient_authority`).
    pub patient_authority: Option<String>,
    /// PV1-19 CX.1 (`visit_number`).
    pub visit_number: Option<String>,
    /// ORC-2, else OBR-2 (`placer_order`).
    pub placer_order: Option<String>,
    /// ORC-3, else OBR-3 (`filler_order`).
    pub filler_order: Option<String>,
    /// MSH-7 as an instant, microseconds since the Unix epoch, when it carries an offset
    /// (`message_time_utc`).
    pub message_time_utc: Option<i64>,
    /// MSH-7 as written, counted as if UTC, microseconds (`message_time_wall`).
    pub message_time_wall: Option<i64>,
    /// MSH-9.2 (`trigger_event`).
    pub trigger_event: Option<String>,
    /// The delivery lane under `per_sender` ([`lane_key`]). Not a column since schema 6:
    /// computed at ingest from the extraction, once, for the message's delivery rows (which
    /// keep it), and for a stored message from its bytes ([`lanes_of_stored`], the same
    /// extraction and key); `None` in a [`KeyFields::default`] (a message built without
    /// extraction) and in fields read from the columns alone ([`KeyFields::read`]).
    pub lane_sender: Option<String>,
    /// The delivery lane under `per_patient`, as [`KeyFields::lane_sender`].
    pub lane_patient: Option<String>,
}

impl KeyFields {
    /// Reads the key fields of `raw` in `charset`. Never fails (see [`extract::extract`]).
    pub fn extract(raw: &[u8], charset: Charset) -> KeyFields {
        KeyFields::from_extracted(extract::extract(raw, charset))
    }

    /// The same for a frame whose own header `msh` has been read already (the listener's
    /// accepted messages): the MSH is not split again ([`extract::extract_with_header`]).
    pub fn extract_with_header(raw: &[u8], msh: &Msh<'_>, charset: Charset) -> KeyFields {
        KeyFields::from_extracted(extract::extract_with_header(raw, msh, charset))
    }

    /// The columns' values from what [`extract::extract`] read (moved, not copied).
    pub fn from_extracted(fields: Extracted) -> KeyFields {
        let (lane_sender, lane_patient) = lanes_of(&fields);
        KeyFields {
            message_time_utc: fields.message_time.as_ref().and_then(|t| t.utc_micros()),
            message_time_wall: fields.message_time.as_ref().map(|t| t.wall_micros()),
            patient_id: fields.patient_id,
            patient_authority: fields.patient_id_authority,
            visit_number: fields.visit_number,
            placer_order: fields.placer_order,
            filler_order: fields.filler_order,
            trigger_event: fields.trigger_event,
            lane_sender: Some(lane_sender),
            lane_patient: Some(lane_patient),
        }
    }

    /// Fills [`KeyFields::lane_sender`] and `lane_patient` from the stored message's bytes
    /// ([`lanes_of_stored`]).
    pub fn with_lanes_of_stored(mut self, raw: &[u8], charset: &str) -> KeyFields {
        let (sender, patient) = lanes_of_stored(raw, charset);
        self.lane_sender = Some(sender);
        self.lane_patient = Some(patient);
        self
    }
}

/// The lane keys of a message under `per_sender` and `per_patient`
/// ([`hl7_proto::keys::lane_key`]): the one place they are computed from an extraction, at
/// ingest ([`KeyFields::from_extracted`]) and for stored messages ([`lanes_of_stored`]).
pub fn lanes_of(fields: &Extracted) -> (String, String) {
    (lane_key(LaneOrder::PerSender, fields), lane_key(LaneOrder::PerPatient, fields))
}

/// The lane keys of a stored message from its bytes and its `charset` column: the
/// extraction and keys the listener ran at ingest ([`extract::extract`], equal to the
/// listener's [`extract::extract_with_header`] by that module's property test and fuzz
/// target), so that a backfill, a resend or `messages show` puts a message in the lane a
/// new one gets.
///
/// Not from the stored `sending_application`/`sending_facility` columns: those hold MSH-3
/// and MSH-4 as UTF-8 read lossily from the raw bytes, not decoded in the message's
/// character set and trimmed as the extraction (and so the key) has them, so a
/// Windows-1252 `HÔPITAL` would come out as another lane.
pub fn lanes_of_stored(raw: &[u8], charset: &str) -> (String, String) {
    // A charset name this build does not know cannot be in a row it wrote (the same
    // fallback as migration 3's fill).
    let charset = Charset::from_config_name(charset).unwrap_or(Charset::Utf8);
    lanes_of(&extract::extract(raw, charset))
}

/// The schema's column of each field, in the order of [`KeyFields::values`]: the writer's
/// INSERT and the migration that fills stored rows both take their SQL from here. The lane
/// keys are not among them (schema 6; see [`KeyFields::lane_sender`]).
pub(super) const COLUMNS: [&str; 8] = [
    "patient_id",
    "patient_authority",
    "visit_number",
    "placer_order",
    "filler_order",
    "message_time_utc",
    "message_time_wall",
    "trigger_event",
];

impl KeyFields {
    /// The fields from `row`, whose columns from `first` on are [`COLUMNS`] in order; no
    /// lane keys ([`KeyFields::with_lanes_of_stored`] adds them).
    pub(super) fn read(row: &Row<'_>, first: usize) -> rusqlite::Result<KeyFields> {
        Ok(KeyFields {
            patient_id: row.get(first)?,
            patient_authority: row.get(first + 1)?,
            visit_number: row.get(first + 2)?,
            placer_order: row.get(first + 3)?,
            filler_order: row.get(first + 4)?,
            message_time_utc: row.get(first + 5)?,
            message_time_wall: row.get(first + 6)?,
            trigger_event: row.get(first + 7)?,
            lane_sender: None,
            lane_patient: None,
        })
    }

    /// The fields as SQL parameters, in the order of [`COLUMNS`].
    pub(super) fn values(&self) -> [&dyn ToSql; 8] {
        [
            &self.patient_id,
            &self.patient_authority,
            &self.visit_number,
            &self.placer_order,
            &self.filler_order,
            &self.message_time_utc,
            &self.message_time_wall,
            &self.trigger_event,
        ]
    }
}

/// Says which fields are present, never their values: they are patient data.
impl std::fmt::Debug for KeyFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |v: &Option<String>| v.is_some();
        f.debug_struct("KeyFields")
            .field("patient_id", &present(&self.patient_id))
            .field("patient_authority", &present(&self.patient_authority))
            .field("visit_number", &present(&self.visit_number))
            .field("placer_order", &present(&self.placer_order))
            .field("filler_order", &present(&self.filler_order))
            .field("message_time", &self.message_time_wall.is_some())
            .field("trigger_event", &present(&self.trigger_event))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_fields_come_from_the_message_and_never_fail() {
        let raw = b"MSH|^~\\&|REG|MCM|HL7D|FAC|20261104153000-0500||ORM^O01|C1|P|2.5\r\
            PID|1||123456^^^HOSP^MR||DOE^JANE\rPV1|1|I|||||||||||||||||V77\r\
            ORC|NW|PL1|FI1\r";
        let fields = KeyFields::extract(raw, Charset::Utf8);
        assert_eq!(fields.patient_id.as_deref(), Some("123456"));
        assert_eq!(fields.patient_authority.as_deref(), Some("HOSP"));
        assert_eq!(fields.visit_number.as_deref(), Some("V77"));
        assert_eq!(
            (fields.placer_order.as_deref(), fields.filler_order.as_deref()),
            (Some("PL1"), Some("FI1"))
        );
        assert_eq!(fields.trigger_event.as_deref(), Some("O01"));
        // 15:30 at -05:00 is 20:30 UTC.
        let wall = fields.message_time_wall.unwrap();
        assert_eq!(fields.message_time_utc, Some(wall + 5 * 3600 * 1_000_000));
        assert_eq!(fields.lane_sender.as_deref(), Some("sender/REG/MCM"));
        assert_eq!(fields.lane_patient.as_deref(), Some("patient/MCM/123456"));
        assert!(!format!("{fields:?}").contains("123456"), "Debug shows no patient data");

        let junk = KeyFields::extract(b"not a message", Charset::Utf8);
        assert_eq!(junk.patient_id, None);
        assert_eq!(junk.message_time_wall, None);
        assert_eq!(junk.lane_sender.as_deref(), Some("sender//"));
    }
}
