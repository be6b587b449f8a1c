//! A load generator for profiling the store's write path:
//! `cargo run --release -p berth-store --example put_load -- 16` (writers; default 16).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let writers: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let s = berth_store::Store::open(dir.path(), berth_store::StoreOptions::default()).unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut t = Vec::new();
        for w in 0..writers {
            let (s, done) = (s.clone(), done.clone());
            t.push(tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < Duration::from_secs(4) {
                    let key = format!("/bench/{w}/{i}");
                    s.put(
                        key.as_bytes(),
                        b"0123456789abcdef0123456789abcdef",
                        berth_store::Origin::new("bench", "put"),
                    )
                    .await
                    .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        for x in t {
            x.await.unwrap();
        }
        println!(
            "{writers} writers: {:.0}/s",
            done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
        );
    });
}
