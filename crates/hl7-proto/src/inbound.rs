//! First look at an inbound frame: everything the connection layer needs to decide between
//! storing the message and refusing it, in one call ([`inspect`]), and the same for a frame
//! the MLLP decoder gave up on ([`inspect_frame_error`]).
//!
//! Owns the order of the checks (message view, required MSH fields, character set) and which
//! header a refusal answers to. It does not choose codes: a refusal's ACK comes from the
//! refusal table ([`crate::refusal`]).

use crate::charset::{self, Charset};
use crate::message::Message;
use crate::mllp::FrameError;
use crate::msh::Msh;
use crate::refusal::Refusal;

/// What the core makes of one frame before anything is stored: a message to store, with its
/// header, or a refusal, with the header to answer to if one could be read. There is no
/// "no header and no problem".
#[derive(Debug, Clone)]
pub enum Inspection<'a> {
    /// The message can be stored.
    Accept {
        /// Its header, complete enough to accept ([`Msh::validate`] passed).
        msh: Msh<'a>,
        /// The character set the message is in and its ACK is encoded in.
        charset: Charset,
    },
    /// The message must be refused.
    Refuse(Refused<'a>),
}

/// A refused frame: why, and what its answer is built from.
#[derive(Debug, Clone)]
pub struct Refused<'a> {
    /// The header: the message's own when it parsed, otherwise one salvaged from later in
    /// the frame ([`Msh::salvage`]), or `None` when there is no readable MSH at all (the
    /// answer is then a best-effort AR).
    pub msh: Option<Msh<'a>>,
    /// The character set the answer is encoded in: the header's MSH-18 when it names a
    /// usable one, otherwise the profile default.
    pub charset: Charset,
    /// Why.
    pub reason: Refusal,
}

impl<'a> Inspection<'a> {
    /// The header, if one could be read.
    pub fn msh(&self) -> Option<&Msh<'a>> {
        match self {
            Inspection::Accept { msh, .. } => Some(msh),
            Inspection::Refuse(refused) => refused.msh.as_ref(),
        }
    }

    /// The character set the message is in and its answer is encoded in.
    pub fn charset(&self) -> Charset {
        match self {
            Inspection::Accept { charset, .. } => *charset,
            Inspection::Refuse(refused) => refused.charset,
        }
    }

    /// Why the message is refused; `None` when it can be stored.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Inspection::Accept { .. } => None,
            Inspection::Refuse(refused) => Some(&refused.reason),
        }
    }
}

/// Parses the frame, builds the MSH view, checks the required fields and resolves the
/// character set from MSH-18, the profile `default` and the `force` switch.
pub fn inspect(frame: &[u8], default: Charset, force: bool) -> Inspection<'_> {
    let message = match Message::parse(frame) {
        Ok(message) => message,
        Err(problem) => return refuse(Msh::salvage(frame), default, force, problem.into()),
    };
    let msh = Msh::new(&message);
    if let Err(problem) = msh.validate() {
        return refuse(Some(msh), default, force, problem.into());
    }
    match charset::resolve(msh.character_set, default, force) {
        Ok(charset) => Inspection::Accept { msh, charset },
        Err(problem) => {
            Inspection::Refuse(Refused { msh: Some(msh), charset: default, reason: problem.into() })
        }
    }
}

/// The refusal for a frame the MLLP decoder gave up on (too large, broken end block),
/// answered to the header in the bytes the error keeps ([`FrameError::prefix`]: for an
/// oversized frame its first bytes, which may end mid-field). `None` for a frame its sender abandoned, which is not answered (see
/// [`Refusal::from_frame_error`]).
pub fn inspect_frame_error(error: &FrameError, default: Charset, force: bool) -> Option<Refused<'_>> {
    let reason = Refusal::from_frame_error(error)?;
    let msh = Msh::salvage(error.prefix());
    Some(Refused { charset: header_charset(msh.as_ref(), default, force), msh, reason })
}

