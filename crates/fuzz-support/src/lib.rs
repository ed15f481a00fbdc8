//! # fuzz-support
//!
//! What the fuzz tests of every crate that reads user files share (a dev-dependency only):
//!
//! - [`Mutation`] and [`mutations`]: valid files mutated by truncation, bit flips, overwritten byte runs,
//!   duplicated runs and inflated numbers (a run of ASCII digits replaced by a huge value: the "header lie"
//!   of a config field, a safetensors shape or offset, a JSON length);
//! - [`cases`]: how many cases a fuzz test runs: 48 by default (CI), `STEREO_FUZZ_CASES=N` for a longer
//!   run;
//! - [`PeakAllocator`]: a global allocator for a test binary that records the largest single request
//!   ([`largest_request`], [`reset_largest_request`]), so a test can assert that no input made the parser
//!   allocate beyond a bound proportional to the file's size. A request above [`HARD_LIMIT`] is refused
//!   (the process aborts, the test fails loudly) instead of being attempted.
//!
//! ```
//! use fuzz_support::{apply, Mutation};
//!
//! let out = apply(b"{\"layers\": 26}", &[Mutation::InflateNumber { nth: 0, value: u64::MAX }]);
//! assert_eq!(out, format!("{{\"layers\": {}}}", u64::MAX).into_bytes());
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

/// Requests above this many bytes are refused outright (16 GiB).
pub const HARD_LIMIT: usize = 16 << 30;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// A [`System`] allocator that records the largest single request.
pub struct PeakAllocator;

// SAFETY: every call is forwarded to `System` unchanged (or refused with null, which `GlobalAlloc`
// allows); the bookkeeping is one relaxed atomic.
unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > HARD_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > HARD_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        if new_size > HARD_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The largest single allocation requested since the last [`reset_largest_request`].
pub fn largest_request() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

/// Starts a new measurement.
pub fn reset_largest_request() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// The allocation bound for a parser fed `file_bytes` bytes: 64 times the file plus 64 MiB (room for
/// widening bf16 to f32, an f64 copy, and fixed-size buffers).
pub fn bound(file_bytes: usize) -> usize {
    file_bytes.saturating_mul(64).saturating_add(64 << 20)
}

/// Fuzz cases per test: `STEREO_FUZZ_CASES`, else 48.
pub fn cases() -> u32 {
    std::env::var("STEREO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// One change to a file. Positions are fractions of the length, so a strategy does not need it.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Keep the first `fraction` of the bytes.
    Truncate(f64),
    /// Flip bit `bit` of the byte at `at`.
    FlipBit {
        /// Where, as a fraction of the length.
        at: f64,
        /// Which bit.
        bit: u8,
    },
    /// Overwrite bytes from `at` with `bytes`.
    Overwrite {
        /// Where, as a fraction of the length.
        at: f64,
        /// The new bytes.
        bytes: Vec<u8>,
    },
    /// Repeat the run `[at, at + len)` once, right after itself.
    Duplicate {
        /// Where, as a fraction of the length.
        at: f64,
        /// How many bytes.
        len: usize,
    },
    /// Replace the `nth` run of ASCII digits (counted modulo the runs present) by `value`.
    InflateNumber {
        /// Which run.
        nth: usize,
        /// The new number.
        value: u64,
    },
}

fn position(at: f64, len: usize) -> usize {
    ((at.clamp(0.0, 1.0) * len as f64) as usize).min(len.saturating_sub(1))
}

/// `bytes` with `mutations` applied in order.
pub fn apply(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        if out.is_empty() {
            break;
        }
        match m {
            Mutation::Truncate(fraction) => {
                let keep = (fraction.clamp(0.0, 1.0) * out.len() as f64) as usize;
                out.truncate(keep);
            }
            Mutation::FlipBit { at, bit } => {
                let i = position(*at, out.len());
                out[i] ^= 1 << (bit % 8);
            }
            Mutation::Overwrite { at, bytes } => {
                let i = position(*at, out.len());
                for (k, b) in bytes.iter().enumerate() {
                    if let Some(slot) = out.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            Mutation::Duplicate { at, len } => {
                let i = position(*at, out.len());
                let end = (i + len).min(out.len());
                let run = out[i..end].to_vec();
                out.splice(end..end, run);
            }
            Mutation::InflateNumber { nth, value } => {
                let runs = digit_runs(&out);
                if runs.is_empty() {
                    continue;
                }
                let (start, end) = runs[nth % runs.len()];
                out.splice(start..end, value.to_string().into_bytes());
            }
        }
    }
    out
}

fn digit_runs(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, bytes.len()));
    }
    runs
}

/// One mutation: every kind, numbers inflated to values that overflow `u32`, `usize` products and
/// allocations.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    let huge = prop_oneof![
        Just(u64::MAX),
        Just(u64::from(u32::MAX)),
        Just(1u64 << 40),
        Just(1u64 << 33),
        Just(0u64),
        1u64..100_000,
    ];
    prop_oneof![
        (0.0f64..1.0).prop_map(Mutation::Truncate),
        (0.0f64..1.0, 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (0.0f64..1.0, proptest::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        (0.0f64..1.0, 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        (0usize..64, huge).prop_map(|(nth, value)| Mutation::InflateNumber { nth, value }),
    ]
}

/// One to three mutations.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_do_what_they_say() {
        assert_eq!(apply(b"abcdef", &[Mutation::Truncate(0.5)]), b"abc");
        assert_eq!(
            apply(b"a1b22c", &[Mutation::InflateNumber { nth: 1, value: 7 }]),
            b"a1b7c"
        );
        assert_eq!(
            apply(b"abcd", &[Mutation::Duplicate { at: 0.25, len: 2 }]),
            b"abcbcd"
        );
        assert_eq!(
            apply(b"\x00", &[Mutation::FlipBit { at: 0.0, bit: 1 }]),
            b"\x02"
        );
    }
}
