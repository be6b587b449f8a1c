//! `berth image` as a user runs it: import a `docker save` archive, list, inspect, remove.

mod common;

use common::{BIN, stderr, stdout};

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn berth_image(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("image")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn import_list_inspect_remove() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layer = tar_of(&[("bin/app", b"#!/bin/sh\necho hi\n")]);
    let config = br#"{"config": {"Entrypoint": ["/bin/app"], "Env": ["MODE=demo"]}}"#;
    let manifest =
        br#"[{"Config": "c.json", "RepoTags": ["demo/app:1.0"], "Layers": ["l/layer.tar"]}]"#;
    let archive = dir.path().join("app.tar");
    std::fs::write(
        &archive,
        tar_of(&[
            ("manifest.json", manifest),
            ("c.json", config),
            ("l/layer.tar", &layer),
        ]),
    )
    .unwrap();

    let o = berth_image(&data, &["import", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("imported docker.io/demo/app:1.0 (sha256:"),
        "{}",
        stdout(&o)
    );

    let ls = stdout(&berth_image(&data, &["ls"]));
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY   TAG   IMAGE ID"), "{ls}");
    assert!(lines[1].starts_with("demo/app     1.0   "), "{ls}");

    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&berth_image(&data, &["inspect", "demo/app:1.0"]))).unwrap();
    assert_eq!(inspect["runConfig"]["Entrypoint"][0], "/bin/app");
    assert_eq!(inspect["layers"].as_array().unwrap().len(), 1);

    let missing = berth_image(&data, &["inspect", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("image nope not found locally; pull or import it"),
        "{}",
        stderr(&missing)
    );

    let rm = berth_image(&data, &["rm", "demo/app:1.0"]);
    assert!(
        stdout(&rm).starts_with("Deleted: docker.io/demo/app:1.0"),
        "{}",
        stdout(&rm)
    );
    assert_eq!(
        std::fs::read_dir(data.join("images/blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "blobs collected"
    );
    assert_eq!(stdout(&berth_image(&data, &["ls"])).lines().count(), 1);
}
