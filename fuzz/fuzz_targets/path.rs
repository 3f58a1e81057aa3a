//! Fuzz the path canonicaliser: never panics; its output is a fixed point.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        intentgate::fuzzing::path(s);
    }
});
