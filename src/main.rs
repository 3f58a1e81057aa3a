//! The `intentgate` binary: parse the command line and hand over to the library.

/// jemalloc: returns freed memory to the OS wherever it lies (glibc only trims the top of its
/// heap), so memory used while loading a large catalog does not stay resident; defaults in
/// `.cargo/config.toml`.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    intentgate::exposed::main()
}
