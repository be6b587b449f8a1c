//! Resource usage read from cgroups (v1 and v2) and /proc, as kubelet's summary API reports
//! it: cumulative CPU time, and the memory working set (usage less inactive file pages, what
//! the kernel would not reclaim first).

use std::path::Path;

use crate::pod::cgroup_dirs;

/// Usage at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, ns.
    pub cpu_ns: Option<u64>,
    /// Memory working set, bytes.
    pub memory_working_set: Option<u64>,
    /// Memory in use, bytes (page cache included).
    pub memory_usage: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The usage of a cgroup (a pod's, or a container's), from whichever hierarchy has it.
pub fn cgroup(path: &str) -> Usage {
    let mut u = Usage::default();
    for d in cgroup_dirs(path) {
        if u.cpu_ns.is_none() {
            u.cpu_ns = read_u64(&d.join("cpuacct.usage"))
                .or_else(|| stat_field(&d.join("cpu.stat"), "usage_usec").map(|us| us * 1000));
        }
        if u.memory_usage.is_none() {
            // v1 names the inactive file pages of the whole subtree `total_inactive_file`,
            // v2 `inactive_file`.
            let v1 = read_u64(&d.join("memory.usage_in_bytes"))
                .map(|b| (b, stat_field(&d.join("memory.stat"), "total_inactive_file")));
            let v2 = || {
                read_u64(&d.join("memory.current"))
                    .map(|b| (b, stat_field(&d.join("memory.stat"), "inactive_file")))
            };
            if let Some((usage, inactive)) = v1.or_else(v2) {
                u.memory_usage = Some(usage);
                u.memory_working_set = Some(usage.saturating_sub(inactive.unwrap_or(0)));
            }
        }
    }
    u
}

/// The whole machine's usage: CPU from /proc/stat (busy time of all CPUs), memory as
/// MemTotal less MemAvailable.
pub fn node() -> Usage {
    let hz = 100u64; // USER_HZ: 100 on every Linux this runs on.
    let cpu_ns = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        let busy: u64 = f
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| *v)
            .sum();
        Some(busy * (1_000_000_000 / hz))
    });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            l.strip_prefix(key)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
    };
    let used = match (kib("MemTotal"), kib("MemAvailable")) {
        (Some(t), Some(a)) => Some(t.saturating_sub(a) * 1024),
        _ => None,
    };
    Usage {
        cpu_ns,
        memory_working_set: used,
        memory_usage: used,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machine_has_usage() {
        let n = super::node();
        assert!(n.cpu_ns.unwrap() > 0);
        assert!(n.memory_working_set.unwrap() > 0);
        let missing = super::cgroup("/berth-no-such-cgroup");
        assert_eq!(missing, super::Usage::default());
    }
}
