//! candle-core's quantized matmul (`QMatMul`) over the same ggml blocks: the peer the
//! fused kernels are measured against. On the CPU candle quantizes the activations to
//! Q8_K/Q8_0 and runs its own vec-dot kernels. With the `metal` or `cuda` cargo feature
//! the weights go to the first GPU instead.

use super::{GemmBackend, QuantMatrix, WeightType};
use crate::bail_invalid;
use anyhow::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use std::borrow::Cow;

/// The device candle runs on: the first Metal or CUDA GPU when built with that feature.
pub fn device() -> Result<Device> {
    #[cfg(feature = "metal")]
    return Device::new_metal(0).map_err(|e| anyhow::anyhow!("opening the Metal device: {e}"));
    #[cfg(all(feature = "cuda", not(feature = "metal")))]
    return Device::new_cuda(0).map_err(|e| anyhow::anyhow!("opening the CUDA device: {e}"));
    #[cfg(not(any(feature = "metal", feature = "cuda")))]
    Ok(Device::Cpu)
}

/// candle's `QMatMul` over a copy of the weight blocks.
pub struct CandleQMatMul {
    mm: QMatMul,
    device: Device,
    n: usize,
    k: usize,
    bytes: u64,
}

impl CandleQMatMul {
    /// Loads `w` into candle; NF4 and IQ4_XS are refused (candle-core has neither type).
    pub fn new(w: &QuantMatrix) -> Result<Self> {
        let dtype = match w.ty {
            WeightType::Q4K => GgmlDType::Q4K,
            WeightType::Q6K => GgmlDType::Q6K,
            WeightType::Q8_0 => GgmlDType::Q8_0,
            WeightType::Q4_0 => GgmlDType::Q4_0,
            WeightType::Q5K => GgmlDType::Q5K,
            WeightType::Nf4 => bail_invalid!("candle-core has no NF4 type: no candle peer for nf4"),
            WeightType::Iq4Xs => {
                bail_invalid!("candle-core has no IQ4_XS type: no candle peer for iq4_xs")
            }
        };
        let device = device()?;
        let storage = QStorage::from_data(Cow::Borrowed(&w.data), &device, dtype)?;
        let mm = QMatMul::from_qtensor(QTensor::new(storage, (w.n, w.k))?)?;
        Ok(CandleQMatMul {
            mm,
            device,
            n: w.n,
            k: w.k,
            bytes: w.bytes(),
        })
    }
}

impl GemmBackend for CandleQMatMul {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn weight_bytes(&self) -> u64 {
        self.bytes
    }

    fn scratch_bytes(&self, m: usize) -> u64 {
        // Q8 activations (~1.1 B per value), the output tensor and our copy of it.
        (m * self.k * 9 / 8 + 2 * m * self.n * 4) as u64
    }

    fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let m = x.len() / self.k;
        let xs = Tensor::from_slice(x, (m, self.k), &self.device)?;
        let ys = self.mm.forward(&xs)?.flatten_all()?.to_vec1::<f32>()?;
        y.copy_from_slice(&ys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference_matmul;
    use super::super::test_support::{activations, assert_close};
    use super::*;

    #[test]
    fn candle_agrees_with_the_reference_and_refuses_nf4() {
        for ty in [
            WeightType::Q4K,
            WeightType::Q6K,
            WeightType::Q8_0,
            WeightType::Q4_0,
            WeightType::Q5K,
        ] {
            let w = QuantMatrix::random(ty, 40, 512, 2).unwrap();
            let x = activations(3, 512);
            let mut y = vec![0f32; 3 * 40];
            CandleQMatMul::new(&w).unwrap().matmul(&x, &mut y).unwrap();
            assert_close(
                &w,
                &x,
                &y,
                &reference_matmul(&w, &x),
                &format!("candle {ty:?}"),
            );
        }
        let nf4 = QuantMatrix::random(WeightType::Nf4, 2, 64, 1).unwrap();
        let err = CandleQMatMul::new(&nf4).err().unwrap();
        assert_eq!(crate::error::exit_code(&err), 2);
        let iq4 = QuantMatrix::random(WeightType::Iq4Xs, 2, 256, 1).unwrap();
        let err = CandleQMatMul::new(&iq4).err().unwrap();
        assert_eq!(crate::error::exit_code(&err), 2);
    }
}
