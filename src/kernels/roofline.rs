//! The ceilings kernel figures are compared with, measured in the same run: read
//! bandwidth from memory (a buffer larger than the last-level cache, all threads) and the
//! int8 multiply-accumulate peak (`vpdpbusd` chains on all threads). Also the process's
//! resident-memory counters, for the peak memory of each strategy.

use super::hugepage::HugeBuf;
use super::Isa;
use rayon::prelude::*;
use std::time::Instant;

/// Size of the last-level (L3) cache from sysfs; 32 MiB when unknown.
pub fn l3_cache_bytes() -> u64 {
    let base = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    (0..8)
        .filter_map(|i| {
            let dir = base.join(format!("index{i}"));
            (read(dir.join("level"))?.trim() == "3").then(|| read(dir.join("size")))?
        })
        .filter_map(|s| parse_cache_size(s.trim()))
        .max()
        .unwrap_or(32 << 20)
}

/// `"260M"`, `"266240K"`, `"1024"` -> bytes.
fn parse_cache_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mul)
}

/// Median of `samples` (sorted in place).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A buffer larger than the last-level cache, read whole by all threads of the current pool
/// for one bandwidth sample; the roofline's read bandwidth is the fastest of several passes (a
/// ceiling, as STREAM reports it). With AVX-512 the read is 256 bytes per step with software
/// prefetch, as the kernels read their weights; otherwise a plain summing loop.
pub struct ReadProbe {
    mem: HugeBuf,
    wide: bool,
}

impl ReadProbe {
    /// A probe over `bytes` (rounded down to 8) of non-zero data.
    pub fn new(bytes: usize) -> ReadProbe {
        // On huge pages where the system allows them, as the repacked weights are
        // ([`HugeBuf`]): with 4 KiB pages a stream pays a page walk every 4 KiB and reads
        // markedly slower, which is not the memory's ceiling.
        let mut mem = HugeBuf::zeroed(bytes / 8 * 8);
        mem.fill(1);
        #[cfg(target_arch = "x86_64")]
        let wide = Isa::available().contains(&Isa::Avx512Vnni);
        #[cfg(not(target_arch = "x86_64"))]
        let wide = false;
        ReadProbe { mem, wide }
    }

    /// Bytes one pass reads.
    pub fn bytes(&self) -> usize {
        self.mem.len()
    }

    /// One timed pass over the buffer, GB/s (10^9 bytes).
    pub fn pass_gbs(&self) -> f64 {
        // SAFETY: every bit pattern is a valid u64; the mapping is page aligned, so the
        // whole buffer is in the aligned middle part (checked).
        let (head, words, _) = unsafe { self.mem.align_to::<u64>() };
        assert!(head.is_empty(), "a mapping is page aligned");
        let wide = self.wide;
        let sum_chunk = |c: &[u64]| -> u64 {
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: AVX-512 F is part of `Avx512Vnni`, detected in `new`.
                return unsafe { sum_avx512(c) };
            }
            let _ = wide;
            c.iter().fold(0u64, |a, &b| a.wrapping_add(b))
        };
        let t0 = Instant::now();
        let sum = words
            .par_chunks(1 << 16)
            .map(sum_chunk)
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(sum);
        (words.len() * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9
    }
}

/// Wrapping sum of `c`, 256 bytes a step with a prefetch 2 KiB ahead.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_avx512(c: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 4];
    let steps = c.len() / 32;
    let p = c.as_ptr().cast::<u8>();
    for i in 0..steps {
        let q = p.add(256 * i);
        for (j, a) in acc.iter_mut().enumerate() {
            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(2048 + 64 * j).cast());
            *a = _mm512_add_epi64(*a, _mm512_loadu_si512(q.add(64 * j).cast()));
        }
    }
    let tail = c[steps * 32..].iter().fold(0u64, |a, &b| a.wrapping_add(b));
    acc.iter().fold(tail, |s, v| {
        s.wrapping_add(_mm512_reduce_add_epi64(*v) as u64)
    })
}

