//! One audit record as a JSON line, written by hand on the writer thread: the keys are constants
//! and a string is copied whole unless it holds a character JSON must escape. It writes the same
//! bytes as `serde_json::to_writer` (the tests compare the two) for about a third of the work.
//! The writer thread keeps the pieces every record of a configuration shares (`Repeats`), and
//! writes its time stamp and boot id straight into the line (`Stamp`).

use std::sync::Arc;

use super::{AuditAgent, AuditRecord};
use crate::config::Mode;
use crate::intent::IntentSource;
use crate::vocab::{ConnectionMode, Scheme, Verdict};

#[path = "line_text.rs"]
mod text;
use text::{Word, float, opt_string, put, to_escape, vocab, words_of};
pub(super) use text::{escaped, string, uint};

/// Appends `rec` as one JSON object (no newline) to `out`.
pub fn write(rec: &AuditRecord, out: &mut Vec<u8>) {
    line(rec, out, None);
}

/// What the writer stamps on a record, written into its line as is: the record's own `time`
/// and `boot_id` are then left as they are (the writer fills them only for a record that goes on
/// after its line: to the exporter, or in the OPA format). Both are ASCII digits, hex and
/// separators (nothing JSON escapes) of a fixed length, so each is copied in place.
#[derive(Clone, Copy)]
pub(super) struct Stamp<'a> {
    /// RFC 3339 with microseconds (`stamp::Stamper`).
    pub(super) time: &'a [u8; 27],
    /// The process's boot id, 16 hex digits.
    pub(super) boot_id: &'a [u8; 16],
}

/// The pieces of a line the records of one configuration share, kept written: the agent (one
/// per configuration) with the intent's name after it, and the policy revision (each shared by
/// the records that carry it). A piece is known by its `Arc`s, held here, so a new one is never
/// mistaken for it.
#[derive(Default)]
pub(super) struct Repeats {
    head: Head,
    revision: Kept<str>,
}

/// The agent and the intent's name, adjacent in a line, kept as one piece (one copy a line):
/// from `,"agent":` to `,"task":`.
#[derive(Default)]
struct Head {
    of: Option<(Arc<AuditAgent>, Option<Arc<str>>)>,
    bytes: Vec<u8>,
}

impl Head {
    fn write(&mut self, out: &mut Vec<u8>, agent: &Arc<AuditAgent>, name: Option<&Arc<str>>) {
        let same = self.of.as_ref().is_some_and(|(a, n)| {
            Arc::ptr_eq(a, agent)
                && match (n, name) {
                    (None, None) => true,
                    (Some(n), Some(name)) => Arc::ptr_eq(n, name),
                    _ => false,
                }
        });
        if !same {
            self.bytes.clear();
            head(&mut self.bytes, agent, name.map(|n| &**n));
            self.of = Some((Arc::clone(agent), name.cloned()));
        }
        out.extend_from_slice(&self.bytes);
    }
}

/// The agent and the intent's name: `,"agent":{…},"intent":{"name":…,"task":`.
fn head(out: &mut Vec<u8>, a: &AuditAgent, name: Option<&str>) {
    out.extend_from_slice(b",\"agent\":");
    agent(out, a);
    out.extend_from_slice(b",\"intent\":{\"name\":");
    opt_string(out, name);
    out.extend_from_slice(b",\"task\":");
}

impl Repeats {
    /// `write`, with the shared pieces copied when they are the last record's, and `stamp`'s
    /// time and boot id instead of the record's.
    pub(super) fn write(&mut self, rec: &AuditRecord, stamp: Stamp<'_>, out: &mut Vec<u8>) {
        line(rec, out, Some((self, stamp)));
    }
}

/// One shared piece and its bytes as written.
struct Kept<T: ?Sized> {
    of: Option<Arc<T>>,
    bytes: Vec<u8>,
}

impl<T: ?Sized> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            of: None,
            bytes: Vec::new(),
        }
    }
}

