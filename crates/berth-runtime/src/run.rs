//! Running one container to completion through `libcontainer`. Must be called from a
//! single-threaded process (the `berth` shim role): `libcontainer` forks.

use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("container {id}: {message}")]
    Container { id: String, message: String },
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + the signal.
    pub fn as_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Creates, starts and waits for the container of the bundle in `bundle` (its `config.json`
/// and root), keeping libcontainer's state under `state_dir`; deletes it after.
pub fn run_to_exit(id: &str, bundle: &Path, state_dir: &Path) -> Result<Exit, RunError> {
    let err = |message: String| RunError::Container {
        id: id.to_string(),
        message,
    };
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_dir)
        .map_err(|e| err(e.to_string()))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(false)
        .build()
        .map_err(|e| err(format!("cannot create: {e}")))?;
    let started = container.start();
    let result = match started {
        Ok(()) => {
            let pid = container
                .pid()
                .ok_or_else(|| err("started without a pid".into()));
            match pid {
                Ok(pid) => loop {
                    match waitpid(pid, None) {
                        Ok(WaitStatus::Exited(_, code)) => break Ok(Exit::Code(code)),
                        Ok(WaitStatus::Signaled(_, sig, _)) => break Ok(Exit::Signal(sig as i32)),
                        Ok(_) => continue,
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => break Err(err(format!("cannot wait: {e}"))),
                    }
                },
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(err(format!("cannot start: {e}"))),
    };
    if let Err(e) = container.delete(true) {
        tracing::warn!(id, error = %e, "cannot delete the container");
    }
    result
}
