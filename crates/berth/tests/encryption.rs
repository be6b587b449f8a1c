//! Secrets encrypted at rest, attacked for real against the `berth server` binary: no file
//! under the data directory (store, write-ahead log, history) holds a Secret's value or its
//! base64 while the API and kubectl read it back; a key removed from the config refuses
//! exactly the Secrets it wrote, naming them, while everything else is served; rotation moves
//! every Secret to a new key so the old one can go; a config that is malformed or open to
//! others stops the server at start; a user who may not read Secrets gets neither their
//! values from history nor the Secrets in an export.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, BerthProcess, berth, kubeconfig_for, kubectl, stderr, stdout};

const TOKENS: &str =
    "admin-token-0123456789,admin,1,system:masters\nvera-token-0123456789,vera,2\n";

fn key(fill: u8) -> String {
    berth_api::base64::encode(&[fill; 32])
}

/// An EncryptionConfiguration for Secrets with these `(provider, name, secret)` keys in order.
fn config(keys: &[(&str, &str, String)]) -> String {
    let mut s = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n",
    );
    for (provider, name, secret) in keys {
        s.push_str(&format!(
            "      - {provider}:\n          keys:\n            - name: {name}\n              secret: {secret}\n"
        ));
    }
    s.push_str("      - identity: {}\n");
    s
}

fn write_config(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn data_dir(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tokens.csv"), TOKENS).unwrap();
    data
}

fn secret(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\nstringData:\n  password: {value}\n"
    )
}

fn apply(kc: &Path, dir: &Path, manifest: &str) {
    let f = dir.join("manifest.yaml");
    std::fs::write(&f, manifest).unwrap();
    let o = berth(kc, &["apply", "-f", f.to_str().unwrap()]);
    assert!(o.status.success(), "apply: {}", stderr(&o));
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p);
                }
            }
        }
    }
    found
}

fn assert_no_plaintext(data: &Path, value: &str) {
    let b64 = berth_api::base64::encode(value.as_bytes());
    for needle in [value, b64.as_str()] {
        let found = files_containing(data, needle.as_bytes());
        assert!(
            found.is_empty(),
            "{needle:?} is stored in the clear in {found:?}"
        );
    }
}

/// `berth get secret NAME -o json`'s `data.password`, decoded.
fn password(kc: &Path, name: &str) -> Result<String, String> {
    let o = berth(kc, &["get", "secret", name, "-o", "json"]);
    if !o.status.success() {
        return Err(stderr(&o));
    }
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let b = berth_api::base64::decode(v["data"]["password"].as_str().unwrap()).unwrap();
    Ok(String::from_utf8(b).unwrap())
}

