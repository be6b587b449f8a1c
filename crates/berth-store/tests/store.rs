//! The store's etcd semantics, on a real database in a temporary directory.

use std::time::Duration;

use berth_store::{
    Compare, CompareOp, EventType, Op, Origin, Store, StoreError, StoreOptions, Txn,
};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), StoreOptions::default()).unwrap()
}

fn me() -> Origin {
    Origin::new("alice", "create")
}

#[tokio::test]
async fn revisions_versions_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    assert_eq!(s.current_revision(), 0);
    let r1 = s.put(b"/a/1", b"x", me()).await.unwrap();
    let r2 = s.put(b"/a/2", b"y", me()).await.unwrap();
    let r3 = s.put(b"/a/1", b"z", me()).await.unwrap();
    assert_eq!((r1.revision, r2.revision, r3.revision), (1, 2, 3));
    let kv = s.get(b"/a/1").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 3, 2));
    assert_eq!(kv.value, b"z");
    s.put(b"/b/1", b"other", me()).await.unwrap();

    let page = s.range(b"/a/", None, 1).unwrap();
    assert_eq!(page.kvs.len(), 1);
    assert!(page.more);
    let rest = s.range(b"/a/", Some(&page.kvs[0].key), 1).unwrap();
    assert_eq!(rest.kvs[0].key, b"/a/2");
    assert!(!rest.more);
    assert_eq!(s.range(b"/a/", None, 0).unwrap().kvs.len(), 2);

    // Reads at a past revision.
    assert_eq!(s.get_at(b"/a/1", 2).unwrap().unwrap().value, b"x");
    let old = s.range_at(b"/a/", None, 0, 1).unwrap();
    assert_eq!(old.kvs.len(), 1);
    assert!(matches!(
        s.get_at(b"/a/1", 99),
        Err(StoreError::FutureRevision { .. })
    ));
}

#[tokio::test]
async fn transactions_compare_then_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    // Create only if absent.
    let create = |v: &'static [u8]| {
        Txn::default()
            .when(Compare::mod_revision(b"/k".to_vec(), CompareOp::Equal, 0))
            .then(Op::Put {
                key: b"/k".to_vec(),
                value: v.to_vec(),
                lease: 0,
            })
    };
    assert!(s.txn(create(b"1"), me()).await.unwrap().succeeded);
    let again = s.txn(create(b"2"), me()).await.unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.current[0].as_ref().unwrap().value, b"1");
    assert_eq!(s.current_revision(), 1, "a failed txn makes no revision");
    // Compare-and-swap on value and version.
    let cas = Txn::default()
        .when(Compare::value(
            b"/k".to_vec(),
            CompareOp::Equal,
            b"1".to_vec(),
        ))
        .when(Compare::version(b"/k".to_vec(), CompareOp::Equal, 1))
        .then(Op::Put {
            key: b"/k".to_vec(),
            value: b"3".to_vec(),
            lease: 0,
        })
        .then(Op::Put {
            key: b"/k2".to_vec(),
            value: b"4".to_vec(),
            lease: 0,
        });
    let r = s.txn(cas, me()).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 2, "one transaction, one revision");
    assert_eq!(r.events.len(), 2);
    let del = s
        .txn(
            Txn::default().then(Op::DeletePrefix {
                prefix: b"/k".to_vec(),
            }),
            me(),
        )
        .await
        .unwrap();
    assert_eq!(del.events.len(), 2);
    assert!(s.get(b"/k").unwrap().is_none());
    // Deleting nothing makes no revision.
    let none = s
        .txn(
            Txn::default().then(Op::Delete {
                key: b"/nope".to_vec(),
            }),
            me(),
        )
        .await
        .unwrap();
    assert_eq!(none.revision, 3);
}

#[tokio::test]
async fn watch_replays_missed_events_in_order_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..10u32 {
        s.put(
            format!("/w/{}", i % 3).as_bytes(),
            i.to_string().as_bytes(),
            me(),
        )
        .await
        .unwrap();
        s.put(b"/other", b"x", me()).await.unwrap();
    }
    // Start at revision 5: revisions 5..=20 exist, only odd ones touch /w/.
    let mut w = s.watch(b"/w/", 5).unwrap();
    let mut seen = Vec::new();
    for _ in 0..8 {
        let b = w.next().await.unwrap().unwrap();
        assert_eq!(b.events.len(), 1);
        assert!(b.events[0].kv.key.starts_with(b"/w/"));
        seen.push(b.revision);
    }
    assert_eq!(seen, vec![5, 7, 9, 11, 13, 15, 17, 19]);
    // Live changes continue the same stream.
    let live = s.put(b"/w/9", b"live", me()).await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.revision, live.revision);
    assert_eq!(b.events[0].typ, EventType::Put);
    assert!(b.events[0].prev.is_none());
    // A delete carries the last value.
    s.txn(
        Txn::default().then(Op::Delete {
            key: b"/w/9".to_vec(),
        }),
        me(),
    )
    .await
    .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.events[0].typ, EventType::Delete);
    assert_eq!(b.events[0].kv.value, b"live");
}

