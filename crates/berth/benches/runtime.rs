//! The runtime's benchmarks, beside Debian's runc and skopeo on the same machine in the same
//! run. Needs root. `scripts/bench runtime` installs runc and runs it; prints Markdown rows for
//! docs/benchmarks.md.
//!
//! - container lifecycle: create -> start -> exit -> delete of `/bin/true` from the busybox
//!   image, 100 runs: berth (in a running pod: overlay root, bundle, the shim's libcontainer
//!   create and start, exit reported, removal) against `runc run` on a bundle with the same
//!   config.json and the same overlay root;
//! - pod sandbox setup (netns + veth + address + routes), 100 pods;
//! - the shim's memory per pod (RSS and PSS) with one sleeping container;
//! - pull of a 3-layer 48 MiB image from a local `docker-registry`: berth against
//!   `skopeo copy` to an OCI layout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_runtime::ContainerSpec;
use berth_runtime::net::Network;
use berth_runtime::pod::{ContainerConfig, PodConfig, Runtime};
use berth_runtime::rootfs::Rootfs;

const BIN: &str = env!("CARGO_BIN_EXE_berth");
const RUNS: usize = 100;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (pct(&v, 0.5), pct(&v, 0.99))
}

struct Cleanup(Runtime);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in self.0.pod_ids() {
            let _ = self.0.remove_pod(&id);
        }
        let _ = self.0.network.remove_bridge();
    }
}

fn true_spec() -> ContainerSpec {
    ContainerSpec {
        argv: vec!["/bin/busybox".into(), "true".into()],
        env: vec![("PATH".into(), "/bin".into())],
        ..Default::default()
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the runtime benchmarks need root (namespaces, cgroups, mounts)");
        std::process::exit(1);
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = dir.path().join("layout");
    berth_testkit::busybox_layout(&layout);
    let store = berth_image::ImageStore::open(&data.join("images")).unwrap();
    let image = berth_image::import::import(&store, &layout, Some("busybox:bench"))
        .unwrap()
        .remove(0);
    let layers: Vec<PathBuf> = image
        .layers
        .iter()
        .map(|l| store.layer_dir(l).unwrap())
        .collect();
    let (bridge, cidr) = berth_testkit::unique_net();
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
        cgroup_parent: "/berth-bench".into(),
    };
    let _cleanup = Cleanup(rt.clone());
    println!("| what | berth | beside | ratio |");
    println!("|---|---|---|---|");

    if want("lifecycle") {
        lifecycle(&rt, &layers, dir.path());
    }
    if want("sandbox") {
        let mut times = Vec::new();
        for i in 0..RUNS {
            let id = format!("sb{i}");
            let t = Instant::now();
            rt.network.setup(&id).unwrap();
            times.push(t.elapsed());
            rt.network.teardown(&id).unwrap();
        }
        let (p50, p99) = summary(times);
        println!(
            "| pod sandbox setup (netns + veth + IP + routes), {RUNS} pods | p50 {p50:.2} ms, p99 {p99:.2} ms | goal ≤ 15 ms | |"
        );
    }
    if want("shim") {
        shim_memory(&rt, &layers);
    }
    if want("pull") {
        pull(dir.path());
    }
}

fn lifecycle(rt: &Runtime, layers: &[PathBuf], dir: &Path) {
    // berth: a running pod, then create/start/wait/remove of one container, as the agent does.
    rt.run_pod(&PodConfig {
        id: "bench".into(),
        name: "bench".into(),
        ..Default::default()
    })
    .unwrap();
    let mut berth = Vec::new();
    let mut steps = [Duration::ZERO; 4];
    for i in 0..RUNS + 5 {
        let name = format!("t{i}");
        let t = Instant::now();
        let mut lap = Instant::now();
        let mut step = |k: usize| {
            if i >= 5 {
                steps[k] += lap.elapsed();
            }
            lap = Instant::now();
        };
        rt.create_container(
            "bench",
            &ContainerConfig {
                name: name.clone(),
                layers: layers.to_vec(),
                spec: true_spec(),
                ..Default::default()
            },
        )
        .unwrap();
        step(0);
        rt.start_container("bench", &name).unwrap();
        step(1);
        let st = rt.wait("bench", &name).unwrap();
        assert_eq!(st.exit_code, Some(0));
        step(2);
        rt.remove_container("bench", &name).unwrap();
        step(3);
        if i >= 5 {
            berth.push(t.elapsed());
        }
    }
    rt.remove_pod("bench").unwrap();
    let avg = |d: Duration| d.as_secs_f64() * 1000.0 / RUNS as f64;
    eprintln!(
        "berth steps (mean ms): create {:.2}, start {:.2}, run to exit {:.2}, remove {:.2}",
        avg(steps[0]),
        avg(steps[1]),
        avg(steps[2]),
        avg(steps[3])
    );

    // runc: the same config.json (Docker's defaults, the same seccomp profile, a new network
    // namespace) on the same overlay root, `runc run` per container.
    let Ok(runc) = which("runc") else {
        println!(
            "| create → start → exit of /bin/true | {:.2} ms median | runc not installed | |",
            summary(berth).0
        );
        return;
    };
    let bundle = dir.join("runc-bundle");
    let root = Rootfs::mount(layers, &bundle.join("root")).unwrap();
    let mut spec = true_spec();
    spec.cgroup_path = "/berth-bench-runc/c".into();
    let config = spec.to_oci(&root.path().display().to_string());
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    let state = dir.join("runc-state");
    let mut runc_times = Vec::new();
    for i in 0..RUNS + 5 {
        let t = Instant::now();
        let o = Command::new(&runc)
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("r{i}"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "runc: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if i >= 5 {
            runc_times.push(t.elapsed());
        }
    }
    drop(root);
    berth_runtime::pod::remove_cgroup("/berth-bench-runc");
    let (b50, b99) = summary(berth);
    let (r50, r99) = summary(runc_times);
    println!(
        "| create → start → exit → delete of /bin/true, {RUNS} runs | p50 {b50:.2} ms, p99 {b99:.2} ms | runc 1.1: p50 {r50:.2} ms, p99 {r99:.2} ms | {:.2}× (goal ≤ 0.7×) |",
        b50 / r50
    );
}

