//! Exec: a process joining a running container's namespaces and cgroup, through
//! `libcontainer`'s tenant builder. Runs in its own single-threaded `berth` process (the
//! hidden exec role), which waits for the command and exits with its code.
//!
//! The command runs as the container's own process does (its user, groups, capabilities,
//! environment and working directory), with the given arguments. With a console socket
//! (`BERTH_EXEC_CONSOLE`), it gets a terminal as `runc exec -t` gives one: a pty made inside
//! the container (on its devpts) whose master side is sent to that socket, and which is the
//! command's controlling terminal.

use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};

/// Set to a listening unix socket's path: the command gets a terminal whose master side is
/// sent there.
pub const CONSOLE_ENV: &str = "BERTH_EXEC_CONSOLE";

/// The container's process, with `argv` and a terminal or not, as a process.json for the
/// tenant builder.
fn process_file(
    pod_dir: &Path,
    name: &str,
    argv: &[String],
    terminal: bool,
) -> Result<std::path::PathBuf, String> {
    let cdir = pod_dir.join("containers").join(name);
    let config = cdir.join("bundle/config.json");
    let spec: serde_json::Value = std::fs::read(&config)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("cannot read {}", config.display()))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| format!("{} has no process", config.display()))?;
    process["args"] = serde_json::json!(argv);
    process["terminal"] = serde_json::json!(terminal);
    let path = cdir.join(format!("exec-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&process).unwrap_or_default())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Runs `argv` in container `name` of the pod in `pod_dir`, with this process's stdio (or a
/// terminal, see `CONSOLE_ENV`).
pub fn main(pod_dir: &Path, name: &str, argv: &[String]) -> i32 {
    if argv.is_empty() {
        eprintln!("error: give a command to run in the container");
        return 125;
    }
    let console = std::env::var_os(CONSOLE_ENV).map(std::path::PathBuf::from);
    let process = match process_file(pod_dir, name, argv, console.is_some()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot exec in {name}: {e}");
            return 126;
        }
    };
    let bundle = pod_dir.join("containers").join(name).join("bundle");
    let executor = match crate::seccomp::FilteredExecutor::for_bundle(&bundle) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot exec in {name}: {e}");
            return 126;
        }
    };
    let built = ContainerBuilder::new(name.to_string(), SyscallType::default())
        .with_executor(executor)
        .with_root_path(pod_dir.join("libcontainer"))
        .map(|b| b.with_console_socket(console.clone()))
        .and_then(|b| {
            b.as_tenant()
                .with_process(Some(&process))
                // A console socket goes with "detached" in libcontainer's terms; the process
                // is this one's child either way and is waited for below.
                .with_detach(console.is_some())
                .build()
        });
    let _ = std::fs::remove_file(&process);
    let pid = match built {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("error: cannot exec in {name}: {e}");
            return 126;
        }
    };
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("error: cannot wait for the command: {e}");
                return 125;
            }
        }
    }
}
