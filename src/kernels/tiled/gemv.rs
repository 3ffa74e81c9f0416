//! The tiled GEMV (one token, decode): the weights are streamed once, so it is bound by
//! the read bandwidth. The token's activations are interleaved once (no parallel region
//! for it) and the tile rows are cut into one contiguous chunk per thread, so each thread
//! streams one long run of memory, read in address order across tile-row boundaries (the
//! one-token kernels keep their loads in order and, but for Q6_K, leave the prefetching to
//! the hardware), and the per-call cost is one parallel region. The tiles are on huge pages ([`HugeBuf`](crate::kernels::hugepage::HugeBuf)).

use super::{x86, Group, Tiled, MAX_TOKENS, TILE_ROWS};
use crate::kernels::activation::Activations;
use rayon::prelude::*;

/// Contiguous chunks of tile rows per thread: one (each thread streams its own part of
/// the weights), which measured best against 4 and 16 and rayon's default split.
pub const GEMV_CHUNKS_PER_THREAD: usize = 1;

/// `y` (n outputs) for the one token of `acts` (from
/// [`Activations::quantize`] with the tiled type's block).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, FMA and F16C (`Isa::Avx512Vnni`).
pub unsafe fn gemv(w: &Tiled, acts: &Activations, y: &mut [f32]) {
    assert_eq!(acts.tokens(), 1, "a GEMV takes one token");
    assert_eq!(acts.k, w.k);
    assert_eq!(y.len(), w.n);
    let g = Group::new(w.kind, acts, 0, 1);
    let tile_rows = w.n / TILE_ROWS;
    let chunks = (rayon::current_num_threads() * GEMV_CHUNKS_PER_THREAD).clamp(1, tile_rows);
    let rows_per_chunk = tile_rows.div_ceil(chunks);
    y.par_chunks_mut(rows_per_chunk * TILE_ROWS)
        .enumerate()
        .for_each(|(c, out)| {
            let first = c * rows_per_chunk;
            // One output buffer per chunk; a one-token kernel only writes `res[0]`, so only
            // that is cleared per tile row (clearing all of it, 512 bytes of stores a tile
            // row, cost the NF4 GEMV 5% of its streaming rate, one thread).
            let mut res = [[0f32; TILE_ROWS]; MAX_TOKENS];
            for (i, out) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
                res[0] = [0.0; TILE_ROWS];
                // SAFETY: the caller guarantees the CPU features; the group holds one
                // token of `k` values; `first + i` is a tile row of `w`.
                unsafe { x86::tile_row::<1>(w, first + i, &g, &mut res) };
                out.copy_from_slice(&res[0]);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference_matmul;
    use crate::kernels::test_support::{activations, assert_close};
    use crate::kernels::{Isa, QuantMatrix, WeightType};

    #[test]
    fn gemv_matches_the_f64_reference_for_every_tiled_type() {
        if !Isa::available().contains(&Isa::Avx512Vnni) {
            return;
        }
        for ty in WeightType::ALL {
            // 16 * 37 rows: chunks of uneven size, the last one short.
            let w = QuantMatrix::random(ty, 16 * 37, 512, 7).unwrap();
            let t = Tiled::new(&w);
            let x = activations(1, 512);
            let want = reference_matmul(&w, &x);
            let acts = Activations::quantize(&x, 512, ty.activation_block(), None);
            let mut y = vec![f32::NAN; w.n];
            // SAFETY: AVX-512 VNNI was detected above.
            unsafe { gemv(&t, &acts, &mut y) };
            assert_close(&w, &x, &y, &want, &format!("gemv {ty:?}"));
        }
    }
}
