//! Deterministic discovery / held-out splits, by a stable hash of each item's id.
//!
//! An item goes to the discovery set when `u(seed, id) < ratio`, where `u` maps
//! [`stable_hash`] to `[0, 1)`. So an item's side depends only on its id, the seed and the ratio:
//! adding items to a file never moves old ones across the split, and raising the ratio only moves
//! items from held-out to discovery. The price: small categories follow the ratio only roughly.

use std::collections::HashSet;

use crate::error::DatasetError;
use crate::model::PersonaDataset;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A 64-bit hash of `key` under `seed` that will never change: FNV-1a over the seed's 8
/// little-endian bytes then the key's UTF-8 bytes, finished by the SplitMix64 mixer (FNV-1a alone
/// mixes its high bits poorly for keys that differ only at the end, like `exp_001` / `exp_002`).
///
/// Unlike `std`'s `DefaultHasher`, whose output may change between Rust releases, this function is
/// frozen: splits made today are the splits made next year.
pub fn stable_hash(seed: u64, key: &str) -> u64 {
    let bytes = seed.to_le_bytes().into_iter().chain(key.bytes());
    splitmix64_mix(fnv1a_64(bytes))
}

/// FNV-1a, 64-bit.
fn fnv1a_64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 53 bits of a hash as a number in `[0, 1)`.
fn unit_interval(hash: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (hash >> 11) as f64 * SCALE
}

/// Item ids divided into a discovery set (find latents) and a held-out set (verify them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Ids of the discovery items, in dataset order.
    pub discovery: Vec<String>,
    /// Ids of the held-out items, in dataset order.
    pub held_out: Vec<String>,
}

impl PersonaDataset {
    /// Splits the items by a stable hash of their ids: about `discovery_ratio` of them go to
    /// discovery (0 puts all in held-out, 1 all in discovery). Every id lands in exactly one side.
    /// Verification prompts are not items and are not split.
    ///
    /// # Errors
    /// [`DatasetError::InvalidRatio`] when the ratio is outside `[0, 1]` or NaN.
    pub fn split(&self, discovery_ratio: f64, seed: u64) -> Result<Split, DatasetError> {
        if !(0.0..=1.0).contains(&discovery_ratio) {
            return Err(DatasetError::InvalidRatio {
                ratio: discovery_ratio,
            });
        }
        let mut split = Split::default();
        for (_, item) in self.items() {
            let side = if unit_interval(stable_hash(seed, &item.id)) < discovery_ratio {
                &mut split.discovery
            } else {
                &mut split.held_out
            };
            side.push(item.id.clone());
        }
        Ok(split)
    }

    /// The same dataset keeping only the items whose id is in `ids` (categories, their metadata
    /// and the verification prompts are kept whole, so a category may end up with no items).
    pub fn subset(&self, ids: &[String]) -> PersonaDataset {
        let keep: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut subset = self.clone();
        for category in &mut subset.categories {
            category
                .items
                .retain(|item| keep.contains(item.id.as_str()));
        }
        subset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_match_their_published_test_vectors() {
        // FNV-1a 64 vectors from the reference implementation (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a_64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(*b"foobar"), 0x8594_4171_f739_67e8);
        // SplitMix64's first output for seed 0 is mix(0 + golden gamma).
        assert_eq!(splitmix64_mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn hash_values_are_frozen() {
        assert_eq!(stable_hash(0, "exp_001"), PINNED_EXP_001);
        assert_eq!(stable_hash(42, "syc_017"), PINNED_SYC_017);
        assert_ne!(stable_hash(0, "exp_001"), stable_hash(1, "exp_001"));
        assert_ne!(stable_hash(0, "exp_001"), stable_hash(0, "exp_002"));
    }

    // Computed once (independently, in Python) and frozen: if these change, every split changes.
    const PINNED_EXP_001: u64 = 0x3a21_e5ad_973d_2a17;
    const PINNED_SYC_017: u64 = 0xbb82_4964_6e4f_10da;

    #[test]
    fn unit_interval_stays_below_one() {
        assert_eq!(unit_interval(0), 0.0);
        assert!(unit_interval(u64::MAX) < 1.0);
    }

    #[test]
    fn bad_ratios_are_errors() {
        let dataset = PersonaDataset::default();
        for ratio in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                dataset.split(ratio, 0),
                Err(DatasetError::InvalidRatio { .. })
            ));
        }
    }
}
