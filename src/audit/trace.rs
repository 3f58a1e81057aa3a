//! W3C trace context for a call, when OpenTelemetry export is on: the trace the agent's own
//! `traceparent` names (or a new one), the call's span in it, and the agent's span as its parent.
//! The forwarded request carries our span as the upstream's parent, so the call sits in the
//! agent's trace. Ids come from a per-process random seed and a counter (no syscall per call).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One call's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The agent's span, from its `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// W3C trace flags (01: sampled), kept from the agent's header.
    pub flags: u8,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh 64-bit id: the boot id's seed mixed with a counter (splitmix64), never 0.
fn fresh() -> u64 {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut z =
        crate::ids::boot_id().wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

impl Trace {
    /// The call's trace: continues a valid `traceparent` (version 00), else starts a new trace.
    pub fn continue_from(traceparent: Option<&[u8]>) -> Self {
        let span_id = fresh().to_be_bytes();
        if let Some((trace_id, parent, flags)) = traceparent.and_then(parse) {
            return Trace {
                trace_id,
                span_id,
                parent: Some(parent),
                flags,
            };
        }
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&fresh().to_be_bytes());
        trace_id[8..].copy_from_slice(&fresh().to_be_bytes());
        Trace {
            trace_id,
            span_id,
            parent: None,
            flags: 1,
        }
    }

    /// `traceparent` for the upstream: our span as its parent (on the stack: the caller makes
    /// the header value from it).
    pub fn header(&self) -> [u8; 55] {
        let mut h = [b'-'; 55];
        h[..2].copy_from_slice(b"00");
        hex_to(&mut h[3..35], &self.trace_id);
        hex_to(&mut h[36..52], &self.span_id);
        hex_to(&mut h[53..], &[self.flags]);
        h
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero (W3C Trace Context, version 00).
fn parse(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace)?;
    let span_id: [u8; 8] = unhex(span)?;
    let [flags] = unhex::<1>(flags)?;
    (trace_id != [0; 16] && span_id != [0; 8]).then_some((trace_id, span_id, flags))
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub(super) fn hex_to(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (o, b) in out.chunks_exact_mut(2).zip(bytes) {
        o[0] = HEX[usize::from(b >> 4)];
        o[1] = HEX[usize::from(b & 0xf)];
    }
}

/// `bytes` as a JSON string of lowercase hex (no escaping needed), appended to `out`.
pub(super) fn hex_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let at = out.len() + 1;
    out.resize(at + 2 * bytes.len() + 1, b'"');
    out[at - 1] = b'"';
    hex_to(&mut out[at..at + 2 * bytes.len()], bytes);
}

pub(super) fn hex(bytes: &[u8]) -> String {
    let mut s = vec![0; 2 * bytes.len()];
    hex_to(&mut s, bytes);
    String::from_utf8(s).unwrap_or_default()
}

/// As records carry it: `{"trace_id": hex, "span_id": hex, "parent_span_id": hex | null}`.
#[derive(Serialize, Deserialize)]
struct Written {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
}

impl Serialize for Trace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Written {
            trace_id: hex(&self.trace_id),
            span_id: hex(&self.span_id),
            parent_span_id: self.parent.as_ref().map(|p| hex(p)),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Trace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Written::deserialize(d)?;
        let bad = || serde::de::Error::custom("trace ids must be lowercase hex");
        Ok(Trace {
            trace_id: unhex(&w.trace_id).ok_or_else(bad)?,
            span_id: unhex(&w.span_id).ok_or_else(bad)?,
            parent: w
                .parent_span_id
                .map(|p| unhex(&p).ok_or_else(bad))
                .transpose()?,
            flags: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_anything_else_starts_a_new_trace() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = Trace::continue_from(Some(tp));
        assert_eq!(hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(hex(&t.span_id), "00f067aa0ba902b7");
        let h = String::from_utf8(t.header().to_vec()).unwrap();
        assert!(
            h.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && h.ends_with("-01"),
            "{h}"
        );
        assert_eq!(h.len(), 55);
        for bad in [
            &b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"garbage",
        ] {
            let n = Trace::continue_from(Some(bad));
            assert_eq!(n.parent, None, "{}", String::from_utf8_lossy(bad));
            assert_ne!(n.trace_id, t.trace_id);
        }
        let (a, b) = (Trace::continue_from(None), Trace::continue_from(None));
        assert_ne!((a.trace_id, a.span_id), (b.trace_id, b.span_id));
    }
}
