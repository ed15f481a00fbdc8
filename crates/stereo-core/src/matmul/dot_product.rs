//! The bf16 product on CPUs with AVX512-BF16: `vdpbf16ps` multiplies 32 pairs of bf16 and adds
//! each pair's sum into one of 16 f32 lanes, so the inner dimension is consumed two at a time.
//!
//! Layout (all of it plain Rust, tested on every CPU through [`portable_tile`]):
//! - `x` (`[rows, k]` bf16) becomes `[rows, k/2]` pairs, one `u32` each (element `2p` in the low
//!   half), rows padded to a multiple of [`MR`] and `k` to even with zeros;
//! - the `[k, n]` weights become panels of [`NR`] columns: for each pair of rows `2p, 2p + 1`, the
//!   panel's 32 columns as 32 `u32` pairs, columns past `n` zero;
//! - the output is cut into columns of up to [`PANELS_PER_TASK`] panels (as many as fit in
//!   [`TASK_PANEL_BYTES`]), one rayon task each (rows too, only where there are fewer such tasks
//!   than four per thread); for each block of [`KC`] pairs of `k` the task packs its panels into a
//!   buffer that stays in its L2 cache while all its rows sweep over them, and carries the sums in
//!   the output from one block to the next; each [`MR`] x [`NR`] tile sums a block in registers.
//!
//! Weights packed once ([`pack_all`], the whole `[n/NR][k/2][NR]`, held by
//! [`PackedBf16`](super::PackedBf16)) skip the packing: each task reads its panels in place, panel
//! by panel, and each tile asks for its share of the next panel's block while it sums.
//!
//! Only the tile ([`avx512_tile`]) and the prefetches are made of intrinsics.

use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use super::{Bf16Input, WeightLayout};

/// Rows of `x` per tile: 8 rows x 2 registers of accumulators, 16 of the 32 vector registers.
const MR: usize = 8;
/// Columns per panel: two 16-lane registers.
const NR: usize = 32;
/// Pairs of `k` per block: a block of a panel is 288 KB and a tile's rows of `x` 72 KB (of
/// Gemma-2-2b's products only `down_proj`, `k` = 9216, has two blocks).
const KC: usize = 2304;
/// At most this many panels per task.
const PANELS_PER_TASK: usize = 4;
/// The bytes of one task's packed panels stay under this (in a 1 MiB L2 cache, beside the rows of
/// `x` it streams): at `k` = 2304 four panels, in `down_proj`'s blocks two.
const TASK_PANEL_BYTES: usize = 640 << 10;
/// At most this many panels per task when the weights were packed once ([`pack_all`]).
const PACKED_PANELS_PER_TASK: usize = 16;

/// Whether the CPU has AVX512-BF16 (and AVX512F, which it implies in practice).
pub(super) fn is_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A tile kernel: `out[r][c] = sum_p x_pairs[r * stride + p] . panel[p][c]` for the first `rows`
/// of `MR` rows (the others zero), `NR` columns and `p < pairs`, with `panel` `[pairs, NR]`; the
/// last argument is memory to bring into the cache meanwhile (a hint only).
///
/// Arguments: `(x_pairs, stride, panel, pairs, rows, fetch)`.
type Tile = fn(&[u32], usize, &[u32], usize, usize, &[u32]) -> [[f32; NR]; MR];

/// `x @ W` with `x` `[rows, k]` bf16 and `W` the `[k, n]` operand stored in `layout`.
///
/// # Panics
/// If the CPU lacks AVX512-BF16 (callers check [`is_available`]).
pub(super) fn matmul<X: Bf16Input>(
    x: &[X],
    w: &[bf16],
    layout: WeightLayout,
    shape: (usize, usize, usize),
) -> Vec<f32> {
    assert!(is_available(), "vdpbf16ps needs AVX512-BF16");
    let weights = Weights {
        values: w,
        layout,
        k: shape.1,
        n: shape.2,
    };
    product(x, Panels::PackEachTime(weights), shape, avx512_tile_checked)
}

/// `x @ W` for `W` already packed in panels ([`pack_all`]).
///
/// # Panics
/// If the CPU lacks AVX512-BF16 (callers check [`is_available`]).
pub(super) fn matmul_packed<X: Bf16Input>(
    x: &[X],
    panels: &[u32],
    shape: (usize, usize, usize),
) -> Vec<f32> {
    assert!(is_available(), "vdpbf16ps needs AVX512-BF16");
    product(x, Panels::Packed(panels), shape, avx512_tile_checked)
}

