//! berth's revisioned key/value store: etcd's data model, embedded in the data directory.
//!
//! - One global revision; each key keeps its create revision, mod revision and version.
//! - Transactions compare and then write; each successful writing transaction is one revision.
//! - Every revision records who made it, with which verb, and when; old revisions stay readable
//!   (history, point-in-time reads) until compaction removes what is older than the retention
//!   window.
//! - Watches start at any retained revision and deliver every later change in order, one
//!   revision at a time, never split.
//! - Leases expire keys attached to them.
//!
//! Architecture invariant: only the writer thread (`engine.rs`) opens write transactions, and
//! it publishes a revision to watchers, and acknowledges it, only after that revision is
//! durable in the write-ahead log (`wal.rs`). Requests queued while a commit is in flight are
//! applied together in the next transaction and share its fsync (group commit); the database
//! file itself is synced by a checkpoint every second.

mod codec;
mod engine;
mod wal;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use engine::StoreOptions;
pub use watch::{WatchBatch, Watcher};

/// A key's state at some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease the key is attached to, 0 for none.
    pub lease: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub typ: EventType,
    /// The key after the change; for a delete, the value it had and `mod_revision` = the
    /// revision of the delete.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
}

/// Who asked for a change and how: recorded with every revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub user: String,
    pub verb: String,
}

impl Origin {
    pub fn new(user: impl Into<String>, verb: impl Into<String>) -> Self {
        Origin {
            user: user.into(),
            verb: verb.into(),
        }
    }
}

/// What the revision log says of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionInfo {
    pub revision: u64,
    pub time_nanos: u64,
    pub user: String,
    pub verb: String,
    /// How many keys the revision changed.
    pub events: u64,
}

/// One retained change of one key, for history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub info: RevisionInfo,
    pub typ: EventType,
    pub kv: KeyValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// What a transaction compares before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// 0 when the key does not exist.
    ModRevision(u64),
    CreateRevision(u64),
    Version(u64),
    Value(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: u64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(rev),
        }
    }
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, v: u64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Version(v),
        }
    }
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, v: impl Into<Vec<u8>>) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Value(v.into()),
        }
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
    Delete {
        key: Vec<u8>,
    },
    DeletePrefix {
        prefix: Vec<u8>,
    },
}

/// If every compare holds, apply `success`; otherwise nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
}

impl Txn {
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    pub fn then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store's revision after the transaction (its own revision when it wrote).
    pub revision: u64,
    /// The events the transaction made, in order.
    pub events: Vec<Event>,
    /// On failure, the current state of each compared key.
    pub current: Vec<Option<KeyValue>>,
}

/// A page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Whether more keys follow the last one returned.
    pub more: bool,
    /// The revision the read saw.
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error in {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error(
        "revision {requested} has been compacted (oldest retained revision is {compacted}); re-list and watch from the current revision"
    )]
    Compacted { requested: u64, compacted: u64 },
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision { requested: u64, current: u64 },
    #[error("lease {0} not found")]
    LeaseNotFound(u64),
    #[error("the store is shut down")]
    Closed,
    #[error("no revision at or before that time is retained")]
    TimeNotRetained,
    #[error("watcher fell more than {0} revisions behind and was cut off; re-list and watch again")]
    WatcherTooSlow(usize),
    #[error("commit failed: {0}")]
    Commit(String),
    /// The store's disk has no room (ENOSPC, or a quota): the write was neither made durable
    /// nor applied.
    #[error("the disk is full ({0})")]
    DiskFull(String),
}

impl StoreError {
    /// The same failure, for another request of a group commit that failed as a whole.
    pub(crate) fn for_waiter(&self) -> StoreError {
        match self {
            StoreError::DiskFull(m) => StoreError::DiskFull(m.clone()),
            StoreError::Commit(m) => StoreError::Commit(m.clone()),
            other => StoreError::Commit(other.to_string()),
        }
    }
}

