//! The per-pod shim: a small single-threaded process that creates the pod's containers
//! through `libcontainer`, is their parent and subreaper, writes their output to log files,
//! records how they ended (exit code, signal, time, `OOMKilled`), and answers requests on a
//! unix socket in the pod's directory. It outlives whoever started it, so a restarted node
//! finds its containers still running and adopts them.
//!
//! Protocol: one JSON request per connection, one JSON response line (a `Wait` is answered
//! when the container has exited).
//!
//! Invariants:
//! - The shim never starts a thread: `libcontainer` forks, and forking a threaded process is
//!   unsound.
//! - A container's state file is replaced atomically after every change, so a reader sees
//!   the old state or the new one.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setsid};
use serde::{Deserialize, Serialize};

use crate::logs::{LineSplitter, LogWriter, Stream};

/// The socket's file name in the pod directory.
pub const SOCKET: &str = "shim.sock";
/// How long the shim waits, idle, before it gives back the code pages it ran.
const IDLE_BEFORE_TRIM: Duration = Duration::from_millis(500);

/// The shim's pid file in the pod directory.
pub const PID_FILE: &str = "shim.pid";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Creates a container from a bundle; its output goes to `log`.
    Create {
        name: String,
        bundle: PathBuf,
        log: PathBuf,
        cgroup: String,
    },
    Start {
        name: String,
    },
    Kill {
        name: String,
        signal: i32,
    },
    /// Every container's state.
    State,
    /// Answered once the container has exited.
    Wait {
        name: String,
    },
    /// Removes an exited container (its cgroup and runtime state).
    Delete {
        name: String,
    },
    /// Ends the shim once it has no containers.
    Shutdown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Ok,
    States(Vec<ContainerState>),
    State(ContainerState),
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// What the shim knows of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub name: String,
    pub status: Status,
    pub pid: Option<i32>,
    /// The shell convention: the code, or 128 + the signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `Completed`, `Error` or `OOMKilled` once exited.
    pub reason: Option<String>,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub log: PathBuf,
    pub cgroup: String,
}

/// Sends one request to the shim of the pod in `pod_dir`.
pub fn call(pod_dir: &Path, req: &Request, timeout: Option<Duration>) -> std::io::Result<Response> {
    let mut s = UnixStream::connect(pod_dir.join(SOCKET))?;
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the shim closed the connection",
        ));
    }
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

/// Reads the oom-kill count of a cgroup, on cgroup v1 or v2.
pub fn oom_kills(cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    let candidates = [
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill ",
        ),
        (
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            "oom_kill ",
        ),
    ];
    for (path, key) in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

struct Output {
    fd: OwnedFd,
    stream: Stream,
    split: LineSplitter,
    open: bool,
}

struct Managed {
    state: ContainerState,
    container: Container,
    outputs: Vec<Output>,
    log: Option<LogWriter>,
    /// Set when the init process has been reaped; the state turns Exited once its output is
    /// drained (or after a short deadline, if something else holds the pipe).
    reaped: Option<(WaitStatus, Instant)>,
    waiters: Vec<UnixStream>,
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

#[allow(unsafe_code)]
extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the byte only wakes the poll loop.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
    }
}