fn shim_memory(rt: &Runtime, layers: &[PathBuf]) {
    rt.run_pod(&PodConfig {
        id: "mem".into(),
        name: "mem".into(),
        ..Default::default()
    })
    .unwrap();
    let mut spec = true_spec();
    spec.argv = vec!["/bin/busybox".into(), "sleep".into(), "30".into()];
    rt.create_container(
        "mem",
        &ContainerConfig {
            name: "sleep".into(),
            layers: layers.to_vec(),
            spec,
            ..Default::default()
        },
    )
    .unwrap();
    rt.start_container("mem", "sleep").unwrap();
    let pid = std::fs::read_to_string(rt.pod_dir("mem").join("shim.pid")).unwrap();
    // The shim gives back the code it ran once idle for half a second: let it settle.
    std::thread::sleep(Duration::from_millis(1500));
    let field = |file: &str, key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{}/{file}", pid.trim()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let rss = field("status", "VmRSS:");
    let pss = field("smaps_rollup", "Pss:");
    let anon = field("status", "RssAnon:");
    println!(
        "| shim memory per pod (one sleeping container) | RSS {:.1} MB (PSS {:.1} MB, anonymous {:.1} MB) | goal ≤ 3 MB | |",
        rss as f64 / 1024.0,
        pss as f64 / 1024.0,
        anon as f64 / 1024.0
    );
    rt.remove_pod("mem").unwrap();
}

fn pull(dir: &Path) {
    let reg_dir = dir.join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let reg = berth_testkit::start_registry(&reg_dir);
    let layout = dir.join("big-layout");
    let layers: Vec<Vec<u8>> = (0..3)
        .map(|i| berth_testkit::random_layer(&format!("data{i}"), 16 << 20))
        .collect();
    let total: usize = layers.iter().map(Vec::len).sum();
    berth_testkit::image_layout(&layout, &layers);
    berth_testkit::push(&layout, &reg, "bench/big:1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut berth_times = Vec::new();
    let mut skopeo_times = Vec::new();
    for i in 0..5 {
        let store_dir = dir.join(format!("pull-store-{i}"));
        let store = berth_image::ImageStore::open(&store_dir).unwrap();
        let reference =
            berth_image::Reference::parse(&format!("{}/bench/big:1", reg.addr)).unwrap();
        let opts = berth_image::registry::PullOptions {
            insecure: vec![reg.addr.clone()],
            parallel: 3,
            ..Default::default()
        };
        let t = Instant::now();
        rt.block_on(berth_image::registry::pull(
            &store,
            &reference,
            &opts,
            &|_| {},
        ))
        .unwrap();
        berth_times.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&store_dir);

        let out = dir.join(format!("skopeo-{i}"));
        let t = Instant::now();
        let o = Command::new("skopeo")
            .args([
                "copy",
                "--insecure-policy",
                "--src-tls-verify=false",
                "--quiet",
            ])
            .arg(format!("docker://{}/bench/big:1", reg.addr))
            .arg(format!("oci:{}:latest", out.display()))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        skopeo_times.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&out);
    }
    let (b, _) = summary(berth_times);
    let (s, _) = summary(skopeo_times);
    let mb = total as f64 / (1 << 20) as f64;
    println!(
        "| pull of {mb:.0} MiB in 3 layers from a local registry (median of 5) | {b:.0} ms ({:.0} MiB/s) | skopeo copy: {s:.0} ms ({:.0} MiB/s) | {:.2}× the time |",
        mb / (b / 1000.0),
        mb / (s / 1000.0),
        b / s
    );
}

fn which(bin: &str) -> Result<PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
        .ok_or(())
}
