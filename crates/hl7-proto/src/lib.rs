//! Sans-IO HL7 v2 protocol core.
//!
//! This crate owns the bytes-in, values-out parts of hl7d: MLLP framing ([`mllp`]), a
//! zero-copy view over one HL7 v2 message ([`message`], [`msh`]), the first look at an inbound
//! frame ([`inbound`]), the refusal table ([`refusal`]), the ACK builder and reader ([`ack`]),
//! character sets ([`charset`]), batch splitting ([`batch`]), hex notation ([`hex`]),
//! recognising a peer that speaks another protocol ([`sniff`]), and what is read once at
//! ingest for the store and delivery: key fields ([`extract`], times in [`dtm`]) and the lane
//! and duplicate keys ([`keys`]); and, for people reading a message, the names of common segments and fields ([`names`])
//! and a segment cut into text, delimiters and escapes ([`lex`]).
//!
//! It must not do I/O: no sockets, no files, no clock, no logging of payloads. Time and
//! control ids come in as arguments, so every edge case is a one-line unit test.

pub mod ack;
pub mod batch;
pub mod charset;
pub mod dtm;
pub mod error;
pub mod extract;
pub mod hex;
pub mod inbound;
pub mod keys;
pub mod lex;
pub mod message;
pub mod mllp;
pub mod msh;
pub mod names;
pub mod refusal;
pub mod sniff;