#[tokio::test]
async fn a_revision_is_never_split() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let mut w = s.watch(b"/", 0).unwrap();
    let mut txn = Txn::default();
    for i in 0..50 {
        txn = txn.then(Op::Put {
            key: format!("/m/{i}").into_bytes(),
            value: vec![1],
            lease: 0,
        });
    }
    s.txn(txn, me()).await.unwrap();
    let b = w.next().await.unwrap().unwrap();
    assert_eq!(b.events.len(), 50);
}

#[tokio::test]
async fn compaction_keeps_current_state_and_tells_old_watchers_to_relist() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..10u32 {
        s.put(b"/c/a", i.to_string().as_bytes(), me())
            .await
            .unwrap();
    }
    s.put(b"/c/b", b"b", me()).await.unwrap(); // rev 11
    s.txn(
        Txn::default().then(Op::Delete {
            key: b"/c/b".to_vec(),
        }),
        me(),
    )
    .await
    .unwrap(); // rev 12
    s.put(b"/c/d", b"d", me()).await.unwrap(); // rev 13
    s.compact(12).await.unwrap();
    assert_eq!(s.compacted_revision(), 12);
    match s.watch(b"/c/", 3) {
        Err(e @ StoreError::Compacted { .. }) => assert!(e.to_string().contains("re-list"), "{e}"),
        other => panic!("expected compacted, got {other:?}"),
    }
    assert_eq!(s.get_at(b"/c/a", 12).unwrap().unwrap().value, b"9");
    assert!(s.get_at(b"/c/b", 12).unwrap().is_none());
    assert!(matches!(
        s.get_at(b"/c/a", 5),
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(s.range_at(b"/c/", None, 0, 12).unwrap().kvs.len(), 1);
    assert_eq!(s.range_at(b"/c/", None, 0, 13).unwrap().kvs.len(), 2);
    // History keeps the surviving revision with its author.
    let h = s.history(b"/c/a").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].info.user, "alice");
    // Watch from the compaction point still works.
    let mut w = s.watch(b"/c/", 12).unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision, 12);
}

#[tokio::test]
async fn lease_expiry_deletes_keys_and_watchers_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let lease = s.lease_grant(Duration::from_millis(300)).await.unwrap();
    s.txn(
        Txn::default().then(Op::Put {
            key: b"/l/a".to_vec(),
            value: b"1".to_vec(),
            lease,
        }),
        me(),
    )
    .await
    .unwrap();
    s.txn(
        Txn::default().then(Op::Put {
            key: b"/l/b".to_vec(),
            value: b"2".to_vec(),
            lease,
        }),
        me(),
    )
    .await
    .unwrap();
    s.put(b"/l/keep", b"3", me()).await.unwrap();
    let mut w = s.watch(b"/l/", 0).unwrap();
    // Keep-alives hold it open past its TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.lease_keep_alive(lease).unwrap();
    }
    assert!(s.get(b"/l/a").unwrap().is_some());
    let b = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.events.len(), 2, "both keys go in one revision");
    assert!(b.events.iter().all(|e| e.typ == EventType::Delete));
    assert!(s.get(b"/l/keep").unwrap().is_some());
    let info = s.revisions(b.revision, b.revision, 0).unwrap();
    assert_eq!(info[0].user, "system:lease-expiry");
    assert!(matches!(
        s.lease_keep_alive(lease),
        Err(StoreError::LeaseNotFound(_))
    ));
    // Attaching a key to a missing lease fails and writes nothing.
    let bad = s
        .txn(
            Txn::default().then(Op::Put {
                key: b"/l/x".to_vec(),
                value: vec![],
                lease: 42,
            }),
            me(),
        )
        .await;
    assert!(matches!(bad, Err(StoreError::LeaseNotFound(42))));
    assert!(s.get(b"/l/x").unwrap().is_none());
}

