//! Paths as catalog patterns: exactly as seen, or (under `--generalise MIN`) with id-like segments
//! (numeric, UUID, long hex) as `*` where at least MIN distinct paths of that shape were seen.

use std::collections::{BTreeMap, BTreeSet};

/// The patterns for the paths of one host:port, with the methods each was seen with.
pub(super) struct Patterns {
    pub(super) patterns: BTreeMap<String, BTreeSet<String>>,
    pub(super) generalised: Vec<Generalised>,
    /// Paths with a `*` in a segment: a pattern cannot name them literally, so they are not learned.
    pub(super) inexpressible: Vec<String>,
}

/// One pattern that stands for several paths seen.
pub(super) struct Generalised {
    pub(super) pattern: String,
    pub(super) paths: BTreeSet<String>,
    min: u32,
}

impl Generalised {
    /// The comment shown above the rule that holds the pattern.
    pub(super) fn note(&self) -> String {
        const SHOWN: usize = 3;
        let mut examples: Vec<&str> = self.paths.iter().take(SHOWN).map(String::as_str).collect();
        if self.paths.len() > SHOWN {
            examples.push("…");
        }
        format!(
            "{} generalises {} paths seen ({}) (--generalise {})",
            self.pattern,
            self.paths.len(),
            examples.join(", "),
            self.min
        )
    }
}

/// An id: all digits, a UUID, or 16+ hex digits.
fn id_like(s: &str) -> bool {
    let hex = |b: u8| b.is_ascii_hexdigit();
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        || (s.len() == 36
            && s.bytes().filter(|b| *b == b'-').count() == 4
            && s.bytes().all(|b| hex(b) || b == b'-'))
        || (s.len() >= 16 && s.bytes().all(hex))
}

/// A path's segments as the catalog matches them (empty ones ignored); `None` when one holds a
/// `*`, which a pattern would read as a wildcard.
fn segments(path: &str) -> Option<Vec<&str>> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (!segs.iter().any(|s| s.contains('*'))).then_some(segs)
}

fn pattern<'a>(segs: impl IntoIterator<Item = &'a str>) -> String {
    let mut p = String::new();
    for s in segs {
        p.push('/');
        p.push_str(s);
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

/// The patterns for `paths` (path → methods seen on it).
pub(super) fn patterns(
    paths: &BTreeMap<String, BTreeSet<String>>,
    generalise: Option<u32>,
) -> Patterns {
    let mut literal: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut shapes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut inexpressible = Vec::new();
    for (path, methods) in paths {
        let Some(segs) = segments(path) else {
            inexpressible.push(path.clone());
            continue;
        };
        let lit = pattern(segs.iter().copied());
        literal
            .entry(lit.clone())
            .or_default()
            .extend(methods.iter().cloned());
        if generalise.is_some() && segs.iter().any(|s| id_like(s)) {
            let shape = pattern(segs.iter().map(|s| if id_like(s) { "*" } else { s }));
            shapes.entry(shape).or_default().insert(lit);
        }
    }
    let mut patterns = BTreeMap::new();
    let mut generalised = Vec::new();
    if let Some(min) = generalise {
        for (shape, members) in shapes {
            if members.len() < min as usize {
                continue;
            }
            let methods: &mut BTreeSet<String> = patterns.entry(shape.clone()).or_default();
            for m in &members {
                methods.extend(literal.remove(m).unwrap_or_default());
            }
            generalised.push(Generalised {
                pattern: shape,
                paths: members,
                min,
            });
        }
    }
    patterns.extend(literal);
    Patterns {
        patterns,
        generalised,
        inexpressible,
    }
}
