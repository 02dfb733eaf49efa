//! The shared store on PostgreSQL (`[store] url`, issue 16): its connection pool
//! ([`connect`]) and schema ([`schema`]).

pub mod connect;
pub mod schema;