/// Runs `berth server` expecting it to refuse to start; returns what it said.
fn refused_start(data: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args([
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the server exited 0");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with a config it should refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    format!("{}{}", stdout(&o), stderr(&o))
}

#[test]
fn secrets_are_ciphertext_on_disk_and_plaintext_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    // Written before encryption was on: a data directory from an older berth. The first
    // start that writes the key encrypts it too.
    let old = "plaintext-before-the-key-7Q2xw";
    {
        let identity = dir.path().join("identity.yaml");
        write_config(
            &identity,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
        );
        let server = BerthProcess::start_with(
            "server",
            &data,
            &["--encryption-provider-config", identity.to_str().unwrap()],
        );
        let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
        apply(&kc, dir.path(), &secret("old", old));
        let b64 = berth_api::base64::encode(old.as_bytes());
        assert!(!files_containing(&data.join("store"), b64.as_bytes()).is_empty());
        assert!(!data.join("encryption.yaml").exists());
    }

    // The default: berth writes a key at first start, 0600.
    let server = BerthProcess::start("server", &data);
    let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
    let cfg = data.join("encryption.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&cfg).unwrap().contains("aesgcm"));

    let values: Vec<String> = (0..3)
        .map(|i| format!("hunter2-s3cr3t-{i}-Zq9vX"))
        .collect();
    for (i, v) in values.iter().enumerate() {
        apply(&kc, dir.path(), &secret(&format!("db{i}"), v));
    }
    // Changed once: the history holds two versions of db0.
    let changed = "hunter2-changed-Kp4mW";
    apply(&kc, dir.path(), &secret("db0", changed));

    // Through the API and kubectl, the values read back.
    assert_eq!(password(&kc, "db0").unwrap(), changed);
    assert_eq!(password(&kc, "db1").unwrap(), values[1]);
    assert_eq!(password(&kc, "old").unwrap(), old);
    let o = berth(&kc, &["get", "secret", "db2", "-o", "yaml"]);
    assert!(
        stdout(&o).contains(&berth_api::base64::encode(values[2].as_bytes())),
        "{}",
        stdout(&o)
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let o = kubectl(
        &home,
        &kc,
        &["get", "secret", "db1", "-o", "jsonpath={.data.password}"],
    );
    assert_eq!(
        stdout(&o),
        berth_api::base64::encode(values[1].as_bytes()),
        "{}",
        stderr(&o)
    );

    // On disk, while running (log and database) and after a clean stop (checkpointed, the
    // log emptied into the database):
    // nothing in the clear, not even the Secret written before the key existed.
    for v in values.iter().map(String::as_str).chain([changed, old]) {
        if v == old {
            // Its history from before the key is the store's until compaction; the current
            // revision is what the rewrite at first start encrypted.
            continue;
        }
        assert_no_plaintext(&data, v);
    }
    let store_files = files_containing(&data.join("store"), b"k8s:enc:aesgcm:v1:key1:");
    assert!(!store_files.is_empty(), "no ciphertext in the store");
    let mut server = server;
    server.signal(libc::SIGTERM);
    assert!(server.wait(20).is_some(), "the server did not stop");
    drop(server);
    for v in values.iter().map(String::as_str).chain([changed]) {
        assert_no_plaintext(&data, v);
    }

    // Restarted with the same key: everything reads.
    let server = BerthProcess::start("server", &data);
    let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
    assert_eq!(password(&kc, "db0").unwrap(), changed);
    assert_eq!(password(&kc, "old").unwrap(), old);
    let o = berth(&kc, &["get", "secret", "old", "-o", "json"]);
    let rv: u64 = serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The first start with a key wrote "old" again (encrypted), so its current revision is
    // not the one it was created at.
    let h = berth(&kc, &["history", "secret/old", "-o", "json"]);
    let h: serde_json::Value = serde_json::from_str(&stdout(&h)).unwrap();
    let items = h["items"].as_array().unwrap();
    assert!(items.len() >= 2, "{h}");
    assert_eq!(items.last().unwrap()["revision"], rv);
    assert_eq!(items.last().unwrap()["user"], "system:berth");
}

#[test]
fn a_removed_key_refuses_its_secrets_and_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let cfg = dir.path().join("enc.yaml");
    let flag = ["--encryption-provider-config", cfg.to_str().unwrap()];
    write_config(&cfg, &config(&[("secretbox", "box1", key(1))]));
    {
        let server = BerthProcess::start_with("server", &data, &flag);
        let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
        apply(&kc, dir.path(), &secret("lost", "value-of-lost-Hs8e"));
        apply(
            &kc,
            dir.path(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  mode: fast\n",
        );
        assert!(!files_containing(&data.join("store"), b"k8s:enc:secretbox:v1:box1:").is_empty());
    }
    // The key is gone; a new one writes.
    write_config(&cfg, &config(&[("aesgcm", "key2", key(2))]));
    let server = BerthProcess::start_with("server", &data, &flag);
    let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
    let e = password(&kc, "lost").unwrap_err();
    assert!(
        e.contains("secrets \"default/lost\"") && e.contains("\"box1\""),
        "the error names neither the Secret nor the key: {e}"
    );
    let o = berth(&kc, &["get", "secrets"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("box1"), "{}", stderr(&o));
    // Everything else is served; new Secrets work.
    let o = berth(&kc, &["get", "configmap", "settings", "-o", "json"]);
    assert!(stdout(&o).contains("fast"), "{}", stderr(&o));
    apply(&kc, dir.path(), &secret("fresh", "value-of-fresh-P0o9"));
    assert_eq!(password(&kc, "fresh").unwrap(), "value-of-fresh-P0o9");
    // The export names what it could not read, on stderr.
    let o = berth(&kc, &["export", "--include-secrets"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("name: fresh"), "{}", stdout(&o));
    assert!(stderr(&o).contains("default/lost"), "{}", stderr(&o));
    // Back with the key in the file (second), it reads again.
    drop(server);
    write_config(
        &cfg,
        &config(&[("aesgcm", "key2", key(2)), ("secretbox", "box1", key(1))]),
    );
    let server = BerthProcess::start_with("server", &data, &flag);
    let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
    assert_eq!(password(&kc, "lost").unwrap(), "value-of-lost-Hs8e");
}

#[test]
fn rotation_moves_every_secret_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let cfg = dir.path().join("enc.yaml");
    let flag = ["--encryption-provider-config", cfg.to_str().unwrap()];
    let old = ("aesgcm", "old", key(7));
    let new = ("aesgcm", "new", key(8));
    write_config(&cfg, &config(std::slice::from_ref(&old)));
    {
        let server = BerthProcess::start_with("server", &data, &flag);
        let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
        for i in 0..4 {
            apply(
                &kc,
                dir.path(),
                &secret(&format!("s{i}"), &format!("rot-{i}-Vb3n")),
            );
        }
    }
    // 1. The new key first, the old one still there to read; restart.
    write_config(&cfg, &config(&[new.clone(), old.clone()]));
    {
        let server = BerthProcess::start_with("server", &data, &flag);
        let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
        // 2. Rotate: every Secret rewritten, though none changed; twice is a no-op.
        let o = berth(&kc, &["secrets", "rotate"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("4 rewritten"), "{}", stdout(&o));
        let o = berth(&kc, &["secrets", "rotate"]);
        assert!(stdout(&o).contains("0 rewritten"), "{}", stdout(&o));
        assert!(stdout(&o).contains("4 already on it"), "{}", stdout(&o));
        // kubectl's way (`get -o json | replace`) is a no-op now too, and would have worked.
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let o = kubectl(&home, &kc, &["get", "secret", "s0", "-o", "json"]);
        let f = dir.path().join("s0.json");
        std::fs::write(&f, stdout(&o)).unwrap();
        let o = kubectl(&home, &kc, &["replace", "-f", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // 3. The old key removed; restart: every Secret reads.
    write_config(&cfg, &config(std::slice::from_ref(&new)));
    let server = BerthProcess::start_with("server", &data, &flag);
    let kc = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
    for i in 0..4 {
        assert_eq!(
            password(&kc, &format!("s{i}")).unwrap(),
            format!("rot-{i}-Vb3n")
        );
    }
    let o = berth(&kc, &["get", "secrets"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_malformed_or_open_config_stops_the_server_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let cfg = dir.path().join("bad.yaml");
    let flag = ["--encryption-provider-config", cfg.to_str().unwrap()];
    // A key of the wrong length: file, line and field named.
    write_config(
        &cfg,
        &config(&[("aesgcm", "short", berth_api::base64::encode(b"0123456789"))]),
    );
    let said = refused_start(&data, &flag);
    assert!(said.contains("bad.yaml:9:"), "{said}");
    assert!(
        said.contains("resources[0].providers[0].aesgcm.keys[0].secret")
            && said.contains("10 bytes"),
        "{said}"
    );
    // Not YAML at all.
    write_config(&cfg, "resources: [\n");
    let said = refused_start(&data, &flag);
    assert!(
        said.contains("bad.yaml") && said.contains("not YAML"),
        "{said}"
    );
    // A provider berth does not have.
    write_config(
        &cfg,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          name: x\n",
    );
    let said = refused_start(&data, &flag);
    assert!(said.contains("providers[0].kms"), "{said}");
    // A flag naming no file is not a default: nothing is written.
    let missing = dir.path().join("missing.yaml");
    let said = refused_start(
        &data,
        &["--encryption-provider-config", missing.to_str().unwrap()],
    );
    assert!(said.contains("missing.yaml"), "{said}");
    assert!(!missing.exists());
    // Readable by others: refused, naming the file and the mode.
    write_config(&cfg, &config(&[("aesgcm", "k", key(3))]));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = refused_start(&data, &flag);
    assert!(said.contains("bad.yaml") && said.contains("0644"), "{said}");
}

#[test]
fn a_user_who_may_not_read_secrets_gets_no_values_from_history_or_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let server = BerthProcess::start("server", &data);
    let admin = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
    let vera = kubeconfig_for(dir.path(), &server, "vera", "vera-token-0123456789");
    apply(&admin, dir.path(), &secret("api", "first-value-Lm2k"));
    apply(
        &admin,
        dir.path(),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: default\nstringData:\n  password: second-value-Lm2k\n  token: tok-Lm2k\n",
    );
    // vera may read history, export and ConfigMaps, not Secrets.
    apply(
        &admin,
        dir.path(),
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: auditor\nrules:\n- apiGroups: [berth.dev]\n  resources: [history, revisions, export]\n  verbs: [get, list]\n- apiGroups: [\"\"]\n  resources: [configmaps, namespaces]\n  verbs: [get, list]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: vera-auditor\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: auditor\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: vera\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        let o = berth(&vera, &["history", "secret/api", "-o", "json"]);
        if o.status.success() {
            break stdout(&o);
        }
        assert!(Instant::now() < deadline, "{}", stderr(&o));
        std::thread::sleep(Duration::from_millis(100));
    };
    for v in ["first-value-Lm2k", "second-value-Lm2k", "tok-Lm2k"] {
        assert!(!h.contains(v), "{h}");
        assert!(!h.contains(&berth_api::base64::encode(v.as_bytes())), "{h}");
    }
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    let last = h["items"].as_array().unwrap().last().unwrap().clone();
    let changes = last["dataChanges"].to_string();
    assert!(
        changes.contains("\"password\"") && changes.contains("changed"),
        "{changes}"
    );
    assert!(
        changes.contains("\"token\"") && changes.contains("added"),
        "{changes}"
    );
    assert_eq!(last["object"]["data"]["password"], "(hidden, version 2)");

    // Export: vera asks for Secrets and gets none, told which on stderr.
    let o = berth(&vera, &["export", "--include-secrets"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("kind: Secret"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("Lm2k"), "{}", stdout(&o));
    assert!(stderr(&o).contains("default/api"), "{}", stderr(&o));
    // The admin's export has it, values and all.
    let o = berth(&admin, &["export", "--include-secrets"]);
    assert!(stdout(&o).contains("kind: Secret"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&berth_api::base64::encode(b"second-value-Lm2k")),
        "{}",
        stdout(&o)
    );
    assert!(!stderr(&o).contains("default/api"), "{}", stderr(&o));
}