fn refuse(msh: Option<Msh<'_>>, default: Charset, force: bool, reason: Refusal) -> Inspection<'_> {
    Inspection::Refuse(Refused { charset: header_charset(msh.as_ref(), default, force), msh, reason })
}

/// The character set for answering a refused frame: what its header's MSH-18 names when that
/// is usable (the ACK echoes that MSH-18), otherwise the profile default.
fn header_charset(msh: Option<&Msh<'_>>, default: Charset, force: bool) -> Charset {
    msh.and_then(|msh| charset::resolve(msh.character_set, default, force).ok()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ParseError;

    #[test]
    fn a_complete_message_is_accepted_with_its_header_and_charset() {
        let frame = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|OK-1|P|2.5||||||8859/1\r";
        let Inspection::Accept { msh, charset } = inspect(frame, Charset::Utf8, false) else {
            panic!("refused");
        };
        assert_eq!(msh.control_id, b"OK-1");
        assert_eq!(charset, Charset::Windows1252);
    }

    #[test]
    fn every_refusal_keeps_the_header_it_can_read() {
        let missing_id = b"MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r";
        let seen = inspect(missing_id, Charset::Utf8, false);
        assert!(matches!(seen.refusal(), Some(Refusal::Parse(ParseError::RequiredFieldMissing { .. }))));
        assert_eq!(seen.msh().unwrap().message_type.code, b"ADT");

        let bad_charset = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|U16|P|2.5||||||UNICODE UTF-16\r";
        let seen = inspect(bad_charset, Charset::Windows1252, false);
        assert!(matches!(seen.refusal(), Some(Refusal::Charset(_))));
        assert_eq!((seen.msh().unwrap().control_id, seen.charset()), (&b"U16"[..], Charset::Windows1252));

        let pid_first = b"PID|1\rMSH|^~\\&|A|B|C|D|1||ADT^A01|LATE|P|2.5||||||8859/1\r";
        let seen = inspect(pid_first, Charset::Utf8, false);
        assert_eq!(seen.refusal(), Some(&Refusal::Parse(ParseError::NoMsh)));
        assert_eq!(seen.msh().unwrap().control_id, b"LATE");
        // The answer echoes the salvaged MSH-18, so its text is encoded in that set.
        assert_eq!(seen.charset(), Charset::Windows1252);

        let seen = inspect(b"hello", Charset::Utf8, false);
        assert!(seen.msh().is_none());
        assert_eq!(seen.refusal(), Some(&Refusal::Parse(ParseError::NoMsh)));
    }

    #[test]
    fn frame_errors_answer_to_the_header_in_their_prefix() {
        let prefix =
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|BIG-1|P|2.5||||||8859/1\rOBX|1|ED|PDF||JVBERi0xLjQK".to_vec();
        let error = FrameError::TooLarge { limit: 1024, prefix };
        let refused = inspect_frame_error(&error, Charset::Utf8, false).expect("answered");
        assert_eq!(refused.reason, Refusal::FrameTooLarge { limit: 1024 });
        assert_eq!(refused.msh.unwrap().control_id, b"BIG-1");
        assert_eq!(refused.charset, Charset::Windows1252);
        // Forced: the profile default, whatever MSH-18 says.
        assert_eq!(inspect_frame_error(&error, Charset::Utf8, true).unwrap().charset, Charset::Utf8);

        let error = FrameError::BadEnd { payload: b"garbage".to_vec() };
        let refused = inspect_frame_error(&error, Charset::Utf8, false).expect("answered");
        assert_eq!((refused.reason, refused.msh.is_none()), (Refusal::FrameBadEnd, true));

        let error = FrameError::Truncated { prefix: b"MSH|^~\\&|A|B|C|D|1||ADT^A01|GONE|P|2.5".to_vec() };
        assert!(inspect_frame_error(&error, Charset::Utf8, false).is_none());
    }
}
