//! Exec: a process joining a running container's namespaces and cgroup, through
//! `libcontainer`'s tenant builder. Runs in its own single-threaded `berth` process (the
//! hidden exec role), which waits for the command and exits with its code.

use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};

/// Runs `argv` in container `name` of the pod in `pod_dir`, with this process's stdio.
pub fn main(pod_dir: &Path, name: &str, argv: &[String]) -> i32 {
    if argv.is_empty() {
        eprintln!("error: give a command to run in the container");
        return 125;
    }
    let built = ContainerBuilder::new(name.to_string(), SyscallType::default())
        .with_root_path(pod_dir.join("libcontainer"))
        .and_then(|b| {
            b.as_tenant()
                .with_container_args(argv.to_vec())
                .with_detach(false)
                .build()
        });
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