fn set_nonblocking(fd: &impl AsRawFd) {
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

struct Shim {
    dir: PathBuf,
    containers: HashMap<String, Managed>,
    shutting_down: bool,
}

impl Shim {
    fn state_path(&self, name: &str) -> PathBuf {
        self.dir.join("containers").join(name).join("state.json")
    }

    fn save(&self, name: &str) {
        if let Some(m) = self.containers.get(name) {
            let path = self.state_path(name);
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Ok(bytes) = serde_json::to_vec_pretty(&m.state)
                && let Err(e) = write_atomic(&path, &bytes)
            {
                tracing::error!(error = %e, "cannot save the state of {name}");
            }
        }
    }

    fn create(
        &mut self,
        name: &str,
        bundle: &Path,
        log: &Path,
        cgroup: &str,
    ) -> Result<(), String> {
        if self.containers.contains_key(name) {
            return Err(format!(
                "a container named {name} exists in this pod; delete it first"
            ));
        }
        if self.shutting_down {
            return Err("the pod is shutting down".into());
        }
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        let devnull: OwnedFd = std::fs::File::open("/dev/null")
            .map_err(|e| e.to_string())?
            .into();
        set_nonblocking(&out_r);
        set_nonblocking(&err_r);
        let writer = LogWriter::open(log, 10 << 20, 5)
            .map_err(|e| format!("cannot open the log {}: {e}", log.display()))?;
        let root = self.dir.join("libcontainer");
        let executor = crate::seccomp::FilteredExecutor::for_bundle(bundle)?;
        let container = ContainerBuilder::new(name.to_string(), SyscallType::default())
            .with_executor(executor)
            .with_root_path(&root)
            .map_err(|e| e.to_string())?
            .with_stdin(devnull)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| format!("cannot create {name}: {e}"))?;
        let state = ContainerState {
            name: name.to_string(),
            status: Status::Created,
            pid: container.pid().map(|p| p.as_raw()),
            exit_code: None,
            signal: None,
            reason: None,
            created_at: berth_api::timefmt::now_nanos(),
            started_at: None,
            finished_at: None,
            log: log.to_path_buf(),
            cgroup: cgroup.to_string(),
        };
        self.containers.insert(
            name.to_string(),
            Managed {
                state,
                container,
                outputs: vec![
                    Output {
                        fd: out_r,
                        stream: Stream::Stdout,
                        split: LineSplitter::default(),
                        open: true,
                    },
                    Output {
                        fd: err_r,
                        stream: Stream::Stderr,
                        split: LineSplitter::default(),
                        open: true,
                    },
                ],
                log: Some(writer),
                reaped: None,
                waiters: Vec::new(),
            },
        );
        self.save(name);
        Ok(())
    }

    fn managed(&mut self, name: &str) -> Result<&mut Managed, String> {
        self.containers
            .get_mut(name)
            .ok_or_else(|| format!("no container named {name} in this pod"))
    }

    fn handle(&mut self, req: Request, conn: UnixStream) -> Option<(UnixStream, Response)> {
        let result = match req {
            Request::Create {
                name,
                bundle,
                log,
                cgroup,
            } => self
                .create(&name, &bundle, &log, &cgroup)
                .map(|_| Response::Ok),
            Request::Start { name } => self
                .managed(&name)
                .and_then(|m| {
                    if m.state.status != Status::Created {
                        return Err(format!("{name} was started already"));
                    }
                    m.container
                        .start()
                        .map_err(|e| format!("cannot start {name}: {e}"))?;
                    m.state.status = Status::Running;
                    m.state.started_at = Some(berth_api::timefmt::now_nanos());
                    Ok(Response::Ok)
                })
                .inspect(|_| self.save(&name)),
            Request::Kill { name, signal } => self.managed(&name).and_then(|m| {
                if m.state.status == Status::Exited || m.reaped.is_some() {
                    return Ok(Response::Ok);
                }
                let sig = Signal::try_from(signal).map_err(|e| format!("signal {signal}: {e}"))?;
                let pid = m
                    .state
                    .pid
                    .ok_or_else(|| format!("{name} has no process"))?;
                match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(Response::Ok),
                    Err(e) => Err(format!("cannot signal {name}: {e}")),
                }
            }),
            Request::State => {
                let mut all: Vec<ContainerState> =
                    self.containers.values().map(|m| m.state.clone()).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Response::States(all))
            }
            Request::Wait { name } => match self.managed(&name) {
                Ok(m) if m.state.status == Status::Exited => Ok(Response::State(m.state.clone())),
                Ok(m) => {
                    m.waiters.push(conn);
                    return None;
                }
                Err(e) => Err(e),
            },
            Request::Delete { name } => self
                .managed(&name)
                .and_then(|m| {
                    if m.state.status == Status::Running {
                        return Err(format!("{name} is running; stop it first"));
                    }
                    if m.state.status == Status::Created
                        && let Some(pid) = m.state.pid
                    {
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    if let Err(e) = m.container.delete(true) {
                        tracing::warn!(error = %e, "cannot delete {name}");
                    }
                    Ok(Response::Ok)
                })
                .inspect(|_| {
                    self.containers.remove(&name);
                    let _ = std::fs::remove_file(self.state_path(&name));
                }),
            Request::Shutdown => {
                self.shutting_down = true;
                Ok(Response::Ok)
            }
        };
        Some((conn, result.unwrap_or_else(Response::Error)))
    }

    fn exited_count(&self) -> usize {
        self.containers
            .values()
            .filter(|m| m.state.status == Status::Exited)
            .count()
    }

    /// Reaps every child that ended; marks the containers whose init it was.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        continue;
                    }
                    for m in self.containers.values_mut() {
                        if m.state.pid == Some(pid.as_raw()) && m.reaped.is_none() {
                            m.reaped = Some((status, Instant::now()));
                        }
                    }
                }
            }
        }
    }

    /// Turns reaped containers Exited once their output is drained.
    fn finish_exits(&mut self) {
        let mut done = Vec::new();
        for (name, m) in &mut self.containers {
            let Some((status, at)) = m.reaped else {
                continue;
            };
            if m.state.status == Status::Exited {
                continue;
            }
            let drained = m.outputs.iter().all(|o| !o.open);
            if !drained && at.elapsed() < Duration::from_millis(500) {
                continue;
            }
            drain_outputs(m, true);
            let (code, signal) = match status {
                WaitStatus::Exited(_, c) => (c, None),
                WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
                _ => (255, None),
            };
            m.state.status = Status::Exited;
            m.state.exit_code = Some(code);
            m.state.signal = signal;
            m.state.finished_at = Some(berth_api::timefmt::now_nanos());
            m.state.reason = Some(
                if signal == Some(libc::SIGKILL) && oom_kills(&m.state.cgroup) > 0 {
                    "OOMKilled"
                } else if code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string(),
            );
            m.log = None;
            done.push(name.clone());
        }
        for name in done {
            self.save(&name);
            if let Some(m) = self.containers.get_mut(&name) {
                let reply = Response::State(m.state.clone());
                for w in m.waiters.drain(..) {
                    respond(w, &reply);
                }
            }
        }
    }
}

