//! Fuzz the TLS ClientHello/SNI parser with arbitrary bytes: never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    intentgate::fuzzing::client_hello(data);
});
