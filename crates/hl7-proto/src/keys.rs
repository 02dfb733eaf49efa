//! Keys computed once per message at ingest: the delivery lane a message belongs to under
//! each route order ([`lane_key`]), and the narrow duplicate-detection key
//! ([`duplicate_key`]).
//!
//! Both are stored (the lane in each delivery row; the duplicate key in rows of older
//! schemas) and compared later, possibly by another release of hl7d, so their forms are a
//! contract: they are pinned by tests and must never change. A
//! change would put a lane's old and new messages in different lanes (out of order), or
//! stop recognising duplicates across an upgrade.

use std::fmt::Write as _;

use crate::extract::Extracted;
use crate::msh::Msh;

/// How a route orders its deliveries (the route's `order` key): which messages share a
/// lane, inside which they go out one at a time in the order they were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaneOrder {
    /// `per_patient` (the default): one lane per sending facility and patient.
    PerPatient,
    /// `per_sender`: one lane per sending application and facility.
    PerSender,
    /// `strict`: one lane for the whole route.
    Strict,
}

impl LaneOrder {
    /// Every order, in the order of the configuration's documentation.
    pub const ALL: [LaneOrder; 3] = [LaneOrder::PerPatient, LaneOrder::PerSender, LaneOrder::Strict];

    /// The configuration name (`per_patient`, `per_sender`, `strict`).
    pub fn config_name(&self) -> &'static str {
        match self {
            LaneOrder::PerPatient => "per_patient",
            LaneOrder::PerSender => "per_sender",
            LaneOrder::Strict => "strict",
        }
    }

    /// The order with this configuration name.
    pub fn from_config_name(name: &str) -> Option<LaneOrder> {
        LaneOrder::ALL.into_iter().find(|order| order.config_name() == name)
    }
}

/// The lane of a message under `order`, as a stable, readable string that an operator can
/// type (`hl7d routes retry ROUTE --lane KEY`):
///
/// | order | key | example |
/// |---|---|---|
/// | `strict` | `strict` | `strict` |
/// | `per_sender` | `sender/` MSH-3 `/` MSH-4 | `sender/REGADT/MCM` |
/// | `per_patient` | `patient/` MSH-4 `/` PID-3 CX.1 | `patient/MCM/PATID1234` |
///
/// A message without a patient identifier (no PID, or an empty PID-3) is in its sender's
/// lane under `per_patient` too. Each part is the value [`crate::extract`] read (MSH-3 and
/// MSH-4 whole, as received; the patient id unescaped), empty when missing, with `%`, `/`
/// and control characters written as `%XX` (their UTF-8 bytes in upper-case hex), so a key
/// reads back into its parts unambiguously: MSH-4 `A/B` and patient `C` give
/// `patient/A%2FB/C`, never the same key as MSH-4 `A` and patient `B/C`. A key is at most
/// about 1.5 KiB (two parts of [`crate::extract::MAX_VALUE_LEN`] bytes, each escaped byte
/// three characters).
///
/// The patient lane leaves out PID-3's assigning authority (CX.4) on purpose: a sender that
/// fills it in for some messages and not for others would otherwise split one patient's
/// messages over two lanes, which delivers them out of order. Two patients with the same
/// number under different authorities of one facility share a lane instead, which only
/// costs parallelism.
pub fn lane_key(order: LaneOrder, fields: &Extracted) -> String {
    let sender = || join("sender", part(&fields.sending_application), part(&fields.sending_facility));
    match order {
        LaneOrder::Strict => "strict".to_owned(),
        LaneOrder::PerSender => sender(),
        LaneOrder::PerPatient => match &fields.patient_id {
            Some(patient) => join("patient", part(&fields.sending_facility), patient),
            None => sender(),
        },
    }
}

