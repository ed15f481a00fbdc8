//! Tuning of the `gemm` crate, which both CPU backends multiply matrices with.

/// Makes the `gemm` crate pack the weight matrix of every multi-threaded product with more than six
/// rows of activations (the default waits for more than 96).
///
/// `gemm` computes a row-major `x @ W` as its transpose, so the weights `W` (`[in, out]`) are its
/// left operand, which it copies into cache-friendly panels ("packs") only when the product has more
/// than `threshold * 6` rows of `x`. Below that it streams the weights straight from memory, with
/// a stride of a whole row per step. For the short batches of a language model (16 to 96 tokens)
/// packing is 17-18% faster on this project's benchmark machine (`benches/README.md`). Packing only
/// moves data: the blocking and the order of the arithmetic stay the same, so results are
/// bit-identical (tested).
///
/// The setting is process-wide and cheap to repeat; [`dispatch`](crate::dispatch) applies it
/// whenever it hands out a CPU backend.
pub fn tune_cpu_gemm() {
    gemm::set_lhs_packing_threshold_multi_thread(PACK_WEIGHTS_ABOVE);
}

/// `gemm`'s packing threshold, in units of its 6-column microkernel width.
const PACK_WEIGHTS_ABOVE: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlexBackend;
    use burn::tensor::{Distribution, Tensor};

    #[test]
    fn packing_the_weights_changes_no_bit_of_the_product() {
        let device = Default::default();
        let x = Tensor::<FlexBackend, 2>::random([64, 300], Distribution::Default, &device);
        let w = Tensor::<FlexBackend, 2>::random([300, 200], Distribution::Default, &device);
        let product = || {
            x.clone()
                .matmul(w.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        let default = gemm::get_lhs_packing_threshold_multi_thread();
        let streamed = product();
        tune_cpu_gemm();
        assert_eq!(gemm::get_lhs_packing_threshold_multi_thread(), 1);
        let packed = product();
        gemm::set_lhs_packing_threshold_multi_thread(default);
        assert_eq!(streamed, packed);
    }
}
