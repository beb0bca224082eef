//! The Switchboard load generator as a library: workloads against a real hub over QUIC, with
//! latency measured from the intended send time and every delivery checked.
#![warn(missing_docs, unreachable_pub)]

pub mod check;
pub mod run;
