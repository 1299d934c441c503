//! The `portcullis` binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    portcullis::cli::main(portcullis::cli::Cli::parse())
}
