//! Tests of the chunked catalog reader (src/config/chunked.rs).

use super::*;
use crate::config::Mode;

/// A configuration past `MIN_LEN`: `n` intents in the block style of bench/catalog.py, with
/// `extra` (a few lines at the entries' indentation) in the middle of the catalog.
fn big(n: usize, extra: &str) -> String {
    let mut t =
        String::from("# a large catalog\nagent: {id: a, owner: o}\nintent: svc-0001\nintents:\n");
    for i in 0..n {
        if i == n / 2 {
            t.push_str(extra);
        }
        t.push_str(&format!(
            "  svc-{i:04}:\n    description: |\n      filler {i}\n\n      # not a comment\n    allow:\n"
        ));
        for r in 0..5 {
            t.push_str(&format!(
                "      - hosts: [\"api{r}.svc-{i:04}.example.com\"]\n        ports: [443, {}]\n        methods: [GET, POST]\n        paths: [\"/v1/*/items\", \"/health\"]\n",
                8000 + r
            ));
        }
        if i % 7 == 0 {
            t.push_str("# a comment between entries\n\n");
        }
    }
    t.push_str("mode: monitor\npolicy: {builtin: true}\n");
    assert!(t.len() >= MIN_LEN);
    t
}

fn whole(text: &str) -> Result<Option<Config>, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

#[test]
fn a_large_catalog_read_in_pieces_is_the_document_read_whole() {
    let text = big(
        600,
        "  anchored:\n    allow:\n      - &rule {hosts: [a.example], ports: [1]}\n      - *rule\n",
    );
    let (block, entries) = catalog_block(&text).unwrap();
    assert_eq!(entries.len(), 601);
    assert!(block.len() > 4 * PIECE_LEN, "several pieces");
    let pieces = in_pieces(&text).expect("read in pieces");
    assert_eq!(Ok(Some(pieces.clone())), whole(&text));
    assert_eq!(pieces.intents.len(), 601);
    assert_eq!(pieces.intents["anchored"].allow[1].hosts, ["a.example"]);
    assert_eq!(pieces.mode, Mode::Monitor);
}

#[test]
fn anything_but_the_plain_layout_is_read_whole() {
    for (why, text) in [
        (
            "an alias to an anchor in another piece",
            big(600, "  mid:\n    allow: [*far]\n").replacen(
                "  svc-0000:\n",
                "  first:\n    allow: [&far {hosts: [a.example]}]\n  svc-0000:\n",
                1,
            ),
        ),
        (
            "a name in two pieces",
            big(600, "  svc-0599:\n    description: twice\n"),
        ),
        ("two catalogs", big(600, "") + "intents:\n  more: {}\n"),
        ("a document marker", format!("---\n{}", big(600, ""))),
        ("an entry less indented", big(600, " odd: {}\n")),
    ] {
        assert_eq!(in_pieces(&text), None, "{why}");
        let read = from_str(&text).map_err(|e| e.to_string());
        assert_eq!(
            read,
            whole(&text),
            "{why}: the same outcome as a whole read"
        );
    }
}

#[test]
fn an_error_in_a_piece_is_reported_as_for_the_whole_document() {
    let text = big(600, "  broken:\n    allow:\n      - hostz: [a.example]\n");
    let err = from_str(&text).unwrap_err().to_string();
    assert_eq!(Err(err.clone()), whole(&text));
    assert!(err.contains("hostz"), "{err}");
}

#[test]
fn small_documents_and_other_layouts_are_read_whole() {
    assert_eq!(catalog_block("intents: {a: {}}\n"), None);
    assert_eq!(catalog_block("mode: monitor\n"), None);
    assert!(is_key("intents:   # the catalog", "intents"));
    assert!(!is_key("intents: {}", "intents"));
    assert!(!is_key("  intents:", "intents"));
}

#[test]
fn pieces_read_on_several_threads_come_back_in_order() {
    let texts: Vec<String> = (0..9).map(|i| format!("p{i}: {{}}\n")).collect();
    let pieces: Vec<&str> = texts.iter().map(String::as_str).collect();
    let read = read_all(&pieces).expect("all read");
    let names: Vec<&str> = read
        .iter()
        .flat_map(|p| p.keys())
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"]
    );
    let mut broken = pieces.clone();
    broken[7] = "p7: {allow: [{hostz: []}]}\n";
    assert!(
        read_all(&broken).is_none(),
        "one bad piece: read the whole document"
    );
}

#[test]
fn lines_are_cut_at_each_newline_with_their_offsets() {
    let got: Vec<_> = lines("a\r\n\nbc\nd").collect();
    assert_eq!(got, [(0, "a"), (3, ""), (4, "bc"), (7, "d")]);
    assert_eq!(lines("x\n").collect::<Vec<_>>(), [(0, "x")]);
    assert_eq!(lines("").count(), 0);
}
