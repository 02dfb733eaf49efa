//! hl7d: a secure HL7 v2 listener.
//!
//! The server's parts: [`listener`] (accept loop, one task per connection), [`tls`],
//! [`store`], [`config`], [`admin`], [`metrics`], [`audit`], [`expiry`], [`logging`],
//! [`peer_text`] (peer-chosen text capped for logs), [`ops`] (the reads and delivery actions
//! that the command line and the console share), [`proxy_header`] (the PROXY protocol
//! header of a load balancer) and [`private_files`], put together by
//! [`serve`] after [`preflight`] has checked what the configuration names. Beside them the
//! clients: [`sender`] (the MLLP client of `hl7d send` and the tests) and [`mod@bench`] (the
//! load generator). The command line is not here: it is the
//! binary's `cmd/` module, which this library cannot import, so no argument parser reaches
//! the server's code.

pub mod admin;
pub mod audit;
pub mod bench;
pub mod config;
pub mod console;
pub mod delivery;
pub mod expiry;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod peer_text;
pub mod preflight;
pub mod private_files;
pub mod proxy_header;
pub mod sender;
pub mod serve;
pub mod store;
pub mod tls;