/// Writes `piece` with `render`: copied from `kept` when it is the piece kept there, else
/// rendered (into `kept` when there is one).
fn shared<T: ?Sized>(
    out: &mut Vec<u8>,
    piece: &Arc<T>,
    kept: Option<&mut Kept<T>>,
    render: fn(&mut Vec<u8>, &T),
) {
    let Some(k) = kept else {
        return render(out, piece);
    };
    if !k.of.as_ref().is_some_and(|of| Arc::ptr_eq(of, piece)) {
        k.bytes.clear();
        render(&mut k.bytes, piece);
        k.of = Some(Arc::clone(piece));
    }
    put(out, &k.bytes);
}

/// The agent as a JSON object.
fn agent(out: &mut Vec<u8>, a: &AuditAgent) {
    out.extend_from_slice(b"{\"id\":");
    string(out, &a.id);
    out.extend_from_slice(b",\"namespace\":");
    opt_string(out, a.namespace.as_deref());
    out.extend_from_slice(b",\"spiffe_id\":");
    opt_string(out, a.spiffe_id.as_deref());
    out.extend_from_slice(b",\"service_account\":");
    opt_string(out, a.service_account.as_deref());
    out.extend_from_slice(b",\"owner\":");
    opt_string(out, a.owner.as_deref());
    out.extend_from_slice(b",\"expires\":");
    opt_string(out, a.expires.as_deref());
    out.push(b'}');
}

/// `source` as a word (the enum's own spelling).
fn source(s: Option<IntentSource>) -> &'static Word {
    const HEADER: Word = Word::of(IntentSource::Header.as_str());
    const SESSION: Word = Word::of(IntentSource::Session.as_str());
    const TOKEN: Word = Word::of(IntentSource::Token.as_str());
    const DEFAULT: Word = Word::of(IntentSource::Default.as_str());
    const NONE: Word = Word::of(IntentSource::None.as_str());
    match s {
        None => &Word::BLANK,
        Some(IntentSource::Header) => &HEADER,
        Some(IntentSource::Session) => &SESSION,
        Some(IntentSource::Token) => &TOKEN,
        Some(IntentSource::Default) => &DEFAULT,
        Some(IntentSource::None) => &NONE,
    }
}

/// `mode` as a word (the enum's own spelling).
fn mode(m: Option<Mode>) -> &'static Word {
    const ENFORCE: Word = Word::of(Mode::Enforce.as_str());
    const MONITOR: Word = Word::of(Mode::Monitor.as_str());
    match m {
        None => &Word::BLANK,
        Some(Mode::Enforce) => &ENFORCE,
        Some(Mode::Monitor) => &MONITOR,
    }
}

