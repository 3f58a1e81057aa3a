//! Decision ids: unique per process run (a random boot id) and cheap (an atomic counter).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
    // Written by hand into an array, then copied once: this runs on every request, and
    // `format!` costs ~10x more.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 24];
    let boot = u64::from(boot_id() as u32);
    for (i, d) in digits.iter_mut().enumerate() {
        let (v, at) = if i < 8 { (boot, 7 - i) } else { (seq, 23 - i) };
        *d = HEX[((v >> (4 * at)) & 0xf) as usize];
    }
    id.clear();
    id.push_str(std::str::from_utf8(&digits).unwrap_or_default());
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
}
