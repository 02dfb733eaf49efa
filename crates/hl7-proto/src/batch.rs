//! Batches: splitting an FHS/BHS … BTS/FTS batch (HL7 v2 section 2.10.3), or a plain file of
//! concatenated messages, into single messages.
//!
//! Borrowed slices only; the messages keep their own bytes and segment terminators.

use thiserror::Error;

use crate::message::Delimiters;

/// A batch file split into its messages, with the counts its trailers declare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The FHS segment, when the file has one.
    pub file_header: Option<&'a [u8]>,
    /// Each batch in the file, in order.
    pub batches: Vec<SubBatch<'a>>,
    /// FTS-1: the number of batches the file trailer declares, when present and numeric.
    pub declared_batches: Option<u64>,
}

/// One BHS … BTS batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubBatch<'a> {
    /// The BHS segment (`None` for messages outside any BHS, e.g. right after FHS).
    pub header: Option<&'a [u8]>,
    /// The messages, each from its MSH up to the next header or trailer segment.
    pub messages: Vec<&'a [u8]>,
    /// BTS-1: the message count the batch trailer declares, when present and numeric.
    pub declared_messages: Option<u64>,
}

/// A batch that cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The data does not start with FHS, BHS or MSH.
    #[error("batch does not start with FHS, BHS or MSH")]
    NoHeader,
    /// The header segment declares unusable delimiters.
    #[error("batch header: {0}")]
    Delimiters(#[from] crate::error::ParseError),
    /// A segment other than a header/trailer appears before the first MSH of a batch.
    #[error("segment {segment} outside a message at byte {offset}")]
    StraySegment {
        /// The segment id (three letters, never contents).
        segment: String,
        /// Its byte offset.
        offset: usize,
    },
}

impl Batch<'_> {
    /// All messages of all batches, in order.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        self.batches.iter().flat_map(|b| b.messages.iter().copied())
    }

    /// The number of messages in the file.
    pub fn message_count(&self) -> usize {
        self.batches.iter().map(|b| b.messages.len()).sum()
    }

    /// Where declared trailer counts disagree with what the file holds, a description of
    /// each mismatch (empty when all agree or none are declared).
    pub fn count_mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, batch) in self.batches.iter().enumerate() {
            if let Some(declared) = batch.declared_messages {
                if declared != batch.messages.len() as u64 {
                    out.push(format!(
                        "batch {}: BTS-1 declares {declared} messages, found {}",
                        i + 1,
                        batch.messages.len()
                    ));
                }
            }
        }
        let real_batches = self.batches.iter().filter(|b| b.header.is_some()).count() as u64;
        if let Some(declared) = self.declared_batches {
            if declared != real_batches {
                out.push(format!("FTS-1 declares {declared} batches, found {real_batches}"));
            }
        }
        out
    }
}

/// True when the data starts (after blank lines) with a batch header (FHS or BHS).
pub fn is_batch(raw: &[u8]) -> bool {
    let raw = trim_leading_line_ends(raw);
    raw.starts_with(b"FHS") || raw.starts_with(b"BHS")
}

/// Splits a batch (FHS/BHS…BTS/FTS) or a plain sequence of messages into messages.
///
/// Segment terminators may be `\r`, `\n` or `\r\n`. Each message slice runs from its `MSH`
/// to the start of the next MSH, BHS, BTS, FHS or FTS segment and includes its terminators.
pub fn split(raw: &[u8]) -> Result<Batch<'_>, BatchError> {
    let raw = trim_leading_line_ends(raw);
    if !(raw.starts_with(b"FHS") || raw.starts_with(b"BHS") || raw.starts_with(b"MSH")) {
        return Err(BatchError::NoHeader);
    }
    let delimiters = Delimiters::from_header(raw)?;
    let mut batch = Batch::default();
    let mut current = SubBatch::default();
    let mut message_start: Option<usize> = None;
    let base = raw.as_ptr() as usize;
    let offset_of = |seg: &[u8]| seg.as_ptr() as usize - base;

    for (seg, seg_start) in lines(raw) {
        let id = &seg[..seg.len().min(3)];
        let boundary = matches!(id, b"MSH" | b"BHS" | b"BTS" | b"FHS" | b"FTS");
        if boundary {
            if let Some(start) = message_start.take() {
                current.messages.push(&raw[start..seg_start]);
            }
        }
        match id {
            b"MSH" => message_start = Some(seg_start),
            b"FHS" => batch.file_header = Some(seg),
            b"BHS" => {
                if current.header.is_some() || !current.messages.is_empty() {
                    batch.batches.push(std::mem::take(&mut current));
                }
                current.header = Some(seg);
            }
            b"BTS" => {
                current.declared_messages = count_field(seg, delimiters.field);
                batch.batches.push(std::mem::take(&mut current));
            }
            b"FTS" => batch.declared_batches = count_field(seg, delimiters.field),
            _ if message_start.is_none() => {
                return Err(BatchError::StraySegment {
                    segment: String::from_utf8_lossy(id).into_owned(),
                    offset: offset_of(seg),
                });
            }
            _ => {}
        }
    }
    if let Some(start) = message_start {
        current.messages.push(&raw[start..]);
    }
    if current.header.is_some() || !current.messages.is_empty() {
        batch.batches.push(current);
    }
    Ok(batch)
}

