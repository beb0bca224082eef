//! `loadgen`: the Switchboard load generator (its workloads arrive with the hub's device sessions).

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for Switchboard hubs.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
