//! Fixtures for berth's tests (a dev-dependency only): Debian's `docker-registry` on a
//! loopback port of the test's own, a busybox image built from Debian's `busybox-static` as an
//! OCI layout, `skopeo` to push it, and tar builders. Every process started here is killed
//! when its handle drops, pass or fail.

pub mod tmpfs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_image::Digest;
use serde_json::json;

/// A tar of regular files (mode 0755, root-owned).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, p, *data)
            .expect("append to an in-memory tar");
    }
    b.into_inner().expect("finish an in-memory tar")
}

/// A running `docker-registry`.
pub struct Registry {
    child: Child,
    pub addr: String,
    /// Where it keeps blobs (`docker/registry/v2/blobs/sha256/..`).
    pub storage: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("test fixture")
        .local_addr()
        .expect("test fixture")
        .port()
}

/// The path of a tool `.ci/run` installs, or a panic saying so.
pub fn need(bin: &str) -> &str {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: .ci/run installs docker-registry, skopeo and busybox-static"
    );
    bin
}

/// Starts a registry storing under `dir`.
pub fn start_registry(dir: &Path) -> Registry {
    let storage = dir.join("storage");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.join("config.yml");
    std::fs::write(&cfg, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n", storage.display())).expect("test fixture");
    let child = Command::new(need("/usr/bin/docker-registry"))
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("test fixture");
    let reg = Registry {
        child,
        addr,
        storage,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&reg.addr).is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    reg
}

/// Writes a blob into an OCI layout.
pub fn blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("test fixture");
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).expect("test fixture");
    d
}

/// A busybox image as an OCI layout: one gzip layer with the static binary and a few links.
pub fn busybox_layout(dir: &Path) -> Digest {
    let mut b = tar::Builder::new(Vec::new());
    let bin = std::fs::read(need("/bin/busybox")).expect("test fixture");
    let mut h = tar::Header::new_gnu();
    h.set_size(bin.len() as u64);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "bin/busybox", &bin[..])
        .expect("test fixture");
    for link in ["sh", "echo", "cat", "ls"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, format!("bin/{link}"), "busybox")
            .expect("test fixture");
    }
    let layer = gzip(&b.into_inner().expect("test fixture"));
    image_layout(dir, &[layer])[0].clone()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("test fixture");
    gz.finish().expect("test fixture")
}

/// A gzip layer holding one file of `size` random bytes (so it does not compress).
pub fn random_layer(name: &str, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    for chunk in data.chunks_mut(256) {
        getrandom::fill(chunk).expect("random bytes");
    }
    gzip(&tar_of(&[(name, &data)]))
}

/// Writes an OCI layout of one image (`latest`) made of `layers` (gzip tars, bottom first);
/// returns the layers' digests.
pub fn image_layout(dir: &Path, layers: &[Vec<u8>]) -> Vec<Digest> {
    let digests: Vec<Digest> = layers.iter().map(|l| blob(dir, l)).collect();
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}, "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"unused").as_str()]}})).expect("test fixture");
    let cd = blob(dir, &config);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .zip(&digests)
        .map(|(l, d)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.as_str(), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.as_str(), "size": config.len()},
        "layers": layer_descs})).expect("test fixture");
    let md = blob(dir, &manifest);
    std::fs::write(
        dir.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .expect("test fixture");
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.as_str(), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})).expect("test fixture")).expect("test fixture");
    digests
}

/// Pushes the layout's `latest` to `reg` as `name` with skopeo.
pub fn push(layout: &Path, reg: &Registry, name: &str) {
    let o = Command::new(need("/usr/bin/skopeo"))
        .args([
            "copy",
            "--insecure-policy",
            "--dest-tls-verify=false",
            "--quiet",
        ])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/{name}", reg.addr))
        .output()
        .expect("test fixture");
    assert!(
        o.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A bridge name and an address range of this test's own, so tests run in parallel never
/// share either: a random /24 in 10.128.0.0/9 and a bridge named after it.
pub fn unique_net() -> (String, String) {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).expect("random bytes");
    let (x, y) = (128 + (b[0] & 0x7f), b[1]);
    (format!("bt{x}x{y}"), format!("10.{x}.{y}.0/24"))
}
