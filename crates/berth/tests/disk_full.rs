//! A full disk loses nothing acknowledged, end to end: a real `berth server` keeps its data
//! directory on a small tmpfs of the test's own. Objects are created (and one replaced) until
//! the disk is full and the API answers 507 with a Status saying so; then a little room is
//! given back (writes succeed while the database checkpoint cannot), then all of it; more
//! writes; the server is SIGKILLed and restarted on the same directory, then SIGKILLed and
//! restarted on a full disk, freed and killed once more. Every object whose write was
//! acknowledged is there with its value; none whose write failed is.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_api::kinds::resolve;
use berth_client::{Client, Method};
use berth_testkit::tmpfs::Tmpfs;
use common::{BIN, BerthProcess, ready_url};
use serde_json::{Value, json};

/// `berth server` on `data`, its log appended to `log` (read for panics at the end).
fn start(data: &std::path::Path, log: &std::path::Path) -> BerthProcess {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["server", "--data-dir", data.to_str().unwrap()])
        .args(["--api-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("spawn berth");
    let url = ready_url(&mut child, "server");
    BerthProcess {
        child,
        url,
        data_dir: data.to_path_buf(),
        ready_after: Duration::ZERO,
        net: None,
    }
}

/// SIGKILLs a server that must still be running (nothing made it exit or abort).
fn kill(mut server: BerthProcess) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited on its own"
    );
    server.signal(libc::SIGKILL);
    drop(server);
}

/// What the writes so far came to.
#[derive(Default)]
struct Ledger {
    /// name -> the value of its acknowledged create.
    created: BTreeMap<String, String>,
    /// Names whose create failed.
    refused: Vec<String>,
    /// The value of the last acknowledged replace of the "counter" object.
    counter: String,
    /// Values of replaces of "counter" that failed.
    counter_refused: Vec<String>,
    n: usize,
}

fn body(name: &str, value: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"v": value, "pad": "p".repeat(8 * 1024)},
    }))
    .unwrap()
}

/// One write; `true` when acknowledged. A refusal must be a 507 Status that says the disk is
/// full; any other answer fails the test.
async fn write(client: &Client, l: &mut Ledger) -> bool {
    let cm = resolve("cm").unwrap();
    l.n += 1;
    let value = format!("value-{}", l.n);
    let replace = l.n.is_multiple_of(3);
    let name = if replace {
        "counter".to_string()
    } else {
        format!("cm-{:05}", l.n)
    };
    let (method, path) = if replace {
        (Method::PUT, Client::object_path(cm, Some("default"), &name))
    } else {
        (Method::POST, cm.collection_path(Some("default")))
    };
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        client.raw(
            method,
            &path,
            Some(("application/json", body(&name, &value))),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("write {name}: no answer in 30 s"))
    .unwrap_or_else(|e| panic!("write {name}: {e}"));
    if (200..300).contains(&r.status) {
        if replace {
            l.counter = value;
        } else {
            l.created.insert(name, value);
        }
        return true;
    }
    let status: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("write {name}: {} without a Status: {e}", r.status));
    assert_eq!(r.status, 507, "write {name}: {status}");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["code"], 507, "{status}");
    assert_eq!(status["reason"], "InsufficientStorage", "{status}");
    let msg = status["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("the disk is full")
            && msg.contains("No space left on device")
            && msg.contains("nothing was changed"),
        "unclear message: {msg}"
    );
    if replace {
        l.counter_refused.push(value);
    } else {
        l.refused.push(name);
    }
    false
}

