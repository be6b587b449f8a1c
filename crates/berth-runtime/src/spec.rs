//! The OCI runtime spec (`config.json`) of a container: Docker's defaults for isolation
//! (namespaces, capabilities, masked and read-only paths, a seccomp filter, no_new_privs) plus
//! what the caller asks (process, hostname, limits, a read-only root).

use serde_json::{Value, json};

/// What a container should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub read_only_root: bool,
    /// Bytes; 0 = no limit.
    pub memory_limit: u64,
    /// Thousandths of a CPU (limits.cpu); 0 = no quota.
    pub cpu_limit_millis: u64,
    /// Thousandths of a CPU (requests.cpu), for shares; 0 = the default weight.
    pub cpu_request_millis: u64,
    /// Processes; 0 = no limit.
    pub pids_limit: i64,
    /// The cgroup path (`/berth/<pod>/<container>`).
    pub cgroup_path: String,
    /// The pod's network namespace to join; none = a new, empty one.
    pub netns: Option<String>,
    /// Volumes and files bound into the container.
    pub mounts: Vec<Mount>,
}

/// A bind mount into a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Where in the container.
    pub destination: String,
    /// What on the host.
    pub source: String,
    pub read_only: bool,
}

/// Docker's default capability set: nothing more unless asked.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from containers, as Docker hides them.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths containers may read but not write, as Docker sets them.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls Docker's default profile refuses to a container without extra capabilities:
/// kernel modules, clocks, mounts and namespaces, tracing, keyrings, reboot, swap, BPF, perf.
/// Everything else is allowed; these fail with EPERM.
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The CFS period the CPU quota is expressed against (100 ms, as Docker and Kubernetes use).
pub const CPU_PERIOD_US: u64 = 100_000;

impl ContainerSpec {
    /// The `config.json` for a bundle whose root is `rootfs`.
    pub fn to_oci(&self, rootfs: &str) -> Value {
        let caps = DEFAULT_CAPABILITIES;
        let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
        if self.memory_limit > 0 {
            resources["memory"] = json!({"limit": self.memory_limit, "swap": self.memory_limit});
        }
        let mut cpu = serde_json::Map::new();
        if self.cpu_limit_millis > 0 {
            cpu.insert(
                "quota".into(),
                json!((self.cpu_limit_millis * CPU_PERIOD_US / 1000).max(1000)),
            );
            cpu.insert("period".into(), json!(CPU_PERIOD_US));
        }
        if self.cpu_request_millis > 0 {
            // Kubernetes' conversion: 1 CPU = 1024 shares, at least 2.
            cpu.insert(
                "shares".into(),
                json!((self.cpu_request_millis * 1024 / 1000).max(2)),
            );
        }
        if !cpu.is_empty() {
            resources["cpu"] = Value::Object(cpu);
        }
        if self.pids_limit > 0 {
            resources["pids"] = json!({"limit": self.pids_limit});
        }
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        ];
        for m in &self.mounts {
            let mode = if m.read_only { "ro" } else { "rw" };
            mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": ["rbind", "nosuid", "nodev", mode]}));
        }
        let network = match &self.netns {
            Some(path) => json!({"type": "network", "path": path}),
            None => json!({"type": "network"}),
        };
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": self.uid, "gid": self.gid},
                "args": self.argv,
                "env": env,
                "cwd": if self.cwd.is_empty() { "/" } else { self.cwd.as_str() },
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": true,
            },
            "root": {"path": rootfs, "readonly": self.read_only_root},
            "hostname": self.hostname,
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": "pid"}, network, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "cgroupsPath": self.cgroup_path,
                "resources": resources,
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
                "seccomp": {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                    "syscalls": [{"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_and_requested_limits() {
        let s = ContainerSpec {
            argv: vec!["/bin/sh".into()],
            env: vec![("A".into(), "1".into())],
            hostname: "web-1".into(),
            memory_limit: 64 << 20,
            cpu_limit_millis: 500,
            cpu_request_millis: 250,
            pids_limit: 100,
            read_only_root: true,
            cgroup_path: "/berth/p/c".into(),
            ..Default::default()
        };
        let v = s.to_oci("rootfs");
        // It is a valid OCI runtime spec.
        let spec: oci_spec::runtime::Spec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("web-1"));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 100);
        assert!(
            v["linux"]["seccomp"]["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "unshare")
        );
        assert_eq!(v["process"]["env"][0], "A=1");
        let unlimited = ContainerSpec {
            argv: vec!["true".into()],
            ..Default::default()
        }
        .to_oci("r");
        assert!(unlimited["linux"]["resources"].get("memory").is_none());
        assert_eq!(unlimited["process"]["cwd"], "/");
    }
}
