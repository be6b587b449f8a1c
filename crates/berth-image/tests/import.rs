//! The content store with real files: OCI layouts and `docker save` archives built here, as
//! directories and as tars, imported, unpacked, verified, removed.

use std::path::Path;

use berth_image::{Digest, ImageError, ImageStore, import::import};
use berth_testkit::{blob, tar_of};
use serde_json::json;

/// An OCI layout with two layers (the second deletes a file of the first) named `name`.
fn oci_layout(dir: &Path, name: &str) -> (Digest, Vec<Digest>) {
    let l1 = tar_of(&[
        ("bin/hello", b"#!/bin/sh\necho hello\n"),
        ("etc/old", b"old"),
    ]);
    let l2 = tar_of(&[("etc/.wh.old", b""), ("etc/new", b"new")]);
    let (d1, d2) = (blob(dir, &l1), blob(dir, &l2));
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/bin/hello"], "Env": ["A=1"], "WorkingDir": "/"}, "rootfs": {"type": "layers", "diff_ids": [d1.as_str(), d2.as_str()]}})).unwrap();
    let cd = blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.as_str(), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d1.as_str(), "size": l1.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d2.as_str(), "size": l2.len()}]})).unwrap();
    let md = blob(dir, &manifest);
    std::fs::write(
        dir.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.as_str(), "size": manifest.len(),
         "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}}]})).unwrap()).unwrap();
    (md, vec![d1, d2])
}