/// Where a product's panels come from.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// Each task packs its panels, block by block, into a buffer in its L2 cache.
    PackEachTime(Weights<'a>),
    /// Packed once ([`pack_all`]): `[panels][k/2][NR]`, read in place; each tile asks the memory
    /// for a share of the next block while it works on the current one.
    Packed(&'a [u32]),
}

/// The whole product with `tile` as the kernel.
fn product<X: Bf16Input>(
    x: &[X],
    panels: Panels<'_>,
    (rows, k, n): (usize, usize, usize),
    tile: Tile,
) -> Vec<f32> {
    let mut out = vec![0f32; rows * n];
    if rows == 0 || n == 0 || k == 0 {
        return out;
    }
    let kp = k.div_ceil(2);
    let x_pairs = pack_rows(x, rows, k);
    let plan = Plan::new(panels, rows, kp, n);
    let out_ptr = SharedOutput(out.as_mut_ptr());
    (0..plan.column_tasks * plan.row_blocks)
        .into_par_iter()
        .for_each_init(Vec::new, |buffer: &mut Vec<u32>, task| {
            let (column_task, row_block) = (task / plan.row_blocks, task % plan.row_blocks);
            let first_panel = column_task * plan.per_task;
            let count = plan.per_task.min(plan.panels - first_panel);
            let row_range =
                row_block * plan.rows_per_block..((row_block + 1) * plan.rows_per_block).min(rows);
            let row_tiles = row_range.len().div_ceil(MR).max(1);
            for p0 in (0..kp).step_by(plan.kc) {
                let pairs = plan.kc.min(kp - p0);
                if let Panels::PackEachTime(weights) = panels {
                    buffer.resize(count * pairs * NR, 0);
                    pack_panels(weights, first_panel * NR, p0..p0 + pairs, buffer);
                }
                let block = |i: usize, p0: usize| -> &[u32] {
                    let pairs = plan.kc.min(kp - p0);
                    match panels {
                        Panels::PackEachTime(_) => &buffer[i * pairs * NR..][..pairs * NR],
                        Panels::Packed(all) => {
                            &all[((first_panel + i) * kp + p0) * NR..][..pairs * NR]
                        }
                    }
                };
                for i in 0..count {
                    let values = block(i, p0);
                    // The block after this one, fetched meanwhile (packed panels only).
                    let next = match panels {
                        Panels::PackEachTime(_) => &[][..],
                        Panels::Packed(_) if i + 1 < count => block(i + 1, p0),
                        Panels::Packed(_) if p0 + plan.kc < kp => block(0, p0 + plan.kc),
                        Panels::Packed(_) => &[][..],
                    };
                    let share = next.len().div_ceil(row_tiles).next_multiple_of(LINE);
                    let c0 = (first_panel + i) * NR;
                    let valid_cols = (n - c0).min(NR);
                    for (t, r0) in row_range.clone().step_by(MR).enumerate() {
                        let valid_rows = (rows - r0).min(MR);
                        let x_tile = &x_pairs[r0 * kp + p0..(r0 + MR - 1) * kp + p0 + pairs];
                        let fetch = next.get(t * share..).unwrap_or(&[]);
                        let fetch = &fetch[..share.min(fetch.len())];
                        let sums = tile(x_tile, kp, values, pairs, valid_rows, fetch);
                        for (r, row) in sums.iter().enumerate().take(valid_rows) {
                            let start = (r0 + r) * n + c0;
                            // SAFETY: the task owns its rows x the columns of its panels, disjoint
                            // from every other task's; `start + valid_cols <= rows * n`, the
                            // length of `out`, which outlives the parallel loop.
                            unsafe { out_ptr.add(start, &row[..valid_cols], p0 > 0) };
                        }
                    }
                }
            }
        });
    out
}

/// `u32` values per 64-byte cache line.
const LINE: usize = 16;

/// How a product is cut into tasks.
#[derive(Clone, Copy)]
struct Plan {
    /// Pairs of `k` per block of sums.
    kc: usize,
    /// Panels in all.
    panels: usize,
    /// Panels per task.
    per_task: usize,
    /// Tasks along the columns.
    column_tasks: usize,
    /// Tasks along the rows (1 unless the column tasks are too few to keep the threads busy).
    row_blocks: usize,
    /// Rows per row block, a multiple of [`MR`].
    rows_per_block: usize,
}

impl Plan {
    fn new(panels: Panels<'_>, rows: usize, kp: usize, n: usize) -> Self {
        let kc = KC.min(kp);
        let count = n.div_ceil(NR);
        let threads = rayon::current_num_threads();
        let per_task = match panels {
            // As many panels as stay in the L2 cache with the rows of `x`.
            Panels::PackEachTime(_) => (TASK_PANEL_BYTES / (kc * NR * 4)).clamp(1, PANELS_PER_TASK),
            // Read in place one at a time: long runs, but at least four tasks per thread.
            Panels::Packed(_) => (count / (4 * threads)).clamp(1, PACKED_PANELS_PER_TASK),
        };
        let column_tasks = count.div_ceil(per_task);
        // Rows are split only where there are too few column tasks to keep every thread busy.
        let row_blocks = (4 * threads)
            .div_ceil(column_tasks)
            .clamp(1, rows.div_ceil(MR));
        Plan {
            kc,
            panels: count,
            per_task,
            column_tasks,
            row_blocks,
            rows_per_block: rows.div_ceil(row_blocks).next_multiple_of(MR),
        }
    }
}

/// The output buffer shared by tasks that write disjoint rectangles of it.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

// SAFETY: tasks write disjoint ranges only (see `product`).
unsafe impl Send for SharedOutput {}
// SAFETY: as above.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// Writes `values` to `start..start + values.len()`, or adds them to what is there.
    ///
    /// # Safety
    /// The range is inside the buffer and no other thread touches it meanwhile.
    unsafe fn add(self, start: usize, values: &[f32], accumulate: bool) {
        // SAFETY: the caller's contract.
        let out = unsafe { std::slice::from_raw_parts_mut(self.0.add(start), values.len()) };
        if accumulate {
            out.iter_mut().zip(values).for_each(|(o, v)| *o += v);
        } else {
            out.copy_from_slice(values);
        }
    }
}

