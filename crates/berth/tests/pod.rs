//! The runtime's pod interface (what the node agent uses), as root: several containers in one
//! pod, shared volumes, projected files, and what a restarted node finds.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::ContainerSpec;
use berth_runtime::net::Network;
use berth_runtime::pod::{ContainerConfig, PodConfig, Runtime};
use berth_runtime::shim::Status;
use berth_runtime::spec::Mount;
use berth_runtime::volumes;
use common::BIN;

struct Node {
    _dir: tempfile::TempDir,
    rt: Runtime,
    busybox: Vec<PathBuf>,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (bridge, cidr) = berth_testkit::unique_net();
        // The busybox test image, unpacked through the image store.
        let layout = dir.path().join("layout");
        berth_testkit::busybox_layout(&layout);
        let store = berth_image::ImageStore::open(&data.join("images")).unwrap();
        let image = berth_image::import::import(&store, &layout, Some("busybox:test"))
            .unwrap()
            .remove(0);
        let busybox = image
            .layers
            .iter()
            .map(|l| store.layer_dir(l).unwrap())
            .collect();
        let rt = Runtime {
            root: data.clone(),
            network: Network {
                bridge,
                range: cidr.parse().unwrap(),
                ipam_dir: data.join("ipam"),
                netns_dir: data.join("netns"),
                blackholes: vec![],
            },
            shim_command: vec![BIN.into(), "__shim".into()],
            cgroup_parent: "/berth-test".into(),
        };
        Node {
            _dir: dir,
            rt,
            busybox,
        }
    }

    fn pod(&self, id: &str) {
        self.rt
            .run_pod(&PodConfig {
                id: id.into(),
                name: id.into(),
                ..Default::default()
            })
            .unwrap();
    }

    fn container(&self, pod: &str, name: &str, script: &str, mounts: Vec<Mount>) {
        let c = ContainerConfig {
            name: name.into(),
            layers: self.busybox.clone(),
            spec: ContainerSpec {
                argv: vec!["sh".into(), "-c".into(), script.into()],
                env: vec![("PATH".into(), "/bin".into())],
                mounts,
                ..Default::default()
            },
            ..Default::default()
        };
        self.rt.create_container(pod, &c).unwrap();
        self.rt.start_container(pod, name).unwrap();
    }

    fn output(&self, pod: &str, name: &str) -> String {
        let st = self.rt.wait(pod, name).unwrap();
        let log = std::fs::read(&st.log).unwrap();
        log.split(|b| *b == b'\n')
            .filter_map(berth_runtime::logs::parse_record)
            .map(|r| String::from_utf8_lossy(&r.text).into_owned() + "\n")
            .collect()
    }

    fn assert_gone(&self, pod: &str) {
        assert!(!self.rt.pod_dir(pod).exists());
        assert!(!self.rt.network.netns_dir.join(pod).exists());
        assert!(
            self.rt
                .network
                .leases()
                .unwrap()
                .iter()
                .all(|(_, p)| p != pod)
        );
        assert!(berth_runtime::pod::cgroup_dirs(&format!("/berth-test/{pod}")).is_empty());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&self.rt.pod_dir(pod).display().to_string()));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for id in self.rt.pod_ids() {
            let _ = self.rt.remove_pod(&id);
        }
        let _ = self.rt.network.remove_bridge();
    }
}

fn mount(dst: &str, src: &Path, read_only: bool) -> Mount {
    Mount {
        destination: dst.into(),
        source: src.display().to_string(),
        read_only,
    }
}

#[test]
fn containers_of_a_pod_share_localhost_and_its_volumes() {
    let n = Node::new();
    n.pod("p1");
    let dir = n.rt.pod_dir("p1");
    let scratch = volumes::empty_dir(&dir, "scratch", false, 0).unwrap();
    let mem = volumes::empty_dir(&dir, "mem", true, 1 << 20).unwrap();
    let config = dir.join("volumes/config");
    volumes::project(
        &config,
        &[volumes::File {
            path: "app.conf".into(),
            contents: b"v1".to_vec(),
            mode: 0o444,
        }],
        None,
    )
    .unwrap();
    let mounts = vec![
        mount("/scratch", &scratch, false),
        mount("/mem", &mem, false),
        mount("/config", &config, true),
    ];
    n.container(
        "p1",
        "server",
        "mkdir /www && echo from-server > /www/index.html && echo shared > /scratch/f && exec httpd -f -p 127.0.0.1:8080 -h /www",
        mounts.clone(),
    );
    n.container(
        "p1",
        "client",
        "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && break; sleep 0.1; done; cat /scratch/f; cat /config/app.conf; echo; \
         dd if=/dev/zero of=/mem/big bs=1024 count=2048 2>/dev/null || echo mem-full",
        mounts,
    );
    assert_eq!(
        n.output("p1", "client"),
        "from-server\nshared\nv1\nmem-full\n"
    );
    let st = n.rt.container("p1", "client").unwrap();
    assert_eq!(
        (st.status, st.exit_code, st.reason.as_deref()),
        (Status::Exited, Some(0), Some("Completed"))
    );
    // A projected update is seen by a running container at once.
    volumes::project(
        &config,
        &[volumes::File {
            path: "app.conf".into(),
            contents: b"v2".to_vec(),
            mode: 0o444,
        }],
        None,
    )
    .unwrap();
    n.rt.remove_container("p1", "client").unwrap();
    n.container(
        "p1",
        "reader",
        "cat /config/app.conf",
        vec![mount("/config", &config, true)],
    );
    assert_eq!(n.output("p1", "reader"), "v2\n");
    // Stopping the server: SIGTERM is ignored by a pid 1 without a handler, so SIGKILL follows.
    let st =
        n.rt.stop_container("p1", "server", libc::SIGTERM, Duration::from_millis(300))
            .unwrap();
    assert_eq!(st.exit_code, Some(137));
    n.rt.remove_pod("p1").unwrap();
    n.assert_gone("p1");
    assert!(!scratch.exists(), "an emptyDir goes with its pod");
}

#[test]
fn a_restarted_node_adopts_live_shims_and_cleans_up_dead_ones() {
    let n = Node::new();
    n.pod("live");
    n.container("live", "main", "sleep 1; exit 3", vec![]);
    n.pod("dead");
    n.container("dead", "main", "sleep 60", vec![]);
    let pid: i32 = std::fs::read_to_string(n.rt.pod_dir("dead").join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while n.rt.containers("dead").is_ok() {
        assert!(Instant::now() < deadline, "the shim never died");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A new runtime value over the same directory: what the agent does when it starts.
    let fresh = n.rt.clone();
    let rec = fresh.recover().unwrap();
    assert_eq!(rec.adopted, vec!["live".to_string()]);
    assert_eq!(rec.cleaned, vec!["dead".to_string()]);
    n.assert_gone("dead");
    // The adopted container ran on, and its exit is reported.
    let st = fresh.wait("live", "main").unwrap();
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.reason.as_deref(), Some("Error"));
    fresh.remove_pod("live").unwrap();
    n.assert_gone("live");
}
