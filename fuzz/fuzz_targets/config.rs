//! Fuzz the configuration loader: any text gives a config or an error naming the file, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        intentgate::fuzzing::config(s);
    }
});
