//! The `hub` binary: parses the command line and hands over to the library.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard hub: holds every message durably until each device of its recipient has taken it.
#[derive(Debug, Parser)]
#[command(name = "hub", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
