//! [`QuantLinear`]: a candle `Module` over quantized weights run by our fused kernels.

use crate::bail_invalid;
use crate::kernels::fused::Fused;
use crate::kernels::{GemmBackend, Isa, QuantMatrix};
use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use std::sync::Arc;

/// `y = x W^T (+ bias)` with `W` (`n x k`) kept quantized; the forward quantizes the
/// activations to 8-bit blocks and runs the fused integer kernels (`crate::kernels::fused`,
/// the best ISA of this CPU, or `QFORGE_ISA`). CPU tensors of any float dtype; the output
/// has the input's dtype.
///
/// Memory: the weights in the layout they come in (read in place from a mapped file when
/// built by [`super::QuantModel::quant_linear`]) plus, per call, the f32 copy of the
/// input, its 8-bit quantization and the output. [`QuantLinear::tiled`] trades a second
/// copy of the weights (AVX-512 VNNI tiles) for faster prompts.
///
/// Accuracy: the weights are used exactly; the only approximation is the activations'
/// rounding to 8 bits (as candle's `QMatMul` and ggml round them to Q8_0/Q8_K), whose
/// expected size [`super::activation_error`] gives.
pub struct QuantLinear {
    backend: Fused,
    n: usize,
    k: usize,
    bias: Option<Tensor>,
}

impl QuantLinear {
    /// A layer over `w` as it is (no copy of its bytes), with an optional bias of `w.n`
    /// values.
    pub fn new(w: QuantMatrix, bias: Option<Tensor>) -> Result<Self> {
        Self::with_backend(w, bias, Fused::rows)
    }

    /// A layer over `w` repacked once into 16-row tiles where this CPU runs them (AVX-512
    /// VNNI; Q4_K, Q8_0, Q4_0, NF4 with a multiple of 16 rows) for faster prompts: a
    /// copy of the weights, held besides the file's pages when `w` is mapped.
    pub fn tiled(w: QuantMatrix, bias: Option<Tensor>) -> Result<Self> {
        Self::with_backend(w, bias, Fused::new)
    }

    fn with_backend(
        w: QuantMatrix,
        bias: Option<Tensor>,
        backend: fn(Arc<QuantMatrix>, Isa) -> Fused,
    ) -> Result<Self> {
        let (n, k) = (w.n, w.k);
        if let Some(b) = &bias {
            if b.dims() != [n] {
                bail_invalid!("bias has shape {:?}, expected [{n}]", b.dims());
            }
        }
        let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
        Ok(QuantLinear {
            backend: backend(Arc::new(w), Isa::current()),
            n,
            k,
            bias,
        })
    }

    /// Inputs per token (`k`).
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Outputs per token (`n`).
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Bytes of weights the layer reads (in place, or the tiles' copy).
    pub fn weight_bytes(&self) -> u64 {
        self.backend.weight_bytes()
    }

    /// Whether the weights are held as a repacked tile copy ([`QuantLinear::tiled`]).
    pub fn is_tiled(&self) -> bool {
        self.backend.is_tiled()
    }
}

impl Module for QuantLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !matches!(x.device(), Device::Cpu) {
            candle_core::bail!(
                "QuantLinear runs on the CPU; the input is on {:?}",
                x.device()
            )
        }
        let dims = x.dims();
        if dims.last() != Some(&self.k) {
            candle_core::bail!(
                "QuantLinear expects inputs of {} features, got shape {dims:?}",
                self.k
            )
        }
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let m = xs.len() / self.k;
        let mut y = vec![0f32; m * self.n];
        self.backend
            .matmul(&xs, &mut y)
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("checked above") = self.n;
        let mut y = Tensor::from_vec(y, out_dims, &Device::Cpu)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        y.to_dtype(x.dtype())
    }
}