/// The `[k, n]` operand stored in `layout` packed whole as `[n/NR panels][k/2][NR]` pairs (zeros
/// past `k` and `n`), the layout [`matmul_packed`] reads; panels in parallel.
pub(super) fn pack_all(w: &[bf16], layout: WeightLayout, k: usize, n: usize) -> Vec<u32> {
    let kp = k.div_ceil(2);
    let mut panels = vec![0u32; n.div_ceil(NR) * kp * NR];
    if kp == 0 {
        return panels;
    }
    let weights = Weights {
        values: w,
        layout,
        k,
        n,
    };
    panels
        .par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(i, panel)| pack_panels(weights, i * NR, 0..kp, panel));
    panels
}

/// The `[k, n]` matrix (row-major) back from [`pack_all`]'s panels.
pub(super) fn unpack_all(panels: &[u32], k: usize, n: usize) -> Vec<bf16> {
    let kp = k.div_ceil(2);
    let mut w = vec![bf16::ZERO; k * n];
    for (i, row) in w.chunks_exact_mut(n.max(1)).enumerate().take(k) {
        for (c, value) in row.iter_mut().enumerate() {
            let pair = panels[((c / NR) * kp + i / 2) * NR + c % NR];
            *value = bf16::from_bits((pair >> (16 * (i % 2))) as u16);
        }
    }
    w
}

/// Two bf16 as one `u32`, `low` in the low half (the order `vdpbf16ps` pairs them in).
fn pair(low: bf16, high: bf16) -> u32 {
    (low.to_bits() as u32) | ((high.to_bits() as u32) << 16)
}

/// `x` (`[rows, k]`, rounded to bf16 on the way if it is f32) as `[rows padded to MR, k/2]`
/// pairs, zeros in the padding; rows in parallel.
fn pack_rows<X: Bf16Input>(x: &[X], rows: usize, k: usize) -> Vec<u32> {
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; rows.next_multiple_of(MR) * kp];
    out.par_chunks_mut(kp.max(1))
        .take(rows)
        .enumerate()
        .for_each(|(r, packed)| pack_row(&x[r * k..(r + 1) * k], packed));
    out
}

