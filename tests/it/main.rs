//! hl7d integration tests: one binary, real servers on 127.0.0.1:0, raw sockets.

mod admin;
mod bench;
mod cli;
mod client_keys;
mod delivery;
mod delivery_e2e;
mod delivery_transports;
mod faults;
mod file_modes;
mod fuzz_app;
mod haproxy;
mod hostile;
mod interop;
mod limits;
mod listener;
mod proxy;
mod refused;
mod reload;
mod routes_cli;
mod send;
mod send_tls;
mod startup;
mod store;
mod store_backup;
mod support;
mod tls;