/// An I/O failure of `what`: `DiskFull` when the disk (or a quota) has no room left.
pub(crate) fn io_error(what: impl std::fmt::Display, e: &std::io::Error) -> StoreError {
    if is_disk_full(e) {
        StoreError::DiskFull(format!("{what}: {e}"))
    } else {
        StoreError::Commit(format!("{what}: {e}"))
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// A handle to the store; cheap to clone. The store shuts down when the last handle drops.
#[derive(Clone)]
pub struct Store {
    engine: Arc<engine::Engine>,
    _closer: Arc<Closer>,
}

/// Closes the engine when the last `Store` handle goes away (threads and watchers hold the
/// engine itself, so they cannot keep it open on their own).
struct Closer(Arc<engine::Engine>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("revision", &self.current_revision())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, which must exist.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let engine = engine::Engine::open(dir, options)?;
        Ok(Store {
            _closer: Arc::new(Closer(engine.clone())),
            engine,
        })
    }

    /// The newest revision that is durable and published to watchers.
    pub fn current_revision(&self) -> u64 {
        self.engine.published_revision()
    }

    /// The oldest revision that can still be read or watched from.
    pub fn compacted_revision(&self) -> u64 {
        self.engine.compacted_revision()
    }

    pub async fn txn(&self, txn: Txn, origin: Origin) -> Result<TxnResponse, StoreError> {
        self.engine.submit_txn(txn, origin).await
    }

    /// An unconditional put.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        origin: Origin,
    ) -> Result<TxnResponse, StoreError> {
        self.txn(
            Txn::default().then(Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
                lease: 0,
            }),
            origin,
        )
        .await
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.engine.get(key)
    }

    /// Keys starting with `prefix`, after `start_after` if given, at most `limit` (0 = all).
    pub fn range(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<RangeResult, StoreError> {
        self.engine.range(prefix, start_after, limit)
    }

    /// The key as it was at `revision`.
    pub fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<KeyValue>, StoreError> {
        self.engine.get_at(key, revision)
    }

    /// Every key under `prefix` as it was at `revision`.
    pub fn range_at(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        revision: u64,
    ) -> Result<RangeResult, StoreError> {
        self.engine.range_at(prefix, start_after, limit, revision)
    }

    /// Every retained change of one key, oldest first.
    pub fn history(&self, key: &[u8]) -> Result<Vec<HistoryEntry>, StoreError> {
        self.engine.history(key)
    }

    /// Who made the revisions in `from..=to` and when (at most `limit`).
    pub fn revisions(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<RevisionInfo>, StoreError> {
        self.engine.revisions(from, to, limit)
    }

    /// The newest revision made at or before `time_nanos` (unix).
    pub fn revision_at_time(&self, time_nanos: u64) -> Result<u64, StoreError> {
        self.engine.revision_at_time(time_nanos)
    }

    /// Watches keys under `prefix` from `start_revision` (0 = from the next revision on).
    pub fn watch(&self, prefix: &[u8], start_revision: u64) -> Result<Watcher, StoreError> {
        watch::Watcher::start(self.engine.clone(), prefix.to_vec(), start_revision)
    }

    /// Grants a lease that expires `ttl` after its last keep-alive.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<u64, StoreError> {
        self.engine.lease_grant(ttl).await
    }

    /// Renews a lease; returns its TTL.
    pub fn lease_keep_alive(&self, id: u64) -> Result<Duration, StoreError> {
        self.engine.lease_keep_alive(id)
    }

    /// Revokes a lease now, deleting its keys in one revision.
    pub async fn lease_revoke(&self, id: u64, origin: Origin) -> Result<TxnResponse, StoreError> {
        self.engine.lease_revoke(id, origin).await
    }

    /// Drops history older than `revision`; the state at `revision` stays readable.
    pub async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.engine.compact(revision).await
    }

    /// Stops the writer after the requests queued so far; later calls fail with `Closed`.
    pub fn close(&self) {
        self.engine.close();
    }
}

pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