/// Segments (without terminators) and the offset each starts at; blank lines skipped.
fn lines(raw: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        if pos >= raw.len() {
            return None;
        }
        let start = pos;
        let end =
            raw[start..].iter().position(|&b| b == b'\r' || b == b'\n').map_or(raw.len(), |p| start + p);
        pos = end;
        while pos < raw.len() && (raw[pos] == b'\r' || raw[pos] == b'\n') {
            pos += 1;
        }
        if end > start {
            return Some((&raw[start..end], start));
        }
    })
}

fn count_field(segment: &[u8], field: u8) -> Option<u64> {
    let value = segment.split(|&b| b == field).nth(1)?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

fn trim_leading_line_ends(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(raw.len());
    &raw[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msh::Msh;

    const BATCH: &[u8] = include_bytes!("../tests/fixtures/batch_fhs_bhs_3msgs.hl7");

    #[test]
    fn splits_the_sample_batch() {
        assert!(is_batch(BATCH));
        let batch = split(BATCH).unwrap();
        assert!(batch.file_header.unwrap().starts_with(b"FHS|^~\\&|BATCHER"));
        assert_eq!(batch.batches.len(), 1);
        assert!(batch.batches[0].header.unwrap().starts_with(b"BHS"));
        assert_eq!(batch.batches[0].declared_messages, Some(3));
        assert_eq!(batch.declared_batches, Some(1));
        assert_eq!(batch.message_count(), 3);
        assert!(batch.count_mismatches().is_empty());
        let ids: Vec<_> = batch.messages().map(|m| Msh::parse(m).unwrap().control_id.to_vec()).collect();
        assert_eq!(ids, [b"B1-M1".to_vec(), b"B1-M2".to_vec(), b"B1-M3".to_vec()]);
        for m in batch.messages() {
            assert!(m.ends_with(b"\r"));
            assert!(!m.windows(3).any(|w| w == b"BTS" || w == b"FTS"));
        }
    }

    #[test]
    fn reports_count_mismatch() {
        let raw = b"BHS|^~\\&|A\rMSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rBTS|2\rFTS|3\r";
        let batch = split(raw).unwrap();
        assert_eq!(batch.message_count(), 1);
        let mismatches = batch.count_mismatches();
        assert_eq!(mismatches.len(), 2, "{mismatches:?}");
    }

    #[test]
    fn plain_concatenated_messages_with_lf() {
        let raw =
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\nPID|1\n\nMSH|^~\\&|A|B|C|D|1||ADT^A01|2|P|2.5\nPID|2\n";
        assert!(!is_batch(raw));
        let batch = split(raw).unwrap();
        assert_eq!(batch.message_count(), 2);
        let second = batch.messages().nth(1).unwrap();
        assert_eq!(Msh::parse(second).unwrap().control_id, b"2");
    }

    #[test]
    fn rejects_stray_segments_and_non_hl7() {
        assert_eq!(split(b"hello"), Err(BatchError::NoHeader));
        assert!(matches!(split(b"FHS|^~\\&|A\rPID|1\r"), Err(BatchError::StraySegment { offset: 11, .. })));
    }
}
