//! hl7d: a secure HL7 v2 listener.
