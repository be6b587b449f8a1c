//! `berth run` as root: real namespaces, cgroups, overlayfs and seccomp on a busybox image.

mod common;

use std::path::Path;
use std::process::Output;

use berth_testkit::busybox_layout;
use common::{BIN, stderr, stdout};

fn berth(data: &Path, args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(args)
        .env("BERTH_DATA_DIR", data)
        .output()
        .unwrap()
}

/// A data directory with the busybox test image imported as `busybox:test`.
fn with_busybox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    busybox_layout(&layout);
    let o = berth(
        &dir.path().join("data"),
        &[
            "image",
            "import",
            layout.to_str().unwrap(),
            "--name",
            "busybox:test",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    dir
}

/// Nothing of a container is left: no mount under the data dir, no cgroup, no container dir.
fn assert_clean(data: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&data.display().to_string()),
        "a mount is left under {}",
        data.display()
    );
    let containers = data.join("containers");
    assert_eq!(
        std::fs::read_dir(&containers)
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "a container dir is left"
    );
}

#[test]
fn runs_isolated_and_returns_the_exit_code() {
    let dir = with_busybox();
    let data = dir.path().join("data");
    let o = berth(
        &data,
        &[
            "run",
            "--hostname",
            "box",
            "busybox:test",
            "sh",
            "-c",
            "echo hello; hostname; echo $$; ls /proc | grep -c '^[0-9]'; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &["hello", "box", "1"], "{out}");
    assert!(
        lines[3].parse::<u32>().unwrap() <= 3,
        "only its own processes are visible: {out}"
    );
    // The host's files are not there.
    let o = berth(
        &data,
        &[
            "run",
            "busybox:test",
            "sh",
            "-c",
            "test -e /etc/hostname -o -e /usr/bin/cargo && echo leaked || echo contained",
        ],
    );
    assert_eq!(stdout(&o).trim(), "contained");
    assert_clean(&data);
}

#[test]
fn docker_default_security() {
    let dir = with_busybox();
    let data = dir.path().join("data");
    let o = berth(
        &data,
        &[
            "run",
            "busybox:test",
            "sh",
            "-c",
            "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
        ],
    );
    let out = stdout(&o);
    // Docker's default capability set, exactly.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // A syscall the default profile refuses fails.
    let o = berth(&data, &["run", "busybox:test", "unshare", "-m", "true"]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "unshare must be refused: {}",
        stderr(&o)
    );
    // A read-only root refuses writes; /tmp-less images cannot write anywhere on it.
    let o = berth(
        &data,
        &[
            "run",
            "--read-only",
            "busybox:test",
            "sh",
            "-c",
            "touch /x && echo wrote || echo refused",
        ],
    );
    assert_eq!(stdout(&o).trim(), "refused");
    let o = berth(
        &data,
        &["run", "busybox:test", "sh", "-c", "touch /x && echo wrote"],
    );
    assert_eq!(stdout(&o).trim(), "wrote");
    assert_clean(&data);
}

#[test]
fn limits_hold() {
    let dir = with_busybox();
    let data = dir.path().join("data");
    // Over the memory limit: the kernel kills it (SIGKILL: 137); under it, it runs.
    let o = berth(
        &data,
        &[
            "run",
            "--memory",
            "16Mi",
            "busybox:test",
            "sh",
            "-c",
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let o = berth(
        &data,
        &[
            "run",
            "--memory",
            "128Mi",
            "busybox:test",
            "sh",
            "-c",
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The pids limit stops a fork bomb.
    let o = berth(
        &data,
        &[
            "run",
            "--pids-limit",
            "5",
            "busybox:test",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait; echo done",
        ],
    );
    let err = stderr(&o);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "the pids limit stops forks: {err}"
    );
    assert_clean(&data);
}

#[test]
fn errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = berth(dir.path(), &["run", "nothere:1", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not found locally; pull or import it"),
        "{}",
        stderr(&o)
    );
    let dir = with_busybox();
    let o = berth(
        &dir.path().join("data"),
        &["run", "--memory", "lots", "busybox:test", "true"],
    );
    assert!(stderr(&o).contains("--memory \"lots\""), "{}", stderr(&o));
}
