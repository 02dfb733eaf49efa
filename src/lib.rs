//! hl7d: a secure HL7 v2 listener.

pub mod cert_cmd;
pub mod config;
pub mod listener;
pub mod messages_cmd;
pub mod store;
pub mod logging;
pub mod serve;
pub mod sender;
pub mod send_cmd;
pub mod tls;
