//! Replays the fuzz corpora (seeds and kept crash inputs) through the fuzz entry points on the
//! stable toolchain, so CI checks every input that ever mattered.

use std::path::Path;

#[test]
fn every_fuzz_corpus_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (target, run) in [
        (
            "authority",
            (|d: &[u8]| intentgate::fuzzing::authority(&String::from_utf8_lossy(d))) as fn(&[u8]),
        ),
        ("path", |d: &[u8]| {
            intentgate::fuzzing::path(&String::from_utf8_lossy(d))
        }),
        ("client_hello", |d: &[u8]| {
            intentgate::fuzzing::client_hello(d)
        }),
        ("config", |d: &[u8]| {
            intentgate::fuzzing::config(&String::from_utf8_lossy(d))
        }),
    ] {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            run(&data);
            replayed += 1;
        }
    }
    assert!(replayed >= 10, "only {replayed} corpus inputs");
}
