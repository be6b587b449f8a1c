//! The audit log of an in-process control plane: it rotates at its size keeping at most its
//! number of old files, and a writer that cannot write (its file is a pipe no one reads)
//! never holds a request up: the events are dropped and counted instead.

mod common;

use std::path::Path;
use std::time::Duration;

use berth_api::kinds::resolve;
use berth_client::Client;
use common::{CAROL_TOKEN, TestServer, eventually};

/// carol holds no binding: every list she makes is a 403, and audited.
async fn refused(c: &Client) {
    let e = c
        .list(resolve("configmaps").unwrap(), Some("default"), "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("forbidden"), "{e}");
}

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut f: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    f.sort();
    f
}

#[tokio::test]
async fn the_audit_log_rotates_at_its_size_keeping_its_backups() {
    let t = TestServer::start_with(|o| {
        o.audit.max_bytes = 2000;
        o.audit.max_backups = 2;
    })
    .await;
    let url = t.server.as_ref().unwrap().url.clone();
    let ca = t.server.as_ref().unwrap().ca_pem.clone();
    let carol = Client::new(&url, CAROL_TOKEN, &ca);
    for _ in 0..40 {
        refused(&carol).await;
    }
    let dir = t.dir.path().join("audit");
    let found = eventually(10, "three audit files", || {
        let f = files(&dir);
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        std::future::ready((names == ["audit.log", "audit.log.1", "audit.log.2"]).then_some(f))
    })
    .await;
    for (name, len) in &found {
        assert!(*len <= 2000, "{name} is {len} bytes");
    }
    // More events: still two old files, never a third.
    for _ in 0..20 {
        refused(&carol).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names: Vec<String> = files(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
    let text = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["user"]["username"], "carol");
        assert_eq!(e["responseStatus"]["code"], 403);
    }
    t.stop().await;
}

/// The count of dropped events in the process's metrics.
fn dropped() -> f64 {
    berth_metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix("berth_audit_events_dropped_total{reason=\"queue_full\"} "))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_writer_that_cannot_keep_up_never_holds_a_request() {
    let t = TestServer::start_with(|o| o.audit.queue = 1).await;
    // The writer opens its file at the first event: a pipe that nobody reads holds it there
    // for good, so the queue fills at once.
    let fifo = t.dir.path().join("audit").join("audit.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let url = t.server.as_ref().unwrap().url.clone();
    let ca = t.server.as_ref().unwrap().ca_pem.clone();
    let carol = Client::new(&url, CAROL_TOKEN, &ca);
    let flood = async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let carol = carol.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    refused(&carol).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Writes are audited too, and go through as well.
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flood"}, "data": {"k": "v"}});
        t.admin
            .create(resolve("configmaps").unwrap(), Some("default"), &cm, "")
            .await
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("requests answered while the audit writer is stuck");
    // 201 audited requests: one taken by the stuck writer, one in the queue, the rest dropped.
    assert!(dropped() >= 199.0, "dropped {}", dropped());
    t.stop().await;
}
