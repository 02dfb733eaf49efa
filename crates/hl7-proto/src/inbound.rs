//! First look at an inbound frame: everything the connection layer needs to decide between
//! storing the message and rejecting it, in one call.

use crate::ack;
use crate::charset::{self, Charset};
use crate::error::ParseError;
use crate::message::Message;
use crate::msh::Msh;

/// What the core makes of one frame before anything is stored.
#[derive(Debug, Clone)]
pub struct Inspection<'a> {
    /// The header: the message's own when it parsed, otherwise one salvaged from later in the
    /// frame (see [`ack::salvage_msh`]), or `None` when there is no readable MSH at all.
    pub msh: Option<Msh<'a>>,
    /// The character set the message is in and its ACK is encoded in. For a message whose
    /// MSH-18 cannot be used this is the profile default.
    pub charset: Charset,
    /// Why the message must be rejected (AR/CR), if it must.
    pub problem: Option<ParseError>,
}

impl Inspection<'_> {
    /// True when the message can be stored and accepted.
    pub fn is_acceptable(&self) -> bool {
        self.problem.is_none()
    }
}

/// Parses the frame, builds the MSH view, checks the required fields and resolves the
/// character set from MSH-18, the profile default and the force switch.
pub fn inspect(frame: &[u8], default: Charset, force: bool) -> Inspection<'_> {
    let message = match Message::parse(frame) {
        Ok(message) => message,
        Err(problem) => {
            return Inspection { msh: ack::salvage_msh(frame), charset: default, problem: Some(problem) };
        }
    };
    let msh = Msh::new(&message);
    let (charset, charset_problem) = match charset::resolve(msh.character_set, default, force) {
        Ok(charset) => (charset, None),
        Err(e) => (default, Some(ParseError::Charset { reason: e.to_string() })),
    };
    let problem = msh.validate().err().or(charset_problem);
    Inspection { msh: Some(msh), charset, problem }
}
