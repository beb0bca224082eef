//! The `hub` binary: parses the command line and hands over to the library.

use clap::{CommandFactory, Parser};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard hub: holds every message durably until each device of its recipient has taken it.
///
/// The server (`hub serve`) is not built yet: this binary has no subcommands so far and prints
/// this help.
#[derive(Debug, Parser)]
#[command(name = "hub", version, about, long_about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    // No subcommand exists yet; say what the binary is rather than exit silently.
    let _ = Cli::command().print_long_help();
}
