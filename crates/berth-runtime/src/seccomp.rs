//! Seccomp filters compiled once per profile. libseccomp takes about 15 ms to turn Docker's
//! default profile into BPF; libcontainer would do it in every container's init process. Here
//! the agent compiles each distinct profile once (a process-wide cache keyed by the profile),
//! writes the program beside the container's `config.json` as `seccomp.bpf`, and the
//! container's last step before `execve` (an [`Executor`] in the shim and the exec role) loads
//! it with `seccomp(SECCOMP_SET_MODE_FILTER)`.
//!
//! Invariant: a container whose profile is taken out of its `config.json` always has its
//! `seccomp.bpf`, and the executor refuses to start the workload when the program cannot be
//! loaded, so no container runs unfiltered by accident. Profiles this code does not translate
//! (a notify action, filter flags) stay in `config.json` for libcontainer, as before; so do
//! containers without `noNewPrivileges`, whose filter must be loaded while they still hold
//! CAP_SYS_ADMIN.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use libcontainer::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec,
};
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde_json::Value;

/// The file beside `config.json` that holds a container's compiled filter.
pub const BPF_FILE: &str = "seccomp.bpf";

/// The compiled programs of this process, by profile.
fn cache() -> &'static Mutex<HashMap<String, Arc<Vec<u8>>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Takes the seccomp profile out of an OCI `config` and writes its compiled program into
/// `bundle`, when the container sets `noNewPrivileges` and the profile is one this code
/// translates. Otherwise `config` is left as it is, for libcontainer to apply.
pub fn precompile(config: &mut Value, bundle: &Path) -> Result<(), String> {
    if config.pointer("/process/noNewPrivileges") != Some(&Value::Bool(true)) {
        return Ok(());
    }
    let Some(profile) = config.pointer("/linux/seccomp").filter(|p| !p.is_null()) else {
        return Ok(());
    };
    let key = profile.to_string();
    let cached = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let bpf = match cached {
        Some(b) => b,
        None => {
            let parsed: LinuxSeccomp = serde_json::from_value(profile.clone())
                .map_err(|e| format!("the seccomp profile: {e}"))?;
            let Some(bpf) = compile(&parsed)? else {
                return Ok(());
            };
            let bpf = Arc::new(bpf);
            cache()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, bpf.clone());
            bpf
        }
    };
    let path = bundle.join(BPF_FILE);
    std::fs::write(&path, bpf.as_slice())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if let Some(linux) = config.get_mut("linux").and_then(Value::as_object_mut) {
        linux.remove("seccomp");
    }
    Ok(())
}

fn err(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> String + '_ {
    move |e| format!("seccomp {what}: {e}")
}

/// The BPF program of `profile`, or `None` when it uses what only libcontainer handles.
fn compile(profile: &LinuxSeccomp) -> Result<Option<Vec<u8>>, String> {
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) || profile.listener_path().is_some()
    {
        return Ok(None);
    }
    let default = match action(profile.default_action(), profile.default_errno_ret()) {
        Some(a) => a,
        None => return Ok(None),
    };
    let mut ctx = ScmpFilterContext::new(default).map_err(err("filter"))?;
    // As libcontainer: the no_new_privs bit is the spec's business, not the filter's.
    ctx.set_ctl_nnp(false).map_err(err("nnp"))?;
    for arch in profile.architectures().iter().flatten() {
        let a = match arch {
            Arch::ScmpArchX86_64 => ScmpArch::X8664,
            Arch::ScmpArchX86 => ScmpArch::X86,
            Arch::ScmpArchX32 => ScmpArch::X32,
            Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
            Arch::ScmpArchArm => ScmpArch::Arm,
            _ => return Ok(None),
        };
        ctx.add_arch(a).map_err(err("architecture"))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let Some(act) = action(rule.action(), rule.errno_ret()) else {
            return Ok(None);
        };
        if act == default {
            continue;
        }
        let args: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value()))
            .collect();
        let mut indexes: Vec<u32> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            // A name this kernel's libseccomp does not know cannot be called either.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if args.is_empty() {
                ctx.add_rule(act, sc).map_err(err(name))?;
            } else if repeated {
                // One comparison per argument and rule (as runc): each its own rule.
                for a in &args {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(a))
                        .map_err(err(name))?;
                }
            } else {
                ctx.add_rule_conditional(act, sc, &args)
                    .map_err(err(name))?;
            }
        }
    }
    // libseccomp exports to a descriptor: a memory file, read back.
    let fd = rustix::fs::memfd_create("seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| format!("memfd: {e}"))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(err("export"))?;
    let mut bpf = Vec::new();
    std::io::Seek::rewind(&mut file).map_err(|e| format!("seccomp export: {e}"))?;
    std::io::Read::read_to_end(&mut file, &mut bpf).map_err(|e| format!("seccomp export: {e}"))?;
    Ok(Some(bpf))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Option<ScmpAction> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Some(match a {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno).ok()?),
        LinuxSeccompAction::ScmpActNotify => return None,
    })
}

