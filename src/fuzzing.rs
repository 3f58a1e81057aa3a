//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay test, each asserting
//! the properties the parsers promise beyond "does not panic".

use crate::target;

/// The authority parser: whatever it accepts is canonical (parsing it again is the identity).
pub fn authority(s: &str) {
    if let Ok(a) = target::parse_authority(s, Some(80)) {
        let again = target::parse_authority(&a.to_host_port(), None);
        assert_eq!(
            again.ok().as_ref(),
            Some(&a),
            "not canonical: {s:?} -> {a:?}"
        );
        assert!(!a.host.is_empty() && a.port != 0);
    }
}

/// The path canonicaliser: its output is a fixed point, starts with '/', has no dot segments.
pub fn path(s: &str) {
    if let Ok(p) = target::canonical_path(s) {
        assert!(p.starts_with('/'));
        assert!(
            !p.split('/').any(|seg| seg == "." || seg == ".."),
            "{s:?} -> {p:?}"
        );
        assert_eq!(
            target::canonical_path(&p).ok().as_deref(),
            Some(p.as_str()),
            "not a fixed point: {s:?}"
        );
    }
}

/// The ClientHello parser on arbitrary bytes, and on every prefix of them.
pub fn client_hello(data: &[u8]) {
    let _ = crate::tls::sni::parse(data);
    for cut in [0, 1, 5, data.len() / 2] {
        let _ = crate::tls::sni::parse(&data[..cut.min(data.len())]);
    }
}

/// The config loader on arbitrary text: a config or an error naming the file.
pub fn config(s: &str) {
    if let Err(e) = crate::config::parse("fuzz.yaml", s, std::path::Path::new(".")) {
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
}
