//! The service proxy's byte relay on io_uring: once a cluster IP connection has its endpoint,
//! its two sockets are handed to one of a few relay threads, one per two CPUs, each with its
//! own io_uring. (The proxy shares its node with the pods it serves, and fewer rings gather
//! more completions per wake-up: on 2 vCPU one thread took 9-10 µs of CPU per request where
//! two took 11-13 µs.)
//!
//! A thread keeps one receive in flight per direction; what arrives is sent on to the other
//! socket, and the next receive goes out only when the send is done, so a slow reader holds
//! its writer back (at most one 16 KiB buffer per direction, as haproxy's and nginx's
//! defaults). Everything a thread has to submit after a round of completions goes to the
//! kernel in one system call, which is where this beats a relay that makes a `recv` and a
//! `send` call per message (measured in docs/benchmarks.md).
//!
//! - A half-close passes on: the end of one direction shuts the other socket's writing side,
//!   and the connection ends when both directions have.
//! - An error on either socket (a reset, say) ends both, the other with a reset too.
//! - [`Spliced::close`] ends a connection from outside (the drain timeout of an endpoint that
//!   went away); the callback given to [`Relays::splice`] runs once it has ended and both
//!   sockets are closed.
//! - Where io_uring cannot be used (a kernel without it, `kernel.io_uring_disabled`, a seccomp
//!   filter), [`Relays::get`] says so once and returns `None`; the agent's proxy then relays
//!   with an epoll copy instead.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use io_uring::{IoUring, opcode, squeue, types};
use nix::sys::socket::{Shutdown, setsockopt, shutdown, sockopt};

/// Bytes received at once, per direction of a connection.
const BUF: usize = 16 * 1024;
/// The `user_data` of a relay thread's wake-up read.
const WAKE: u64 = u64::MAX;
/// The `user_data` of cancellations (their own completions say nothing).
const CANCEL: u64 = u64::MAX - 1;

/// What runs when a relayed connection has ended.
type Done = Box<dyn FnOnce() + Send>;

enum Cmd {
    Add {
        id: u64,
        fds: [OwnedFd; 2],
        done: Done,
    },
    Close(u64),
}

/// One relay thread as the rest of the agent sees it.
struct Lane {
    cmds: Mutex<Vec<Cmd>>,
    /// An eventfd the thread always has a read on: written when `cmds` gets its first entry.
    wake: OwnedFd,
    /// Connections handed to the thread and not yet ended.
    live: AtomicUsize,
}

impl Lane {
    fn send(&self, cmd: Cmd) {
        let first = {
            let mut cmds = self.cmds.lock().unwrap_or_else(|e| e.into_inner());
            cmds.push(cmd);
            cmds.len() == 1
        };
        if first {
            // Only fails if the counter would overflow, and then the thread is woken anyway.
            let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
        }
    }
}

/// The relay threads of this process.
pub struct Relays {
    lanes: Vec<Arc<Lane>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("threads", &self.lanes.len())
            .finish()
    }
}

/// A connection being relayed.
pub struct Spliced {
    lane: Arc<Lane>,
    id: u64,
}

impl Spliced {
    /// Ends the connection: both sockets are closed, as when the relay stops on its own.
    pub fn close(&self) {
        self.lane.send(Cmd::Close(self.id));
    }
}

