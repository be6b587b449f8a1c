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
    /// What the container may do beyond Docker's defaults (or less).
    pub security: Security,
    /// Namespaces shared with the node instead of made for the container.
    pub host: HostNamespaces,
}

/// A container's securityContext, as the runtime applies it. The default is Docker's:
/// its capability set, its seccomp filter, masked /proc paths, and no_new_privs (stricter
/// than Docker, which leaves escalation allowed unless asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// All capabilities, no seccomp filter, nothing masked, /sys writable and the node's
    /// devices, as `docker run --privileged`.
    pub privileged: bool,
    /// Capabilities added to (then) the default set, by Kubernetes names (`NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities dropped from the default set (`ALL` drops every one).
    pub cap_drop: Vec<String>,
    /// Leaves no_new_privs off: setuid programs and file capabilities take effect.
    pub allow_privilege_escalation: bool,
    pub seccomp: Seccomp,
    /// /proc without its masked and read-only paths (`procMount: Unmasked`).
    pub unmasked_proc: bool,
    /// Extra group ids of the process (`supplementalGroups`).
    pub supplemental_groups: Vec<u32>,
    /// Namespaced sysctls set in the container's namespaces.
    pub sysctls: Vec<(String, String)>,
}

/// The seccomp filter a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// Docker's default profile (`seccomp_profile`).
    #[default]
    RuntimeDefault,
    /// No filter.
    Unconfined,
    /// A profile in the OCI `linux.seccomp` shape, read from the node.
    Profile(Value),
}

/// Which of the node's namespaces a container shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    /// The node's network and UTS namespaces (the runtime sets it from the pod).
    pub network: bool,
    pub pid: bool,
    pub ipc: bool,
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

/// Syscalls Docker's default seccomp profile allows a container with the default capability
/// set (its unconditional list, plus `chroot` for CAP_SYS_CHROOT and the ptrace family it
/// allows on kernels from 4.8). Everything not listed fails with EPERM: kernel modules,
/// clocks, mounts and namespaces (`mount`, `unshare`, `setns`), keyrings, reboot, swap, BPF,
/// perf. A few more are allowed only with safe arguments (see `seccomp_profile`).
pub const ALLOWED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// The CFS period the CPU quota is expressed against (100 ms, as Docker and Kubernetes use).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The namespace flags of clone(2) (CLONE_NEWNS excepted, which has its own bit outside this
/// mask in Docker's rule): a container may not make namespaces.
const CLONE_NAMESPACE_MASK: u64 = 0x7E02_0000;

/// Docker's default profile: deny by default (EPERM), allow the list, and allow `socket`
/// except for AF_VSOCK, `personality` for the harmless personas, `clone` without namespace
/// flags, and `clone3` answered ENOSYS so C libraries fall back to `clone`.
///
/// Architectures: x86_64 and i386, as Docker's. Docker also lists x32; berth leaves it out:
/// the kernels it targets are built without the x32 ABI (`CONFIG_X86_X32_ABI` is not set on
/// this kind of machine), and the third architecture nearly doubles the time libseccomp takes
/// to compile the filter for every container (15 → 28 ms measured here).
pub fn seccomp_profile() -> Value {
    let mut rules = vec![json!({"names": ALLOWED_SYSCALLS, "action": "SCMP_ACT_ALLOW"})];
    rules.push(json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}));
    for persona in [0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]}));
    }
    rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": CLONE_NAMESPACE_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
    rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": rules,
    })
}

/// Every capability the node itself may hold (its bounding set: the kernel's capabilities,
/// less any the node runs without), in `CAP_` form. A container cannot be given more.
pub fn all_capabilities() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(0);
    berth_api::validate::CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 64 && bounding & (1u64 << i) != 0)
        .map(|(_, c)| format!("CAP_{c}"))
        .collect()
}

