//! hl7d integration tests: one binary, real servers on 127.0.0.1:0, raw sockets.

mod listener;
mod send;
mod support;