fn op(o: LinuxSeccompOperator, two: Option<u64>) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(two.unwrap_or(0)),
    }
}

/// Loads a compiled program into the calling thread (and its future children).
#[allow(unsafe_code)] // seccomp(2): neither nix nor rustix wraps SECCOMP_SET_MODE_FILTER.
fn load(bpf: &[u8]) -> std::io::Result<()> {
    if bpf.is_empty() || !bpf.len().is_multiple_of(8) || bpf.len() / 8 > u16::MAX as usize {
        return Err(std::io::Error::other("not a BPF program"));
    }
    let prog = libc::sock_fprog {
        len: (bpf.len() / 8) as u16,
        filter: bpf.as_ptr() as *mut libc::sock_filter,
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: `prog` points at `bpf`, which outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// libcontainer's default executor, after loading the bundle's compiled filter (if it has
/// one) as the very last step before `execve`.
#[derive(Clone)]
pub struct FilteredExecutor {
    bpf: Option<Arc<Vec<u8>>>,
}

impl FilteredExecutor {
    /// The executor for the container whose bundle is `bundle`; reads its program now, in
    /// the parent, so the container's init has nothing to read.
    pub fn for_bundle(bundle: &Path) -> Result<FilteredExecutor, String> {
        let path = bundle.join(BPF_FILE);
        match std::fs::read(&path) {
            Ok(b) => Ok(FilteredExecutor {
                bpf: Some(Arc::new(b)),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(FilteredExecutor { bpf: None })
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

impl Executor for FilteredExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(bpf) = &self.bpf {
            load(bpf).map_err(|e| {
                ExecutorError::Other(format!("cannot load the seccomp filter: {e}"))
            })?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_profile_compiles_once_and_leaves_config_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = serde_json::json!({
            "process": {"noNewPrivileges": true},
            "linux": {"seccomp": crate::spec::seccomp_profile()},
        });
        precompile(&mut config, dir.path()).unwrap();
        assert!(config.pointer("/linux/seccomp").is_none());
        let bpf = std::fs::read(dir.path().join(BPF_FILE)).unwrap();
        assert!(bpf.len() > 8 && bpf.len().is_multiple_of(8));
        // The second container of the same profile takes the cached program.
        let other = tempfile::tempdir().unwrap();
        let mut again = serde_json::json!({
            "process": {"noNewPrivileges": true},
            "linux": {"seccomp": crate::spec::seccomp_profile()},
        });
        let key = crate::spec::seccomp_profile().to_string();
        assert!(cache().lock().unwrap().contains_key(&key));
        precompile(&mut again, other.path()).unwrap();
        assert_eq!(std::fs::read(other.path().join(BPF_FILE)).unwrap(), bpf);
        // Without no_new_privs the profile stays for libcontainer.
        let mut keep = serde_json::json!({
            "process": {"noNewPrivileges": false},
            "linux": {"seccomp": crate::spec::seccomp_profile()},
        });
        let third = tempfile::tempdir().unwrap();
        precompile(&mut keep, third.path()).unwrap();
        assert!(keep.pointer("/linux/seccomp").is_some());
        assert!(!third.path().join(BPF_FILE).exists());
    }

    #[test]
    #[allow(unsafe_code)] // a forked child that only makes syscalls, then _exit
    fn a_loaded_program_filters_a_child() {
        let mut config = serde_json::json!({
            "process": {"noNewPrivileges": true},
            "linux": {"seccomp": crate::spec::seccomp_profile()},
        });
        let dir = tempfile::tempdir().unwrap();
        precompile(&mut config, dir.path()).unwrap();
        let bpf = std::fs::read(dir.path().join(BPF_FILE)).unwrap();
        // In a forked child: load, then try what Docker's profile forbids (unshare of a
        // user namespace, keyctl).
        // SAFETY: the child only makes syscalls and exits.
        match unsafe { libc::fork() } {
            0 => {
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let ok = load(&bpf).is_ok()
                    && unsafe { libc::unshare(libc::CLONE_NEWUSER) } == -1
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
                    && unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) } == -1
                    && unsafe { libc::getpid() } > 0;
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "{status}"
                );
            }
        }
        assert!(load(&[1, 2, 3]).is_err());
    }
}
