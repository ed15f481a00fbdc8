//! Large temporary buffers kept for reuse instead of handed back to the operating system.

/// Makes glibc's `malloc` serve buffers of up to [`MMAP_THRESHOLD`] from its heap and keep up to
/// [`TRIM_THRESHOLD`] of freed memory there, instead of mapping fresh pages for each large buffer
/// and unmapping them on free (its default above 128 KiB, a threshold it raises only slowly).
///
/// A forward pass allocates and frees hundreds of activation buffers of 1-40 MB; with fresh
/// mappings every one of their 4 KiB pages faults on first touch and is zeroed by the kernel: 14%
/// of a bf16 Gemma-2-2b forward of 8 x 64 tokens on a 2-core Zen 5 was spent in the kernel, and
/// this setting made the forward 1.13-1.35x faster there with the same peak RSS
/// (`benches/README.md`). Freed buffers are reused by the next allocation of a similar size; peak
/// memory stays what the largest live set needs.
///
/// The setting is process-wide and idempotent; [`dispatch`](crate::dispatch) applies it whenever it
/// hands out a CPU backend. Returns whether the allocator took it (`false` off glibc).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes two thresholds of the allocator; it is thread-safe.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Buffers below this come from the heap (glibc's ceiling for the setting on 64-bit systems).
pub const MMAP_THRESHOLD: i32 = 32 << 20;

/// Freed memory at the top of the heap is handed back only above this.
pub const TRIM_THRESHOLD: i32 = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_the_setting() {
        let taken = keep_freed_memory();
        assert_eq!(taken, cfg!(all(target_os = "linux", target_env = "gnu")));
        // Idempotent, and allocations still work either side of the thresholds.
        assert_eq!(keep_freed_memory(), taken);
        for bytes in [1 << 10, 16 << 20, 64 << 20] {
            let buffer = vec![7u8; bytes];
            assert_eq!(buffer[bytes - 1], 7);
        }
    }
}
