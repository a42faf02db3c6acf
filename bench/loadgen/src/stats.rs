//! Clocks, percentiles and CPU/memory accounting for the generator and the
//! server under test.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator started, on the monotonic clock. Send
/// stamps carried in message content use this clock, so latency is measured
/// on one clock in one process.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn init_clock() {
    let _ = now_ns();
}

/// Percentile (nearest rank) of sorted nanoseconds, in milliseconds.
pub fn pct_ms(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[idx] as f64 / 1e6)
}

pub fn mean_ms(v: &[u64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    Some(v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6)
}

/// CPU seconds (user + system) this process has used, all threads.
pub fn self_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds (user + system) of another process, from /proc/PID/stat.
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 0 is state (stat field 3); utime/stime are 14/15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / if hz > 0.0 { hz } else { 100.0 })
}

/// A field in kB from /proc/PID/status (VmHWM = peak RSS, VmRSS = current).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Busy CPU seconds of the whole machine (all cores) from /proc/stat, so the
/// report can show how much CPU other processes took during the window.
pub fn machine_busy_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let busy = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(busy / if hz > 0.0 { hz } else { 100.0 })
}

/// Bytes written to whole disks so far (/proc/diskstats, sectors of 512
/// bytes; partitions and loop/ram devices skipped so nothing counts twice).
pub fn disk_written_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/diskstats").ok()?;
    let mut total = 0u64;
    for line in s.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = f.get(2) else { continue };
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        if !std::path::Path::new(&format!("/sys/block/{name}")).exists() {
            continue;
        }
        total += f.get(9).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) * 512;
    }
    Some(total)
}

/// Bytes a process caused to be written to storage (/proc/PID/io).
pub fn proc_written_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU seconds of a process and of each of its direct children (for
/// PostgreSQL: the postmaster and its backends), by PID. A backend that
/// starts during a window counts whole; one that exits in it is missed.
pub fn tree_cpu_s(pid: u32) -> Option<std::collections::HashMap<u32, f64>> {
    let mut out = std::collections::HashMap::new();
    out.insert(pid, proc_cpu_s(pid)?);
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // After ')': state, then the parent's PID.
        let ppid = s
            .rfind(')')
            .and_then(|i| s[i + 2..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            if let Some(cpu) = proc_cpu_s(child) {
                out.insert(child, cpu);
            }
        }
    }
    Some(out)
}
