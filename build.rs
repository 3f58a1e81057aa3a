//! Link flags for the `intentgate` binary: on glibc Linux, relative relocations are packed
//! (DT_RELR, glibc ≥ 2.36, binutils ≥ 2.38), so the loader does not touch ~1.1 MiB of `.rela.dyn`
//! at every start (idle RSS; docs/performance.md).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("INTENTGATE_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=INTENTGATE_NO_RELR");
}
