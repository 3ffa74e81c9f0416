//! KIVI-style asymmetric integer quantization (Liu et al. 2024, without the
//! full-precision residual window; use protected regions for that).
//!
//! A group of values gets `min` and `scale = (max - min) / (2^b - 1)`, both
//! stored as fp16; codes are `q = clamp(round((x - min') / scale'), 0, 2^b - 1)`
//! computed with the fp16-rounded `min'`, `scale'`; decode is `min' + q·scale'`.
//!
//! * [`KiviAxis::PerChannel`] (keys): rows are cut into token groups of `group`
//!   rows (the last may be shorter); each group stores, for channels `0..d`,
//!   `min, scale` (4 bytes per channel), then the group's codes row-major,
//!   packed LSB-first.
//! * [`KiviAxis::PerToken`] (values): each row is cut into channel groups of
//!   `group` channels (the last may be shorter); each channel group stores
//!   `min, scale`, then its packed codes.

use anyhow::{bail, Result};
use half::f16;

use super::super::codec::{check_encoded, check_matrix, KvCodec};
use super::super::pack::{pack_unchecked, packed_len, unpack_unchecked};
use super::super::tensor::Matrix;

/// Quantization axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KiviAxis {
    /// Per channel over groups of tokens (KIVI keys).
    PerChannel,
    /// Per token over groups of channels (KIVI values).
    PerToken,
}

/// KIVI-style codec.
#[derive(Debug, Clone)]
pub struct Kivi {
    head_dim: usize,
    bits: u32,
    group: usize,
    axis: KiviAxis,
}

impl Kivi {
    /// `bits` in 1..=8, `group >= 1`.
    pub fn new(head_dim: usize, bits: u32, group: usize, axis: KiviAxis) -> Result<Self> {
        if head_dim == 0 {
            bail!("KIVI head_dim must be positive");
        }
        if !(1..=8).contains(&bits) {
            bail!("KIVI bits must be in 1..=8, got {bits}");
        }
        if group == 0 {
            bail!("KIVI group size must be positive");
        }
        Ok(Self {
            head_dim,
            bits,
            group,
            axis,
        })
    }

    /// KIVI key codec: per channel, `group` tokens.
    pub fn keys(head_dim: usize, bits: u32, group: usize) -> Result<Self> {
        Self::new(head_dim, bits, group, KiviAxis::PerChannel)
    }

    /// KIVI value codec: per token, `group` channels.
    pub fn values(head_dim: usize, bits: u32, group: usize) -> Result<Self> {
        Self::new(head_dim, bits, group, KiviAxis::PerToken)
    }

    fn levels(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    /// Bytes of one group of `count` values with `params` (min, scale) pairs.
    fn group_bytes(&self, params: usize, count: usize) -> usize {
        4 * params + packed_len(count, self.bits)
    }

    fn row_group_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.head_dim)
            .step_by(self.group)
            .map(move |s| self.group.min(self.head_dim - s))
    }

    /// (min', scale') in fp16 for values in [lo, hi].
    fn params(&self, lo: f32, hi: f32) -> Result<(f16, f16)> {
        let mn = f16::from_f32(lo);
        let sc = f16::from_f32((hi - lo) / self.levels());
        if mn.is_infinite() || sc.is_infinite() {
            bail!("{}: group range [{lo}, {hi}] exceeds fp16", self.name());
        }
        Ok((mn, sc))
    }

    fn quantize(&self, x: f32, mn: f32, sc: f32) -> u16 {
        if sc == 0.0 {
            return 0;
        }
        ((x - mn) / sc).round().clamp(0.0, self.levels()) as u16
    }
}

