//! hl7d: a secure HL7 v2 listener.

pub mod admin;
pub mod audit;
pub mod bench_cmd;
pub mod cert_cmd;
pub mod config;
pub mod expiry;
pub mod listener;
pub mod logging;
pub mod messages_cmd;
pub mod metrics;
pub mod private_files;
pub mod send_cmd;
pub mod sender;
pub mod serve;
pub mod store;
pub mod tls;