/// One row of [`pack_rows`]; with AVX-512 the loop is compiled for it (the rounding vectorises).
fn pack_row<X: Bf16Input>(row: &[X], packed: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX512BW (and AVX512F, which it implies).
        return unsafe { pack_row_avx512(row, packed) };
    }
    pack_row_portable(row, packed);
}

/// [`pack_row_portable`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX512F and AVX512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_row_avx512<X: Bf16Input>(row: &[X], packed: &mut [u32]) {
    pack_row_portable(row, packed);
}

/// See [`pack_row`].
#[inline(always)]
fn pack_row_portable<X: Bf16Input>(row: &[X], packed: &mut [u32]) {
    let twos = row.chunks_exact(2);
    if let [last] = twos.remainder() {
        packed[row.len() / 2] = pair(last.to_bf16(), bf16::ZERO);
    }
    for (value, two) in packed.iter_mut().zip(twos) {
        *value = pair(two[0].to_bf16(), two[1].to_bf16());
    }
}

/// Pairs per block of a transposing pack ([`WeightLayout::OutIn`]): the block's part of a panel,
/// 128 pairs x `NR` = 16 KB, stays in the L1 cache while the columns are scattered into it.
const PACK_BLOCK: usize = 128;

/// Columns `c0..` of the `[k, n]` operand into `panels` (a whole number of `[k/2, NR]` panels)
/// as pairs, zeros past `k` and `n`. Each task packs its own panels just before it uses them (they
/// stay in its L2 cache), so the weights are read from memory once per product and never copied
/// whole; with AVX-512 the packing loops are compiled for it.
fn pack_panels(weights: Weights<'_>, c0: usize, pairs: Range<usize>, panels: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX512BW (and AVX512F, which it implies).
        return unsafe { pack_panels_avx512(weights, c0, pairs, panels) };
    }
    pack_panels_portable(weights, c0, pairs, panels);
}

/// The `[k, n]` operand of a product, stored in `layout`.
#[derive(Clone, Copy)]
struct Weights<'a> {
    values: &'a [bf16],
    layout: WeightLayout,
    k: usize,
    n: usize,
}

/// [`pack_panels_portable`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX512F and AVX512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_panels_avx512(
    weights: Weights<'_>,
    c0: usize,
    pairs: Range<usize>,
    panels: &mut [u32],
) {
    pack_panels_portable(weights, c0, pairs, panels);
}

/// Pairs of rows a packing sweep asks the memory for ahead of use (64 x 2304 x 9216 on a 2-core
/// Zen 5: packing 4.5 ms of thread time without, 4.1 with 32; 2 and 8 gained nothing).
const PREFETCH_PAIRS: usize = 32;

/// Asks for rows `row` and `row + 1`, columns `c0..c0 + cols`, to be brought into the cache (no-op
/// past the end, or off x86-64).
#[inline(always)]
fn prefetch_rows(w: &[bf16], n: usize, c0: usize, cols: usize, row: usize) {
    #[cfg(target_arch = "x86_64")]
    for r in [row, row + 1] {
        if let Some(run) = w.get(r * n + c0..r * n + c0 + cols) {
            for line in run.chunks(32) {
                // SAFETY: a prefetch of an address inside the slice; it never faults.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        line.as_ptr().cast(),
                    )
                };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, n, c0, cols, row);
}

