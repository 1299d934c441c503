//! The `portcullis` binary.

use clap::Parser;

/// The process's allocator: mimalloc keeps per-thread free lists for every
/// size, where glibc's malloc sends most of the proxy's per-request
/// allocations (many of the same size alive at once, one per in-flight
/// request) through its slower shared bins (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main(portcullis::cli::Cli::parse())
}
