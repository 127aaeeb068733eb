//! Collections for the planner's indexes: hash maps with a fast non-cryptographic hasher,
//! and ordered maps built in one go.
//!
//! The planner indexes up to millions of routes per plan (50,000 CIDRs × 20 tables) by
//! short keys (CIDRs, table and interface ids, IPs). The standard SipHash resists
//! hash flooding, which these keys cannot mount (they come from the operator's spec and
//! EC2), and costs several times more per key: this is the multiply-rotate hash of
//! `rustc-hash`, in a few lines rather than a dependency.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A map with room for `n` entries.
pub(crate) fn map_with_capacity<K, V>(n: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(n, BuildHasherDefault::default())
}

/// A map of `rows`, where a later row of a key wins (as it would by insertion), built at
/// once (sorted, then bulk-built) rather than by a search per row.
pub(crate) fn last_wins<K: Ord, V>(mut rows: Vec<(K, V)>) -> BTreeMap<K, V> {
    // Stable: of equal keys the later row stays later, and is kept.
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    rows.into_iter().collect()
}

/// `rustc-hash`'s hasher: one multiply per word, a rotation at the end so that the
/// high bits (which the hash table's control bytes use) depend on every input bit.
#[derive(Clone, Copy, Default)]
pub(crate) struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(value: T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(value)
    }

    #[test]
    fn equal_keys_hash_equal_and_close_keys_apart() {
        assert_eq!(hash("rtb-0001"), hash(String::from("rtb-0001")));
        assert_ne!(hash("rtb-0001"), hash("rtb-0002"));
        assert_ne!(hash("a"), hash("a\0"));
        assert_ne!(hash(("a", "b")), hash(("ab", "")));
        let ips: std::collections::HashSet<u64> =
            (0..10_000u32).map(|i| hash(std::net::Ipv4Addr::from(0x0a01_0000 + i))).collect();
        assert_eq!(ips.len(), 10_000);
    }
}