/// See [`pack_panels`].
#[inline(always)]
fn pack_panels_portable(
    Weights {
        values: w,
        layout,
        k,
        n,
    }: Weights<'_>,
    c0: usize,
    pairs: Range<usize>,
    panels: &mut [u32],
) {
    let height = pairs.len();
    let cols = (n - c0).min(panels.len() / height);
    if !cols.is_multiple_of(NR) {
        panels.fill(0);
    }
    match layout {
        WeightLayout::InOut => {
            // One sweep down `k` for all the panels: each pair of rows is read in runs of
            // `cols` values.
            for p in pairs.clone() {
                prefetch_rows(w, n, c0, cols, 2 * (p + PREFETCH_PAIRS));
                let low = &w[2 * p * n + c0..][..cols];
                let high = (2 * p + 1 < k).then(|| &w[(2 * p + 1) * n + c0..][..cols]);
                let at = (p - pairs.start) * NR;
                for (i, (low, packed)) in low
                    .chunks(NR)
                    .zip(panels.chunks_exact_mut(height * NR))
                    .enumerate()
                {
                    let packed = &mut packed[at..][..low.len()];
                    match high {
                        Some(high) => {
                            let high = &high[i * NR..][..low.len()];
                            for ((o, &l), &h) in packed.iter_mut().zip(low).zip(high) {
                                *o = pair(l, h);
                            }
                        }
                        None => {
                            for (o, &l) in packed.iter_mut().zip(low) {
                                *o = pair(l, bf16::ZERO);
                            }
                        }
                    }
                }
            }
        }
        WeightLayout::OutIn => {
            for (i, packed) in panels.chunks_exact_mut(height * NR).enumerate() {
                let panel_cols = cols.saturating_sub(i * NR).min(NR);
                for p0 in pairs.clone().step_by(PACK_BLOCK) {
                    let block = p0..(p0 + PACK_BLOCK).min(pairs.end);
                    for c in 0..panel_cols {
                        let column = &w[(c0 + i * NR + c) * k..][..k];
                        for p in block.clone() {
                            let high = column.get(2 * p + 1).copied().unwrap_or(bf16::ZERO);
                            packed[(p - pairs.start) * NR + c] = pair(column[2 * p], high);
                        }
                    }
                }
            }
        }
    }
}

/// The tile in plain Rust, pair by pair as `vdpbf16ps` adds them: the reference for the layout.
#[cfg_attr(not(test), allow(dead_code))]
fn portable_tile(
    x_pairs: &[u32],
    stride: usize,
    panel: &[u32],
    pairs: usize,
    rows: usize,
    _fetch: &[u32],
) -> [[f32; NR]; MR] {
    let widen = |bits: u32| f32::from_bits(bits << 16);
    let mut out = [[0f32; NR]; MR];
    for (r, row) in out.iter_mut().enumerate().take(rows) {
        for p in 0..pairs {
            let a = x_pairs[r * stride + p];
            for (c, o) in row.iter_mut().enumerate() {
                let b = panel[p * NR + c];
                *o += widen(a & 0xFFFF) * widen(b & 0xFFFF) + widen(a >> 16) * widen(b >> 16);
            }
        }
    }
    out
}

