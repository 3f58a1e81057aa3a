//! OTLP/HTTP protobuf bodies (OTLP's default encoding), encoded by hand straight into the
//! exporter's reused buffer: an `ExportTraceServiceRequest` with one span per call and an
//! `ExportLogsServiceRequest` with one log record per call (its audit line as body). Field
//! numbers are those of opentelemetry-proto's trace, logs, common and resource `v1` messages;
//! strings and ids are copied as they are (nothing to escape), lengths are minimal varints.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use super::super::line;
use super::AuditRecord;
use super::json::{nanos, refused};

/// Wire types.
const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;

/// `SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`, `SEVERITY_NUMBER_INFO` / `_WARN`.
const KIND_SERVER: u64 = 2;
const STATUS_ERROR: u64 = 2;
const SEVERITY_INFO: u64 = 9;
const SEVERITY_WARN: u64 = 13;

/// Byte by byte: a copy of a short, variable-length slice would be a `memcpy` call.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `n` as a varint, on the stack: its bytes and how many there are.
fn varint_bytes(mut n: u64) -> ([u8; 10], usize) {
    let mut b = [0u8; 10];
    let mut i = 0;
    while n >= 0x80 {
        b[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    b[i] = n as u8;
    (b, i + 1)
}

fn varint_len(n: u64) -> usize {
    (u64::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

/// A field's tag (all our field numbers are below 16: one byte).
fn tag(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push(field << 3 | wire);
}

fn bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn fixed64(out: &mut Vec<u8>, field: u8, n: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&n.to_le_bytes());
}

fn uint(out: &mut Vec<u8>, field: u8, n: u64) {
    tag(out, field, VARINT);
    varint(out, n);
}

/// A nested message written by `body`, its length in front: `width` bytes are kept for the
/// length (what the message is expected to need), and only when its length needs another
/// width is the body moved to fit.
fn message(out: &mut Vec<u8>, field: u8, width: usize, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.resize(at + width, 0);
    body(out);
    let end = out.len();
    let (head, n) = varint_bytes((end - at - width) as u64);
    if n > width {
        out.resize(end + n - width, 0);
        out.copy_within(at + width..end, at + n);
    } else if n < width {
        out.copy_within(at + width..end, at + n);
        out.truncate(end + n - width);
    }
    out[at..at + n].copy_from_slice(&head[..n]);
}

/// A `KeyValue`'s key as it is written: the key field's tag, its length and its bytes, built at
/// compile time (`key!`), so a call measures and copies only its values.
const fn key_field<const N: usize>(key: &str) -> [u8; N] {
    let k = key.as_bytes();
    // Short enough for `int`'s lengths to fit one varint byte.
    assert!(k.len() + 2 == N && k.len() < 0x60);
    let mut out = [0u8; N];
    out[0] = 1 << 3 | LEN;
    out[1] = k.len() as u8;
    let mut i = 0;
    while i < k.len() {
        out[i + 2] = k[i];
        i += 1;
    }
    out
}

macro_rules! key {
    ($k:literal) => {{
        const K: [u8; $k.len() + 2] = key_field($k);
        &K
    }};
}

/// One `KeyValue` in field `field` of its message, with a string value (none when empty): its
/// lengths are known, so it is written in one pass; when they all fit one varint byte (a value
/// under ~90 bytes), as four copies (inlined where `key` is a constant).
#[inline(always)]
fn text(out: &mut Vec<u8>, field: u8, key: &[u8], value: Option<&str>) {
    let Some(v) = value.filter(|v| !v.is_empty()).map(str::as_bytes) else {
        return;
    };
    // AnyValue.string_value
    let any = 2 + v.len();
    let kv = key.len() + 2 + any;
    if kv < 0x80 {
        out.reserve(2 + kv);
        out.extend_from_slice(&[field << 3 | LEN, kv as u8]);
        out.extend_from_slice(key);
        out.extend_from_slice(&[2 << 3 | LEN, any as u8, 1 << 3 | LEN, v.len() as u8]);
        out.extend_from_slice(v);
    } else {
        long_text(out, field, key, v);
    }
}

/// `text` for a value whose lengths need more than one varint byte.
#[inline(never)]
fn long_text(out: &mut Vec<u8>, field: u8, key: &[u8], v: &[u8]) {
    let any = 1 + varint_len(v.len() as u64) + v.len();
    let kv = key.len() + 1 + varint_len(any as u64) + any;
    out.reserve(1 + varint_len(kv as u64) + kv);
    tag(out, field, LEN);
    varint(out, kv as u64);
    out.extend_from_slice(key);
    tag(out, 2, LEN);
    varint(out, any as u64);
    bytes(out, 1, v);
}

/// One `KeyValue` with an integer value (`AnyValue.int_value`): its key is short, so its
/// lengths fit one varint byte.
#[inline(always)]
fn int(out: &mut Vec<u8>, field: u8, key: &[u8], v: u64) {
    let any = 1 + varint_len(v);
    let kv = key.len() + 2 + any;
    out.reserve(2 + kv);
    out.extend_from_slice(&[field << 3 | LEN, kv as u8]);
    out.extend_from_slice(key);
    out.extend_from_slice(&[2 << 3 | LEN, any as u8, 3 << 3 | VARINT]);
    varint(out, v);
}

/// `Resource` (field 1 of `ResourceSpans` and `ResourceLogs`) and the `InstrumentationScope`
/// (field 1 of `ScopeSpans` and `ScopeLogs`) are written by the callers around these.
fn resource(out: &mut Vec<u8>, service: &str, first: &AuditRecord) {
    message(out, 1, 2, |out| {
        text(out, 1, key!("service.name"), Some(service));
        text(
            out,
            1,
            key!("service.version"),
            Some(env!("CARGO_PKG_VERSION")),
        );
        text(out, 1, key!("service.instance.id"), Some(&first.boot_id));
        text(
            out,
            1,
            key!("k8s.namespace.name"),
            first.agent.namespace.as_deref(),
        );
    });
}

fn scope(out: &mut Vec<u8>) {
    message(out, 1, 1, |out| {
        bytes(out, 1, b"intentgate");
        bytes(out, 2, env!("CARGO_PKG_VERSION").as_bytes());
    });
}

/// What a span (field 9) or log record (field 6) says of its call.
fn call_attributes(out: &mut Vec<u8>, field: u8, rec: &AuditRecord) {
    text(out, field, key!("http.request.method"), Some(&rec.method));
    text(
        out,
        field,
        key!("url.scheme"),
        rec.scheme.map(|s| s.as_str()),
    );
    text(out, field, key!("server.address"), Some(&rec.host));
    int(out, field, key!("server.port"), u64::from(rec.port));
    text(out, field, key!("url.path"), Some(&rec.path));
    if rec.status != 0 {
        int(
            out,
            field,
            key!("http.response.status_code"),
            u64::from(rec.status),
        );
    }
    text(out, field, key!("intentgate.agent"), Some(&rec.agent.id));
    text(
        out,
        field,
        key!("intentgate.namespace"),
        rec.agent.namespace.as_deref(),
    );
    text(
        out,
        field,
        key!("intentgate.intent"),
        rec.intent.name.as_deref(),
    );
    text(
        out,
        field,
        key!("intentgate.decision"),
        rec.decision.map(|d| d.as_str()),
    );
    let code = rec.code.or(rec.error).map(|c| c.as_str());
    text(out, field, key!("intentgate.code"), code);
    text(
        out,
        field,
        key!("intentgate.decision_id"),
        Some(&rec.decision_id),
    );
    text(
        out,
        field,
        key!("intentgate.policy_revision"),
        Some(&rec.policy_revision),
    );
    let connection = rec.connection.map(|c| c.as_str());
    text(out, field, key!("intentgate.connection"), connection);
}

/// One `Span` (field 2 of `ScopeSpans`); where its attributes are in `out` goes into `attrs`.
fn span(out: &mut Vec<u8>, rec: &AuditRecord, attrs: &mut Vec<Range<usize>>) {
    let Some(t) = &rec.trace else {
        attrs.push(0..0);
        return;
    };
    let start = rec.at.map_or(0, nanos);
    let took = Duration::from_secs_f64(rec.durations.total_ms.max(0.0) / 1000.0);
    message(out, 2, 2, |out| {
        bytes(out, 1, &t.trace_id);
        bytes(out, 2, &t.span_id);
        if let Some(p) = &t.parent {
            bytes(out, 4, p);
        }
        // "METHOD host"
        tag(out, 5, LEN);
        varint(out, (rec.method.len() + 1 + rec.host.len()) as u64);
        out.extend_from_slice(rec.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(rec.host.as_bytes());
        uint(out, 6, KIND_SERVER);
        fixed64(out, 7, start);
        fixed64(out, 8, start.saturating_add(took.as_nanos() as u64));
        let at = out.len();
        call_attributes(out, 9, rec);
        attrs.push(at..out.len());
        if refused(rec) {
            message(out, 15, 1, |out| {
                let reason = rec.reasons.first().map_or("", String::as_str);
                if !reason.is_empty() {
                    bytes(out, 2, reason.as_bytes());
                }
                uint(out, 3, STATUS_ERROR);
            });
        }
    });
}

/// The span's attributes (`KeyValue`s in field 9), copied as the log record's (field 6).
fn retagged(out: &mut Vec<u8>, span_attrs: &[u8]) {
    let mut i = out.len();
    out.extend_from_slice(span_attrs);
    while i < out.len() {
        out[i] = 6 << 3 | LEN;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            i += 1;
            let Some(&b) = out.get(i) else { return };
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        i += 1 + len;
    }
}

/// One `LogRecord` (field 2 of `ScopeLogs`): the audit line as its body (`line`, the one the
/// writer rendered, or written here where it stays), and the attributes of its span
/// (`span_attrs`), or its own.
fn log_record(
    out: &mut Vec<u8>,
    (rec, line): (&AuditRecord, Option<&[u8]>),
    now: u64,
    span_attrs: Option<&[u8]>,
) {
    message(out, 2, 2, |out| {
        fixed64(out, 1, rec.at.map_or(0, nanos));
        let (n, text) = if refused(rec) {
            (SEVERITY_WARN, "WARN")
        } else {
            (SEVERITY_INFO, "INFO")
        };
        uint(out, 2, n);
        bytes(out, 3, text.as_bytes());
        // AnyValue.string_value
        message(out, 5, 2, |out| {
            message(out, 1, 2, |out| match line {
                Some(l) => out.extend_from_slice(l),
                None => line::write(rec, out),
            })
        });
        match span_attrs {
            Some(a) => retagged(out, a),
            None => call_attributes(out, 6, rec),
        }
        if let Some(t) = &rec.trace {
            bytes(out, 9, &t.trace_id);
            bytes(out, 10, &t.span_id);
        }
        fixed64(out, 11, now);
    });
}

/// Room kept in front of a batch's items for the request's two outer headers (a tag and a
/// varint each).
const OUTER: usize = 2 * 11;

/// `ExportTraceServiceRequest` (or `ExportLogsServiceRequest`): one `ResourceSpans` (`…Logs`)
/// holding the resource and one `ScopeSpans` (`…Logs`) of the items `items` writes. The items
/// are written once, where they stay: the two headers in front of them are only known after,
/// so room is kept for them and the (short) resource moved up to meet them. Returns where in
/// `out` the request starts.
fn envelope(
    out: &mut Vec<u8>,
    service: &str,
    first: &AuditRecord,
    items: impl FnOnce(&mut Vec<u8>),
) -> usize {
    out.clear();
    out.resize(OUTER / 2, 0);
    resource(out, service, first);
    let res = (OUTER / 2, out.len());
    out.resize(res.1 + OUTER / 2, 0);
    let start = out.len();
    scope(out);
    items(out);
    // ScopeSpans (field 2 of ResourceSpans), right before its content.
    let (len, n) = varint_bytes((out.len() - start) as u64);
    let mut at = start - n;
    out[at..start].copy_from_slice(&len[..n]);
    at -= 1;
    out[at] = 2 << 3 | LEN;
    // The resource, moved up to it.
    out.copy_within(res.0..res.1, at - (res.1 - res.0));
    at -= res.1 - res.0;
    // ResourceSpans (field 1 of the request).
    let (len, n) = varint_bytes((out.len() - at) as u64);
    out[at - n..at].copy_from_slice(&len[..n]);
    at -= n + 1;
    out[at] = 1 << 3 | LEN;
    at
}

/// `ExportTraceServiceRequest` of the batch, into `out`; returns where it starts in `out`.
/// Where each span's attributes are goes into `attrs` (cleared first), for `logs`.
pub(super) fn traces(
    out: &mut Vec<u8>,
    batch: &[Box<AuditRecord>],
    service: &str,
    attrs: &mut Vec<Range<usize>>,
) -> usize {
    out.clear();
    attrs.clear();
    let Some(first) = batch.first() else { return 0 };
    envelope(out, service, first, |out| {
        for rec in batch {
            span(out, rec, attrs);
        }
    })
}

/// `ExportLogsServiceRequest` of the batch, into `out`; returns where it starts in `out`.
/// Each call's attributes are copied from its span in `spans` (`traces`' `out` and `attrs`);
/// its body is its range of `lines` when not empty (the line the writer rendered).
pub(super) fn logs(
    out: &mut Vec<u8>,
    batch: &[Box<AuditRecord>],
    service: &str,
    (spans, attrs): (&[u8], &[Range<usize>]),
    (lines, at): (&[u8], &[Range<usize>]),
) -> usize {
    out.clear();
    let Some(first) = batch.first() else { return 0 };
    let now = nanos(SystemTime::now());
    envelope(out, service, first, |out| {
        for (i, rec) in batch.iter().enumerate() {
            let span_attrs = attrs
                .get(i)
                .filter(|r| !r.is_empty())
                .map(|r| &spans[r.clone()]);
            let line = at
                .get(i)
                .filter(|r| !r.is_empty())
                .map(|r| &lines[r.clone()]);
            log_record(out, (rec, line), now, span_attrs);
        }
    })
}

#[cfg(test)]
mod tests;