fn part(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

fn join(kind: &str, first: &str, second: &str) -> String {
    let mut key = String::with_capacity(kind.len() + first.len() + second.len() + 2);
    key.push_str(kind);
    for part in [first, second] {
        key.push('/');
        escape_part(part, &mut key);
    }
    key
}

fn escape_part(part: &str, out: &mut String) {
    for c in part.chars() {
        if c == '%' || c == '/' || c.is_control() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{byte:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// The narrow duplicate-detection key of a message: a 64-bit FNV-1a hash of the listener
/// name, MSH-3, MSH-4 and MSH-10. The store's schemas 3 to 6 indexed it (with the time
/// received) instead of four text columns, and still compared the stored bytes of every
/// candidate, so a collision cost one extra comparison, never a lost message. Since schema
/// 7 the store finds candidates on its MSH-10 index instead and no longer writes this key
/// (see `store/schema.rs` in the hl7d crate); it is kept for the rows migration 3 fills.
///
/// The fields are the whole raw fields as received, read as UTF-8 with invalid sequences
/// replaced by U+FFFD (`String::from_utf8_lossy`): the same text the store keeps in its
/// `sending_application`, `sending_facility` and `control_id` columns, so a key can be
/// recomputed from a stored row ([`duplicate_key_of`]).
pub fn duplicate_key(listener: &str, msh: &Msh<'_>) -> u64 {
    duplicate_key_of(
        listener,
        &String::from_utf8_lossy(msh.sending_application),
        &String::from_utf8_lossy(msh.sending_facility),
        &String::from_utf8_lossy(msh.control_id),
    )
}

/// [`duplicate_key`] from the four texts. The hash input is each text's UTF-8 bytes preceded
/// by its length as a 64-bit little-endian number, in the order listener, MSH-3, MSH-4,
/// MSH-10 (the lengths keep `AB`+`C` apart from `A`+`BC`); the hash is FNV-1a 64 (offset
/// basis `0xcbf29ce484222325`, prime `0x100000001b3`). Stored in SQLite as the `i64` with
/// the same bits (`key as i64`).
pub fn duplicate_key_of(
    listener: &str,
    sending_application: &str,
    sending_facility: &str,
    control_id: &str,
) -> u64 {
    let mut hash = Fnv1a64::new();
    for part in [listener, sending_application, sending_facility, control_id] {
        hash.write(&(part.len() as u64).to_le_bytes());
        hash.write(part.as_bytes());
    }
    hash.finish()
}

/// FNV-1a, 64-bit (Fowler, Noll, Vo): stable across platforms and releases, unlike std's
/// `RandomState`, and not keyed: it is an index key, not a defence (the byte comparison is).
struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Fnv1a64 {
        Fnv1a64(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charset::Charset;
    use crate::extract::extract;

    fn fields(raw: &[u8]) -> Extracted {
        extract(raw, Charset::Utf8)
    }

    #[test]
    fn fnv1a_64_reference_values() {
        // The published FNV-1a 64 test vectors.
        let hash = |bytes: &[u8]| {
            let mut h = Fnv1a64::new();
            h.write(bytes);
            h.finish()
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// These values are stored in databases: they must never change between releases.
    #[test]
    fn duplicate_keys_are_pinned() {
        assert_eq!(duplicate_key_of("", "", "", ""), 0x0c82_1078_4d8a_f5a5);
        assert_eq!(duplicate_key_of("lab", "REGADT", "MCM", "MSG00001"), 0xa8af_d0a3_65a5_92f0);
        // As SQLite stores it: the i64 with the same bits.
        assert_eq!(duplicate_key_of("lab", "REGADT", "MCM", "MSG00001") as i64, -6_291_580_754_209_697_040);
        let adt = Msh::parse(include_bytes!("../tests/fixtures/adt_a01_v25.hl7")).unwrap();
        assert_eq!(duplicate_key("lab", &adt), duplicate_key_of("lab", "REGADT", "MCM", "MSG00001"));
        assert_eq!(duplicate_key("mllps", &adt), 0xcce3_2300_6516_d63d);
    }

    #[test]
    fn duplicate_keys_tell_the_parts_apart() {
        let base = duplicate_key_of("lab", "APP", "FAC", "1");
        assert_ne!(base, duplicate_key_of("lab2", "APP", "FAC", "1"));
        assert_ne!(base, duplicate_key_of("lab", "APP", "FAC", "2"));
        assert_ne!(base, duplicate_key_of("lab", "APPF", "AC", "1"), "lengths keep the parts apart");
        assert_ne!(base, duplicate_key_of("lab", "FAC", "APP", "1"));
        // The key is over the text the store keeps: invalid UTF-8 reads as U+FFFD.
        let latin1 = Msh::parse(b"MSH|^~\\&|H\xd4P|F|R|R|1||ADT^A01|9|P|2.5\r").unwrap();
        assert_eq!(duplicate_key("lab", &latin1), duplicate_key_of("lab", "H\u{FFFD}P", "F", "9"));
    }

    #[test]
    fn lane_keys_for_each_order() {
        let adt = fields(include_bytes!("../tests/fixtures/adt_a01_v25.hl7"));
        assert_eq!(lane_key(LaneOrder::Strict, &adt), "strict");
        assert_eq!(lane_key(LaneOrder::PerSender, &adt), "sender/REGADT/MCM");
        assert_eq!(lane_key(LaneOrder::PerPatient, &adt), "patient/MCM/PATID1234");

        // No PID: the sender's lane.
        let no_pid = fields(b"MSH|^~\\&|LAB|NORTH|R|R|1||ORU^R01|1|P|2.5\rOBR|1|A\r");
        assert_eq!(lane_key(LaneOrder::PerPatient, &no_pid), "sender/LAB/NORTH");
        // A PID without an identifier: the sender's lane too.
        let empty_pid = fields(b"MSH|^~\\&|LAB|NORTH|R|R|1||ORU^R01|1|P|2.5\rPID|1||^^^NORTH^MR\r");
        assert_eq!(lane_key(LaneOrder::PerPatient, &empty_pid), "sender/LAB/NORTH");
        // The assigning authority does not split a patient's lane.
        let with = fields(b"MSH|^~\\&|A|F|R|R|1||ADT^A08|1|P|2.5\rPID|1||42^^^F^MR\r");
        let without = fields(b"MSH|^~\\&|B|F|R|R|1||ADT^A08|2|P|2.5\rPID|1||42\r");
        assert_eq!(lane_key(LaneOrder::PerPatient, &with), lane_key(LaneOrder::PerPatient, &without));
        // Compound MSH-3/MSH-4 are kept whole.
        let hd = fields(b"MSH|^~\\&|LAB^1.2.3^ISO|NORTH^2.3^ISO|R|R|1||ADT^A08|1|P|2.5\r");
        assert_eq!(lane_key(LaneOrder::PerSender, &hd), "sender/LAB^1.2.3^ISO/NORTH^2.3^ISO");
        // Missing MSH-3 and MSH-4: empty parts.
        let bare = fields(b"MSH|^~\\&|||R|R|1||ADT^A08|1|P|2.5\r");
        assert_eq!(lane_key(LaneOrder::PerPatient, &bare), "sender//");
    }

    #[test]
    fn lane_key_parts_are_escaped() {
        let slash = fields(b"MSH|^~\\&|A|F/1|R|R|1||ADT^A08|1|P|2.5\rPID|1||7%/8\\X0A\\\r");
        assert_eq!(lane_key(LaneOrder::PerPatient, &slash), "patient/F%2F1/7%25%2F8");
        // The \X0A\ line feed was trimmed; one inside a value is escaped.
        let inner = fields(b"MSH|^~\\&|A|F|R|R|1||ADT^A08|1|P|2.5\rPID|1||7\\X0A\\8\r");
        assert_eq!(lane_key(LaneOrder::PerPatient, &inner), "patient/F/7%0A8");
        let a = fields(b"MSH|^~\\&|A|X/Y|R|R|1||ADT^A08|1|P|2.5\rPID|1||Z\r");
        let b = fields(b"MSH|^~\\&|A|X|R|R|1||ADT^A08|1|P|2.5\rPID|1||Y/Z\r");
        assert_ne!(lane_key(LaneOrder::PerPatient, &a), lane_key(LaneOrder::PerPatient, &b));
        // Non-ASCII text stays readable.
        let utf8 = fields("MSH|^~\\&|A|KLINIK|R|R|1||ADT^A08|1|P|2.5\rPID|1||MÜLLER-1\r".as_bytes());
        assert_eq!(lane_key(LaneOrder::PerPatient, &utf8), "patient/KLINIK/MÜLLER-1");
    }

    #[test]
    fn order_names() {
        for order in LaneOrder::ALL {
            assert_eq!(LaneOrder::from_config_name(order.config_name()), Some(order));
        }
        assert_eq!(LaneOrder::from_config_name("per_patient"), Some(LaneOrder::PerPatient));
        assert_eq!(LaneOrder::from_config_name("PER_PATIENT"), None);
    }
}
