//! `berth image` as a user runs it: import a `docker save` archive, list, inspect, remove.

mod common;

use berth_testkit::{busybox_layout, push, start_registry, tar_of};
use common::{BIN, stderr, stdout};

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

#[test]
fn pull_from_a_registry_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let reg = start_registry(dir.path());
    let layout = dir.path().join("layout");
    busybox_layout(&layout);
    push(&layout, &reg, "tools/busybox:1.35");
    let image = format!("{}/tools/busybox:1.35", reg.addr);

    let o = berth_image(&data, &["pull", &image, "--insecure-registry", &reg.addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("pulled {image} (sha256:")),
        "{}",
        stdout(&o)
    );
    let progress = stderr(&o);
    assert!(
        progress.contains("1 layers") && progress.contains(": pulled"),
        "{progress}"
    );
    let again = berth_image(&data, &["pull", &image, "--insecure-registry", &reg.addr]);
    assert!(
        stderr(&again).contains("already present"),
        "{}",
        stderr(&again)
    );
    assert!(stdout(&berth_image(&data, &["ls"])).contains("tools/busybox"));

    // Without --insecure-registry it speaks TLS to a plain-HTTP registry, and says so.
    let o = berth_image(&data, &["pull", &image]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unreachable") && stderr(&o).contains("--insecure-registry"),
        "{}",
        stderr(&o)
    );
    let o = berth_image(&data, &["pull", "Not A Reference"]);
    assert!(
        stderr(&o).contains("invalid image reference"),
        "{}",
        stderr(&o)
    );
}