impl Relays {
    /// The relay threads, started on first use; `None` where io_uring cannot be used.
    pub fn get() -> Option<&'static Relays> {
        static RELAYS: OnceLock<Option<Relays>> = OnceLock::new();
        RELAYS
            .get_or_init(|| {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let threads = cpus.div_ceil(2);
                match Relays::start(threads) {
                    Ok(r) => {
                        tracing::info!(threads, "the service proxy relays on io_uring");
                        Some(r)
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "io_uring is not available here (see sysctl kernel.io_uring_disabled); \
                             the service proxy relays with epoll (--proxy-relay epoll: the same, unwarned)"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    fn start(threads: usize) -> std::io::Result<Relays> {
        let mut lanes = Vec::new();
        for i in 0..threads.max(1) {
            let wake = eventfd()?;
            let lane = Arc::new(Lane {
                cmds: Mutex::new(Vec::new()),
                wake,
                live: AtomicUsize::new(0),
            });
            // The ring is made on its own thread, which is then its only submitter.
            let (tx, rx) = std::sync::mpsc::channel();
            let l = lane.clone();
            std::thread::Builder::new()
                .name(format!("berth-relay-{i}"))
                .spawn(move || match ring() {
                    Ok(ring) => {
                        let _ = tx.send(Ok(()));
                        Thread::new(ring, l).run();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                })?;
            rx.recv()
                .map_err(|_| std::io::Error::other("a relay thread ended while starting"))??;
            lanes.push(lane);
        }
        Ok(Relays {
            lanes,
            next_id: AtomicU64::new(0),
        })
    }

    /// Hands two connected sockets to the least busy relay thread, which relays between them
    /// until both directions end, one fails, or [`Spliced::close`]; then it closes both and
    /// calls `done` (on the relay thread: it should only signal).
    pub fn splice(&self, a: OwnedFd, b: OwnedFd, done: impl FnOnce() + Send + 'static) -> Spliced {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.live.load(Ordering::Relaxed))
            .expect("at least one relay thread")
            .clone();
        for fd in [&a, &b] {
            blocking(fd);
        }
        lane.live.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lane.send(Cmd::Add {
            id,
            fds: [a, b],
            done: Box::new(done),
        });
        Spliced { lane, id }
    }
}

/// An eventfd. Blocking, as the sockets are made: a kernel that hands `EAGAIN` back for
/// non-blocking files instead of waiting would otherwise have the thread spin.
#[allow(unsafe_code)] // eventfd(2): nix 0.29 has it only behind a feature this crate lacks.
fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd(2) with valid flags; the result is checked before it is owned.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A ring with the operations the relay uses, batched to run only when the thread asks.
fn ring() -> std::io::Result<IoUring> {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(8192)
        .build(1024)
        .or_else(|_| IoUring::builder().setup_cqsize(8192).build(1024))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::Read::CODE, "read"),
        (opcode::AsyncCancel::CODE, "cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(std::io::Error::other(format!(
                "this kernel's io_uring has no {name} operation"
            )));
        }
    }
    Ok(ring)
}

/// A relayed connection on its thread. Direction `d` receives on `fds[d]` into `bufs[d]` and
/// sends on `fds[1 - d]`.
struct Conn {
    id: u64,
    fds: [OwnedFd; 2],
    bufs: [Box<[u8]>; 2],
    filled: [usize; 2],
    sent: [usize; 2],
    /// The operation each direction has in flight (its `user_data`).
    op: [Option<u64>; 2],
    eof: [bool; 2],
    ending: bool,
    done: Option<Done>,
}

struct Thread {
    ring: IoUring,
    lane: Arc<Lane>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    slots: HashMap<u64, usize>,
    /// Entries waiting for room in the submission queue.
    pending: VecDeque<squeue::Entry>,
    wake_buf: Box<[u8; 8]>,
}

fn user_data(slot: usize, send: bool, d: usize) -> u64 {
    ((slot as u64) << 2) | (u64::from(send) << 1) | d as u64
}

impl Thread {
    fn new(ring: IoUring, lane: Arc<Lane>) -> Thread {
        Thread {
            ring,
            lane,
            conns: Vec::new(),
            free: Vec::new(),
            slots: HashMap::new(),
            pending: VecDeque::new(),
            wake_buf: Box::new([0; 8]),
        }
    }

    fn run(mut self) {
        self.read_wake();
        let mut done = Vec::new();
        loop {
            let all_in = self.flush();
            // With everything submitted, sleep until something completes; otherwise only
            // submit, to make room for the rest.
            if let Err(e) = self.ring.submit_and_wait(usize::from(all_in)) {
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                    _ => {
                        tracing::warn!(error = %e, "a relay thread cannot submit");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            }
            done.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for (ud, res) in done.drain(..) {
                self.complete(ud, res);
            }
        }
    }

    /// Moves pending entries into the submission queue; whether all fitted.
    #[allow(unsafe_code)] // io_uring: the kernel writes into the buffers the entries name.
    fn flush(&mut self) -> bool {
        let mut sq = self.ring.submission();
        while let Some(e) = self.pending.front() {
            // SAFETY: every entry points into a buffer that lives until its completion: the
            // wake-up buffer lives as long as the thread, and a connection's buffers until
            // all of its operations have completed.
            if unsafe { sq.push(e) }.is_err() {
                return false;
            }
            self.pending.pop_front();
        }
        true
    }

    fn read_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.lane.wake.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(WAKE);
        self.pending.push_back(e);
    }