impl KvCodec for Kivi {
    fn name(&self) -> String {
        let axis = match self.axis {
            KiviAxis::PerChannel => "key",
            KiviAxis::PerToken => "value",
        };
        format!("kivi-{axis}-b{}-g{}", self.bits, self.group)
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Code bits plus the fp16 (min, scale) pair of each group: `32 / group` per value for
    /// keys (full token groups), `32 · ceil(head_dim / group) / head_dim` for values (a row's
    /// channel groups, the last one shorter when `group` does not divide `head_dim`).
    fn bits_per_value(&self) -> f64 {
        let params = match self.axis {
            KiviAxis::PerChannel => 32.0 / self.group as f64,
            KiviAxis::PerToken => {
                32.0 * self.head_dim.div_ceil(self.group) as f64 / self.head_dim as f64
            }
        };
        f64::from(self.bits) + params
    }

    fn encoded_len(&self, rows: usize) -> usize {
        let d = self.head_dim;
        match self.axis {
            KiviAxis::PerToken => {
                rows * self
                    .row_group_sizes()
                    .map(|g| self.group_bytes(1, g))
                    .sum::<usize>()
            }
            KiviAxis::PerChannel => {
                let full = rows / self.group;
                let rem = rows % self.group;
                full * self.group_bytes(d, self.group * d)
                    + if rem > 0 {
                        self.group_bytes(d, rem * d)
                    } else {
                        0
                    }
            }
        }
    }

    fn encode(&self, m: &Matrix) -> Result<Vec<u8>> {
        check_matrix(self, m)?;
        if let Some(i) = m.data().iter().position(|v| !v.is_finite()) {
            bail!("{}: value {i} is not finite", self.name());
        }
        let d = self.head_dim;
        let mut out = Vec::with_capacity(self.encoded_len(m.rows()));
        let mut codes = Vec::new();
        match self.axis {
            KiviAxis::PerToken => {
                for r in 0..m.rows() {
                    let row = m.row(r);
                    for (gi, gs) in self.row_group_sizes().enumerate() {
                        let vals = &row[gi * self.group..gi * self.group + gs];
                        let lo = vals.iter().copied().fold(f32::INFINITY, f32::min);
                        let hi = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let (mn, sc) = self.params(lo, hi)?;
                        out.extend_from_slice(&mn.to_bits().to_le_bytes());
                        out.extend_from_slice(&sc.to_bits().to_le_bytes());
                        codes.clear();
                        codes.extend(
                            vals.iter()
                                .map(|&x| self.quantize(x, mn.to_f32(), sc.to_f32())),
                        );
                        let start = out.len();
                        out.resize(start + packed_len(gs, self.bits), 0);
                        pack_unchecked(&codes, self.bits, &mut out[start..]);
                    }
                }
            }
            KiviAxis::PerChannel => {
                for t0 in (0..m.rows()).step_by(self.group) {
                    let t1 = (t0 + self.group).min(m.rows());
                    let mut p = Vec::with_capacity(d);
                    for c in 0..d {
                        let (lo, hi) =
                            (t0..t1).fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), t| {
                                let v = m.row(t)[c];
                                (lo.min(v), hi.max(v))
                            });
                        let (mn, sc) = self.params(lo, hi)?;
                        out.extend_from_slice(&mn.to_bits().to_le_bytes());
                        out.extend_from_slice(&sc.to_bits().to_le_bytes());
                        p.push((mn.to_f32(), sc.to_f32()));
                    }
                    codes.clear();
                    for t in t0..t1 {
                        codes.extend(
                            m.row(t)
                                .iter()
                                .zip(&p)
                                .map(|(&x, &(mn, sc))| self.quantize(x, mn, sc)),
                        );
                    }
                    let start = out.len();
                    out.resize(start + packed_len(codes.len(), self.bits), 0);
                    pack_unchecked(&codes, self.bits, &mut out[start..]);
                }
            }
        }
        Ok(out)
    }

    fn decode(&self, bytes: &[u8], rows: usize) -> Result<Matrix> {
        check_encoded(self, bytes, rows)?;
        let d = self.head_dim;
        let mut out = Vec::with_capacity(rows * d);
        let mut pos = 0;
        let half_at =
            |pos: usize| f16::from_bits(u16::from_le_bytes([bytes[pos], bytes[pos + 1]])).to_f32();
        let mut codes = Vec::new();
        match self.axis {
            KiviAxis::PerToken => {
                for _ in 0..rows {
                    for gs in self.row_group_sizes() {
                        let (mn, sc) = (half_at(pos), half_at(pos + 2));
                        pos += 4;
                        codes.resize(gs, 0);
                        let n = packed_len(gs, self.bits);
                        unpack_unchecked(&bytes[pos..pos + n], self.bits, &mut codes);
                        pos += n;
                        out.extend(codes.iter().map(|&q| mn + f32::from(q) * sc));
                    }
                }
            }
            KiviAxis::PerChannel => {
                for t0 in (0..rows).step_by(self.group) {
                    let nt = self.group.min(rows - t0);
                    let p: Vec<(f32, f32)> = (0..d)
                        .map(|c| (half_at(pos + 4 * c), half_at(pos + 4 * c + 2)))
                        .collect();
                    pos += 4 * d;
                    codes.resize(nt * d, 0);
                    let n = packed_len(nt * d, self.bits);
                    unpack_unchecked(&bytes[pos..pos + n], self.bits, &mut codes);
                    pos += n;
                    for row in codes.chunks_exact(d) {
                        out.extend(
                            row.iter()
                                .zip(&p)
                                .map(|(&q, &(mn, sc))| mn + f32::from(q) * sc),
                        );
                    }
                }
            }
        }
        Matrix::new(rows, d, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_exact_small_case() {
        // One row, one group of 4: min 0, scale 1 (2 bits), codes 0..3 exactly.
        let k = Kivi::values(4, 2, 4).unwrap();
        let m = Matrix::new(1, 4, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        let enc = k.encode(&m).unwrap();
        assert_eq!(enc.len(), 4 + 1);
        assert_eq!(&enc[..4], &[0x00, 0x00, 0x00, 0x3C]); // fp16 0.0, fp16 1.0
        assert_eq!(enc[4], 0b11_10_01_00);
        assert_eq!(k.decode(&enc, 1).unwrap(), m);
    }

    #[test]
    fn per_channel_groups_tokens() {
        let k = Kivi::keys(2, 2, 2).unwrap();
        // Channel 0 spans [0, 3] over tokens 0-1, channel 1 is constant 5; third row is its own group.
        let m = Matrix::new(3, 2, vec![0.0, 5.0, 3.0, 5.0, -1.0, 2.0]).unwrap();
        let enc = k.encode(&m).unwrap();
        assert_eq!(enc.len(), k.encoded_len(3));
        assert_eq!(enc.len(), (8 + 1) + (8 + 1));
        let dec = k.decode(&enc, 3).unwrap();
        assert_eq!(dec.data(), &[0.0, 5.0, 3.0, 5.0, -1.0, 2.0]);
        assert!((k.bits_per_value() - 18.0).abs() < 1e-12); // 2 + 32/2
    }

    #[test]
    fn value_bits_count_every_channel_group() {
        // 64 channels: one group of 64 for g64 and for g128 (a row has only 64), two for g32.
        for (g, bits) in [(32, 5.0), (64, 4.5), (128, 4.5)] {
            let v = Kivi::values(64, 4, g).unwrap();
            assert!((v.bits_per_value() - bits).abs() < 1e-12, "g{g}");
            assert_eq!(v.encoded_len(3) * 8, (bits * 64.0 * 3.0) as usize, "g{g}");
        }
        // 48 channels in groups of 32: a group of 32 and one of 16, two (min, scale) pairs.
        let v = Kivi::values(48, 2, 32).unwrap();
        assert!((v.bits_per_value() - (2.0 + 64.0 / 48.0)).abs() < 1e-12);
        assert_eq!(v.encoded_len(1), 4 + 8 + 4 + 4);
        // Keys: one pair per channel per token group.
        assert!((Kivi::keys(64, 4, 128).unwrap().bits_per_value() - 4.25).abs() < 1e-12);
    }

    #[test]
    fn round_trip_error_bounded_by_half_step() {
        let m = Matrix::new(
            40,
            48,
            (0..40 * 48)
                .map(|i| ((i * 37 % 101) as f32) * 0.1 - 5.0)
                .collect(),
        )
        .unwrap();
        for codec in [
            Kivi::keys(48, 2, 32).unwrap(),
            Kivi::values(48, 2, 32).unwrap(),
        ] {
            let r = codec.round_trip(&m).unwrap();
            let step = 10.0 / 3.0;
            for (a, b) in m.data().iter().zip(r.data()) {
                assert!(
                    (a - b).abs() <= step * 0.5 + 0.02,
                    "{} {a} {b}",
                    codec.name()
                );
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Kivi::keys(8, 0, 32).is_err());
        assert!(Kivi::keys(8, 2, 0).is_err());
        let k = Kivi::values(4, 2, 4).unwrap();
        assert!(k
            .encode(&Matrix::new(1, 4, vec![f32::NAN, 0.0, 0.0, 0.0]).unwrap())
            .is_err());
        assert!(k
            .encode(&Matrix::new(1, 4, vec![-1e5, 1e5, 0.0, 0.0]).unwrap())
            .is_err());
        assert!(k.decode(&[0u8; 3], 1).is_err());
    }
}
