//! hl7d: a secure HL7 v2 listener.

pub mod config;
pub mod listener;
pub mod store;
pub mod logging;
pub mod serve;
