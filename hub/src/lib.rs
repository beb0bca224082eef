//! The Switchboard hub as a library.
//!
//! The `hub` binary only parses its command line and calls into this crate. Each module owns one
//! concern, and data flows one way: network sessions hand messages to fan-out, which asks the
//! organisation module who may send what where, and commits them to the store.
//!
//! - [`store`]: durable per-recipient queues in RocksDB, sharded, with group commit. Nothing
//!   outside it knows a RocksDB key.
//! - [`fanout`]: from an accepted send to the queues that hold it; wake-ups for sessions.
//! - [`session`]: one device session as a state machine (frames and time in, actions out).
//! - [`net`]: the QUIC endpoint, TLS, and the I/O driver of each session.
//! - [`server`]: start-up and orderly shutdown of the whole hub.
//! - [`org`]: organisations and rights, as pure rules over a state folded from events.
//! - [`admin`]: the HTTP admin API (users, codes, devices, health).
//! - [`client`]: the device side of the protocol, used by the CLI, loadgen and tests.
//! - [`config`]: the TOML configuration.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod backup;
pub mod client;
pub mod config;
pub mod console;
pub mod fanout;
pub mod links;
pub mod mailbox;
pub mod metrics;
pub mod net;
pub mod org;
pub mod personal;
pub mod reload;
pub mod server;
pub mod session;
pub mod store;
