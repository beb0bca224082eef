//! The Switchboard hub as a library.
//!
//! The `hub` binary only parses its command line and calls into this crate. Each module owns one
//! concern, and data flows one way: network sessions hand messages to fan-out, which asks the
//! organisation module who may send what where, and commits them to the store.
//!
//! - [`store`]: durable per-recipient queues in RocksDB, sharded, with group commit. Nothing
//!   outside it knows a RocksDB key.
#![warn(missing_docs, unreachable_pub)]

pub mod store;
