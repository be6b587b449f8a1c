//! `berth run` as root: real namespaces, cgroups, overlayfs and seccomp on a busybox image.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use berth_testkit::busybox_layout;
use common::{BIN, stderr, stdout};

/// One test's own machine-local world: data dir, bridge and address range, all removed
/// when the test ends, pass or fail.
struct Local {
    dir: tempfile::TempDir,
    data: PathBuf,
    bridge: String,
    cidr: String,
}

impl Local {
    fn new() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (bridge, cidr) = berth_testkit::unique_net();
        Local {
            dir,
            data,
            bridge,
            cidr,
        }
    }

    /// With the busybox test image imported as `busybox:test`.
    fn with_busybox() -> Local {
        let l = Local::new();
        let layout = l.dir.path().join("layout");
        busybox_layout(&layout);
        l.ok(&[
            "image",
            "import",
            layout.to_str().unwrap(),
            "--name",
            "busybox:test",
        ]);
        l
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("BERTH_DATA_DIR", &self.data)
            .env("BERTH_BRIDGE", &self.bridge)
            .env("BERTH_POD_CIDR", &self.cidr);
        c
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.berth(args);
        assert!(o.status.success(), "berth {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    fn pods(&self) -> Vec<String> {
        std::fs::read_dir(self.data.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// The address of a running container.
    fn ip_of(&self, name: &str) -> String {
        let o = self.berth(&["container", "ls"]);
        let out = stdout(&o);
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("{name} is not running: {out}"))
            .to_string()
    }

    /// Nothing of any container is left: no mount under the data dir, no pod dir, no
    /// network namespace, veth or lease, no cgroup.
    fn assert_clean(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&self.data.display().to_string()),
            "a mount is left under {}",
            self.data.display()
        );
        assert_eq!(self.pods(), Vec::<String>::new(), "a pod dir is left");
        let left = |d: &str| {
            std::fs::read_dir(self.data.join(d))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        assert_eq!(left("netns"), 0, "a network namespace is left");
        let leases = std::fs::read_dir(self.data.join("ipam").join(&self.bridge))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name() != "last")
            .count();
        assert_eq!(leases, 0, "an address lease is left");
        let bridge_ports = std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(bridge_ports, 0, "a veth is left on the bridge");
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        for p in self.pods() {
            let _ = self.berth(&["container", "rm", "-f", &p]);
        }
        let _ = berth_runtime::net::Network {
            bridge: self.bridge.clone(),
            range: self.cidr.parse().unwrap(),
            ipam_dir: self.data.join("ipam"),
            netns_dir: self.data.join("netns"),
            blackholes: vec![],
        }
        .remove_bridge();
    }
}

