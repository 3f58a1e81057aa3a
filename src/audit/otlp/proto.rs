//! OTLP/HTTP protobuf bodies (OTLP's default encoding), encoded by hand straight into the
//! exporter's reused buffer: an `ExportTraceServiceRequest` with one span per call and an
//! `ExportLogsServiceRequest` with one log record per call (its audit line as body). Field
//! numbers are those of opentelemetry-proto's trace, logs, common and resource `v1` messages;
//! strings and ids are copied as they are (nothing to escape), lengths are minimal varints.

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

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
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

/// A nested message written by `body`: its length is known once written, so a one-byte length
/// is reserved and, for a message of 128 bytes or more, the body is moved up to make room for
/// the longer varint (a short move of bytes just written).
fn message(out: &mut Vec<u8>, field: u8, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let mut head = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        head[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    head[n] = v as u8;
    n += 1;
    let end = out.len();
    out.resize(end + n - 1, 0);
    out.copy_within(at + 1..end, at + n);
    out[at..at + n].copy_from_slice(&head[..n]);
}

/// One `KeyValue` in field `field` of its message, with a string value (none when empty).
fn text(out: &mut Vec<u8>, field: u8, key: &str, value: Option<&str>) {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return;
    };
    message(out, field, |out| {
        bytes(out, 1, key.as_bytes());
        // AnyValue.string_value
        message(out, 2, |out| bytes(out, 1, v.as_bytes()));
    });
}

/// One `KeyValue` with an integer value (`AnyValue.int_value`).
fn int(out: &mut Vec<u8>, field: u8, key: &str, v: u64) {
    message(out, field, |out| {
        bytes(out, 1, key.as_bytes());
        message(out, 2, |out| uint(out, 3, v));
    });
}

/// `Resource` (field 1 of `ResourceSpans` and `ResourceLogs`) and the `InstrumentationScope`
/// (field 1 of `ScopeSpans` and `ScopeLogs`) are written by the callers around these.
fn resource(out: &mut Vec<u8>, service: &str, first: &AuditRecord) {
    message(out, 1, |out| {
        text(out, 1, "service.name", Some(service));
        text(out, 1, "service.version", Some(env!("CARGO_PKG_VERSION")));
        text(out, 1, "service.instance.id", Some(&first.boot_id));
        text(
            out,
            1,
            "k8s.namespace.name",
            first.agent.namespace.as_deref(),
        );
    });
}

fn scope(out: &mut Vec<u8>) {
    message(out, 1, |out| {
        bytes(out, 1, b"intentgate");
        bytes(out, 2, env!("CARGO_PKG_VERSION").as_bytes());
    });
}

/// What a span (field 9) or log record (field 6) says of its call.
fn call_attributes(out: &mut Vec<u8>, field: u8, rec: &AuditRecord) {
    text(out, field, "http.request.method", Some(&rec.method));
    text(out, field, "url.scheme", rec.scheme.map(|s| s.as_str()));
    text(out, field, "server.address", Some(&rec.host));
    int(out, field, "server.port", u64::from(rec.port));
    text(out, field, "url.path", Some(&rec.path));
    if rec.status != 0 {
        int(
            out,
            field,
            "http.response.status_code",
            u64::from(rec.status),
        );
    }
    text(out, field, "intentgate.agent", Some(&rec.agent.id));
    text(
        out,
        field,
        "intentgate.namespace",
        rec.agent.namespace.as_deref(),
    );
    text(out, field, "intentgate.intent", rec.intent.name.as_deref());
    text(
        out,
        field,
        "intentgate.decision",
        rec.decision.map(|d| d.as_str()),
    );
    let code = rec.code.or(rec.error).map(|c| c.as_str());
    text(out, field, "intentgate.code", code);
    text(out, field, "intentgate.decision_id", Some(&rec.decision_id));
    text(
        out,
        field,
        "intentgate.policy_revision",
        Some(&rec.policy_revision),
    );
    let connection = rec.connection.map(|c| c.as_str());
    text(out, field, "intentgate.connection", connection);
}

/// One `Span` (field 2 of `ScopeSpans`).
fn span(out: &mut Vec<u8>, rec: &AuditRecord) {
    let Some(t) = &rec.trace else { return };
    let start = rec.at.map_or(0, nanos);
    let took = Duration::from_secs_f64(rec.durations.total_ms.max(0.0) / 1000.0);
    message(out, 2, |out| {
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
        call_attributes(out, 9, rec);
        if refused(rec) {
            message(out, 15, |out| {
                let reason = rec.reasons.first().map_or("", String::as_str);
                if !reason.is_empty() {
                    bytes(out, 2, reason.as_bytes());
                }
                uint(out, 3, STATUS_ERROR);
            });
        }
    });
}

/// One `LogRecord` (field 2 of `ScopeLogs`): the audit line, written into `line_buf` first
/// (its length leads it).
fn log_record(out: &mut Vec<u8>, rec: &AuditRecord, now: u64, line_buf: &mut Vec<u8>) {
    line_buf.clear();
    line::write(rec, line_buf);
    message(out, 2, |out| {
        fixed64(out, 1, rec.at.map_or(0, nanos));
        let (n, text) = if refused(rec) {
            (SEVERITY_WARN, "WARN")
        } else {
            (SEVERITY_INFO, "INFO")
        };
        uint(out, 2, n);
        bytes(out, 3, text.as_bytes());
        // AnyValue.string_value
        tag(out, 5, LEN);
        varint(
            out,
            (1 + varint_len(line_buf.len()) + line_buf.len()) as u64,
        );
        bytes(out, 1, line_buf);
        call_attributes(out, 6, rec);
        if let Some(t) = &rec.trace {
            bytes(out, 9, &t.trace_id);
            bytes(out, 10, &t.span_id);
        }
        fixed64(out, 11, now);
    });
}

fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

/// `ExportTraceServiceRequest` of the batch, into `out` (cleared first).
pub(super) fn traces(out: &mut Vec<u8>, batch: &[Box<AuditRecord>], service: &str) {
    out.clear();
    let Some(first) = batch.first() else { return };
    message(out, 1, |out| {
        resource(out, service, first);
        message(out, 2, |out| {
            scope(out);
            for rec in batch {
                span(out, rec);
            }
        });
    });
}

/// `ExportLogsServiceRequest` of the batch, into `out` (cleared first).
pub(super) fn logs(
    out: &mut Vec<u8>,
    batch: &[Box<AuditRecord>],
    service: &str,
    line_buf: &mut Vec<u8>,
) {
    out.clear();
    let Some(first) = batch.first() else { return };
    let now = nanos(SystemTime::now());
    message(out, 1, |out| {
        resource(out, service, first);
        message(out, 2, |out| {
            scope(out);
            for rec in batch {
                log_record(out, rec, now, line_buf);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_nested_message_carries_its_minimal_length() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut out = vec![9];
            super::message(&mut out, 2, |out| out.resize(out.len() + len, 7));
            let mut want = vec![9, 2 << 3 | 2];
            super::varint(&mut want, len as u64);
            assert_eq!(want.len() - 2, super::varint_len(len), "{len}");
            want.resize(want.len() + len, 7);
            assert_eq!(out, want, "{len}");
        }
    }
}
