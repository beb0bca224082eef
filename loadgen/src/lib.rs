//! The Switchboard load generator as a library: workloads against a real hub over QUIC (or
//! NATS JetStream or an MQTT broker, to compare), with latency measured from the intended send time and every
//! delivery checked.
#![warn(missing_docs, unreachable_pub)]

pub mod check;
pub mod hub_target;
pub mod journal;
pub mod mqtt_target;
pub mod nats_target;
pub mod plot;
pub mod run;
pub mod storm;
