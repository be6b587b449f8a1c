//! Pulls from a real registry: Debian's `docker-registry` on a loopback port of this test's
//! own, with a busybox image (from Debian's `busybox-static`) pushed by `skopeo`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_image::registry::{Progress, PullOptions, pull};
use berth_image::{Digest, ImageError, ImageStore, Reference};
use serde_json::json;

struct Registry {
    child: Child,
    addr: String,
    storage: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn need(bin: &str) -> &str {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: .ci/run installs docker-registry, skopeo and busybox-static"
    );
    bin
}

fn start_registry(dir: &Path) -> Registry {
    let storage = dir.join("storage");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.join("config.yml");
    std::fs::write(&cfg, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n", storage.display())).unwrap();
    let child = Command::new(need("/usr/bin/docker-registry"))
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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

fn blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d
}

/// A busybox image as an OCI layout: one gzip layer with the static binary and a few links.
fn busybox_layout(dir: &Path) -> Digest {
    let mut b = tar::Builder::new(Vec::new());
    let bin = std::fs::read(need("/bin/busybox")).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(bin.len() as u64);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "bin/busybox", &bin[..]).unwrap();
    for link in ["sh", "echo", "cat", "ls"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, format!("bin/{link}"), "busybox")
            .unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    let layer = gz.finish().unwrap();
    let ld = blob(dir, &layer);
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}, "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"unused").as_str()]}})).unwrap();
    let cd = blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.as_str(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld.as_str(), "size": layer.len()}]})).unwrap();
    let md = blob(dir, &manifest);
    std::fs::write(
        dir.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.as_str(), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})).unwrap()).unwrap();
    ld
}

fn push(layout: &Path, reg: &Registry, name: &str) {
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
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn opts(reg: &Registry) -> PullOptions {
    PullOptions {
        insecure: vec![reg.addr.clone()],
        parallel: 3,
        ..Default::default()
    }
}

#[tokio::test]
async fn pull_stores_verifies_and_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_registry(dir.path());
    let layout = dir.path().join("layout");
    let layer = busybox_layout(&layout);
    push(&layout, &reg, "test/busybox:1");
    let store = ImageStore::open(&dir.path().join("images")).unwrap();
    let r = Reference::parse(&format!("{}/test/busybox:1", reg.addr)).unwrap();

    let events = std::sync::Mutex::new(Vec::new());
    let rec = pull(&store, &r, &opts(&reg), &|p| events.lock().unwrap().push(p))
        .await
        .unwrap();
    assert_eq!(rec.name, r.to_string());
    assert_eq!(rec.layers[0].digest, layer);
    assert_eq!(
        rec.config.cmd.as_deref(),
        Some(&["/bin/sh".to_string()][..])
    );
    let root = store.layer_dir(&rec.layers[0]).unwrap();
    assert!(root.join("bin/busybox").exists());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let ev = events.into_inner().unwrap();
    assert!(
        matches!(ev[0], Progress::Resolved { layers: 1, .. }),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| matches!(e, Progress::LayerBytes { .. })),
        "progress while downloading: {ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, Progress::LayerDone { cached: false, .. }))
    );

    // A second pull downloads no layer.
    let events = std::sync::Mutex::new(Vec::new());
    pull(&store, &r, &opts(&reg), &|p| events.lock().unwrap().push(p))
        .await
        .unwrap();
    let ev = events.into_inner().unwrap();
    assert!(
        ev.iter().all(|e| !matches!(
            e,
            Progress::LayerStarted { .. } | Progress::LayerBytes { .. }
        )),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, Progress::LayerDone { cached: true, .. }))
    );

    // By digest.
    let by_digest =
        Reference::parse(&format!("{}/test/busybox@{}", reg.addr, rec.manifest)).unwrap();
    assert_eq!(
        pull(&store, &by_digest, &opts(&reg), &|_| {})
            .await
            .unwrap()
            .manifest,
        rec.manifest
    );
}

#[tokio::test]
async fn pull_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_registry(dir.path());
    let layout = dir.path().join("layout");
    let layer = busybox_layout(&layout);
    push(&layout, &reg, "test/busybox:1");
    let store = ImageStore::open(&dir.path().join("images")).unwrap();

    let missing = Reference::parse(&format!("{}/test/busybox:nope", reg.addr)).unwrap();
    let e = pull(&store, &missing, &opts(&reg), &|_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "not found in {}; pull it or check the name",
            reg.addr
        )),
        "{e}"
    );

    let closed = format!("127.0.0.1:{}", free_port());
    let nowhere = Reference::parse(&format!("{closed}/x:1")).unwrap();
    let e = pull(
        &store,
        &nowhere,
        &PullOptions {
            insecure: vec![closed.clone()],
            ..Default::default()
        },
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");

    // A blob the registry serves corrupted is refused and nothing of it is stored.
    let data = reg
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer.hex()[..2])
        .join(layer.hex())
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let r = Reference::parse(&format!("{}/test/busybox:1", reg.addr)).unwrap();
    let e = pull(&store, &r, &opts(&reg), &|_| {}).await.unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(!store.has_blob(&layer));
    assert!(store.list().unwrap().is_empty());
}
