//! A full disk loses nothing acknowledged: the store on an 8 MiB tmpfs of its own is filled
//! until writes fail, given a little room (so writes succeed while the checkpoint of the
//! database cannot), freed, written again, closed and reopened; then closed and reopened on
//! a full disk. Every acknowledged write is there, with its value, and no failed write is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_store::{Origin, Store, StoreError, StoreOptions};
use berth_testkit::tmpfs::Tmpfs;

fn me() -> Origin {
    Origin::new("alice", "create")
}

fn value(i: usize) -> Vec<u8> {
    vec![b'a' + (i % 26) as u8; 8 * 1024]
}

/// What the writes so far came to.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, Vec<u8>>,
    failed: Vec<String>,
    n: usize,
}

impl Ledger {
    /// One put of a fresh key: `Ok(true)` acknowledged, `Ok(false)` refused for a full disk
    /// (with an error that says so); anything else fails the test.
    async fn put(&mut self, s: &Store) -> bool {
        self.n += 1;
        let key = format!("/k/{:05}", self.n);
        let v = value(self.n);
        let ok = put_one(s, &key, &v).await;
        self.note(key, v, ok);
        ok
    }

    fn note(&mut self, key: String, v: Vec<u8>, ok: bool) {
        if ok {
            self.acked.insert(key, v);
        } else {
            self.failed.push(key);
        }
    }

    /// Every acknowledged write reads back with its value; no failed one exists.
    fn check(&self, s: &Store, when: &str) {
        self.check_reads(s, when, false);
    }

    /// As `check`; with `full_ok`, the store may instead refuse reads for a full disk.
    fn check_reads(&self, s: &Store, when: &str, full_ok: bool) {
        let read = |k: &str| match s.get(k.as_bytes()) {
            Ok(kv) => Some(kv),
            Err(StoreError::DiskFull(_)) if full_ok => None,
            Err(e) => panic!("{when}: read {k}: {e}"),
        };
        for (k, v) in &self.acked {
            let Some(got) = read(k) else { return };
            let got = got.unwrap_or_else(|| panic!("{when}: acknowledged {k} is lost"));
            assert_eq!(&got.value, v, "{when}: {k} has another value");
        }
        for k in &self.failed {
            let Some(got) = read(k) else { return };
            assert!(got.is_none(), "{when}: {k} failed but is present");
        }
        let all = s.range(b"/k/", None, 0).unwrap();
        assert_eq!(all.kvs.len(), self.acked.len(), "{when}: key count");
        // Revisions stay gapless: one per acknowledged put.
        assert_eq!(
            s.current_revision(),
            self.acked.len() as u64,
            "{when}: revision"
        );
    }
}