impl Security {
    /// The capability set: Docker's default, less what is dropped, plus what is added.
    pub fn capabilities(&self) -> Vec<String> {
        if self.privileged {
            return all_capabilities();
        }
        let named = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|c| format!("CAP_{}", berth_api::podsecurity::capability_name(c)))
                .collect()
        };
        let (add, drop) = (named(&self.cap_add), named(&self.cap_drop));
        let mut caps: Vec<String> = if drop.iter().any(|c| c == "CAP_ALL") {
            Vec::new()
        } else {
            DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .filter(|c| !drop.contains(c))
                .collect()
        };
        if add.iter().any(|c| c == "CAP_ALL") {
            return all_capabilities();
        }
        for c in add {
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        caps
    }
}

/// The node's device nodes (under /dev, not its pseudo-terminal, shm or mqueue mounts), for
/// a privileged container, less those every container gets anyway.
fn host_devices() -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const OWN: &[&str] = &[
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/ptmx",
        "/dev/console",
    ];
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/dev")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            let shown = path.display().to_string();
            if ft.is_dir() {
                if !matches!(shown.as_str(), "/dev/pts" | "/dev/shm" | "/dev/mqueue") {
                    dirs.push(path);
                }
                continue;
            }
            let ty = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if OWN.contains(&shown.as_str()) {
                continue;
            }
            let rdev = md.rdev();
            out.push(json!({"path": shown, "type": ty,
                "major": libc::major(rdev), "minor": libc::minor(rdev),
                "fileMode": md.mode() & 0o777, "uid": md.uid(), "gid": md.gid()}));
        }
    }
    out
}

