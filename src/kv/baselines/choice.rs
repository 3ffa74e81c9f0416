//! The baselines `kv-profile verify --compare` measures next to a profile, chosen at the
//! profile's bits (docs/kv-profile.md §9).

use anyhow::Result;

use super::super::codec::KvCodec;
use super::super::{KvProfile, KvRole};
use super::{q4_0, q8_0, turboquant, GgmlBlocks, Kivi};

/// A baseline: name, key codec, value codec.
pub type Baseline = (String, Box<dyn KvCodec>, Box<dyn KvCodec>);

/// KIVI's group sizes: its paper and code (jy-yuan/KIVI) run 32, 64 and 128.
pub const KIVI_GROUPS: [usize; 3] = [32, 64, 128];

/// Nominal bits per value of a key and a value codec over the roles `role` compresses.
pub fn pair_bits(role: KvRole, keys: &dyn KvCodec, values: &dyn KvCodec) -> f64 {
    match (role.keys(), role.values()) {
        (true, true) => (keys.bits_per_value() + values.bits_per_value()) / 2.0,
        (true, false) => keys.bits_per_value(),
        _ => values.bits_per_value(),
    }
}

/// KIVI with `bits` and group `group`: keys per channel over `group` tokens, values per
/// token over `group` channels (a whole row when the head has fewer, as on a 64-dim head
/// with group 128).
fn kivi(d: usize, bits: u32, group: usize) -> Result<Baseline> {
    Ok((
        format!("kivi-b{bits}-g{group}"),
        Box::new(Kivi::keys(d, bits, group)?),
        Box::new(Kivi::values(d, bits, group.min(d))?),
    ))
}

/// Baselines at the profile's bits: the TurboQuant-style codec and KIVI-2/3/4 with group
/// 32 at the fewest bits per value that are not below the profile's, q8_0 and q4_0 as
/// llama.cpp's quantized cache runs them (`-ctk q4_0 -ctv q4_0`: Hadamard-rotated heads,
/// [`GgmlBlocks::llama_cpp_rotation`]), then, when it is another one, the KIVI
/// configuration (bits 2..4, groups [`KIVI_GROUPS`]) with the fewest bits not below the
/// profile's. Bits are nominal over the roles the profile compresses ([`pair_bits`]). With
/// `key_order` (a model run), the ggml baselines' keys are first put in llama.cpp's channel
/// layout ([`crate::kv::weights::llama_cpp_key_order`]).
pub fn for_profile(profile: &KvProfile, key_order: Option<&[usize]>) -> Result<Vec<Baseline>> {
    let d = profile.shape.head_dim;
    let role = profile.shape.role;
    let target = profile.bits_per_value() - 1e-9;
    let seed = profile.codec.seed;
    let bits_of = |b: &Baseline| pair_bits(role, b.1.as_ref(), b.2.as_ref());
    let mut out: Vec<Baseline> = Vec::new();
    for b in 1..=8u32 {
        let k = turboquant(d, b, seed, None)?;
        if k.bits_per_value() >= target || b == 8 {
            out.push((
                format!("turboquant-b{b}"),
                Box::new(k),
                Box::new(turboquant(d, b, seed, None)?),
            ));
            break;
        }
    }
    for b in 2..=4u32 {
        let c = kivi(d, b, 32)?;
        if bits_of(&c) >= target || b == 4 {
            out.push(c);
            break;
        }
    }
    if d.is_multiple_of(32) {
        let keys = |c: GgmlBlocks| match key_order {
            Some(order) => Ok(c.with_order(order.to_vec())?.llama_cpp_rotation()),
            None => Ok::<_, anyhow::Error>(c.llama_cpp_rotation()),
        };
        out.push((
            "q8_0".into(),
            Box::new(keys(q8_0(d)?)?),
            Box::new(q8_0(d)?.llama_cpp_rotation()),
        ));
        out.push((
            "q4_0".into(),
            Box::new(keys(q4_0(d)?)?),
            Box::new(q4_0(d)?.llama_cpp_rotation()),
        ));
    }
    let mut nearest: Option<Baseline> = None;
    for b in 2..=4u32 {
        for g in KIVI_GROUPS {
            let c = kivi(d, b, g)?;
            let bits = bits_of(&c);
            if bits >= target && nearest.as_ref().is_none_or(|n| bits < bits_of(n)) {
                nearest = Some(c);
            }
        }
    }
    if let Some(c) = nearest.filter(|c| out.iter().all(|o| o.0 != c.0)) {
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::profile::{build_profile, RopeState};
    use crate::kv::{KvShape, ProfileSpec};

    /// A 64-dim profile of `block_dim` and `codebook_size` (2.25 bits at k4 N256, 4.25 at k2 N256).
    fn profile(block_dim: usize, codebook_size: usize, role: KvRole) -> KvProfile {
        let mut s = ProfileSpec::new(KvShape {
            layers: 1,
            kv_heads: 1,
            query_heads: 1,
            head_dim: 64,
            tokens: 64,
            role,
            rope: RopeState::PostRope,
            rope_theta: None,
        });
        s.codec.block_dim = block_dim;
        s.codec.codebook_size = codebook_size;
        s.codec.lloyd_iterations = Some(1);
        s.codec.training_blocks = Some(1024);
        build_profile(&s, None).unwrap()
    }

    fn rows(p: &KvProfile) -> Vec<(String, f64)> {
        for_profile(p, None)
            .unwrap()
            .iter()
            .map(|(n, k, v)| (n.clone(), pair_bits(p.shape.role, k.as_ref(), v.as_ref())))
            .collect()
    }

    #[test]
    fn kivi_is_compared_at_g32_and_at_the_nearest_group_from_above() {
        // 4.25 bits: KIVI-4 g32 (5.0) as before, then KIVI-4 g128, keys 4.25 and values in
        // one group of the head's 64 channels (4.5): 4.375, the fewest bits not below 4.25.
        let r = rows(&profile(2, 256, KvRole::Both));
        let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "turboquant-b4",
                "kivi-b4-g32",
                "q8_0",
                "q4_0",
                "kivi-b4-g128"
            ]
        );
        assert_eq!(r[0].1, 4.25);
        assert_eq!(r[1].1, 5.0);
        assert_eq!(r[4].1, 4.375);
        // 2.25 bits: KIVI-2 g32 (3.0), then KIVI-2 g128 (2.375).
        let r = rows(&profile(4, 256, KvRole::Both));
        assert_eq!(r[1], ("kivi-b2-g32".into(), 3.0));
        assert_eq!(r[4], ("kivi-b2-g128".into(), 2.375));
        // Keys only: KIVI-4 g128's keys alone are 4.25 bits, not below the profile's 4.25.
        let r = rows(&profile(2, 256, KvRole::Key));
        assert_eq!(r[4], ("kivi-b4-g128".into(), 4.25));
        // Values only: 4.5 bits for g64 and g128 alike; the smaller group is kept.
        let r = rows(&profile(2, 256, KvRole::Value));
        assert_eq!(r[4], ("kivi-b4-g64".into(), 4.5));
    }
}