/// Reads what each open output has; at `eof`, flushes unfinished lines.
fn drain_outputs(m: &mut Managed, eof: bool) {
    let mut buf = [0u8; 16 * 1024];
    for o in &mut m.outputs {
        while o.open {
            match nix::unistd::read(o.fd.as_raw_fd(), &mut buf) {
                Ok(0) => o.open = false,
                Ok(n) => {
                    let (stream, log) = (o.stream, &mut m.log);
                    o.split.feed(&buf[..n], |full, text| {
                        if let Some(w) = log {
                            let _ = w.record(stream, full, text);
                        }
                    });
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if eof || !o.open {
            o.open = false;
            let (stream, log) = (o.stream, &mut m.log);
            o.split.finish(|full, text| {
                if let Some(w) = log {
                    let _ = w.record(stream, full, text);
                }
            });
        }
    }
}

fn respond(mut conn: UnixStream, reply: &Response) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        let _ = conn.write_all(&line);
    }
}

/// Keeps the shim's resident code small. A shim lives as long as its pod and there is one per
/// pod, but between requests it runs only its poll loop; creating a container runs a lot of
/// the big `berth` binary (and the kernel maps 64 KiB around each page touched). So after
/// each burst of work the code mappings are dropped from its page tables: they are clean file
/// pages, shared in the page cache, and fault back in (cheaply, from memory) when used.
#[allow(unsafe_code)]
fn trim_code_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or("");
        if !perms.starts_with("r-x") || !path.starts_with('/') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        // SAFETY: dropping a read-only executable file mapping's pages changes neither its
        // contents nor its validity; they fault back in from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// The shim's entry point (`berth __shim POD_DIR`). Binds the socket, forks the daemon that
/// serves it, and returns in the parent once the daemon runs: the caller's `wait` then
/// returns, and the daemon belongs to no one's session.
#[allow(unsafe_code)]
pub fn main(pod_dir: &Path) -> i32 {
    let sock = pod_dir.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", sock.display());
            return 1;
        }
    };
    // SAFETY: the shim has no other threads (see the module invariant).
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("error: cannot fork the shim: {e}");
            1
        }
        Ok(ForkResult::Parent { .. }) => 0,
        Ok(ForkResult::Child) => {
            let _ = setsid();
            serve(pod_dir, listener);
            0
        }
    }
}

