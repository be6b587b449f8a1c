//! Pseudo-terminals for `exec -t`: the container process makes one inside the container and
//! sends its master side over a console socket; the agent passes the caller's keystrokes and
//! window size to it and its output back.

use std::os::fd::{AsRawFd, OwnedFd};

/// Sets a terminal's window size (the command gets SIGWINCH).
#[allow(unsafe_code)]
pub fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives the pty master a container process sends over a console socket connection
/// (one fd in SCM_RIGHTS, as runc's and libcontainer's console protocol has it).
#[allow(unsafe_code)]
pub fn receive_master(conn: &std::os::unix::net::UnixStream) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut name = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor in our table for us; nothing
            // else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(std::io::Error::other("the console socket sent no terminal"))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn a_master_sent_over_a_socket_arrives_and_resizes() {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let pty = nix::pty::openpty(None, None).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fds = [pty.master.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"/dev/ptmx")];
        sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let master = super::receive_master(&b).unwrap();
        super::set_size(&master, 40, 120).unwrap();
        let size = rustix_size(&pty.slave);
        assert_eq!(size, (40, 120));
    }

    fn rustix_size(fd: &std::os::fd::OwnedFd) -> (u16, u16) {
        assert!(
            nix::sys::termios::tcgetattr(fd).is_ok(),
            "the slave is a terminal"
        );
        let out = std::process::Command::new("stty")
            .arg("size")
            .stdin(std::fs::File::from(fd.try_clone().unwrap()))
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        let mut it = s.split_whitespace().map(|x| x.parse::<u16>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }
}