impl ContainerSpec {
    /// The `config.json` for a bundle whose root is `rootfs`.
    pub fn to_oci(&self, rootfs: &str) -> Value {
        let sec = &self.security;
        let caps = sec.capabilities();
        let mut resources = if sec.privileged {
            json!({"devices": [{"allow": true, "access": "rwm"}]})
        } else {
            json!({"devices": [{"allow": false, "access": "rwm"}]})
        };
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
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if sec.privileged { "rw" } else { "ro" }]}),
        ];
        for m in &self.mounts {
            let mode = if m.read_only { "ro" } else { "rw" };
            mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": ["rbind", "nosuid", "nodev", mode]}));
        }
        let mut namespaces = Vec::new();
        if !self.host.pid {
            namespaces.push(json!({"type": "pid"}));
        }
        if !self.host.network {
            namespaces.push(match &self.netns {
                Some(path) => json!({"type": "network", "path": path}),
                None => json!({"type": "network"}),
            });
        }
        if !self.host.ipc {
            namespaces.push(json!({"type": "ipc"}));
        }
        if !self.host.network {
            namespaces.push(json!({"type": "uts"}));
        }
        namespaces.push(json!({"type": "mount"}));
        // Unmasked /proc (and privileged) leave /proc whole; privileged also /sys.
        let proc_whole = sec.privileged || sec.unmasked_proc;
        let keep = |list: &[&str]| -> Vec<String> {
            list.iter()
                .filter(|p| !(proc_whole && p.starts_with("/proc/")))
                .filter(|_| !sec.privileged)
                .map(|p| p.to_string())
                .collect()
        };
        let mut user = json!({"uid": self.uid, "gid": self.gid});
        if !sec.supplemental_groups.is_empty() {
            user["additionalGids"] = json!(sec.supplemental_groups);
        }
        let mut v = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": user,
                "args": self.argv,
                "env": env,
                "cwd": if self.cwd.is_empty() { "/" } else { self.cwd.as_str() },
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            },
            "root": {"path": rootfs, "readonly": self.read_only_root},
            "mounts": mounts,
            "linux": {
                "namespaces": namespaces,
                "cgroupsPath": self.cgroup_path,
                "resources": resources,
                "maskedPaths": keep(MASKED_PATHS),
                "readonlyPaths": keep(READONLY_PATHS),
            },
        });
        // no_new_privs is left out rather than false: libcontainer loads a seccomp filter
        // before dropping capabilities (as it must without no_new_privs) only when the field
        // is absent.
        if !(sec.allow_privilege_escalation || sec.privileged) {
            v["process"]["noNewPrivileges"] = json!(true);
        }
        // The node's host name is not the container's to set.
        if !self.host.network {
            v["hostname"] = json!(self.hostname);
        }
        match &sec.seccomp {
            _ if sec.privileged => {}
            Seccomp::RuntimeDefault => v["linux"]["seccomp"] = seccomp_profile(),
            Seccomp::Unconfined => {}
            Seccomp::Profile(p) => v["linux"]["seccomp"] = p.clone(),
        }
        if sec.privileged {
            v["linux"]["devices"] = json!(host_devices());
        }
        if !sec.sysctls.is_empty() {
            let m: serde_json::Map<String, Value> = sec
                .sysctls
                .iter()
                .map(|(k, val)| (k.clone(), json!(val)))
                .collect();
            v["linux"]["sysctl"] = Value::Object(m);
        }
        v
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
        let allowed = v["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .unwrap();
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        for denied in [
            "unshare",
            "setns",
            "mount",
            "init_module",
            "reboot",
            "bpf",
            "keyctl",
        ] {
            assert!(!allowed.iter().any(|n| n == denied), "{denied}");
        }
        assert!(allowed.iter().any(|n| n == "read"));
        assert_eq!(v["process"]["env"][0], "A=1");
        let unlimited = ContainerSpec {
            argv: vec!["true".into()],
            ..Default::default()
        }
        .to_oci("r");
        assert!(unlimited["linux"]["resources"].get("memory").is_none());
        assert_eq!(unlimited["process"]["cwd"], "/");
    }

    #[test]
    fn security_settings_shape_the_spec() {
        let ns = |v: &Value| -> Vec<String> {
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["type"].as_str().unwrap().to_string())
                .collect()
        };
        let base = ContainerSpec {
            argv: vec!["true".into()],
            hostname: "p".into(),
            netns: Some("/run/netns/p".into()),
            ..Default::default()
        };
        let v = base.to_oci("r");
        assert_eq!(ns(&v), ["pid", "network", "ipc", "uts", "mount"]);
        assert_eq!(v["hostname"], "p");
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert!(v["linux"]["seccomp"].is_object());

        // The node's namespaces: none made, and the node's host name is left alone.
        let mut host = base.clone();
        host.host = HostNamespaces {
            network: true,
            pid: true,
            ipc: true,
        };
        let v = host.to_oci("r");
        assert_eq!(ns(&v), ["mount"]);
        assert!(v.get("hostname").is_none());

        // Privileged: the node's capabilities, no filter, nothing masked, devices open.
        let mut p = base.clone();
        p.security.privileged = true;
        let v = p.to_oci("r");
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            all_capabilities().len()
        );
        assert!(v["process"].get("noNewPrivileges").is_none());
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
        assert!(
            v["linux"]["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["path"] != "/dev/null")
        );
        // It is still a valid OCI spec.
        let _: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();

        // Unmasked /proc keeps /sys masked; drops and adds; sysctls; groups; profiles.
        let mut u = base.clone();
        u.security = Security {
            unmasked_proc: true,
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["net_bind_service".into()],
            sysctls: vec![("net.ipv4.tcp_syncookies".into(), "1".into())],
            supplemental_groups: vec![5, 6],
            seccomp: Seccomp::Profile(json!({"defaultAction": "SCMP_ACT_LOG"})),
            ..Default::default()
        };
        let v = u.to_oci("r");
        assert_eq!(
            v["linux"]["maskedPaths"],
            json!(["/sys/firmware", "/sys/devices/virtual/powercap"])
        );
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            json!(["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(v["linux"]["sysctl"]["net.ipv4.tcp_syncookies"], "1");
        assert_eq!(v["process"]["user"]["additionalGids"], json!([5, 6]));
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_LOG");
        let _: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
    }
}