#[test]
fn oci_layout_imports_unpacks_and_is_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let (manifest, layers) = oci_layout(&layout, "localhost:5000/demo/hello:1.0");
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let recs = import(&store, &layout, None).unwrap();
    assert_eq!(recs.len(), 1);
    let rec = store.resolve("localhost:5000/demo/hello:1.0").unwrap();
    assert_eq!(rec.manifest, manifest);
    assert_eq!(
        rec.config.entrypoint.as_deref(),
        Some(&["/bin/hello".to_string()][..])
    );
    assert_eq!(
        rec.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>(),
        layers
    );
    let l1 = store.layer_dir(&rec.layers[0]).unwrap();
    let l2 = store.layer_dir(&rec.layers[1]).unwrap();
    assert_eq!(
        std::fs::read(l1.join("bin/hello")).unwrap(),
        b"#!/bin/sh\necho hello\n"
    );
    assert!(l2.join("etc/new").exists());
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::symlink_metadata(l2.join("etc/old"))
                .unwrap()
                .file_type()
                .is_char_device(),
            "the whiteout is an overlay whiteout"
        );
    }
    // Unpacked once: a second call returns the same directory without unpacking again.
    std::fs::write(l1.join("marker"), b"x").unwrap();
    assert_eq!(store.layer_dir(&rec.layers[0]).unwrap(), l1);
    assert!(l1.join("marker").exists());
    // A second import stores nothing new and still names the image.
    let before = std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count();
    import(&store, &layout, Some("hello:renamed")).unwrap();
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        before
    );
    assert_eq!(store.resolve("hello:renamed").unwrap().manifest, manifest);
    // By digest prefix, when it is unambiguous... both names point at one manifest:
    assert!(store.resolve(&manifest.hex()[..12]).is_err());
    // Removing one name keeps the shared blobs; removing the last removes them.
    store.remove("hello:renamed").unwrap();
    assert!(store.has_blob(&layers[0]));
    store.remove("localhost:5000/demo/hello:1.0").unwrap();
    assert!(!store.has_blob(&layers[0]));
    assert!(!l1.exists());
    match store.resolve("hello:renamed") {
        Err(e @ ImageError::NotFound(_)) => {
            assert!(e.to_string().contains("pull or import it"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_corrupted_blob_is_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let (_, layers) = oci_layout(&layout, "docker.io/library/bad:1");
    let blob = layout.join("blobs/sha256").join(layers[1].hex());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let err = import(&store, &layout, None).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(!store.has_blob(&layers[1]));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0,
        "no partial file left"
    );
}

#[test]
fn docker_save_archives_and_tarred_layouts_import() {
    let tmp = tempfile::tempdir().unwrap();
    // docker save (classic): manifest.json + config + layer.tar, packed in a tar.
    let layer = tar_of(&[("bin/sh-ish", b"x")]);
    let config = serde_json::to_vec(&json!({"config": {"Cmd": ["/bin/sh-ish"], "ExposedPorts": {"8080/tcp": {}}, "StopSignal": "SIGINT"}})).unwrap();
    let manifest = serde_json::to_vec(
        &json!([{"Config": "cfg.json", "RepoTags": ["busybox:test"], "Layers": ["abc/layer.tar"]}]),
    )
    .unwrap();
    let archive = tar_of(&[
        ("manifest.json", &manifest),
        ("cfg.json", &config),
        ("abc/layer.tar", &layer),
    ]);
    let file = tmp.path().join("saved.tar");
    std::fs::write(&file, archive).unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let recs = import(&store, &file, None).unwrap();
    assert_eq!(recs[0].name, "docker.io/library/busybox:test");
    let rec = store.resolve("busybox:test").unwrap();
    assert_eq!(rec.config.stop_signal, "SIGINT");
    assert_eq!(rec.layers[0].digest, Digest::of(&layer));
    assert!(
        store
            .layer_dir(&rec.layers[0])
            .unwrap()
            .join("bin/sh-ish")
            .exists()
    );
    // An OCI layout packed as a tar.
    let layout = tmp.path().join("layout");
    oci_layout(&layout, "docker.io/team/app:2");
    let packed = tmp.path().join("layout.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&packed).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    import(&store, &packed, None).unwrap();
    assert!(store.resolve("team/app:2").is_ok());
    assert_eq!(store.list().unwrap().len(), 2);
    // Not an image at all.
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, tar_of(&[("readme", b"hi")])).unwrap();
    assert!(
        import(&store, &junk, None)
            .unwrap_err()
            .to_string()
            .contains("neither an OCI image layout")
    );
    // A path that climbs out of the archive.
    let evil = serde_json::to_vec(
        &json!([{"Config": "../../etc/passwd", "RepoTags": ["x:y"], "Layers": []}]),
    )
    .unwrap();
    let evil_tar = tmp.path().join("evil.tar");
    std::fs::write(&evil_tar, tar_of(&[("manifest.json", &evil)])).unwrap();
    assert!(
        import(&store, &evil_tar, None)
            .unwrap_err()
            .to_string()
            .contains("leaves the archive")
    );
}

/// An archive whose files are links to the host's files: the import refuses it and reads
/// nothing from outside (a `docker save` whose manifest, config or layer is a link out, and a
/// hard link to a host file).
#[test]
fn archives_with_links_out_of_them_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret.json");
    std::fs::write(&secret, br#"[{"Config":"c.json","Layers":[]}]"#).unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let link = |b: &mut tar::Builder<Vec<u8>>, kind, name: &str, target: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o644);
        b.append_link(&mut h, name, target).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    let secret_s = secret.display().to_string();
    type Build<'a> = Box<dyn Fn(&mut tar::Builder<Vec<u8>>) + 'a>;
    let cases: Vec<(&str, Build)> = vec![
        (
            "manifest.json",
            Box::new(|b| link(b, tar::EntryType::Symlink, "manifest.json", &secret_s)),
        ),
        (
            "c.json",
            Box::new(|b| {
                file(
                    b,
                    "manifest.json",
                    br#"[{"Config":"c.json","Layers":[],"RepoTags":["x:1"]}]"#,
                );
                link(
                    b,
                    tar::EntryType::Symlink,
                    "c.json",
                    "../../../../../../etc/hostname",
                );
            }),
        ),
        (
            "layer.tar",
            Box::new(|b| {
                file(
                    b,
                    "c.json",
                    br#"{"architecture":"amd64","os":"linux","config":{}}"#,
                );
                file(
                    b,
                    "manifest.json",
                    br#"[{"Config":"c.json","Layers":["layer.tar"],"RepoTags":["x:1"]}]"#,
                );
                link(b, tar::EntryType::Symlink, "layer.tar", "/etc/hostname");
            }),
        ),
        (
            "manifest.json",
            Box::new(|b| link(b, tar::EntryType::Link, "manifest.json", &secret_s)),
        ),
    ];
    for (named, build) in cases {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let archive = tmp.path().join("evil.tar");
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let err = import(&store, &archive, None).unwrap_err().to_string();
        assert!(err.contains(named), "the error names {named}: {err}");
        assert!(store.list().unwrap().is_empty(), "nothing imported: {err}");
    }
    assert!(std::fs::read(&secret).unwrap().starts_with(b"[{"));
}
