//! The hash of the catalog's intent names: FxHash (rustc's), not the standard map's SipHash.
//! Every request looks its intent up ~7 times (the decision, its settling, the credential
//! binding, the token and attestation checks, the budget), and SipHash-1-3 cost ~160
//! instructions a lookup for a name like `bench`, ~1.1k a request. The keys are the catalog's
//! own names, set by the configuration; a request only looks a name up, so it cannot fill a
//! bucket with colliding names (the flooding SipHash's random key defends against).

use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by intent name.
pub(super) type NameMap<V> = std::collections::HashMap<String, V, BuildHasherDefault<FxHasher>>;

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// rustc-hash 1's hasher: per word, rotate, xor, multiply.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some((word, rest)) = bytes.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*word));
            bytes = rest;
        }
        if let Some((word, rest)) = bytes.split_first_chunk::<4>() {
            self.add(u64::from(u32::from_le_bytes(*word)));
            bytes = rest;
        }
        if let Some((word, rest)) = bytes.split_first_chunk::<2>() {
            self.add(u64::from(u16::from_le_bytes(*word)));
            bytes = rest;
        }
        if let Some(&b) = bytes.first() {
            self.add(u64::from(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_every_length_hash_apart_and_are_found() {
        let names: Vec<String> = (0..2000)
            .map(|i| format!("svc-{i:04}"))
            .chain(
                [
                    "",
                    "a",
                    "ab",
                    "abc",
                    "bench",
                    "bench2",
                    "a-much-longer-intent-name",
                ]
                .map(String::from),
            )
            .collect();
        let mut m: NameMap<usize> = NameMap::default();
        for (i, n) in names.iter().enumerate() {
            m.insert(n.clone(), i);
        }
        assert_eq!(m.len(), names.len());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.get(n.as_str()), Some(&i));
        }
        assert!(!m.contains_key("svc-2000") && !m.contains_key("benc"));
        let hash = |s: &str| {
            let mut h = FxHasher::default();
            std::hash::Hash::hash(s, &mut h);
            h.finish()
        };
        let mut hashes: Vec<u64> = names.iter().map(|n| hash(n)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(
            hashes.len(),
            names.len(),
            "no two of these names share a hash"
        );
    }
}