/// One put: `true` acknowledged, `false` refused for a full disk (with an error that says
/// so); anything else fails the test.
async fn put_one(s: &Store, key: &str, v: &[u8]) -> bool {
    match s.put(key.as_bytes(), v, me()).await {
        Ok(_) => true,
        Err(e @ StoreError::DiskFull(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("the disk is full") && msg.contains("No space left on device"),
                "unclear error: {msg}"
            );
            false
        }
        Err(e) => panic!("put {key}: not a disk-full error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged() {
    fill_free_reopen(StoreOptions::default(), true).await;
}

/// With a page cache this small, the database writes pages to its file inside group
/// commits, and a replay of the log does not fit in memory: while the disk is full, reads
/// may be refused too (with a disk-full error) and the store cannot open; once space is
/// freed, everything is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged_with_a_small_cache() {
    let options = StoreOptions {
        cache_size: 64 * 1024,
        ..Default::default()
    };
    fill_free_reopen(options, false).await;
}

/// `roomy`: the cache holds what is written between checkpoints, so reads answer and the
/// store opens while the disk is full.
async fn fill_free_reopen(options: StoreOptions, roomy: bool) {
    let fs = Tmpfs::mount("8m");
    let dir = fs.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let mut l = Ledger::default();
    let open = || Store::open(&dir, options.clone()).unwrap();
    let s = open();
    let mut watch = s.watch(b"/k/", 0).unwrap();
    for _ in 0..10 {
        assert!(l.put(&s).await, "a write with room to spare failed");
    }
    // Room to give back later, then nothing left.
    std::fs::write(fs.path().join("reserve"), vec![0u8; 512 * 1024]).unwrap();
    let filler = fs.fill("filler");

    // Full: every write is refused with a clear error, and reads still answer.
    let mut refused = 0;
    for _ in 0..20 {
        if !l.put(&s).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 15,
        "only {refused} of 20 writes failed on a full disk"
    );
    l.check_reads(&s, "disk full", !roomy);

    // A little room: eight concurrent writers (their puts share group commits) succeed into
    // the log until it is full again, while each checkpoint of the database (every second)
    // fails for want of space. Kept up past three checkpoints.
    std::fs::remove_file(fs.path().join("reserve")).unwrap();
    let until = Instant::now() + Duration::from_millis(3500);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut n = 0;
                while Instant::now() < until {
                    n += 1;
                    let key = format!("/k/c{w}-{n:05}");
                    let v = value(n + w);
                    let ok = put_one(&s, &key, &v).await;
                    done.push((key, v, ok));
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                done
            })
        })
        .collect();
    let mut refused_again = 0;
    for w in writers {
        for (key, v, ok) in w.await.unwrap() {
            refused_again += usize::from(!ok);
            l.note(key, v, ok);
        }
    }
    assert!(refused_again > 0, "the log never filled the freed room");
    l.check_reads(&s, "nearly full", !roomy);

    // Space again: the next writes succeed at once, and nothing is lost.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..20 {
        assert!(l.put(&s).await, "a write failed after space was freed");
    }
    l.check(&s, "freed");
    // A watcher from the start saw exactly the acknowledged writes, one revision each, in
    // order, across the failures and reopens.
    let mut seen = BTreeMap::new();
    let mut last = 0;
    while last < s.current_revision() {
        let b = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch stalled")
            .unwrap()
            .expect("the watch ended");
        assert_eq!(b.revision, last + 1, "the watch skipped a revision");
        last = b.revision;
        for e in &b.events {
            seen.insert(
                String::from_utf8(e.kv.key.clone()).unwrap(),
                e.kv.value.clone(),
            );
        }
    }
    assert!(
        seen == l.acked,
        "the watch saw other writes than those acknowledged"
    );
    drop(watch);
    drop(s);

    let s = open();
    l.check(&s, "reopened");
    assert!(l.put(&s).await);
    drop(s);
    let s = open();
    l.check(&s, "reopened twice");

    // Closed on a full disk (its last checkpoint fails; the log keeps the writes) and opened
    // while still full: the replay cannot be synced, so it is served from the log.
    std::fs::write(fs.path().join("reserve"), vec![0u8; 256 * 1024]).unwrap();
    let filler = fs.fill("filler");
    std::fs::remove_file(fs.path().join("reserve")).unwrap();
    let mut full = false;
    for _ in 0..200 {
        if !l.put(&s).await {
            full = true;
            break;
        }
    }
    assert!(full, "the disk never filled");
    drop(s);
    if !roomy {
        // It opens if the replay fits in the cache, else it says the disk is full.
        match Store::open(&dir, options.clone()) {
            Err(StoreError::DiskFull(_)) => {}
            Err(e) => panic!("opened on a full disk: not a disk-full error: {e}"),
            Ok(s) => l.check_reads(&s, "opened on a full disk", true),
        }
        std::fs::remove_file(&filler).unwrap();
    }
    let s = open();
    l.check(&s, "opened on a full disk");
    if roomy {
        std::fs::remove_file(&filler).unwrap();
    }
    for _ in 0..5 {
        assert!(l.put(&s).await, "a write failed after space was freed");
    }
    drop(s);
    let s = open();
    l.check(&s, "reopened after the full-disk open");
}

/// The log has room but the database does not (the log on a filesystem of its own, the
/// database's full, and a page cache small enough that a write goes to the file): every
/// write that cannot reach the database is refused with a disk-full error and leaves no
/// record in the log, so no reopen or restart replays it; once space is freed, writes
/// succeed again. (The commit that fails after its log append, which a real disk cannot be
/// made to do on demand, is the engine's unit test with an injected failure.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_with_a_roomy_log_logs_no_refused_write() {
    let db_fs = Tmpfs::mount("8m");
    let log_fs = Tmpfs::mount("64m");
    let dir = db_fs.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(log_fs.path(), dir.join("wal")).unwrap();
    let options = StoreOptions {
        cache_size: 64 * 1024,
        ..Default::default()
    };
    let open = || Store::open(&dir, options.clone()).unwrap();
    let mut l = Ledger::default();
    let s = open();
    for _ in 0..10 {
        assert!(l.put(&s).await, "a write with room to spare failed");
    }
    let log_size = || -> u64 {
        std::fs::read_dir(log_fs.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let filler = db_fs.fill("filler");
    let mut refused = 0;
    for _ in 0..40 {
        let before = log_size();
        if !l.put(&s).await {
            refused += 1;
            assert!(
                log_size() <= before,
                "a refused write left its record in the log"
            );
        }
    }
    assert!(
        refused >= 20,
        "only {refused} of 40 writes failed with the database's disk full"
    );
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..5 {
        assert!(l.put(&s).await, "a write failed after space was freed");
    }
    l.check(&s, "freed");
    drop(s);
    let s = open();
    l.check(&s, "reopened");
}
