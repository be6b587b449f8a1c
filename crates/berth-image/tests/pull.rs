//! Pulls from a real registry: Debian's `docker-registry` on a loopback port of this test's
//! own, with a busybox image (from Debian's `busybox-static`) pushed by `skopeo`.

use std::path::Path;

use berth_image::registry::{Progress, PullOptions, pull};
use berth_image::{ImageError, ImageStore, Reference};
use berth_testkit::{Registry, busybox_layout, free_port, push, start_registry};

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
