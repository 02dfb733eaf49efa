//! hl7d: a secure HL7 v2 listener.

pub mod bench_cmd;
pub mod cert_cmd;
pub mod config;
pub mod listener;
pub mod logging;
pub mod messages_cmd;
pub mod send_cmd;
pub mod sender;
pub mod serve;
pub mod store;
pub mod tls;