/// int8 multiply-accumulate peak in GOP/s (2 ops per multiply-add) on all threads of the
/// current pool, the best of `reps` passes after a warm-up pass; `None` where the ISA has
/// no int8 dot instruction.
///
/// Each pass starts every thread's `vpdpbusd` chains together (a barrier), times each
/// thread over its own CPU time ([`thread_cpu_secs`]) and adds up the threads' rates. A
/// pass timed from the caller instead counts the wake-up of the pool's threads and any
/// time a thread is preempted: on a shared or virtual machine a few-millisecond pass then
/// read anywhere from 75% to 100% of the peak between runs.
pub fn int8_peak_gops(isa: Isa, reps: usize) -> Option<f64> {
    match isa {
        Isa::Scalar | Isa::Avx2 => None,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            let threads = rayon::current_num_threads();
            let barrier = std::sync::Barrier::new(threads);
            let ops = (PEAK_ITERS * VNNI_CHAINS * 64 * 2) as f64;
            let pass = || -> f64 {
                let rates: Vec<f64> = rayon::broadcast(|_| {
                    barrier.wait();
                    let (cpu, wall) = (thread_cpu_secs(), Instant::now());
                    // SAFETY: `Avx512Vnni` is only available where the CPU supports it.
                    std::hint::black_box(unsafe { vnni_chain(PEAK_ITERS) });
                    let secs = match (cpu, thread_cpu_secs()) {
                        (Some(a), Some(b)) => b - a,
                        _ => wall.elapsed().as_secs_f64(),
                    };
                    ops / secs.max(1e-9)
                });
                rates.iter().sum::<f64>()
            };
            pass(); // warm-up: every thread running, the vector units at their clock
            let best = (0..reps.max(1)).map(|_| pass()).fold(0.0, f64::max);
            Some(best / 1e9)
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512Vnni => None,
    }
}

/// Iterations of the [`VNNI_CHAINS`] chains per thread and pass: about 12 ms at two
/// `vpdpbusd` a cycle and 4 GHz, long next to a clock tick's worth of timer granularity.
const PEAK_ITERS: usize = 8_000_000;

/// CPU time of the calling thread in seconds (`CLOCK_THREAD_CPUTIME_ID`; `None` off Unix).
pub fn thread_cpu_secs() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(unix))]
    None
}

/// Independent `vpdpbusd` chains: enough to cover the instruction's latency.
const VNNI_CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni_chain(iters: usize) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi8(3);
    let b = _mm512_set1_epi8(-2);
    let mut acc = [_mm512_setzero_si512(); VNNI_CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    acc.iter()
        .fold(0, |s, v| s.wrapping_add(_mm512_reduce_add_epi32(*v)))
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`); `None` off Linux.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resident set size now.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS")
}

/// Peak resident set size since start or the last [`reset_peak_rss`].
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

/// Resets the peak resident set size to the current one (Linux `clear_refs` 5).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("260M"), Some(260 << 20));
        assert_eq!(parse_cache_size("48K"), Some(48 << 10));
        assert_eq!(parse_cache_size("1024"), Some(1024));
        assert_eq!(parse_cache_size("x"), None);
        assert!(l3_cache_bytes() >= 1 << 20);
    }

    #[test]
    fn ceilings_are_positive_and_median_is_the_middle() {
        // 2 MiB: freed while the resident-memory test may run, within its 4 MiB slack.
        assert!(ReadProbe::new(2 << 20).pass_gbs() > 0.1);
        #[cfg(target_arch = "x86_64")]
        if Isa::available().contains(&Isa::Avx512Vnni) {
            let v: Vec<u64> = (0..1000).collect();
            // SAFETY: AVX-512 F is part of `Avx512Vnni`.
            assert_eq!(unsafe { sum_avx512(&v) }, 999 * 1000 / 2);
        }
        assert_eq!(int8_peak_gops(Isa::Scalar, 1), None);
        if Isa::available().contains(&Isa::Avx512Vnni) {
            assert!(int8_peak_gops(Isa::Avx512Vnni, 1).unwrap() > 1.0);
        }
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn thread_cpu_time_counts_work_not_sleep() {
        let Some(t0) = thread_cpu_secs() else {
            return; // not Unix
        };
        std::thread::sleep(std::time::Duration::from_millis(30));
        let slept = thread_cpu_secs().unwrap() - t0;
        let t1 = Instant::now();
        let mut x = 0u64;
        while t1.elapsed().as_millis() < 30 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spun = thread_cpu_secs().unwrap() - t0 - slept;
        assert!(slept < 0.02, "slept {slept}");
        assert!(spun > 0.001, "spun {spun}");
    }

    #[test]
    fn resident_memory_counters_see_a_large_allocation() {
        let (Some(before), true) = (rss_bytes(), reset_peak_rss()) else {
            return; // not Linux, or clear_refs is not writable here
        };
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        assert!(peak_rss_bytes().unwrap() >= before + (60 << 20));
    }
}
