//! Decision ids: unique per process run (a random boot id) and cheap (an atomic counter).

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use http::HeaderValue;

static BOOT: OnceLock<u64> = OnceLock::new();
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The random id of this process run, as 16 hex digits.
pub fn boot_id() -> u64 {
    *BOOT.get_or_init(|| {
        let mut b = [0u8; 8];
        // A failure here only makes ids less unique across restarts: fall back to the clock.
        if getrandom::fill(&mut b).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            b = (nanos ^ u64::from(std::process::id())).to_le_bytes();
        }
        u64::from_le_bytes(b)
    })
}

/// A new decision id: 24 lowercase hex digits, the boot id's low 32 bits then a sequence number.
pub fn decision_id() -> String {
    let mut id = String::with_capacity(24);
    decision_id_into(&mut id);
    id
}

/// `decision_id` written into `id` (its allocation reused: a reused audit record's).
pub fn decision_id_into(id: &mut String) {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // Written into an array eight digits at a time, then copied once: this runs on every
    // request, and `format!` costs ~10x more.
    let mut digits = [0u8; 24];
    digits[..8].copy_from_slice(&hex8(boot_id() as u32));
    digits[8..16].copy_from_slice(&hex8((seq >> 32) as u32));
    digits[16..].copy_from_slice(&hex8(seq as u32));
    id.clear();
    id.push_str(std::str::from_utf8(&digits).unwrap_or_default());
}

/// `v` as 8 lowercase hex digits, most significant first, made in one 64-bit word: each
/// nibble spread into a byte of its own, then each byte turned into its digit.
fn hex8(v: u32) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // A byte of 10 or more carries into its bit 4 when 6 is added: those get 'a' - '9' - 1 more.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + u64::from(b'0') * ONES + letters * u64::from(b'a' - b'9' - 1)).to_be_bytes()
}

/// Bytes a thread's slab holds: room for 64 ids before it is reclaimed (or, while some of
/// them are still in use, replaced).
const SLAB: usize = 64 * 24;

thread_local! {
    /// Where this thread writes decision ids as header values: each value a counted slice of
    /// one shared allocation, so making one costs no allocation and cloning it none either.
    static IDS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `id` as a header value, made once for a request: the upstream's tag and the response's
/// header share it (a clone is a reference count).
pub(crate) fn header(id: &str) -> Option<HeaderValue> {
    IDS.with(|slab| {
        let mut slab = slab.try_borrow_mut().ok()?;
        if slab.capacity() < id.len() {
            // Reclaimed in place when every value cut from it is gone, else a new one.
            slab.reserve(SLAB.max(id.len()));
        }
        slab.extend_from_slice(id.as_bytes());
        HeaderValue::from_maybe_shared(slab.split().freeze()).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_boot_id_then_a_sequence_number_in_hex() {
        let a = decision_id();
        let b = decision_id();
        assert_eq!(a.len(), 24);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(&a[..8], format!("{:08x}", boot_id() as u32));
        assert_eq!(&a[..8], &b[..8]);
        let seq = |id: &str| u64::from_str_radix(&id[8..], 16).unwrap();
        assert!(seq(&b) > seq(&a), "{a} then {b}");
        assert_eq!(format!("{:016x}", seq(&a)), a[8..]);
        let mut c = String::from("an old id, longer than 24 digits");
        decision_id_into(&mut c);
        assert_eq!((c.len(), &c[..8]), (24, &a[..8]));
        assert!(seq(&c) > seq(&b), "{b} then {c}");
    }

    #[test]
    fn hex8_is_format_s_lower_hex() {
        let mut v = 0x9e37_79b9u32;
        let edges = [
            0,
            1,
            9,
            10,
            15,
            16,
            0x0a0a_0a0a,
            0x9999_9999,
            0xffff_ffff,
            0x1234_abcd,
        ];
        // Every digit at every place, and pseudo-random words.
        let places = (0..16u32).flat_map(|n| (0..8).map(move |p| n << (4 * p)));
        for x in (edges.into_iter().chain(places)).chain((0..10_000).map(|_| {
            v = v.wrapping_mul(0x0019_660d).wrapping_add(0x3c6e_f35f);
            v
        })) {
            assert_eq!(hex8(x), *format!("{x:08x}").as_bytes(), "{x:#x}");
        }
    }

    #[test]
    fn header_values_are_the_ids_across_slab_refills() {
        // More than a slab's worth, some kept (the slab is replaced), some dropped (reclaimed).
        let mut kept = Vec::new();
        for i in 0..SLAB / 24 * 3 + 7 {
            let id = decision_id();
            let v = header(&id).unwrap();
            assert_eq!(v.as_bytes(), id.as_bytes());
            assert_eq!(v.clone(), v);
            if i % 5 == 0 {
                kept.push((id, v));
            }
        }
        for (id, v) in &kept {
            assert_eq!(v.to_str().unwrap(), id);
        }
        // Not only decision ids: any visible ASCII, any length; a control byte is refused.
        let long = "x".repeat(SLAB + 3);
        assert_eq!(header(&long).unwrap().as_bytes(), long.as_bytes());
        assert_eq!(header("").unwrap().as_bytes(), b"");
        assert!(header("a\nb").is_none());
        assert_eq!(header("after").unwrap().as_bytes(), b"after");
    }
}
