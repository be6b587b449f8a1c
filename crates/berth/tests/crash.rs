//! Crash safety: SIGKILL the server in the middle of a concurrent write load, 20 times over;
//! every acknowledged write must be there after each restart, and revisions stay gapless.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::kinds::resolve;
use berth_client::Client;
use common::BerthProcess;
use serde_json::json;

const ROUNDS: usize = 20;
const WRITERS: usize = 8;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // name -> the value the server acknowledged last
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    // name -> the value of a write in flight when the server died: it may or may not have
    // committed, since it was never acknowledged
    let in_flight: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let cm = resolve("cm").unwrap();
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let server = BerthProcess::start("server", dir.path());
        let client = Client::new(
            &server.url,
            &common::admin_token(dir.path()),
            &server.ca_pem(),
        );
        rt.block_on(async {
            // Everything acknowledged before is still there, with its last value.
            let pending = std::mem::take(&mut *in_flight.lock().unwrap());
            let known = acked.lock().unwrap().clone();
            for (name, value) in known {
                let got = client.get(cm, Some("default"), &name).await.unwrap_or_else(|e| panic!("round {round}: acknowledged {name} lost: {e}"));
                let got = got["data"]["v"].as_str().unwrap().to_string();
                let allowed = got == value || pending.get(&name) == Some(&got);
                assert!(allowed, "round {round}: {name} holds {got}, but {value} was acknowledged last");
                acked.lock().unwrap().insert(name, got);
            }
            // Revisions 1..=current all exist: no gap, no torn revision.
            let revs = client.revisions("from=1&limit=0").await.unwrap();
            let current: u64 = revs["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
            let listed: Vec<u64> = revs["items"].as_array().unwrap().iter().map(|r| r["revision"].as_u64().unwrap()).collect();
            assert_eq!(listed, (1..=current).collect::<Vec<_>>(), "round {round}: revisions have gaps");

            // The load: writers create and update their own objects until the server dies.
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let client = client.clone();
                let acked = acked.clone();
                let in_flight = in_flight.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u32;
                    loop {
                        let name = format!("r{round}-w{w}-{}", n / 2);
                        let value = format!("{round}.{w}.{n}");
                        in_flight.lock().unwrap().insert(name.clone(), value.clone());
                        let r = if n.is_multiple_of(2) {
                            client.create(cm, Some("default"), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}), "").await
                        } else {
                            client.patch(cm, Some("default"), &name, "application/merge-patch+json", &json!({"data": {"v": value}}), "").await
                        };
                        match r {
                            Ok(_) => {
                                in_flight.lock().unwrap().remove(&name);
                                acked.lock().unwrap().insert(name, value);
                            }
                            Err(_) => return,
                        }
                        n += 1;
                    }
                }));
            }
            // Let the load run a varying while, then kill the server mid-flight.
            let wait_ms = 100 + (round as u64 * 37) % 300;
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            server.signal(libc::SIGKILL);
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
            }
        });
        drop(server);
        let now = acked.lock().unwrap().len();
        assert!(
            now > total_acked,
            "round {round}: the load made no progress"
        );
        total_acked = now;
    }
}