#[allow(unsafe_code)]
fn serve(pod_dir: &Path, listener: UnixListener) {
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    trim_code_pages();
    // The shim must not die with a terminal or a parent's process group.
    for s in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE] {
        // SAFETY: installing SIG_IGN has no handler code.
        unsafe {
            let _ = sigaction(
                s,
                &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()),
            );
        }
    }
    let Ok((sig_r, sig_w)) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) else {
        return;
    };
    SIGNAL_PIPE.store(sig_w.as_raw_fd(), Ordering::Relaxed);
    // SAFETY: the handler only calls write(2).
    unsafe {
        let _ = sigaction(
            Signal::SIGCHLD,
            &SigAction::new(
                SigHandler::Handler(on_sigchld),
                SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
                SigSet::empty(),
            ),
        );
    }
    let _ = std::fs::write(pod_dir.join(PID_FILE), std::process::id().to_string());
    let _ = listener.set_nonblocking(true);
    let mut shim = Shim {
        dir: pod_dir.to_path_buf(),
        containers: HashMap::new(),
        shutting_down: false,
    };
    let mut last_work = None;
    loop {
        let draining = shim
            .containers
            .values()
            .any(|m| m.reaped.is_some() && m.state.status != Status::Exited);
        let mut fds = vec![
            PollFd::new(sig_r.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        let mut owners = Vec::new();
        for (name, m) in &shim.containers {
            for (i, o) in m.outputs.iter().enumerate() {
                if o.open {
                    fds.push(PollFd::new(o.fd.as_fd(), PollFlags::POLLIN));
                    owners.push((name.clone(), i));
                }
            }
        }
        let timeout: u16 = if draining {
            20
        } else if last_work.is_some() {
            250
        } else {
            1000
        };
        let ready = poll(&mut fds, timeout).unwrap_or(0);
        let sig_ready = fds[0].any().unwrap_or(false);
        let conn_ready = fds[1].any().unwrap_or(false);
        let out_ready: Vec<bool> = fds[2..].iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if sig_ready {
            let mut b = [0u8; 64];
            while matches!(nix::unistd::read(sig_r.as_raw_fd(), &mut b), Ok(n) if n > 0) {}
        }
        // Reap on every turn: a signal can coalesce, and the timeout is the safety net.
        shim.reap();
        if ready > 0 {
            for ((name, _), r) in owners.iter().zip(out_ready) {
                if r && let Some(m) = shim.containers.get_mut(name) {
                    drain_outputs(m, false);
                }
            }
        }
        if conn_ready {
            while let Ok((conn, _)) = listener.accept() {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let mut reader = BufReader::new(match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let reply = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => shim.handle(req, conn),
                    Err(e) => Some((conn, Response::Error(format!("bad request: {e}")))),
                };
                if let Some((conn, reply)) = reply {
                    respond(conn, &reply);
                }
            }
        }
        let exits_before = shim.exited_count();
        shim.finish_exits();
        if shim.shutting_down && shim.containers.is_empty() {
            break;
        }
        // Once idle for a while after a burst of work (a request, an exit), give back the
        // code it ran; a burst of requests runs at full speed.
        if conn_ready || shim.exited_count() != exits_before {
            last_work = Some(Instant::now());
        } else if last_work.is_some_and(|t| t.elapsed() >= IDLE_BEFORE_TRIM) {
            trim_code_pages();
            last_work = None;
        }
    }
    let _ = std::fs::remove_file(pod_dir.join(SOCKET));
    let _ = std::fs::remove_file(pod_dir.join(PID_FILE));
}