/// Every acknowledged write reads back; no refused one does.
async fn check(client: &Client, l: &Ledger, when: &str) {
    let cm = resolve("cm").unwrap();
    for (name, value) in &l.created {
        let got = client
            .get(cm, Some("default"), name)
            .await
            .unwrap_or_else(|e| panic!("{when}: acknowledged {name}: {e}"));
        assert_eq!(got["data"]["v"], value.as_str(), "{when}: {name}");
    }
    for name in &l.refused {
        let got = client.get(cm, Some("default"), name).await;
        assert_eq!(
            got.as_ref().err().and_then(|e| e.code()),
            Some(404),
            "{when}: refused {name} is there: {got:?}"
        );
    }
    let counter = client
        .get(cm, Some("default"), "counter")
        .await
        .unwrap_or_else(|e| panic!("{when}: counter: {e}"));
    assert_eq!(counter["data"]["v"], l.counter.as_str(), "{when}: counter");
}

#[test]
fn a_full_disk_loses_no_acknowledged_object() {
    // Declared first, dropped last: the server is killed before the unmount.
    let fs = Tmpfs::mount("24m");
    let data = fs.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start(&data, &log);
    let client = Client::new(&server.url, &common::admin_token(&data), &server.ca_pem());
    let mut l = Ledger::default();
    rt.block_on(async {
        let cm = resolve("cm").unwrap();
        client
            .create(
                cm,
                Some("default"),
                &serde_json::from_slice(&body("counter", "value-0")).unwrap(),
                "",
            )
            .await
            .unwrap();
        l.counter = "value-0".into();
        for _ in 0..9 {
            assert!(
                write(&client, &mut l).await,
                "a write with room to spare failed"
            );
        }
        std::fs::write(fs.path().join("reserve"), vec![0u8; 1024 * 1024]).unwrap();
        let filler = fs.fill("filler");

        // Full: writes are refused with 507 and a clear Status; reads still answer.
        let mut refused = 0;
        for _ in 0..30 {
            if !write(&client, &mut l).await {
                refused += 1;
            }
        }
        assert!(
            refused >= 20,
            "only {refused} of 30 writes were refused on a full disk"
        );
        check(&client, &l, "disk full").await;

        // Some room: writes fill it while database checkpoints fail, past three of them.
        std::fs::remove_file(fs.path().join("reserve")).unwrap();
        let until = Instant::now() + Duration::from_millis(3500);
        let mut refused_again = 0;
        while Instant::now() < until {
            if !write(&client, &mut l).await {
                refused_again += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(refused_again > 0, "the writes never filled the freed room");
        check(&client, &l, "nearly full").await;

        // Space again: writes succeed at once.
        std::fs::remove_file(&filler).unwrap();
        for _ in 0..30 {
            assert!(
                write(&client, &mut l).await,
                "a write failed after space was freed"
            );
        }
        check(&client, &l, "freed").await;
    });
    kill(server);

    let server = start(&data, &log);
    let client = Client::new(&server.url, &common::admin_token(&data), &server.ca_pem());
    rt.block_on(async {
        check(&client, &l, "after SIGKILL and restart").await;
        for _ in 0..5 {
            assert!(
                write(&client, &mut l).await,
                "a write after the restart failed"
            );
        }
    });
    // Killed again and started on a full disk: it serves what it has and refuses writes.
    kill(server);
    let filler = fs.fill("filler");
    let server = start(&data, &log);
    let client = Client::new(&server.url, &common::admin_token(&data), &server.ca_pem());
    rt.block_on(async {
        check(&client, &l, "restarted on a full disk").await;
        let mut refused = 0;
        for _ in 0..10 {
            if !write(&client, &mut l).await {
                refused += 1;
            }
        }
        assert!(
            refused >= 5,
            "only {refused} of 10 writes were refused on a full disk"
        );
        std::fs::remove_file(&filler).unwrap();
        for _ in 0..5 {
            assert!(
                write(&client, &mut l).await,
                "a write failed after space was freed"
            );
        }
    });
    kill(server);
    let server = start(&data, &log);
    let client = Client::new(&server.url, &common::admin_token(&data), &server.ca_pem());
    rt.block_on(check(&client, &l, "after the last SIGKILL"));
    kill(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "the server panicked:\n{text}");
    assert!(
        text.contains("the disk is full"),
        "the server never logged the full disk:\n{text}"
    );
}