#[test]
fn runs_isolated_and_returns_the_exit_code() {
    let l = Local::with_busybox();
    let o = l.berth(&[
        "run",
        "--rm",
        "--hostname",
        "box",
        "busybox:test",
        "sh",
        "-c",
        "echo hello; hostname; echo $$; ls /proc | grep -c '^[0-9]'; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &["hello", "box", "1"], "{out}");
    assert!(
        lines[3].parse::<u32>().unwrap() <= 3,
        "only its own processes are visible: {out}"
    );
    // The host's files are not there.
    let o = l.berth(&[
        "run",
        "--rm",
        "busybox:test",
        "sh",
        "-c",
        "test -e /etc/os-release -o -e /usr/bin/cargo && echo leaked || echo contained",
    ]);
    assert_eq!(stdout(&o).trim(), "contained");
    // A minimal /dev, as Docker's.
    let o = l.berth(&["run", "--rm", "busybox:test", "ls", "/dev"]);
    let devs: Vec<String> = stdout(&o).lines().map(String::from).collect();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
    ] {
        assert!(devs.iter().any(|x| x == d), "/dev/{d} missing: {devs:?}");
    }
    assert!(
        !devs
            .iter()
            .any(|x| x.starts_with("sd") || x == "mem" || x == "kmsg"),
        "{devs:?}"
    );
    l.assert_clean();
}

#[test]
fn docker_default_security() {
    let l = Local::with_busybox();
    let o = l.berth(&[
        "run",
        "--rm",
        "busybox:test",
        "sh",
        "-c",
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
    ]);
    let out = stdout(&o);
    // Docker's default capability set, exactly.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // A syscall the default profile refuses fails.
    let o = l.berth(&["run", "--rm", "busybox:test", "unshare", "-m", "true"]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "unshare must be refused: {}",
        stderr(&o)
    );
    // A read-only root refuses writes; /tmp-less images cannot write anywhere on it.
    let o = l.berth(&[
        "run",
        "--rm",
        "--read-only",
        "busybox:test",
        "sh",
        "-c",
        "touch /x && echo wrote || echo refused",
    ]);
    assert_eq!(stdout(&o).trim(), "refused");
    let o = l.berth(&[
        "run",
        "--rm",
        "busybox:test",
        "sh",
        "-c",
        "touch /x && echo wrote",
    ]);
    assert_eq!(stdout(&o).trim(), "wrote");
    l.assert_clean();
}

#[test]
fn limits_hold() {
    let l = Local::with_busybox();
    // Over the memory limit: the kernel kills it (SIGKILL: 137); under it, it runs.
    let o = l.berth(&[
        "run",
        "--rm",
        "--memory",
        "16Mi",
        "busybox:test",
        "sh",
        "-c",
        "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(stderr(&o).contains("OOMKilled"), "{}", stderr(&o));
    let o = l.berth(&[
        "run",
        "--rm",
        "--memory",
        "128Mi",
        "busybox:test",
        "sh",
        "-c",
        "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The pids limit stops a fork bomb.
    let o = l.berth(&[
        "run",
        "--rm",
        "--pids-limit",
        "5",
        "busybox:test",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait; echo done",
    ]);
    let err = stderr(&o);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "the pids limit stops forks: {err}"
    );
    l.assert_clean();
}

#[test]
fn errors_say_what_to_do() {
    let l = Local::new();
    let o = l.berth(&["run", "nothere:1", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not found locally; pull or import it"),
        "{}",
        stderr(&o)
    );
    let l = Local::with_busybox();
    let o = l.berth(&["run", "--memory", "lots", "busybox:test", "true"]);
    assert!(stderr(&o).contains("--memory \"lots\""), "{}", stderr(&o));
    let o = l.berth(&["run", "--rm", "busybox:test", "no-such-program"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("\"no-such-program\" not found in the image"),
        "{}",
        stderr(&o)
    );
    let o = l.berth(&["run", "-v", "/does/not/exist:/x", "busybox:test", "true"]);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = l.berth(&["container", "wait", "nobody"]);
    assert!(
        stderr(&o).contains("no container named nobody"),
        "{}",
        stderr(&o)
    );
    l.assert_clean();
}

#[test]
fn pods_get_their_own_addresses_and_reach_each_other() {
    let l = Local::with_busybox();
    l.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox:test",
        "sh",
        "-c",
        "mkdir /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let ip = l.ip_of("web");
    // Another pod fetches it over the bridge (polling until the server listens).
    let o = l.berth(&[
        "run",
        "--rm",
        "busybox:test",
        "sh",
        "-c",
        &format!(
            "for i in $(seq 50); do wget -qO- http://{ip}:8080/ && exit 0; sleep 0.1; done; exit 1"
        ),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "web");
    // The client had an address of its own in the range.
    let o = l.berth(&[
        "run",
        "--rm",
        "busybox:test",
        "sh",
        "-c",
        "ip -4 -o addr show eth0",
    ]);
    let out = stdout(&o);
    assert!(!out.contains(&format!("{ip}/")), "{out}");
    let prefix = l.cidr.rsplit_once('.').unwrap().0;
    assert!(out.contains(&format!("inet {prefix}.")), "{out}");
    // A published port reaches it from this machine's loopback.
    let port = berth_testkit::free_port();
    let mut fwd = l
        .cmd(&[
            "run",
            "--rm",
            "-p",
            &format!("127.0.0.1:{port}:80"),
            "busybox:test",
            "sh",
            "-c",
            "mkdir /w && echo published > /w/index.html && exec httpd -f -p 80 -h /w",
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let o = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "2",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output();
        if let Ok(o) = o
            && o.status.success()
        {
            break stdout(&o);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the published port never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(body.trim(), "published");
    // Ctrl-C (SIGTERM) to `berth run` stops the container and removes it (--rm).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fwd.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = fwd.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(137),
        "httpd ignores SIGTERM as pid 1, so the grace period ends in SIGKILL"
    );
    l.ok(&["container", "rm", "-f", "web"]);
    l.assert_clean();
}

#[test]
fn the_shim_outlives_its_parent_and_a_new_berth_adopts_it() {
    let l = Local::with_busybox();
    let mut run = l
        .cmd(&[
            "run",
            "--name",
            "job",
            "busybox:test",
            "sh",
            "-c",
            "echo working; sleep 2; echo finished; exit 9",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once it runs, its parent dies without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !stdout(&l.berth(&["container", "ls"])).contains("Running") {
        assert!(std::time::Instant::now() < deadline, "never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(
        stdout(&l.berth(&["container", "ls"])).contains("Running"),
        "the container still runs"
    );
    // Another berth process finds it and later gets its exit code and output.
    let o = l.berth(&["container", "wait", "job"]);
    assert_eq!(stdout(&o).trim(), "9", "{}", stderr(&o));
    let o = l.berth(&["container", "logs", "job"]);
    assert_eq!(stdout(&o), "working\nfinished\n");
    // Exec needs a running container; this one has exited.
    l.ok(&["container", "rm", "job"]);
    l.assert_clean();
}

#[test]
fn exec_runs_in_the_container() {
    let l = Local::with_busybox();
    l.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--hostname",
        "inside",
        "busybox:test",
        "sh",
        "-c",
        "sleep 30",
    ]);
    let o = l.berth(&[
        "container",
        "exec",
        "box",
        "sh",
        "-c",
        "hostname; ls /proc | grep -c '^[0-9]'; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "inside");
    assert!(
        lines[1].parse::<u32>().unwrap() <= 4,
        "it sees the container's processes only: {out}"
    );
    // An exec'd process is filtered as the container is.
    assert!(
        out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    let o = l.berth(&["container", "exec", "box", "unshare", "-U", "true"]);
    assert!(!o.status.success(), "unshare in an exec must be refused");
    // With -i the command reads this side's input; without, it reads nothing.
    let mut child = l
        .cmd(&["container", "exec", "-i", "box", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"piped in\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "piped in\n", "{}", stderr(&o));
    assert_eq!(l.ok(&["container", "exec", "box", "cat"]), "");
    let o = l.berth(&["container", "exec", "-t", "box", "true"]);
    assert!(stderr(&o).contains("-t needs a terminal"), "{}", stderr(&o));
    let started = std::time::Instant::now();
    let out = l.ok(&["container", "stop", "-t", "1", "box"]);
    assert!(out.contains("exit code 137"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    l.ok(&["container", "rm", "box"]);
    l.assert_clean();
}

#[test]
fn a_dead_shims_leftovers_are_removed() {
    let l = Local::with_busybox();
    l.ok(&[
        "run",
        "-d",
        "--name",
        "orphan",
        "busybox:test",
        "sh",
        "-c",
        "sleep 60",
    ]);
    let pid: i32 = std::fs::read_to_string(l.data.join("pods/orphan/shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stdout(&l.berth(&["container", "ls", "-a"])).contains("shim gone") {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead shim is never noticed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Removing it kills the orphaned container and removes mounts, cgroup, netns, veth, lease.
    l.ok(&["container", "rm", "-f", "orphan"]);
    assert!(!std::path::Path::new("/sys/fs/cgroup/memory/berth/orphan").exists());
    l.assert_clean();
}

#[test]
fn named_volumes_outlive_containers_and_host_paths_bind() {
    let l = Local::with_busybox();
    let o = l.berth(&[
        "run",
        "--rm",
        "-v",
        "db:/data",
        "busybox:test",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = l.berth(&[
        "run",
        "--rm",
        "-v",
        "db:/data:ro",
        "busybox:test",
        "sh",
        "-c",
        "cat /data/f; touch /data/g || echo read-only",
    ]);
    assert_eq!(stdout(&o), "kept\nread-only\n", "{}", stderr(&o));
    let host = l.dir.path().join("share");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), "from host").unwrap();
    let v = format!("{}:/share", host.display());
    let o = l.berth(&[
        "run",
        "--rm",
        "-v",
        &v,
        "busybox:test",
        "sh",
        "-c",
        "cat /share/in; echo back > /share/out",
    ]);
    // A last line without a newline comes back as a line.
    assert_eq!(stdout(&o), "from host\n", "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "back\n");
    l.assert_clean();
}

#[test]
fn the_host_image_runs_host_programs_isolated() {
    let l = Local::new();
    let o = l.berth(&["run", "--rm", "host", "sh", "-c", "test -x /usr/bin/env && id -u && ls /proc | grep -c '^[0-9]' && touch /usr/x 2>/dev/null || echo usr-read-only"]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "{out} {}", stderr(&o));
    assert!(lines[1].parse::<u32>().unwrap() <= 4, "{out}");
    assert_eq!(lines.last(), Some(&"usr-read-only"));
    // The host's other files are not there.
    let o = l.berth(&[
        "run",
        "--rm",
        "host",
        "sh",
        "-c",
        "find /home /root -mindepth 1 | wc -l; test -e /etc/shadow && echo leaked || echo contained",
    ]);
    assert_eq!(stdout(&o), "0\ncontained\n", "{}", stderr(&o));
    l.assert_clean();
}

#[test]
fn cpu_quota_holds() {
    let l = Local::with_busybox();
    let o = l.berth(&[
        "run",
        "-d",
        "--name",
        "spin",
        "--cpus",
        "0.5",
        "busybox:test",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let usage_file = berth_runtime::pod::cgroup_dirs("/berth/spin/main")
        .into_iter()
        .map(|d| d.join("cpuacct.usage"))
        .find(|p| p.exists())
        .or_else(|| {
            berth_runtime::pod::cgroup_dirs("/berth/spin/main")
                .into_iter()
                .map(|d| d.join("cpu.stat"))
                .find(|p| p.exists())
        })
        .expect("the container's cpu accounting");
    let read = || -> u64 {
        let text = std::fs::read_to_string(&usage_file).unwrap();
        match text.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
            Some(usec) => usec.trim().parse::<u64>().unwrap() * 1000,
            None => text.trim().parse().unwrap(),
        }
    };
    // Let it settle, then measure over 3 s of wall time.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (t0, u0) = (std::time::Instant::now(), read());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (t1, u1) = (std::time::Instant::now(), read());
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    l.ok(&["container", "rm", "-f", "spin"]);
    // Never more than the quota (+10%). The floor shows the container ran near its quota,
    // not starved by a wrong one; it is low because on a loaded 2-core CI machine the
    // container competes with other tests (0.39 seen there).
    assert!(share <= 0.55, "used {share:.3} CPUs with a 0.5 limit");
    assert!(share >= 0.25, "used only {share:.3} CPUs with a 0.5 limit");
    l.assert_clean();
}

#[test]
fn a_pulled_image_runs() {
    let l = Local::new();
    let reg = berth_testkit::start_registry(l.dir.path());
    let layout = l.dir.path().join("layout");
    busybox_layout(&layout);
    berth_testkit::push(&layout, &reg, "tools/busybox:1");
    let image = format!("{}/tools/busybox:1", reg.addr);
    l.ok(&["image", "pull", &image, "--insecure-registry", &reg.addr]);
    let o = l.berth(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "echo from the registry; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "from the registry\n");
    l.assert_clean();
}