/// [`avx512_tile`] for `rows` rows (1 to [`MR`]), behind the checks that make it safe to call.
fn avx512_tile_checked(
    x_pairs: &[u32],
    stride: usize,
    panel: &[u32],
    pairs: usize,
    rows: usize,
    fetch: &[u32],
) -> [[f32; NR]; MR] {
    assert!(x_pairs.len() >= (MR - 1) * stride + pairs && panel.len() >= pairs * NR);
    assert!((1..=MR).contains(&rows) && is_available());
    #[cfg(target_arch = "x86_64")]
    {
        let args = (x_pairs, stride, panel, pairs, fetch);
        // SAFETY: the CPU has AVX512F and AVX512-BF16; the lengths were checked above.
        unsafe {
            match rows {
                1 => avx512_tile::<1>(args),
                2 => avx512_tile::<2>(args),
                3 => avx512_tile::<3>(args),
                4 => avx512_tile::<4>(args),
                5 => avx512_tile::<5>(args),
                6 => avx512_tile::<6>(args),
                7 => avx512_tile::<7>(args),
                _ => avx512_tile::<MR>(args),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable_tile(x_pairs, stride, panel, pairs, rows, fetch)
    }
}

/// One tile of `R` rows (`R <= MR`) x `NR` columns with `vdpbf16ps`; the rows past `R` are zero.
/// Meanwhile it asks for `fetch` to be brought into the L2 cache, a line at a time spread over its
/// pairs.
///
/// # Safety
/// The CPU has AVX512F and AVX512-BF16; `x_pairs` holds `(MR - 1) * stride + pairs` values and
/// `panel` `pairs * NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn avx512_tile<const R: usize>(
    (x_pairs, stride, panel, pairs, fetch): (&[u32], usize, &[u32], usize, &[u32]),
) -> [[f32; NR]; MR] {
    use std::arch::x86_64::*;
    const VECTORS: usize = NR / 16;
    let mut acc = [[_mm512_setzero_ps(); VECTORS]; R];
    let b = panel.as_ptr();
    // SAFETY: `r * stride < (MR - 1) * stride + pairs`, inside `x_pairs`.
    let rows: [*const u32; R] =
        std::array::from_fn(|r| unsafe { x_pairs.as_ptr().add(r * stride) });
    // Lines of `fetch` still to ask for, and the credit that spreads them evenly over the pairs.
    let (mut lines, mut credit) = (fetch.chunks(LINE), 0);
    let fetch_lines = fetch.len().div_ceil(LINE);
    for p in 0..pairs {
        credit += fetch_lines;
        while credit >= pairs {
            credit -= pairs;
            if let Some(line) = lines.next() {
                _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast());
            }
        }
        // SAFETY: `p * NR + NR <= pairs * NR` and `r * stride + p < (MR - 1) * stride + pairs`,
        // inside the slices.
        unsafe {
            let mut columns = [std::mem::zeroed::<__m512bh>(); VECTORS];
            for (v, column) in columns.iter_mut().enumerate() {
                *column = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b.add(p * NR + 16 * v).cast(),
                ));
            }
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(*row.add(p) as i32));
                for (acc, &column) in acc.iter_mut().zip(&columns) {
                    *acc = _mm512_dpbf16_ps(*acc, a, column);
                }
            }
        }
    }
    let mut out = [[0f32; NR]; MR];
    for (row, acc) in out.iter_mut().zip(&acc) {
        for (v, acc) in acc.iter().enumerate() {
            // SAFETY: each row holds NR f32, stored 16 at a time.
            unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), *acc) };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::test_support::{assert_within, naive, transposed};
    use crate::matmul::{to_bf16, WeightElement};

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32 ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13);
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn the_packed_layout_gives_the_naive_product_on_odd_shapes() {
        for (rows, k, n) in [
            (1, 1, 1),
            (9, 3, 33),
            // One to seven rows: the tiles of a decoding step.
            (1, 37, 300),
            (3, 40, 70),
            (7, 65, 1000),
            (70, 31, 65),
            (8, 64, 32),
            (17, 257, 100),
            // Several panels per task with a ragged last one; rows split across tasks.
            (30, 37, 300),
            (200, 6, 20),
            // `k` over two blocks of sums (KC pairs each), odd.
            (9, 2 * 2 * KC + 3, 33),
        ] {
            let x = to_bf16(&values(rows * k, 1));
            let w = to_bf16(&values(k * n, 2));
            let w_t = transposed(&w, k, n);
            let widened: Vec<f32> = x.iter().map(|v| v.widen()).collect();
            let want = naive(&widened, &w, rows, k, n);
            for (layout, stored) in [(WeightLayout::InOut, &w), (WeightLayout::OutIn, &w_t)] {
                let weights = Weights {
                    values: stored,
                    layout,
                    k,
                    n,
                };
                let packed = pack_all(stored, layout, k, n);
                for (source, panels) in [
                    ("packed each time", Panels::PackEachTime(weights)),
                    ("packed once", Panels::Packed(&packed)),
                ] {
                    let got = product(&x, panels, (rows, k, n), portable_tile);
                    assert_within(
                        &got,
                        &want,
                        1e-5 * k as f64,
                        &format!("{layout:?} {source} {rows}x{k}x{n}"),
                    );
                }
            }
        }
    }

    #[test]
    fn packing_once_keeps_every_value_in_place() {
        for (k, n) in [(1, 1), (3, 33), (64, 32), (257, 100)] {
            let w = to_bf16(&values(k * n, 5));
            let w_t = transposed(&w, k, n);
            assert_eq!(
                unpack_all(&pack_all(&w, WeightLayout::InOut, k, n), k, n),
                w
            );
            assert_eq!(
                unpack_all(&pack_all(&w_t, WeightLayout::OutIn, k, n), k, n),
                w
            );
        }
    }

    #[test]
    fn pairs_put_the_even_element_in_the_low_half() {
        let (a, b) = (bf16::from_f32(1.0), bf16::from_f32(-2.0));
        assert_eq!(pair(a, b), 0xC000_3F80);
        assert_eq!(pack_rows(&[a, b, a], 1, 3)[..2], [0xC000_3F80, 0x0000_3F80]);
    }
}
