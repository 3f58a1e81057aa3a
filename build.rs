//! Link flags for the `intentgate` binary (idle RSS; docs/performance.md "Idle memory"):
//! - on glibc Linux, relative relocations are packed (DT_RELR, glibc ≥ 2.36, binutils ≥ 2.38), so
//!   the loader does not touch ~1.1 MiB of `.rela.dyn` at every start;
//! - on x86_64 glibc Linux with rustc ≥ 1.90 (which links with its bundled lld), functions are
//!   laid out in the order of `layout/link.order` (written by `bench/order.sh` as a release step):
//!   what start-up and an idle sidecar run sits in ~2 MiB instead of being spread over the whole
//!   `.text`. Its names hold for a checkout at any path (the release profile has no debug info,
//!   whose paths would change ThinLTO's `.llvm.<hash>` suffixes). Unknown names are skipped, so a
//!   stale file costs memory, never correctness. `INTENTGATE_NO_ORDER=1` turns it off (e.g. for a
//!   linker other than lld or mold).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("INTENTGATE_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let lld = os == "linux" && env == "gnu" && arch == "x86_64" && rustc_minor() >= 90;
    if lld && std::env::var_os("INTENTGATE_NO_ORDER").is_none() {
        let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("layout/link.order");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    println!("cargo:rerun-if-changed=layout/link.order");
    println!("cargo:rerun-if-env-changed=INTENTGATE_NO_ORDER");
    println!("cargo:rerun-if-env-changed=INTENTGATE_NO_RELR");
}

/// The minor version of the compiler Cargo runs (0 when it cannot be told).
fn rustc_minor() -> u32 {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-V").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    text.ok()
        .and_then(|t| t.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok())
        .unwrap_or(0)
}
