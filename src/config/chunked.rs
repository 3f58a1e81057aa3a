//! Reading a large configuration with bounded memory: the YAML reader holds every event of a
//! document before deserializing it (~20 bytes of events per byte of text), so the intent
//! catalog of a large document (a block mapping under a top-level `intents:` line) is read in
//! pieces of a few entries each, and the rest of the document on its own.
//!
//! The pieces are read only when the layout is plain: exactly one `intents:` line at column 0,
//! its entries at one indentation below it. Anything else, and any error (a piece cut in the
//! middle of a quoted string, an alias to an anchor in another piece, a name in two pieces),
//! reads the whole document at once, as small documents always are: a configuration means the
//! same, and is refused with the same message, whichever way it was read.
//!
//! The pieces are read on up to `MAX_THREADS` threads at once (the machine's cores), each taking
//! a run of consecutive pieces: start-up time, not work, falls with the cores a large catalog gets.

use std::collections::BTreeMap;
use std::ops::Range;

use super::{Config, IntentSpec};

/// Documents at least this long are read in pieces (smaller ones cost little either way).
const MIN_LEN: usize = 256 * 1024;
/// Roughly how much text one piece holds.
const PIECE_LEN: usize = 64 * 1024;
/// At most this many threads read pieces at once.
const MAX_THREADS: usize = 4;

/// The configuration in `text` (`None` for a document with no content).
pub(super) fn from_str(text: &str) -> Result<Option<Config>, serde_yaml::Error> {
    if text.len() >= MIN_LEN {
        if let Some(c) = in_pieces(text) {
            return Ok(Some(c));
        }
    }
    serde_yaml::from_str(text)
}

/// The document read in pieces, or `None` when it must be read whole.
fn in_pieces(text: &str) -> Option<Config> {
    let (block, entries) = catalog_block(text)?;
    // The rest keeps its line numbers: the catalog's lines become empty ones.
    let mut rest = String::with_capacity(text.len() - block.len());
    rest.push_str(&text[..block.start]);
    let newlines = memchr::memchr_iter(b'\n', text[block.clone()].as_bytes()).count();
    rest.extend(std::iter::repeat_n('\n', newlines));
    rest.push_str(&text[block.end..]);
    let mut config: Config = serde_yaml::from_str::<Option<Config>>(&rest).ok()??;
    drop(rest);
    if !config.intents.is_empty() {
        return None;
    }
    let mut cuts = vec![entries[0]];
    for &at in &entries[1..] {
        if cuts.last().is_some_and(|&c| at - c >= PIECE_LEN) {
            cuts.push(at);
        }
    }
    cuts.push(block.end);
    let pieces: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
    for piece in read_all(&pieces)? {
        for (name, spec) in piece {
            if config.intents.insert(name, spec).is_some() {
                return None;
            }
        }
    }
    Some(config)
}

type Piece = BTreeMap<String, IntentSpec>;

/// Every piece read, in order, on up to `MAX_THREADS` threads (each a run of consecutive
/// pieces); `None` if any piece does not read.
fn read_all(pieces: &[&str]) -> Option<Vec<Piece>> {
    let runs = crate::runs::in_runs(pieces, MAX_THREADS, "config-read", |run| {
        run.iter()
            .map(|p| serde_yaml::from_str(p).ok())
            .collect::<Option<Vec<Piece>>>()
            .ok_or(())
    });
    runs.ok().map(|runs| runs.into_iter().flatten().collect())
}

/// The byte range of the `intents:` line and its block, and where each entry of the block
/// starts (its first line is at the block's indentation; comments and blank lines are kept
/// with the entry before them).
fn catalog_block(text: &str) -> Option<(Range<usize>, Vec<usize>)> {
    let mut rows = lines(text);
    let head = rows.find(|(_, l)| is_key(l, "intents"))?;
    let mut indent = None;
    let mut entries = Vec::new();
    let mut end = text.len();
    for (at, line) in rows {
        let body = line.trim_start_matches(' ');
        if body.trim().is_empty() || body.starts_with('#') {
            continue;
        }
        let n = line.len() - body.len();
        if n == 0 {
            end = at;
            break;
        }
        let indent = *indent.get_or_insert(n);
        if n == indent {
            entries.push(at);
        } else if n < indent {
            return None;
        }
    }
    // A second catalog, directives or document markers: read the whole document.
    let plain = !lines(&text[end..]).any(|(_, l)| is_key(l, "intents"))
        && !lines(text)
            .any(|(_, l)| l.starts_with("---") || l.starts_with("...") || l.starts_with('%'));
    (plain && !entries.is_empty()).then_some((head.0..end, entries))
}

/// Each line of `text` with the byte offset it starts at (the newline is not part of it). The
/// newlines are found with memchr: a large catalog has a million short lines.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).map(|at| at + 1);
    let ends = ends.chain((!text.ends_with('\n') && !text.is_empty()).then_some(text.len()));
    ends.scan(0, |start, end| {
        let line = (*start, text[*start..end].trim_end_matches(['\n', '\r']));
        *start = end;
        Some(line)
    })
}

/// Whether `line` is the top-level key `key` with its value on the lines below.
fn is_key(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .and_then(|r| r.strip_prefix(':'))
        .is_some_and(|r| {
            let r = r.trim_start();
            r.is_empty() || r.starts_with('#')
        })
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
