//! OTLP/HTTP JSON bodies (`telemetry.otlp.encoding: json`, the OTLP specification's JSON encoding: ids as lowercase hex, 64-bit
//! integers as strings) of a batch of calls: an `ExportTraceServiceRequest` with one span per
//! call and an `ExportLogsServiceRequest` with one log record per call (its audit line as body).

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::super::line::{self, escaped, string, uint};
use super::super::trace::{hex_string, hex_to};
use super::AuditRecord;
use crate::vocab::Verdict;

/// A JSON line we wrote, as a JSON string: only `"` and `\\` need escaping (control characters
/// are already escaped in it). Copied eight bytes at a time where none is (a line holds a quote
/// every few bytes, so searching from one to the next costs more than this).
fn json_text(out: &mut Vec<u8>, line: &[u8]) {
    out.reserve(line.len() + line.len() / 4 + 2);
    out.push(b'"');
    let plain = |c: &[u8]| !c.iter().any(|&b| b == b'"' || b == b'\\');
    let mut chunks = line.chunks_exact(8);
    for c in &mut chunks {
        if plain(c) {
            out.extend_from_slice(c);
        } else {
            escape_quotes(out, c);
        }
    }
    escape_quotes(out, chunks.remainder());
    out.push(b'"');
}

fn escape_quotes(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// `SPAN_KIND_SERVER`: the call as intentgate served it.
const KIND_SERVER: u8 = 2;

pub(super) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `"key":"decimal"` (OTLP JSON writes 64-bit integers as strings).
fn int_field(out: &mut Vec<u8>, key: &str, n: u64) {
    string(out, key);
    out.extend_from_slice(b":\"");
    uint(out, n);
    out.push(b'"');
}

/// The attribute list's members, comma-separated, from (key, value) pairs.
struct Attrs<'a>(&'a mut Vec<u8>, bool);

impl Attrs<'_> {
    fn sep(&mut self) {
        if self.1 {
            self.0.push(b',');
        }
        self.1 = true;
    }

    /// `{"key":KEY,"value":{` : keys are our own constants, copied without an escaping scan.
    fn key(&mut self, key: &'static str) {
        self.sep();
        self.0.extend_from_slice(b"{\"key\":\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\",\"value\":{");
    }

    fn text(&mut self, key: &'static str, value: Option<&str>) {
        let Some(v) = value.filter(|v| !v.is_empty()) else {
            return;
        };
        self.key(key);
        self.0.extend_from_slice(b"\"stringValue\":");
        string(self.0, v);
        self.0.extend_from_slice(b"}}");
    }

    /// A value of our own vocabulary (an enum's name): no escaping scan either.
    fn word(&mut self, key: &'static str, value: Option<&'static str>) {
        let Some(v) = value else { return };
        self.key(key);
        self.0.extend_from_slice(b"\"stringValue\":\"");
        self.0.extend_from_slice(v.as_bytes());
        self.0.extend_from_slice(b"\"}}");
    }

    fn int(&mut self, key: &'static str, v: u64) {
        self.key(key);
        int_field(self.0, "intValue", v);
        self.0.extend_from_slice(b"}}");
    }
}

/// `"resource":{...},"scope":` up to the scope's own object.
fn resource(out: &mut Vec<u8>, service: &str, first: &AuditRecord) {
    out.extend_from_slice(b"{\"resource\":{\"attributes\":[");
    let mut a = Attrs(out, false);
    a.text("service.name", Some(service));
    a.text("service.version", Some(env!("CARGO_PKG_VERSION")));
    a.text("service.instance.id", Some(&first.boot_id));
    a.text("k8s.namespace.name", first.agent.namespace.as_deref());
    out.extend_from_slice(b"]}");
}

fn scope(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"scope\":{\"name\":\"intentgate\",\"version\":");
    string(out, env!("CARGO_PKG_VERSION"));
    out.push(b'}');
}

/// What a span or log record says of its call.
fn call_attributes(out: &mut Vec<u8>, rec: &AuditRecord) {
    out.extend_from_slice(b"\"attributes\":[");
    let mut a = Attrs(out, false);
    a.text("http.request.method", Some(&rec.method));
    a.word("url.scheme", rec.scheme.map(|s| s.as_str()));
    a.text("server.address", Some(&rec.host));
    a.int("server.port", u64::from(rec.port));
    a.text("url.path", Some(&rec.path));
    if rec.status != 0 {
        a.int("http.response.status_code", u64::from(rec.status));
    }
    a.text("intentgate.agent", Some(&rec.agent.id));
    a.text("intentgate.namespace", rec.agent.namespace.as_deref());
    a.text("intentgate.intent", rec.intent.name.as_deref());
    a.word("intentgate.decision", rec.decision.map(|d| d.as_str()));
    a.word(
        "intentgate.code",
        rec.code.or(rec.error).map(|c| c.as_str()),
    );
    a.text("intentgate.decision_id", Some(&rec.decision_id));
    a.text("intentgate.policy_revision", Some(&rec.policy_revision));
    a.word("intentgate.connection", rec.connection.map(|c| c.as_str()));
    out.push(b']');
}

/// What the span and the log record of one call share, encoded once: its attributes and ids.
pub(super) struct Prepared {
    attrs: Vec<u8>,
    /// Lowercase hex, on the stack.
    trace_id: [u8; 32],
    span_id: [u8; 16],
}

/// The shared parts of each call of a batch.
pub(super) fn prepare(batch: &[Box<AuditRecord>]) -> Vec<Prepared> {
    batch
        .iter()
        .map(|rec| {
            let mut attrs = Vec::with_capacity(768);
            call_attributes(&mut attrs, rec);
            let (mut trace_id, mut span_id) = ([b'0'; 32], [b'0'; 16]);
            if let Some(t) = &rec.trace {
                hex_to(&mut trace_id, &t.trace_id);
                hex_to(&mut span_id, &t.span_id);
            }
            Prepared {
                attrs,
                trace_id,
                span_id,
            }
        })
        .collect()
}