fn line(rec: &AuditRecord, out: &mut Vec<u8>, kept: Option<(&mut Repeats, Stamp<'_>)>) {
    out.reserve(1024);
    let (mut repeats, stamp) = kept.unzip();
    match stamp {
        Some(s) => {
            debug_assert!(to_escape(s.time).is_none() && to_escape(s.boot_id).is_none());
            out.extend_from_slice(b"{\"time\":\"");
            out.extend_from_slice(s.time);
            out.extend_from_slice(b"\",\"seq\":");
            uint(out, rec.seq);
            out.extend_from_slice(b",\"boot_id\":\"");
            out.extend_from_slice(s.boot_id);
            out.extend_from_slice(b"\",\"decision_id\":");
        }
        None => {
            out.extend_from_slice(b"{\"time\":");
            string(out, &rec.time);
            out.extend_from_slice(b",\"seq\":");
            uint(out, rec.seq);
            out.extend_from_slice(b",\"boot_id\":");
            string(out, &rec.boot_id);
            out.extend_from_slice(b",\"decision_id\":");
        }
    }
    string(out, &rec.decision_id);
    match repeats.as_mut() {
        Some(r) => r.head.write(out, &rec.agent, rec.intent.name.as_ref()),
        None => head(out, &rec.agent, rec.intent.name.as_deref()),
    }
    opt_string(out, rec.intent.task.as_deref());
    out.extend_from_slice(b",\"source\":");
    source(rec.intent.source).put(out);
    // Each a constant of its own length (one choosing between them is copied by a call).
    if rec.intent.verified {
        out.extend_from_slice(b",\"verified\":true},\"connection\":");
    } else {
        out.extend_from_slice(b",\"verified\":false},\"connection\":");
    }
    rec.connection
        .map_or(&Word::BLANK, |c| &words_of!(ConnectionMode)[c as usize])
        .put(out);
    out.extend_from_slice(b",\"method\":");
    string(out, &rec.method);
    out.extend_from_slice(b",\"scheme\":");
    rec.scheme
        .map_or(&Word::BLANK, |s| &words_of!(Scheme)[s as usize])
        .put(out);
    out.extend_from_slice(b",\"host\":");
    string(out, &rec.host);
    out.extend_from_slice(b",\"port\":");
    uint(out, u64::from(rec.port));
    out.extend_from_slice(b",\"path\":");
    string(out, &rec.path);
    out.extend_from_slice(b",\"decision\":");
    rec.decision
        .map_or(&Word::BLANK, |d| &words_of!(Verdict)[d as usize])
        .put(out);
    out.extend_from_slice(b",\"mode\":");
    mode(rec.mode).put(out);
    out.extend_from_slice(b",\"reasons\":[");
    for (i, r) in rec.reasons.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, r);
    }
    out.push(b']');
    if let Some(e) = rec.error {
        out.extend_from_slice(b",\"error\":");
        vocab(out, e.as_str());
    }
    if let Some(c) = rec.code {
        out.extend_from_slice(b",\"code\":");
        vocab(out, c.as_str());
    }
    if let Some(c) = &rec.credential {
        out.extend_from_slice(b",\"credential\":{\"name\":");
        string(out, &c.name);
        out.extend_from_slice(b",\"version\":");
        uint(out, c.version);
        if let Some(e) = &c.expires {
            out.extend_from_slice(b",\"expires\":");
            string(out, e);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"policy_revision\":");
    shared(
        out,
        &rec.policy_revision,
        repeats.map(|r| &mut r.revision),
        string,
    );
    out.extend_from_slice(b",\"status\":");
    uint(out, u64::from(rec.status));
    out.extend_from_slice(b",\"bytes_in\":");
    uint(out, rec.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    uint(out, rec.bytes_out);
    if let Some(e) = rec.ended {
        out.extend_from_slice(b",\"ended\":");
        vocab(out, e.as_str());
    }
    out.extend_from_slice(b",\"durations\":{\"policy_us\":");
    uint(out, rec.durations.policy_us);
    out.extend_from_slice(b",\"upstream_ms\":");
    float(out, rec.durations.upstream_ms);
    out.extend_from_slice(b",\"total_ms\":");
    float(out, rec.durations.total_ms);
    out.push(b'}');
    if let Some(sh) = &rec.shadow {
        out.extend_from_slice(b",\"shadow\":{\"decision\":");
        words_of!(Verdict)[sh.decision as usize].put(out);
        if let Some(c) = sh.code {
            out.extend_from_slice(b",\"code\":");
            vocab(out, c.as_str());
        }
        out.extend_from_slice(b",\"reasons\":[");
        for (i, r) in sh.reasons.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, r);
        }
        out.extend_from_slice(b"]}");
    }
    if let Some(t) = &rec.trace {
        out.extend_from_slice(b",\"trace\":{\"trace_id\":");
        super::trace::hex_string(out, &t.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        super::trace::hex_string(out, &t.span_id);
        out.extend_from_slice(b",\"parent_span_id\":");
        match &t.parent {
            Some(p) => super::trace::hex_string(out, p),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    if let Some(m) = &rec.mcp {
        out.extend_from_slice(b",\"mcp\":{\"method\":");
        string(out, &m.method);
        out.extend_from_slice(b",\"tool\":");
        opt_string(out, m.tool.as_deref());
        out.push(b'}');
    }
    if let Some(l) = &rec.llm {
        // Rare (LLM calls only), so serde's own writer: the same bytes by construction.
        out.extend_from_slice(b",\"llm\":");
        if serde_json::to_writer(&mut *out, l).is_err() {
            out.extend_from_slice(b"null");
        }
    }
    if let Some(b) = &rec.budget {
        // Only on a call refused for its budget: serde's own writer is fast enough there.
        out.extend_from_slice(b",\"budget\":");
        let _ = serde_json::to_writer(&mut *out, b);
    }
    out.push(b'}');
}

#[cfg(test)]
#[path = "line_tests.rs"]
mod tests;
