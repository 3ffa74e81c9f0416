//! CPU time of this process, shared by the `*_cpu_time` examples.

/// CPU time of every thread of this process, in nanoseconds (Linux `/proc` schedstat).
pub fn cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux /proc")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
