//! Fuzz the request-target authority parser: never panics; what it accepts is canonical.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        intentgate::fuzzing::authority(s);
    }
});