/// `"key":"hex"` (hex needs no escaping).
fn id_field(out: &mut Vec<u8>, key: &[u8], hex: &[u8]) {
    out.extend_from_slice(key);
    out.push(b'"');
    out.extend_from_slice(hex);
    out.push(b'"');
}

/// Whether the call failed or was refused (span status ERROR, log severity WARN).
pub(super) fn refused(rec: &AuditRecord) -> bool {
    matches!(rec.decision, Some(Verdict::Deny | Verdict::Error)) || rec.status >= 500
}

fn span(out: &mut Vec<u8>, rec: &AuditRecord, p: &Prepared) {
    let Some(t) = &rec.trace else { return };
    let start = rec.at.map_or(0, nanos);
    let took = Duration::from_secs_f64(rec.durations.total_ms.max(0.0) / 1000.0);
    id_field(out, b"{\"traceId\":", &p.trace_id);
    id_field(out, b",\"spanId\":", &p.span_id);
    if let Some(p) = &t.parent {
        out.extend_from_slice(b",\"parentSpanId\":");
        hex_string(out, p);
    }
    // "METHOD host", escaped as one string (no formatted copy).
    out.extend_from_slice(b",\"name\":\"");
    escaped(out, &rec.method);
    out.push(b' ');
    escaped(out, &rec.host);
    out.push(b'"');
    out.extend_from_slice(b",\"kind\":");
    uint(out, u64::from(KIND_SERVER));
    out.push(b',');
    int_field(out, "startTimeUnixNano", start);
    out.push(b',');
    int_field(
        out,
        "endTimeUnixNano",
        start.saturating_add(took.as_nanos() as u64),
    );
    out.push(b',');
    out.extend_from_slice(&p.attrs);
    // STATUS_CODE_ERROR (2) for a refused or failed call; unset otherwise.
    if refused(rec) {
        out.extend_from_slice(b",\"status\":{\"code\":2,\"message\":");
        string(out, rec.reasons.first().map_or("", String::as_str));
        out.push(b'}');
    }
    out.push(b'}');
}

fn log_record(out: &mut Vec<u8>, rec: &AuditRecord, p: &Prepared, line_buf: &mut Vec<u8>) {
    let at = rec.at.map_or(0, nanos);
    out.push(b'{');
    int_field(out, "timeUnixNano", at);
    out.push(b',');
    int_field(out, "observedTimeUnixNano", nanos(SystemTime::now()));
    // SEVERITY_NUMBER_INFO (9) / SEVERITY_NUMBER_WARN (13).
    let (n, text) = if refused(rec) {
        (13, "WARN")
    } else {
        (9, "INFO")
    };
    out.extend_from_slice(b",\"severityNumber\":");
    uint(out, n);
    out.extend_from_slice(b",\"severityText\":");
    string(out, text);
    line_buf.clear();
    line::write(rec, line_buf);
    out.extend_from_slice(b",\"body\":{\"stringValue\":");
    json_text(out, line_buf);
    out.extend_from_slice(b"},");
    out.extend_from_slice(&p.attrs);
    if rec.trace.is_some() {
        id_field(out, b",\"traceId\":", &p.trace_id);
        id_field(out, b",\"spanId\":", &p.span_id);
    }
    out.push(b'}');
}

/// `ExportTraceServiceRequest` of the batch.
pub(super) fn traces(batch: &[Box<AuditRecord>], prepared: &[Prepared], service: &str) -> Vec<u8> {
    let wrap = ("resourceSpans", "scopeSpans", "spans");
    request(wrap, 1024, batch, prepared, service, span)
}

/// `ExportLogsServiceRequest` of the batch.
pub(super) fn logs(batch: &[Box<AuditRecord>], prepared: &[Prepared], service: &str) -> Vec<u8> {
    let mut line_buf = Vec::with_capacity(1024);
    let wrap = ("resourceLogs", "scopeLogs", "logRecords");
    request(wrap, 2048, batch, prepared, service, |out, rec, p| {
        log_record(out, rec, p, &mut line_buf)
    })
}

/// One export request: the resource of the batch's first record, our scope, and `item` written
/// for each record, under the signal's three list names.
fn request(
    (resources, scopes, items): (&str, &str, &str),
    per_record: usize,
    batch: &[Box<AuditRecord>],
    prepared: &[Prepared],
    service: &str,
    mut item: impl FnMut(&mut Vec<u8>, &AuditRecord, &Prepared),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(per_record * batch.len());
    let _ = write!(out, "{{\"{resources}\":[");
    if let Some(first) = batch.first() {
        resource(&mut out, service, first);
        let _ = write!(out, ",\"{scopes}\":[{{");
        scope(&mut out);
        let _ = write!(out, ",\"{items}\":[");
        for (i, (rec, p)) in batch.iter().zip(prepared).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item(&mut out, rec, p);
        }
        out.extend_from_slice(b"]}]}");
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_audit_line_is_embedded_as_the_json_string_serde_would_write() {
        let mut lines = vec![br#"{"a":"quote \" back \\ nl \n","b":[1,2]}"#.to_vec()];
        // A quote or backslash at every place of a longer line (copied eight bytes at a time).
        for b in [b'"', b'\\'] {
            for at in 0..20 {
                let mut l = b"abcdefghijklmnopqrst".to_vec();
                l[at] = b;
                lines.push(l);
            }
        }
        for line in lines {
            let mut out = Vec::new();
            super::json_text(&mut out, &line);
            let want = serde_json::to_vec(std::str::from_utf8(&line).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
}
