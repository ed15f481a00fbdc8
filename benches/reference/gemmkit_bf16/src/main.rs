//! gemmkit 0.1.2 (feature `half`) bf16 GEMM at Gemma-2-2b's gate_proj shape, 2 threads, beside
//! stereo's own kernels (benches/bf16_gemm.rs). Output is bf16 (gemmkit's only bf16 output type).
use gemmkit::{gemm, gemm_packed_b, prepack_rhs, MatMut, MatRef, Parallelism};
use half::bf16;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (k, n) = (2304usize, 9216usize);
    let w: Vec<bf16> = (0..k * n)
        .map(|i| bf16::from_f32(((i * 53) % 97) as f32 / 97.0 - 0.5))
        .collect();
    let packed = prepack_rhs(MatRef::from_row_major(&w, k, n));
    for rows in [512usize, 64, 1] {
        let x: Vec<bf16> = (0..rows * k)
            .map(|i| bf16::from_f32(((i * 37) % 101) as f32 / 101.0 - 0.5))
            .collect();
        let mut c = vec![bf16::ZERO; rows * n];
        let one = bf16::ONE;
        let (mut plain, mut pre) = (Vec::new(), Vec::new());
        for it in 0..13 {
            let t = Instant::now();
            gemm(
                one,
                MatRef::from_row_major(&x, rows, k),
                MatRef::from_row_major(&w, k, n),
                bf16::ZERO,
                MatMut::from_row_major(&mut c, rows, n),
                Parallelism::Rayon(2),
            );
            if it >= 3 {
                plain.push(t.elapsed().as_secs_f64());
            }
            let t = Instant::now();
            // The prepacked-B path writes a column-major C only (same work, output transposed).
            gemm_packed_b(
                one,
                MatRef::from_row_major(&x, rows, k),
                &packed,
                bf16::ZERO,
                MatMut::from_col_major(&mut c, rows, n),
                Parallelism::Rayon(2),
            );
            if it >= 3 {
                pre.push(t.elapsed().as_secs_f64());
            }
        }
        let flop = 2.0 * (rows * k * n) as f64;
        let (p, q) = (median(plain), median(pre));
        println!("{{\"shape\":\"{rows}x{k}x{n}\",\"gemmkit_ms\":{:.3},\"gemmkit_gflops\":{:.1},\"gemmkit_prepacked_ms\":{:.3},\"prepacked_gflops\":{:.1},\"c0\":{}}}",
            p * 1e3, flop / p / 1e9, q * 1e3, flop / q / 1e9, c[0]);
    }
}
