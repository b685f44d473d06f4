//! A non-keyed hash for per-request lookups whose stored keys come from the route table or the
//! profile (frontend and backend ids, server addresses, route paths and hosts), never from
//! clients. A client's bytes may be looked up, but cannot add keys, so SipHash's resistance to
//! collision flooding buys nothing there while costing a visible share of a small request.
//! Maps that store client-chosen keys (throttle keys) keep std's keyed hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`], for keys no client chooses.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// FxHash's word-at-a-time mixing (a rotate, an xor and a multiply per eight bytes) with a
/// splitmix64 finish. The finish matters: a multiply only carries low bits upwards, so without
/// it keys that differ only in later bytes (`/r00001/`, `/r00002/`...) share their low bits,
/// which is exactly what a hash table uses to pick a bucket.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash + ?Sized>(v: &T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(v)
    }

    #[test]
    fn distinct_keys_hash_apart_and_maps_find_them() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("/r{i:05}/")).collect();
        let hashes: std::collections::HashSet<u64> =
            keys.iter().map(|k| hash(k.as_bytes())).collect();
        assert_eq!(hashes.len(), keys.len());
        assert_ne!(hash(b"a".as_slice()), hash(b"a\0".as_slice()));
        let map: FastMap<&[u8], usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_bytes(), i))
            .collect();
        assert_eq!(map.get(b"/r04242/".as_slice()), Some(&4242));
        assert_eq!(map.get(b"/r4242/".as_slice()), None);
    }

    #[test]
    fn keys_differing_only_in_later_bytes_spread_over_the_low_bits() {
        // A hash table picks buckets by the low bits: 10,000 route prefixes must not crowd
        // into a few of 16,384 buckets.
        let buckets: std::collections::HashSet<u64> = (0..10_000)
            .map(|i| hash(format!("/r{i:05}/").as_bytes()) & 0x3fff)
            .collect();
        assert!(buckets.len() > 6_000, "{} distinct buckets", buckets.len());
        let ports: std::collections::HashSet<u64> = (0..1_000u16)
            .map(|p| hash(&std::net::SocketAddr::from(([127, 0, 0, 1], 20_000 + p))) & 0x3ff)
            .collect();
        assert!(ports.len() > 500, "{} distinct buckets", ports.len());
    }
}
