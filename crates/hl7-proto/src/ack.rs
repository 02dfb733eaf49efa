//! ACK builder.

/// Per-profile ACK policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckPolicy {
    /// Follow MSH-15/MSH-16 (default).
    #[default]
    Msh,
    /// Always answer, even when MSH-15 says NE.
    Always,
    /// Never write anything back.
    Never,
}