#[tokio::test]
async fn slow_watchers_are_cut_off_without_stalling_others() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            watch_buffer: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let mut slow = s.watch(b"/s/", 0).unwrap();
    let mut fast = s.watch(b"/s/", 0).unwrap();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 50 {
            fast.next().await.unwrap().unwrap();
            n += 1;
        }
        n
    });
    for i in 0..50u32 {
        s.put(b"/s/k", i.to_string().as_bytes(), me())
            .await
            .unwrap();
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap(),
        50
    );
    let mut got = 0;
    let err = loop {
        match slow.next().await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("closed without error"),
            Err(e) => break e,
        }
    };
    assert!(got <= 8);
    assert!(matches!(err, StoreError::WatcherTooSlow(8)), "{err}");
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_get_gapless_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..20 {
                revs.push(
                    s.put(
                        format!("/g/{w}/{i}").as_bytes(),
                        b"v",
                        Origin::new(format!("w{w}"), "create"),
                    )
                    .await
                    .unwrap()
                    .revision,
                );
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=320).collect::<Vec<u64>>());
}

#[tokio::test]
async fn state_survives_reopen_and_time_maps_to_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let s = open(&dir);
        s.put(b"/p/a", b"1", me()).await.unwrap();
        before = berth_store_now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.put(b"/p/a", b"2", Origin::new("bob", "update"))
            .await
            .unwrap();
        s.close();
    }
    let s = open(&dir);
    assert_eq!(s.current_revision(), 2);
    assert_eq!(s.get(b"/p/a").unwrap().unwrap().value, b"2");
    assert_eq!(s.revision_at_time(before).unwrap(), 1);
    assert_eq!(s.revision_at_time(u64::MAX).unwrap(), 2);
    assert!(matches!(
        s.revision_at_time(1),
        Err(StoreError::TimeNotRetained)
    ));
    let h = s.history(b"/p/a").unwrap();
    assert_eq!(
        h.iter()
            .map(|e| (e.info.user.as_str(), e.info.verb.as_str()))
            .collect::<Vec<_>>(),
        vec![("alice", "create"), ("bob", "update")]
    );
    assert_eq!(s.put(b"/p/b", b"3", me()).await.unwrap().revision, 3);
}

fn berth_store_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let lease = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    for i in 0..50u32 {
        s.put(
            format!("/crash/{i}").as_bytes(),
            i.to_string().as_bytes(),
            me(),
        )
        .await
        .unwrap();
    }
    s.txn(
        Txn::default().then(Op::Put {
            key: b"/crash/leased".to_vec(),
            value: b"x".to_vec(),
            lease,
        }),
        me(),
    )
    .await
    .unwrap();
    s.txn(
        Txn::default().then(Op::Delete {
            key: b"/crash/7".to_vec(),
        }),
        me(),
    )
    .await
    .unwrap();
    // A copy of the files now is what a crash would leave: the log is synced, the database
    // file (most likely) is not.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    let c = Store::open(crashed.path(), StoreOptions::default()).unwrap();
    assert_eq!(c.current_revision(), s.current_revision());
    assert_eq!(
        c.range(b"/crash/", None, 0).unwrap().kvs,
        s.range(b"/crash/", None, 0).unwrap().kvs
    );
    assert_eq!(c.history(b"/crash/7").unwrap().len(), 2);
    assert!(c.lease_keep_alive(lease).is_ok(), "the lease survives too");
    // It goes on from where it was.
    let next = c.put(b"/crash/new", b"1", me()).await.unwrap();
    assert_eq!(next.revision, s.current_revision() + 1);
}

#[tokio::test]
async fn history_older_than_the_retention_window_is_compacted_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            retention: Duration::ZERO,
            compaction_interval: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..5u32 {
        s.put(b"/r/a", i.to_string().as_bytes(), me())
            .await
            .unwrap();
    }
    // The compacted revision is raised as the compaction's transaction begins (so no watch
    // from a revision about to go is accepted), and the history goes when it commits: wait
    // for both.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.compacted_revision() < 5 || s.history(b"/r/a").unwrap().len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background compaction"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        s.watch(b"/r/", 1),
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(
        s.get(b"/r/a").unwrap().unwrap().value,
        b"4",
        "the current state stays"
    );
    assert_eq!(s.history(b"/r/a").unwrap().len(), 1);
}
