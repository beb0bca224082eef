//! Switchboard hub library.
