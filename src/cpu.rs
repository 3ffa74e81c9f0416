//! The CPU features the kernels may use: detected once, one enum of levels, one override.
//!
//! Every SIMD kernel family (the ggml codecs, bitsandbytes NF4/FP4, the KV codeword search
//! and rotation, the bench-gemm dot kernels) asks [`level`] which instruction set to run.
//! The answer is, in order of precedence:
//! 1. a level set for the calling thread with [`with_level`] (tests and benchmarks compare
//!    the levels this way; it never leaks into other threads, so tests can run in parallel);
//! 2. the process-wide level set once by [`configure`] from `--isa` or `QFORGE_ISA`
//!    (inherited by worker threads, because it is process-wide);
//! 3. the best level this CPU supports ([`Level::best`]).
//!
//! Output bytes are the same at every level (the kernels are bit-exact with the scalar
//! code, except bench-gemm's dot kernels, which are checked against an f64 reference).

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use anyhow::Result;

/// An instruction-set level, ordered from the most portable to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable Rust, no SIMD intrinsics.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// x86-64 AVX-512F on top of [`Level::Avx2`]; kernels that also need BW/DQ/VNNI
    /// (bench-gemm's dot kernels) check [`Features::avx512_vnni`] and otherwise run AVX2.
    Avx512,
}

impl Level {
    /// Every level, scalar first.
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    /// Lower-case name as `--isa` and `QFORGE_ISA` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parses a name (case-insensitive); `None` for an unknown one.
    pub fn from_name(name: &str) -> Option<Level> {
        Self::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        let f = features();
        match self {
            Level::Scalar => true,
            Level::Avx2 => f.avx2 && f.fma && f.f16c,
            Level::Avx512 => f.avx2 && f.fma && f.f16c && f.avx512f,
        }
    }

    /// The best level this CPU supports (found once).
    pub fn best() -> Level {
        static BEST: OnceLock<Level> = OnceLock::new();
        *BEST.get_or_init(|| {
            Level::ALL
                .into_iter()
                .rfind(|l| l.is_supported())
                .unwrap_or(Level::Scalar)
        })
    }

    /// Every level this CPU supports, scalar first.
    pub fn supported() -> Vec<Level> {
        Self::ALL.into_iter().filter(|l| l.is_supported()).collect()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The x86-64 features the kernels use (all false elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// AVX2.
    pub avx2: bool,
    /// FMA3.
    pub fma: bool,
    /// F16C (half <-> single conversions).
    pub f16c: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 byte and word instructions.
    pub avx512bw: bool,
    /// AVX-512 doubleword and quadword instructions.
    pub avx512dq: bool,
    /// AVX-512 vector neural network instructions (`vpdpbusd`, `vpdpwssd`).
    pub avx512vnni: bool,
    /// Galois-field instructions (`vgf2p8affineqb`: the Q4_K tile kernel takes the high
    /// nibbles of 64 bytes with one).
    pub gfni: bool,
}

impl Features {
    fn detect() -> Features {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Features {
                avx2: has!("avx2"),
                fma: has!("fma"),
                f16c: has!("f16c"),
                avx512f: has!("avx512f"),
                avx512bw: has!("avx512bw"),
                avx512dq: has!("avx512dq"),
                avx512vnni: has!("avx512vnni"),
                gfni: has!("gfni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Features::default()
    }

    /// AVX-512 F/BW/DQ with VNNI, plus AVX2, FMA and F16C: what the VNNI dot kernels need.
    pub fn avx512_vnni(&self) -> bool {
        self.avx2
            && self.fma
            && self.f16c
            && self.avx512f
            && self.avx512bw
            && self.avx512dq
            && self.avx512vnni
    }
}

/// The features of this CPU, detected on first use.
pub fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(Features::detect)
}

/// The process-wide level set by [`configure`].
static PROCESS: OnceLock<Level> = OnceLock::new();

thread_local! {
    /// The calling thread's level set by [`with_level`].
    static SCOPED: Cell<Option<Level>> = const { Cell::new(None) };
}

/// The level the kernels use on the calling thread (see the module documentation).
#[inline]
pub fn level() -> Level {
    SCOPED
        .with(Cell::get)
        .or_else(|| PROCESS.get().copied())
        .unwrap_or_else(Level::best)
}

/// Runs `f` with the kernels of the calling thread at `level`, then restores the previous
/// level (also when `f` panics). Fails (exit 2) when this CPU lacks the level.
pub fn with_level<R>(level: Level, f: impl FnOnce() -> R) -> Result<R> {
    if !level.is_supported() {
        crate::bail_invalid!("{}", unsupported(level));
    }
    struct Restore(Option<Level>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SCOPED.with(|s| s.replace(Some(level))));
    Ok(f())
}

/// Sets the process-wide level from `--isa` (`requested`; `None` is `auto`) or, when that
/// is auto, the `QFORGE_ISA` environment variable (`auto`, `avx512`, `avx2`, `scalar`).
/// A level this CPU lacks, or an unknown `QFORGE_ISA`, is an exit-2 error. Returns the level
/// the kernels will use. The first call decides; later calls must agree.
pub fn configure(requested: Option<Level>) -> Result<Level> {
    let from_env = match std::env::var("QFORGE_ISA") {
        Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("auto") => None,
        Ok(v) => match Level::from_name(&v) {
            Some(l) => Some(l),
            None => crate::bail_invalid!("QFORGE_ISA={v:?}: expected auto, avx512, avx2 or scalar"),
        },
        Err(_) => None,
    };
    let level = match requested.or(from_env) {
        Some(l) if !l.is_supported() => crate::bail_invalid!("{}", unsupported(l)),
        Some(l) => l,
        None => Level::best(),
    };
    let set = *PROCESS.get_or_init(|| level);
    if set != level {
        anyhow::bail!("the instruction-set level is already set to {set}");
    }
    Ok(level)
}

fn unsupported(level: Level) -> String {
    format!(
        "instruction set {level} is not supported by this CPU (supported: {})",
        Level::supported()
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_is_always_supported() {
        for l in Level::ALL {
            assert_eq!(Level::from_name(&l.name().to_uppercase()), Some(l));
        }
        assert_eq!(Level::from_name("sse"), None);
        assert!(Level::Scalar.is_supported());
        assert_eq!(Level::supported()[0], Level::Scalar);
        assert!(Level::best().is_supported());
    }

    #[test]
    fn with_level_is_scoped_to_the_thread_and_restored() {
        let outer = level();
        let inner = with_level(Level::Scalar, || {
            let other = std::thread::spawn(level).join().unwrap();
            (level(), other)
        })
        .unwrap();
        assert_eq!(inner.0, Level::Scalar);
        assert_eq!(inner.1, outer, "another thread keeps its level");
        assert_eq!(level(), outer);
        let caught = std::panic::catch_unwind(|| {
            with_level(Level::Scalar, || panic!("boom")).unwrap();
        });
        assert!(caught.is_err());
        assert_eq!(level(), outer, "restored after a panic");
    }

    #[test]
    fn unsupported_levels_are_refused() {
        for l in Level::ALL.into_iter().filter(|l| !l.is_supported()) {
            let err = with_level(l, || ()).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2);
        }
    }
}