    fn commands(&mut self) {
        let cmds = std::mem::take(&mut *self.lane.cmds.lock().unwrap_or_else(|e| e.into_inner()));
        for cmd in cmds {
            match cmd {
                Cmd::Add { id, fds, done } => self.add(id, fds, done),
                Cmd::Close(id) => {
                    if let Some(&slot) = self.slots.get(&id) {
                        self.end(slot, false);
                    }
                }
            }
        }
    }

    fn add(&mut self, id: u64, fds: [OwnedFd; 2], done: Done) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let buf = || vec![0u8; BUF].into_boxed_slice();
        self.conns[slot] = Some(Conn {
            id,
            fds,
            bufs: [buf(), buf()],
            filled: [0; 2],
            sent: [0; 2],
            op: [None; 2],
            eof: [false; 2],
            ending: false,
            done: Some(done),
        });
        self.slots.insert(id, slot);
        self.recv(slot, 0);
        self.recv(slot, 1);
    }

    fn recv(&mut self, slot: usize, d: usize) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        let ud = user_data(slot, false, d);
        let e = opcode::Recv::new(
            types::Fd(c.fds[d].as_raw_fd()),
            c.bufs[d].as_mut_ptr(),
            BUF as u32,
        )
        .build()
        .user_data(ud);
        c.op[d] = Some(ud);
        self.pending.push_back(e);
    }

    fn send(&mut self, slot: usize, d: usize) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        let ud = user_data(slot, true, d);
        let rest = &c.bufs[d][c.sent[d]..c.filled[d]];
        let e = opcode::Send::new(
            types::Fd(c.fds[1 - d].as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(ud);
        c.op[d] = Some(ud);
        self.pending.push_back(e);
    }

    fn complete(&mut self, ud: u64, res: i32) {
        match ud {
            WAKE => {
                self.read_wake();
                self.commands();
                return;
            }
            CANCEL => return,
            _ => {}
        }
        let slot = (ud >> 2) as usize;
        let (send, d) = (ud & 2 != 0, (ud & 1) as usize);
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        c.op[d] = None;
        if c.ending {
            self.release(slot);
            return;
        }
        if res == -libc::EINTR || res == -libc::EAGAIN {
            if send {
                self.send(slot, d);
            } else {
                self.recv(slot, d);
            }
            return;
        }
        if res < 0 || (send && res == 0) {
            self.end(slot, true);
            return;
        }
        let n = res as usize;
        if send {
            c.sent[d] += n;
            if c.sent[d] < c.filled[d] {
                self.send(slot, d);
            } else {
                (c.sent[d], c.filled[d]) = (0, 0);
                self.recv(slot, d);
            }
        } else if n == 0 {
            c.eof[d] = true;
            let _ = shutdown(c.fds[1 - d].as_raw_fd(), Shutdown::Write);
            if c.eof[1 - d] {
                self.end(slot, false);
            }
        } else {
            c.filled[d] = n;
            self.send(slot, d);
        }
    }

    /// Ends a connection: what is in flight is cancelled, and the sockets are closed once it
    /// has completed; with `reset`, closing resets both peers.
    fn end(&mut self, slot: usize, reset: bool) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if c.ending {
            return;
        }
        c.ending = true;
        if reset {
            for fd in &c.fds {
                linger_zero(fd);
            }
        }
        for ud in c.op.iter().flatten() {
            self.pending
                .push_back(opcode::AsyncCancel::new(*ud).build().user_data(CANCEL));
        }
        self.release(slot);
    }

    /// Frees an ending connection whose operations have all completed.
    fn release(&mut self, slot: usize) {
        let idle = |c: &Conn| c.ending && c.op.iter().all(Option::is_none);
        let Some(c) = self.conns[slot].take_if(|c| idle(c)) else {
            return;
        };
        self.slots.remove(&c.id);
        self.free.push(slot);
        self.lane.live.fetch_sub(1, Ordering::Relaxed);
        let Conn { fds, done, .. } = c;
        drop(fds);
        if let Some(done) = done {
            done();
        }
    }
}

/// Clears O_NONBLOCK: io_uring waits for the socket itself, and some kernels hand `EAGAIN`
/// back for non-blocking files instead.
fn blocking(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags));
    }
}

