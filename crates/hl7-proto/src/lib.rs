//! Sans-IO HL7 v2 protocol core.
//!
//! This crate owns the bytes-in, values-out parts of hl7d: MLLP framing ([`mllp`]), a
//! zero-copy view over one HL7 v2 message ([`message`], [`msh`]), the ACK builder
//! ([`ack`]), character sets ([`charset`]) and batch splitting ([`batch`]).
//!
//! It must not do I/O: no sockets, no files, no clock, no logging of payloads. Time and
//! control ids come in as arguments, so every edge case is a one-line unit test.

pub mod ack;
pub mod batch;
pub mod charset;
pub mod error;
pub mod inbound;
pub mod message;
pub mod mllp;
pub mod msh;