/// Makes closing the socket reset the connection.
fn linger_zero(fd: &impl std::os::fd::AsFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(fd, sockopt::Linger, &l);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::Duration;

    /// The relay threads: this machine's kernel has io_uring, so they must start.
    fn relays() -> &'static Relays {
        Relays::get().expect("io_uring relay threads (is kernel.io_uring_disabled set?)")
    }

    /// A connection being relayed, and the signal that it has ended.
    struct Relayed {
        spliced: Spliced,
        ended: std::sync::mpsc::Receiver<()>,
    }

    fn splice(a: TcpStream, b: TcpStream) -> Relayed {
        let (tx, ended) = std::sync::mpsc::channel();
        let spliced = relays().splice(OwnedFd::from(a), OwnedFd::from(b), move || {
            let _ = tx.send(());
        });
        Relayed { spliced, ended }
    }

    /// A client and a backend connected through the relay: (client, backend, relayed).
    fn through_relay() -> (TcpStream, TcpStream, Relayed) {
        through_relay_after(|_| {})
    }

    /// As [`through_relay`], with `early` done by the client before the proxy accepts.
    fn through_relay_after(early: impl FnOnce(&mut TcpStream)) -> (TcpStream, TcpStream, Relayed) {
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let back = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(front.local_addr().unwrap()).unwrap();
        early(&mut client);
        let (inbound, _) = front.accept().unwrap();
        let out = TcpStream::connect(back.local_addr().unwrap()).unwrap();
        let (backend, _) = back.accept().unwrap();
        for s in [&client, &backend] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        // Handed over non-blocking, as the proxy's runtime has them.
        for s in [&inbound, &out] {
            s.set_nonblocking(true).unwrap();
        }
        (client, backend, splice(inbound, out))
    }

    fn finished(r: Relayed) {
        r.ended
            .recv_timeout(Duration::from_secs(10))
            .expect("the relay to end the connection");
    }

    /// Writes `msg` on one side and reads it whole on the other.
    fn passes(from: &mut TcpStream, to: &mut TcpStream, msg: &[u8]) {
        from.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        to.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }

    #[test]
    fn relays_both_ways_with_half_close() {
        let (mut client, mut backend, spliced) = through_relay();
        passes(&mut client, &mut backend, b"hello");
        // The client is done sending; the backend sees the end and still answers.
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        backend.write_all(b"answer").unwrap();
        drop(backend);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"answer");
        finished(spliced);
    }

    #[test]
    fn moves_megabytes_both_ways_at_once_intact() {
        let (client, backend, spliced) = through_relay();
        const N: usize = 8 << 20;
        let pattern = |seed: u8| -> Vec<u8> {
            (0..N)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        };
        // Each side writes everything while the other reads: the relay's buffers are much
        // smaller, so this only ends if neither direction stalls the other.
        let pump = |mut s: TcpStream, seed: u8| {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let data = pattern(seed);
                let writer = std::thread::spawn(move || {
                    w.write_all(&data).unwrap();
                    w.shutdown(Shutdown::Write).unwrap();
                });
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                writer.join().unwrap();
                got
            })
        };
        let (a, b) = (pump(client, 1), pump(backend, 2));
        let (from_backend, from_client) = (a.join().unwrap(), b.join().unwrap());
        assert!(from_client == pattern(1), "client to backend corrupted");
        assert!(from_backend == pattern(2), "backend to client corrupted");
        finished(spliced);
    }

    #[test]
    fn a_reset_on_one_side_resets_the_other() {
        let (mut client, backend, spliced) = through_relay();
        linger_zero(&backend);
        drop(backend);
        let mut buf = [0u8; 16];
        let err = client
            .read(&mut buf)
            .expect_err("a reset, not an orderly end");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        finished(spliced);
    }

    #[test]
    fn close_ends_both_sides() {
        let (mut client, mut backend, spliced) = through_relay();
        passes(&mut client, &mut backend, b"x");
        passes(&mut backend, &mut client, b"y");
        spliced.spliced.close();
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
        assert_eq!(backend.read_to_end(&mut rest).unwrap(), 0);
        finished(spliced);
    }

    #[test]
    fn data_sent_before_the_handover_is_relayed() {
        let (_client, mut backend, spliced) = through_relay_after(|c| {
            c.write_all(b"early").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        backend.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"early");
        drop(backend);
        finished(spliced);
    }
}
