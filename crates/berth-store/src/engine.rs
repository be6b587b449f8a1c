//! The engine: the redb database, the single writer thread with group commit, leases and
//! background compaction.
//!
//! Storage failures (a full disk above all): a group commit whose log append or database
//! commit fails answers every request of the group with the error and leaves no record of it
//! in the log. redb refuses every operation after one failed write until it is reopened, so
//! after a failed database commit or checkpoint the writer reopens it, with readers held off,
//! and replays the log over the last durable checkpoint: reads and writes carry on as soon
//! as the disk has room again, and nothing acknowledged is lost in between.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::codec::{self, EventRecord};
use crate::wal::{SEGMENT_LIMIT, Wal, WalOp, WalRecord};
use crate::watch::{Hub, WatchBatch};
use crate::{
    Compare, CompareOp, CompareTarget, Event, EventType, HistoryEntry, KeyValue, Op, Origin,
    RangeResult, RevisionInfo, StoreError, Txn, TxnResponse,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// (revision, index within the revision) -> event record.
const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events");
/// revision -> who, how, when.
const REVS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");
/// (key, revision) -> index of the key's event within that revision.
const KEYIDX: TableDefinition<(&[u8], u64), u64> = TableDefinition::new("key_index");
/// lease id -> TTL in milliseconds.
const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("lease_keys");

/// The longest a group commit waits for the clients it expects.
const LINGER: Duration = Duration::from_micros(200);

/// How often the database file is synced and the write-ahead log emptied.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Tunables of the embedded store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long old revisions stay readable (history, watch from the past).
    pub retention: Duration,
    /// How often the background compactor runs.
    pub compaction_interval: Duration,
    /// Revisions a watcher may fall behind before it is cut off.
    pub watch_buffer: usize,
    /// Most requests applied in one transaction (one fsync).
    pub max_batch: usize,
    /// The database's page cache in bytes. Pages written since the last checkpoint stay in
    /// it up to half its size; beyond that they go to the file early.
    pub cache_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
            compaction_interval: Duration::from_secs(300),
            watch_buffer: 10_000,
            max_batch: 1024,
            cache_size: 1 << 30,
        }
    }
}

enum Request {
    Txn {
        txn: Txn,
        origin: Origin,
        resp: oneshot::Sender<Result<TxnResponse, StoreError>>,
    },
    LeaseGrant {
        ttl_ms: u64,
        resp: oneshot::Sender<Result<u64, StoreError>>,
    },
    LeaseRevoke {
        id: u64,
        origin: Origin,
        resp: oneshot::Sender<Result<TxnResponse, StoreError>>,
    },
    Compact {
        revision: u64,
        resp: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Make the database file durable and empty the write-ahead log.
    Checkpoint,
}

struct LeaseState {
    ttl: Duration,
    deadline: Instant,
}

pub(crate) struct Engine {
    /// `None` only while a reopen after a storage failure has not succeeded.
    db: RwLock<Option<Database>>,
    file: PathBuf,
    wal_dir: PathBuf,
    path: String,
    /// While the database cannot be used after a storage failure: why (answers reads).
    fault: Mutex<Option<StoreError>>,
    tx: std::sync::RwLock<Option<mpsc::Sender<Request>>>,
    /// Requests sent and not yet taken by the writer.
    queued: std::sync::atomic::AtomicUsize,
    pub(crate) hub: Mutex<Hub>,
    /// Highest revision published to watchers. Written only under the hub lock.
    pub(crate) published: AtomicU64,
    compacted: AtomicU64,
    leases: Mutex<HashMap<u64, LeaseState>>,
    pub(crate) options: StoreOptions,
    shutdown: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Fault injection for this crate's unit tests (etcd's failpoints in spirit): so many of
    /// the next group commits fail their database commit, after their log append, with a
    /// full disk. A real disk cannot be made to fail at exactly that step on demand.
    #[cfg(test)]
    pub(crate) fail_commits: std::sync::atomic::AtomicUsize,
}

fn db_err(path: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |source| match source {
        redb::Error::Io(e) => crate::io_error(format!("database {path}"), &e),
        source => StoreError::Db {
            path: path.to_string(),
            source,
        },
    }
}

macro_rules! tryd {
    ($self:expr, $e:expr) => {
        $e.map_err(|e| $self.db_error(e.into()))?
    };
}

fn compare_holds(c: &Compare, cur: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering as O;
    let ord = match &c.target {
        CompareTarget::ModRevision(r) => cur.map_or(0, |k| k.mod_revision).cmp(r),
        CompareTarget::CreateRevision(r) => cur.map_or(0, |k| k.create_revision).cmp(r),
        CompareTarget::Version(v) => cur.map_or(0, |k| k.version).cmp(v),
        CompareTarget::Value(v) => match cur {
            Some(k) => k.value.as_slice().cmp(v.as_slice()),
            // etcd: a value compare against a missing key fails whatever the operator.
            None => return false,
        },
    };
    match c.op {
        CompareOp::Equal => ord == O::Equal,
        CompareOp::NotEqual => ord != O::Equal,
        CompareOp::Less => ord == O::Less,
        CompareOp::Greater => ord == O::Greater,
    }
}

/// The tables a write transaction touches, opened once per group commit.
struct Tables<'t> {
    meta: redb::Table<'t, &'static str, u64>,
    kv: redb::Table<'t, &'static [u8], &'static [u8]>,
    events: redb::Table<'t, (u64, u64), &'static [u8]>,
    revs: redb::Table<'t, u64, &'static [u8]>,
    keyidx: redb::Table<'t, (&'static [u8], u64), u64>,
    leases: redb::Table<'t, u64, u64>,
    lease_keys: redb::Table<'t, (u64, &'static [u8]), ()>,
}

/// The writer's running state across group commits.
struct WriterState {
    revision: u64,
    last_time: u64,
    last_lease: u64,
    /// Commits since the last checkpoint that only the write-ahead log holds durably.
    dirty: bool,
    /// While replaying the log: the recorded time of the revision being replayed.
    replay_time: Option<u64>,
    /// The database failed and must be reopened before it is used again.
    needs_reopen: bool,
    /// After a failed reopen, the next is not tried before this.
    reopen_after: Option<Instant>,
    /// No checkpoint is tried before this after one failed (except the one at shutdown).
    checkpoint_after: Option<Instant>,
    /// Failed commits are logged once per `FAILURE_LOG_INTERVAL`: until when, and how many
    /// were not logged since.
    quiet_until: Option<Instant>,
    quieted: u64,
}

/// Between attempts to reopen the database while it cannot be (each replays the log): the
/// requests that arrive meanwhile wait for the next attempt.
const REOPEN_BACKOFF: Duration = Duration::from_millis(50);

/// A full disk fails every write: one log line per this long says so, with the count.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl WriterState {
    fn log_failure(&mut self, e: &StoreError) {
        let now = Instant::now();
        if self.quiet_until.is_some_and(|t| now < t) {
            self.quieted += 1;
            return;
        }
        tracing::error!(error = %e, "store commit failed; the requests were answered with the error");
        if self.quieted > 0 {
            tracing::error!(
                count = self.quieted,
                "more commits failed since the last report"
            );
        }
        self.quieted = 0;
        self.quiet_until = Some(now + FAILURE_LOG_INTERVAL);
    }
}

/// Opens the database file, creates every table, and reads the revision and compaction
/// counters. The table creation commits durably only on a first open (`durable`).
fn open_db(
    file: &Path,
    path: &str,
    cache_size: usize,
    durable: bool,
) -> Result<(Database, u64, u64), StoreError> {
    let err = db_err(path);
    let db = redb::Builder::new()
        .set_cache_size(cache_size)
        .create(file)
        .map_err(|e| err(e.into()))?;
    let (revision, compacted) = {
        let mut w = db.begin_write().map_err(|e| err(e.into()))?;
        if !durable {
            w.set_durability(redb::Durability::None)
                .map_err(|e| err(e.into()))?;
        }
        let counters = {
            let meta = w.open_table(META).map_err(|e| err(e.into()))?;
            w.open_table(KV).map_err(|e| err(e.into()))?;
            w.open_table(EVENTS).map_err(|e| err(e.into()))?;
            w.open_table(REVS).map_err(|e| err(e.into()))?;
            w.open_table(KEYIDX).map_err(|e| err(e.into()))?;
            w.open_table(LEASE_KEYS).map_err(|e| err(e.into()))?;
            w.open_table(LEASES).map_err(|e| err(e.into()))?;
            let get = |k: &str| -> Result<u64, StoreError> {
                Ok(meta
                    .get(k)
                    .map_err(|e| err(e.into()))?
                    .map(|v| v.value())
                    .unwrap_or(0))
            };
            (get("revision")?, get("compacted")?)
        };
        w.commit().map_err(|e| err(e.into()))?;
        counters
    };
    Ok((db, revision, compacted))
}

impl Engine {
    pub(crate) fn open(dir: &Path, options: StoreOptions) -> Result<Arc<Engine>, StoreError> {
        let file = dir.join("state.redb");
        let path = file.display().to_string();
        // Only a new file's tables are committed durably on open: an existing file needs no
        // space to open.
        let (db, revision, compacted) = open_db(&file, &path, options.cache_size, !file.exists())?;
        let (tx, rx) = mpsc::channel();
        let engine = Arc::new(Engine {
            db: RwLock::new(Some(db)),
            file,
            wal_dir: dir.join("wal"),
            path,
            fault: Mutex::new(None),
            tx: std::sync::RwLock::new(Some(tx)),
            queued: std::sync::atomic::AtomicUsize::new(0),
            hub: Mutex::new(Hub::default()),
            published: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            leases: Mutex::new(HashMap::new()),
            options,
            shutdown: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            #[cfg(test)]
            fail_commits: std::sync::atomic::AtomicUsize::new(0),
        });
        let mut state = WriterState {
            revision,
            last_time: 0,
            last_lease: 0,
            dirty: false,
            replay_time: None,
            needs_reopen: false,
            reopen_after: None,
            checkpoint_after: None,
            quiet_until: None,
            quieted: 0,
        };
        let (mut wal, records) = Wal::open(&engine.wal_dir)?;
        if let Err(e) = engine.recover(&mut state, &mut wal, records) {
            // The replay could not be made durable (a full disk): serve it from the log, as
            // after a failed checkpoint, until a checkpoint succeeds.
            if !matches!(e, StoreError::DiskFull(_)) {
                return Err(e);
            }
            tracing::warn!(error = %e, "the write-ahead log replay cannot be synced yet");
            engine.fail(&mut state, &e);
            engine.reopen(&mut state, &mut wal)?;
        }
        engine.published.store(state.revision, Ordering::Release);
        // As etcd does on a new leader, every lease gets a full TTL from now: the holders could
        // not renew while the server was down.
        {
            let r = engine.read()?;
            let lt = tryd!(engine, r.open_table(LEASES));
            let mut leases = engine.leases.lock().map_err(|_| StoreError::Closed)?;
            for item in tryd!(engine, lt.iter()) {
                let (id, ttl) = tryd!(engine, item);
                let ttl = Duration::from_millis(ttl.value());
                leases.insert(
                    id.value(),
                    LeaseState {
                        ttl,
                        deadline: Instant::now() + ttl,
                    },
                );
                state.last_lease = state.last_lease.max(id.value());
            }
        }
        let w = engine.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.writer_loop(rx, state, wal))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        let m = engine.clone();
        let maint = std::thread::Builder::new()
            .name("store-maintenance".into())
            .spawn(move || m.maintenance_loop())
            .map_err(|e| StoreError::Commit(format!("cannot start the maintenance thread: {e}")))?;
        if let Ok(mut t) = engine.threads.lock() {
            t.push(writer);
            t.push(maint);
        }
        Ok(engine)
    }

    /// Replays the write-ahead log over the database: every record after the last
    /// checkpoint, in order; then checkpoints so the log starts empty.
    fn recover(
        &self,
        state: &mut WriterState,
        wal: &mut Wal,
        records: Vec<WalRecord>,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let replayed = records.len();
        let w = self.begin_write()?;
        self.replay(&w, state, records)?;
        tryd!(self, w.commit());
        wal.rotate()?;
        tracing::info!(
            records = replayed,
            revision = state.revision,
            "replayed the write-ahead log"
        );
        Ok(())
    }

    /// Applies log records in a write transaction: those of revisions the database already
    /// holds are skipped.
    fn replay(
        &self,
        w: &redb::WriteTransaction,
        state: &mut WriterState,
        records: Vec<WalRecord>,
    ) -> Result<(), StoreError> {
        {
            let mut t = self.tables(w)?;
            for rec in records {
                match rec {
                    WalRecord::Revision { revision, .. } if revision <= state.revision => {}
                    WalRecord::Revision {
                        revision,
                        time,
                        user,
                        verb,
                        ops,
                    } => {
                        if revision != state.revision + 1 {
                            return Err(StoreError::Corrupt(format!(
                                "the write-ahead log jumps from revision {} to {revision}",
                                state.revision
                            )));
                        }
                        let txn = Txn {
                            compares: Vec::new(),
                            success: ops
                                .into_iter()
                                .map(|op| match op {
                                    WalOp::Put { key, value, lease } => {
                                        Op::Put { key, value, lease }
                                    }
                                    WalOp::Delete { key } => Op::Delete { key },
                                })
                                .collect(),
                        };
                        state.replay_time = Some(time);
                        // Leases named by a replayed put may be gone (revoked later in the log);
                        // replay writes the key as it was written.
                        let r =
                            self.apply_txn_unchecked(&mut t, state, &txn, &Origin::new(user, verb));
                        state.replay_time = None;
                        r?;
                    }
                    WalRecord::LeaseGrant { id, ttl_ms } => {
                        tryd!(self, t.leases.insert(id, ttl_ms));
                    }
                    WalRecord::LeaseRevoke { id } => {
                        tryd!(self, t.leases.remove(id));
                    }
                    WalRecord::Compact { revision } => {
                        self.apply_compact(&mut t, state, revision)?
                    }
                }
            }
            tryd!(self, t.meta.insert("revision", state.revision));
        }
        Ok(())
    }

    /// After a storage failure: closes the database, reopens it (redb recovers its last
    /// durable commit) and replays the whole log over it in a transaction that is not synced
    /// (the next checkpoint makes it durable), holding readers off until the state is whole
    /// again. Needs no free space unless redb must repair its file.
    fn reopen(&self, state: &mut WriterState, wal: &mut Wal) -> Result<(), StoreError> {
        // A record whose commit failed must be gone before the log is read back.
        wal.repair()?;
        let mut slot = self.db.write().map_err(|_| StoreError::Closed)?;
        if let Some(old) = slot.take()
            && let Err(e) = old.close()
        {
            // Expected: redb reports the failure that made it unusable.
            tracing::debug!(error = %e, "closing the failed database");
        }
        let (db, revision, compacted) =
            open_db(&self.file, &self.path, self.options.cache_size, false)?;
        let (fresh, records) = Wal::open(&self.wal_dir)?;
        let before = self.published_revision();
        state.revision = revision;
        self.compacted.store(compacted, Ordering::Release);
        let mut w = db.begin_write().map_err(|e| db_err(&self.path)(e.into()))?;
        tryd!(self, w.set_durability(redb::Durability::None));
        let replayed = records.len();
        self.replay(&w, state, records)?;
        tryd!(self, w.commit());
        if state.revision < before {
            return Err(StoreError::Corrupt(format!(
                "after reopening, the database and log hold revision {} where {before} was committed",
                state.revision
            )));
        }
        *slot = Some(db);
        *wal = fresh;
        state.dirty = true;
        state.needs_reopen = false;
        if let Ok(mut f) = self.fault.lock() {
            *f = None;
        }
        tracing::info!(
            records = replayed,
            revision = state.revision,
            "reopened the database after a storage failure and replayed the write-ahead log"
        );
        Ok(())
    }

    /// Records a storage failure of the database: reads answer it until a reopen succeeds.
    fn fail(&self, state: &mut WriterState, e: &StoreError) {
        state.needs_reopen = true;
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(e.for_waiter());
        }
    }

    /// Reopens the database if a failure left it unusable; the error says why not.
    fn ensure_open(&self, state: &mut WriterState, wal: &mut Wal) -> Result<(), StoreError> {
        if !state.needs_reopen {
            return Ok(());
        }
        if let Some(wait) = state
            .reopen_after
            .and_then(|t| t.checked_duration_since(Instant::now()))
        {
            std::thread::sleep(wait);
        }
        match self.reopen(state, wal) {
            Ok(()) => {
                state.reopen_after = None;
                Ok(())
            }
            Err(e) => {
                if state.reopen_after.is_none() {
                    tracing::warn!(error = %e, "the database cannot be reopened yet");
                }
                state.reopen_after = Some(Instant::now() + REOPEN_BACKOFF);
                self.fail(state, &e);
                Err(e)
            }
        }
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let slot = self.db.read().map_err(|_| StoreError::Closed)?;
        match slot.as_ref() {
            Some(db) => Ok(tryd!(self, db.begin_write())),
            None => Err(self.fault_or_closed()),
        }
    }

    /// A database error; after a storage failure, what redb reports of its refusal to work
    /// (or of its closing for the reopen) is answered with the failure itself.
    fn db_error(&self, e: redb::Error) -> StoreError {
        if matches!(e, redb::Error::PreviousIo | redb::Error::DatabaseClosed)
            && let Some(f) = self
                .fault
                .lock()
                .ok()
                .and_then(|f| f.as_ref().map(StoreError::for_waiter))
        {
            return f;
        }
        db_err(&self.path)(e)
    }

    /// Why the database cannot be used now.
    fn fault_or_closed(&self) -> StoreError {
        self.fault
            .lock()
            .ok()
            .and_then(|f| f.as_ref().map(StoreError::for_waiter))
            .unwrap_or(StoreError::Closed)
    }

    /// Opens every table in a write transaction.
    fn tables<'t>(&self, w: &'t redb::WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            meta: tryd!(self, w.open_table(META)),
            kv: tryd!(self, w.open_table(KV)),
            events: tryd!(self, w.open_table(EVENTS)),
            revs: tryd!(self, w.open_table(REVS)),
            keyidx: tryd!(self, w.open_table(KEYIDX)),
            leases: tryd!(self, w.open_table(LEASES)),
            lease_keys: tryd!(self, w.open_table(LEASE_KEYS)),
        })
    }

    pub(crate) fn published_revision(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    pub(crate) fn compacted_revision(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Stops accepting requests, lets the writer finish what is queued, and waits for the
    /// threads. Idempotent.
    pub(crate) fn close(&self) {
        self.shutdown.store(true, Ordering::Release);
        if let Ok(mut tx) = self.tx.write() {
            tx.take();
        }
        let threads: Vec<_> = self
            .threads
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                t.thread().unpark();
                let _ = t.join();
            }
        }
        // Watchers see their channels close.
        if let Ok(mut hub) = self.hub.lock() {
            hub.slots.clear();
        }
    }

    fn send(&self, req: Request) -> Result<(), StoreError> {
        let guard = self.tx.read().map_err(|_| StoreError::Closed)?;
        self.queued.fetch_add(1, Ordering::AcqRel);
        guard
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(req)
            .map_err(|_| {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                StoreError::Closed
            })
    }

    /// Sends the writer a request made around the sender of its answer; returns the
    /// receiver (awaited by async callers, `blocking_recv`ed by the maintenance thread).
    fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (resp, rx) = oneshot::channel();
        self.send(make(resp))?;
        Ok(rx)
    }

    pub(crate) async fn submit_txn(
        &self,
        txn: Txn,
        origin: Origin,
    ) -> Result<TxnResponse, StoreError> {
        self.ask(|resp| Request::Txn { txn, origin, resp })?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn lease_grant(&self, ttl: Duration) -> Result<u64, StoreError> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        self.ask(|resp| Request::LeaseGrant { ttl_ms, resp })?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn lease_revoke(
        &self,
        id: u64,
        origin: Origin,
    ) -> Result<TxnResponse, StoreError> {
        self.ask(|resp| Request::LeaseRevoke { id, origin, resp })?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub(crate) fn lease_keep_alive(&self, id: u64) -> Result<Duration, StoreError> {
        let mut leases = self.leases.lock().map_err(|_| StoreError::Closed)?;
        let l = leases.get_mut(&id).ok_or(StoreError::LeaseNotFound(id))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(l.ttl)
    }

    pub(crate) async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.ask(|resp| Request::Compact { revision, resp })?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    // ---- the writer ----

    fn writer_loop(
        self: Arc<Self>,
        rx: mpsc::Receiver<Request>,
        mut state: WriterState,
        mut wal: Wal,
    ) {
        // Group commit sizing: the clients answered by the last batch usually send again at
        // once, so the next batch waits (briefly) for as many requests as were in flight then.
        let mut target = 1usize;
        let take = |r: Request, batch: &mut Vec<Request>| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            batch.push(r);
        };
        while let Ok(first) = rx.recv() {
            let mut batch = Vec::with_capacity(target);
            take(first, &mut batch);
            let deadline = Instant::now() + LINGER;
            let max = self.options.max_batch;
            loop {
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(r) => take(r, &mut batch),
                        Err(_) => break,
                    }
                }
                let now = Instant::now();
                if batch.len() >= target.min(max) || now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(r) => take(r, &mut batch),
                    Err(_) => break,
                }
            }
            let checkpoint = batch.iter().any(|r| matches!(r, Request::Checkpoint));
            batch.retain(|r| !matches!(r, Request::Checkpoint));
            let size = batch.len();
            match self.ensure_open(&mut state, &mut wal) {
                Ok(()) if !batch.is_empty() => self.process(batch, &mut state, &mut wal),
                Ok(()) => {}
                Err(e) => answer_all(batch, &e),
            }
            target = size + self.queued.load(Ordering::Acquire);
            let due = state.checkpoint_after.is_none_or(|t| Instant::now() >= t);
            if (checkpoint || wal.size() > SEGMENT_LIMIT) && due && !state.needs_reopen {
                self.checkpoint(&mut state, &mut wal);
            }
        }
        // Shutting down: leave the database durable and the log empty.
        if self.ensure_open(&mut state, &mut wal).is_ok() {
            self.checkpoint(&mut state, &mut wal);
        }
    }

    /// Makes every commit so far durable in the database file, then empties the log.
    fn checkpoint(&self, state: &mut WriterState, wal: &mut Wal) {
        if !state.dirty {
            return;
        }
        let synced = (|| -> Result<(), StoreError> {
            let mut w = self.begin_write()?;
            tryd!(self, w.set_durability(redb::Durability::Immediate));
            tryd!(self, w.commit());
            Ok(())
        })();
        if let Err(e) = synced {
            // The log still holds everything. redb refuses all work after a failed write, so
            // it is reopened over its last durable state and the log replayed; the next
            // checkpoint tries again.
            tracing::warn!(error = %e, "checkpoint failed");
            state.checkpoint_after = Some(Instant::now() + CHECKPOINT_INTERVAL);
            self.fail(state, &e);
            let _ = self.ensure_open(state, wal);
            return;
        }
        state.checkpoint_after = None;
        match wal.rotate() {
            Ok(()) => state.dirty = false,
            // The database is durable; the old records are skipped when replayed.
            Err(e) => tracing::warn!(error = %e, "emptying the write-ahead log failed"),
        }
    }

    /// Applies a group of requests in one write transaction, commits it (one fsync), then
    /// publishes the new revisions in order and answers each request.
    fn process(&self, batch: Vec<Request>, state: &mut WriterState, wal: &mut Wal) {
        let start_state = (state.revision, state.last_time, state.last_lease);
        let start_compacted = self.compacted_revision();
        let mut results: Vec<Result<Outcome, StoreError>> = Vec::with_capacity(batch.len());
        let mut lease_changes: Vec<(u64, Option<Duration>)> = Vec::new();
        let mark = wal.size();
        // Whether the failure (if any) is the log's own: the database is then still sound.
        let mut log_failed = false;
        let committed = (|| -> Result<(), StoreError> {
            let mut w = self.begin_write()?;
            // Durable through the write-ahead log; the file is synced at checkpoints.
            tryd!(self, w.set_durability(redb::Durability::None));
            let mut log: Vec<WalRecord> = Vec::new();
            {
                let mut t = self.tables(&w)?;
                for req in &batch {
                    let r = match req {
                        Request::Txn { txn, origin, .. } => {
                            self.apply_txn(&mut t, state, txn, origin).map(|r| {
                                log.extend(revision_record(&r, state.last_time, origin));
                                Outcome::Txn(r)
                            })
                        }
                        Request::LeaseGrant { ttl_ms, .. } => {
                            let id = (state.last_lease + 1).max(crate::now_nanos() >> 16);
                            state.last_lease = id;
                            tryd!(self, t.leases.insert(id, *ttl_ms));
                            lease_changes.push((id, Some(Duration::from_millis(*ttl_ms))));
                            log.push(WalRecord::LeaseGrant {
                                id,
                                ttl_ms: *ttl_ms,
                            });
                            Ok(Outcome::Lease(id))
                        }
                        Request::LeaseRevoke { id, origin, .. } => {
                            self.apply_revoke(&mut t, state, *id, origin).map(|r| {
                                lease_changes.push((*id, None));
                                log.push(WalRecord::LeaseRevoke { id: *id });
                                log.extend(revision_record(&r, state.last_time, origin));
                                Outcome::Txn(r)
                            })
                        }
                        Request::Compact { revision, .. } => {
                            self.apply_compact(&mut t, state, *revision).map(|_| {
                                log.push(WalRecord::Compact {
                                    revision: *revision,
                                });
                                Outcome::Compacted
                            })
                        }
                        Request::Checkpoint => Ok(Outcome::Compacted),
                    };
                    // A storage failure aborts the whole group; a request's own error (a
                    // missing lease, a revision out of range) fails only that request.
                    if let Err(
                        StoreError::Db { .. }
                        | StoreError::Corrupt(_)
                        | StoreError::DiskFull(_)
                        | StoreError::Commit(_),
                    ) = &r
                    {
                        return Err(r.err().unwrap_or(StoreError::Closed));
                    }
                    results.push(r);
                }
                tryd!(self, t.meta.insert("revision", state.revision));
            }
            if !log.is_empty() {
                // If the log cannot be written, the transaction is dropped uncommitted (and
                // the log has cut off whatever part of the records reached it).
                wal.append(&log).inspect_err(|_| log_failed = true)?;
                state.dirty = true;
            }
            #[cfg(test)]
            if self
                .fail_commits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                drop(w);
                let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
                return Err(crate::io_error(format!("database {}", self.path), &full));
            }
            tryd!(self, w.commit());
            Ok(())
        })();
        if let Err(e) = committed {
            state.log_failure(&e);
            (state.revision, state.last_time, state.last_lease) = start_state;
            self.compacted.store(start_compacted, Ordering::Release);
            if !log_failed {
                // The records are in the log but their commit failed: they were never
                // applied and are answered with an error, so they must not be replayed.
                wal.cut_back(mark, &e);
                self.fail(state, &e);
            }
            answer_all(batch, &e);
            if !log_failed {
                let _ = self.ensure_open(state, wal);
            }
            return;
        }
        if let Ok(mut leases) = self.leases.lock() {
            for (id, ttl) in lease_changes {
                match ttl {
                    Some(ttl) => {
                        leases.insert(
                            id,
                            LeaseState {
                                ttl,
                                deadline: Instant::now() + ttl,
                            },
                        );
                    }
                    None => {
                        leases.remove(&id);
                    }
                }
            }
        }
        // Publish in revision order, then answer.
        for r in results.iter().flatten() {
            if let Outcome::Txn(resp) = r
                && resp.succeeded
                && !resp.events.is_empty()
            {
                self.publish(Arc::new(WatchBatch {
                    revision: resp.revision,
                    events: resp.events.clone(),
                }));
            }
        }
        for (req, r) in batch.into_iter().zip(results) {
            match (req, r) {
                (Request::Txn { resp, .. } | Request::LeaseRevoke { resp, .. }, r) => {
                    let _ = resp.send(r.map(|o| match o {
                        Outcome::Txn(t) => t,
                        _ => unreachable!("txn requests yield txn outcomes"),
                    }));
                }
                (Request::LeaseGrant { resp, .. }, r) => {
                    let _ = resp.send(r.map(|o| match o {
                        Outcome::Lease(id) => id,
                        _ => unreachable!("lease grants yield lease outcomes"),
                    }));
                }
                (Request::Compact { resp, .. }, r) => {
                    let _ = resp.send(r.map(|_| ()));
                }
                (Request::Checkpoint, _) => {}
            }
        }
    }

    fn publish(&self, batch: Arc<WatchBatch>) {
        let Ok(mut hub) = self.hub.lock() else { return };
        hub.publish(&batch);
        self.published.store(batch.revision, Ordering::Release);
    }

    fn read_kv(&self, t: &Tables<'_>, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match tryd!(self, t.kv.get(key)) {
            Some(v) => Ok(Some(codec::decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn apply_txn(
        &self,
        t: &mut Tables<'_>,
        state: &mut WriterState,
        txn: &Txn,
        origin: &Origin,
    ) -> Result<TxnResponse, StoreError> {
        let mut current = Vec::with_capacity(txn.compares.len());
        let mut ok = true;
        for c in &txn.compares {
            let cur = self.read_kv(t, &c.key)?;
            ok &= compare_holds(c, cur.as_ref());
            current.push(cur);
        }
        if !ok {
            return Ok(TxnResponse {
                succeeded: false,
                revision: state.revision,
                events: Vec::new(),
                current,
            });
        }
        for op in &txn.success {
            if let Op::Put { lease, .. } = op
                && *lease != 0
                && tryd!(self, t.leases.get(*lease)).is_none()
            {
                return Err(StoreError::LeaseNotFound(*lease));
            }
        }
        self.apply_txn_unchecked(t, state, txn, origin)
    }

    /// Applies a transaction's writes (its compares already held).
    fn apply_txn_unchecked(
        &self,
        t: &mut Tables<'_>,
        state: &mut WriterState,
        txn: &Txn,
        origin: &Origin,
    ) -> Result<TxnResponse, StoreError> {
        let rev = state.revision + 1;
        let mut events: Vec<Event> = Vec::new();
        for op in &txn.success {
            match op {
                Op::Put { key, value, lease } => {
                    let prev = self.read_kv(t, key)?;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease: *lease,
                    };
                    self.write_event(
                        t,
                        rev,
                        events.len() as u64,
                        EventType::Put,
                        &kv,
                        prev.as_ref(),
                    )?;
                    events.push(Event {
                        typ: EventType::Put,
                        kv,
                        prev,
                    });
                }
                Op::Delete { key } => {
                    if let Some(ev) = self.delete_key(t, rev, events.len() as u64, key)? {
                        events.push(ev);
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<Vec<u8>> = {
                        let mut keys = Vec::new();
                        for item in tryd!(self, t.kv.range(prefix.as_slice()..)) {
                            let (k, _) = tryd!(self, item);
                            if !k.value().starts_with(prefix) {
                                break;
                            }
                            keys.push(k.value().to_vec());
                        }
                        keys
                    };
                    for key in keys {
                        if let Some(ev) = self.delete_key(t, rev, events.len() as u64, &key)? {
                            events.push(ev);
                        }
                    }
                }
            }
        }
        if events.is_empty() {
            return Ok(TxnResponse {
                succeeded: true,
                revision: state.revision,
                events,
                current: Vec::new(),
            });
        }
        let now = state
            .replay_time
            .unwrap_or_else(|| crate::now_nanos().max(state.last_time));
        state.last_time = now;
        tryd!(
            self,
            t.revs.insert(
                rev,
                codec::encode_rev(now, &origin.user, &origin.verb, events.len() as u64).as_slice()
            )
        );
        state.revision = rev;
        Ok(TxnResponse {
            succeeded: true,
            revision: rev,
            events,
            current: Vec::new(),
        })
    }

    fn write_event(
        &self,
        t: &mut Tables<'_>,
        rev: u64,
        idx: u64,
        typ: EventType,
        kv: &KeyValue,
        prev: Option<&KeyValue>,
    ) -> Result<(), StoreError> {
        let key = kv.key.as_slice();
        let old_lease = prev.map_or(0, |p| p.lease);
        if old_lease != 0 && (typ == EventType::Delete || old_lease != kv.lease) {
            tryd!(self, t.lease_keys.remove((old_lease, key)));
        }
        match typ {
            EventType::Put => {
                tryd!(self, t.kv.insert(key, codec::encode_kv(kv).as_slice()));
                if kv.lease != 0 {
                    tryd!(self, t.lease_keys.insert((kv.lease, key), ()));
                }
            }
            EventType::Delete => {
                tryd!(self, t.kv.remove(key));
            }
        }
        let rec = EventRecord {
            typ,
            kv: kv.clone(),
            prev_mod_revision: prev.map_or(0, |p| p.mod_revision),
        };
        tryd!(
            self,
            t.events
                .insert((rev, idx), codec::encode_event(&rec).as_slice())
        );
        tryd!(self, t.keyidx.insert((key, rev), idx));
        Ok(())
    }

    fn delete_key(
        &self,
        t: &mut Tables<'_>,
        rev: u64,
        idx: u64,
        key: &[u8],
    ) -> Result<Option<Event>, StoreError> {
        let Some(prev) = self.read_kv(t, key)? else {
            return Ok(None);
        };
        let kv = KeyValue {
            mod_revision: rev,
            ..prev.clone()
        };
        self.write_event(t, rev, idx, EventType::Delete, &kv, Some(&prev))?;
        Ok(Some(Event {
            typ: EventType::Delete,
            kv,
            prev: Some(prev),
        }))
    }

    fn apply_revoke(
        &self,
        t: &mut Tables<'_>,
        state: &mut WriterState,
        id: u64,
        origin: &Origin,
    ) -> Result<TxnResponse, StoreError> {
        if tryd!(self, t.leases.get(id)).is_none() {
            return Err(StoreError::LeaseNotFound(id));
        }
        let mut keys = Vec::new();
        for item in tryd!(self, t.lease_keys.range((id, &[][..])..)) {
            let (k, _) = tryd!(self, item);
            let (lid, key) = k.value();
            if lid != id {
                break;
            }
            keys.push(key.to_vec());
        }
        tryd!(self, t.leases.remove(id));
        let txn = Txn {
            compares: Vec::new(),
            success: keys.into_iter().map(|key| Op::Delete { key }).collect(),
        };
        self.apply_txn(t, state, &txn, origin)
    }

    /// Drops every event older than `target` that a later event at or before `target`
    /// supersedes, and every delete that is the last word on its key before `target`. What
    /// remains answers reads at any revision from `target` on.
    fn apply_compact(
        &self,
        t: &mut Tables<'_>,
        state: &WriterState,
        target: u64,
    ) -> Result<(), StoreError> {
        let from = self.compacted_revision();
        if target <= from {
            return Ok(());
        }
        if target > state.revision {
            return Err(StoreError::FutureRevision {
                requested: target,
                current: state.revision,
            });
        }
        let mut drop_events: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        let mut touched_revs: Vec<u64> = Vec::new();
        for item in tryd!(self, t.events.range((from, 0)..(target, 0))) {
            let (k, v) = tryd!(self, item);
            let (rev, idx) = k.value();
            let rec = codec::decode_event(v.value())?;
            let key = rec.kv.key;
            let superseded = {
                let mut later = tryd!(
                    self,
                    t.keyidx
                        .range((key.as_slice(), rev + 1)..=(key.as_slice(), target))
                );
                later.next().is_some()
            };
            if superseded || rec.typ == EventType::Delete {
                drop_events.push((rev, idx, key));
            }
            if touched_revs.last() != Some(&rev) {
                touched_revs.push(rev);
            }
        }
        for (rev, idx, key) in &drop_events {
            tryd!(self, t.events.remove((*rev, *idx)));
            tryd!(self, t.keyidx.remove((key.as_slice(), *rev)));
        }
        for rev in touched_revs {
            let any_left = tryd!(self, t.events.range((rev, 0)..(rev + 1, 0)))
                .next()
                .is_some();
            if !any_left {
                tryd!(self, t.revs.remove(rev));
            }
        }
        tryd!(self, t.meta.insert("compacted", target));
        self.compacted.store(target, Ordering::Release);
        Ok(())
    }

    // ---- background work ----

    fn maintenance_loop(self: Arc<Self>) {
        let mut last_compaction = Instant::now();
        let mut last_checkpoint = Instant::now();
        while !self.shutdown.load(Ordering::Acquire) {
            if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                last_checkpoint = Instant::now();
                if self.send(Request::Checkpoint).is_err() {
                    return;
                }
            }
            let now = Instant::now();
            let expired: Vec<u64> = self
                .leases
                .lock()
                .map(|mut l| {
                    let ids: Vec<u64> = l
                        .iter()
                        .filter(|(_, s)| s.deadline <= now)
                        .map(|(id, _)| *id)
                        .collect();
                    // Push the deadline out so a slow revoke is not sent twice.
                    for id in &ids {
                        if let Some(s) = l.get_mut(id) {
                            s.deadline = now + Duration::from_secs(3600);
                        }
                    }
                    ids
                })
                .unwrap_or_default();
            for id in expired {
                let origin = Origin::new("system:lease-expiry", "expire");
                let Ok(rx) = self.ask(|resp| Request::LeaseRevoke { id, origin, resp }) else {
                    return;
                };
                match rx.blocking_recv() {
                    Ok(Ok(r)) => {
                        tracing::debug!(lease = id, revision = r.revision, "lease expired")
                    }
                    Ok(Err(e)) => tracing::warn!(lease = id, error = %e, "lease expiry failed"),
                    Err(_) => return,
                }
            }
            if last_compaction.elapsed() >= self.options.compaction_interval {
                last_compaction = Instant::now();
                self.compact_retention();
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    fn compact_retention(&self) {
        let cutoff = crate::now_nanos().saturating_sub(self.options.retention.as_nanos() as u64);
        let Ok(target) = self.revision_at_time(cutoff) else {
            return;
        };
        if target <= self.compacted_revision() {
            return;
        }
        if let Ok(rx) = self.ask(|resp| Request::Compact {
            revision: target,
            resp,
        }) {
            match rx.blocking_recv() {
                Ok(Ok(())) => tracing::info!(
                    revision = target,
                    "compacted history older than the retention window"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "compaction failed"),
                Err(_) => {}
            }
        }
    }

    // ---- reads ----

    fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        let slot = self.db.read().map_err(|_| StoreError::Closed)?;
        match slot.as_ref() {
            Some(db) if self.fault.lock().is_ok_and(|f| f.is_none()) => {
                Ok(tryd!(self, db.begin_read()))
            }
            _ => Err(self.fault_or_closed()),
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let r = self.read()?;
        let kv = tryd!(self, r.open_table(KV));
        match tryd!(self, kv.get(key)) {
            Some(v) => Ok(Some(codec::decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    pub(crate) fn range(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<RangeResult, StoreError> {
        let r = self.read()?;
        let revision = tryd!(self, tryd!(self, r.open_table(META)).get("revision"))
            .map(|v| v.value())
            .unwrap_or(0);
        let kv = tryd!(self, r.open_table(KV));
        let lower = lower_bound(prefix, start_after);
        let mut kvs = Vec::new();
        let mut more = false;
        for item in tryd!(self, kv.range(lower.as_slice()..)) {
            let (k, v) = tryd!(self, item);
            if !k.value().starts_with(prefix) {
                break;
            }
            if limit > 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(codec::decode_kv(k.value(), v.value())?);
        }
        Ok(RangeResult {
            kvs,
            more,
            revision,
        })
    }

    fn check_revision(&self, revision: u64) -> Result<(), StoreError> {
        let compacted = self.compacted_revision();
        if revision < compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted,
            });
        }
        // A revision a reader has already seen (a list's) can be a moment ahead of what the
        // writer has published: wait for it briefly, as kube-apiserver waits for its cache,
        // before calling it too large.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let current = self.published_revision();
            if revision <= current {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The event that set `key` at `rev`, read through the key index.
    fn event_at(
        &self,
        events: &redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
        rev: u64,
        idx: u64,
    ) -> Result<Option<EventRecord>, StoreError> {
        match tryd!(self, events.get((rev, idx))) {
            Some(v) => Ok(Some(codec::decode_event(v.value())?)),
            None => Ok(None),
        }
    }

    pub(crate) fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<KeyValue>, StoreError> {
        self.check_revision(revision)?;
        let r = self.read()?;
        let keyidx = tryd!(self, r.open_table(KEYIDX));
        let events = tryd!(self, r.open_table(EVENTS));
        let last = tryd!(self, keyidx.range((key, 0)..=(key, revision))).next_back();
        let Some(item) = last else { return Ok(None) };
        let (k, idx) = tryd!(self, item);
        let rev = k.value().1;
        match self.event_at(&events, rev, idx.value())? {
            Some(e) if e.typ == EventType::Put => Ok(Some(e.kv)),
            _ => Ok(None),
        }
    }

    pub(crate) fn range_at(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        revision: u64,
    ) -> Result<RangeResult, StoreError> {
        self.check_revision(revision)?;
        let r = self.read()?;
        let keyidx = tryd!(self, r.open_table(KEYIDX));
        let events = tryd!(self, r.open_table(EVENTS));
        let lower = lower_bound(prefix, start_after);
        let mut kvs = Vec::new();
        let mut more = false;
        let mut cur_key: Option<Vec<u8>> = None;
        let mut best: Option<(u64, u64)> = None;
        let flush = |key: &Option<Vec<u8>>,
                     best: Option<(u64, u64)>,
                     kvs: &mut Vec<KeyValue>|
         -> Result<(), StoreError> {
            if let (Some(_), Some((rev, idx))) = (key, best)
                && let Some(e) = self.event_at(&events, rev, idx)?
                && e.typ == EventType::Put
            {
                kvs.push(e.kv);
            }
            Ok(())
        };
        for item in tryd!(self, keyidx.range((lower.as_slice(), 0)..)) {
            let (k, idx) = tryd!(self, item);
            let (key, rev) = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if cur_key.as_deref() != Some(key) {
                flush(&cur_key, best.take(), &mut kvs)?;
                if limit > 0 && kvs.len() >= limit {
                    more = true;
                    break;
                }
                cur_key = Some(key.to_vec());
            }
            if rev <= revision {
                best = Some((rev, idx.value()));
            }
        }
        if !more {
            flush(&cur_key, best.take(), &mut kvs)?;
        }
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
        Ok(RangeResult {
            kvs,
            more,
            revision,
        })
    }

    pub(crate) fn history(&self, key: &[u8]) -> Result<Vec<HistoryEntry>, StoreError> {
        let r = self.read()?;
        let keyidx = tryd!(self, r.open_table(KEYIDX));
        let events = tryd!(self, r.open_table(EVENTS));
        let revs = tryd!(self, r.open_table(REVS));
        let mut out = Vec::new();
        for item in tryd!(self, keyidx.range((key, 0)..=(key, u64::MAX))) {
            let (k, idx) = tryd!(self, item);
            let rev = k.value().1;
            let Some(e) = self.event_at(&events, rev, idx.value())? else {
                continue;
            };
            let info = match tryd!(self, revs.get(rev)) {
                Some(v) => codec::decode_rev(rev, v.value())?,
                None => continue,
            };
            out.push(HistoryEntry {
                info,
                typ: e.typ,
                kv: e.kv,
            });
        }
        Ok(out)
    }

    pub(crate) fn revisions(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<RevisionInfo>, StoreError> {
        let r = self.read()?;
        let revs = tryd!(self, r.open_table(REVS));
        let mut out = Vec::new();
        for item in tryd!(self, revs.range(from..=to)) {
            let (k, v) = tryd!(self, item);
            out.push(codec::decode_rev(k.value(), v.value())?);
            if limit > 0 && out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) fn revision_at_time(&self, time_nanos: u64) -> Result<u64, StoreError> {
        let r = self.read()?;
        let revs = tryd!(self, r.open_table(REVS));
        let time_of = |rev: u64| -> Result<Option<u64>, StoreError> {
            Ok(match tryd!(self, revs.range(rev..)).next() {
                Some(item) => {
                    let (k, v) = tryd!(self, item);
                    Some(codec::decode_rev(k.value(), v.value())?.time_nanos)
                }
                None => None,
            })
        };
        let mut lo = self.compacted_revision().max(1);
        let mut hi = self.published_revision();
        if hi < lo || time_of(lo)?.is_none_or(|t| t > time_nanos) {
            return Err(StoreError::TimeNotRetained);
        }
        // Invariant: time(lo) <= t; find the last revision whose time is <= t.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match time_of(mid)? {
                Some(t) if t <= time_nanos => lo = mid,
                _ => hi = mid - 1,
            }
        }
        Ok(lo)
    }

    /// Reads the events of one revision from a snapshot, for watch replay.
    pub(crate) fn read_revision(
        &self,
        snap: &redb::ReadTransaction,
        revision: u64,
        prefix: &[u8],
    ) -> Result<Vec<Event>, StoreError> {
        let events = tryd!(self, snap.open_table(EVENTS));
        let keyidx = tryd!(self, snap.open_table(KEYIDX));
        let mut out = Vec::new();
        for item in tryd!(self, events.range((revision, 0)..(revision + 1, 0))) {
            let (_, v) = tryd!(self, item);
            let rec = codec::decode_event(v.value())?;
            if !rec.kv.key.starts_with(prefix) {
                continue;
            }
            let prev = if rec.prev_mod_revision == 0 {
                None
            } else {
                match tryd!(
                    self,
                    keyidx.get((rec.kv.key.as_slice(), rec.prev_mod_revision))
                ) {
                    Some(idx) => self
                        .event_at(&events, rec.prev_mod_revision, idx.value())?
                        .map(|e| e.kv),
                    None => None,
                }
            };
            out.push(Event {
                typ: rec.typ,
                kv: rec.kv,
                prev,
            });
        }
        Ok(out)
    }

    pub(crate) fn snapshot(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.read()
    }
}

/// Where a range read starts: just after `start_after` (a continuation), else at `prefix`.
fn lower_bound(prefix: &[u8], start_after: Option<&[u8]>) -> Vec<u8> {
    match start_after {
        Some(s) => {
            let mut l = s.to_vec();
            l.push(0);
            l
        }
        None => prefix.to_vec(),
    }
}

/// The log record of a transaction that wrote something.
fn revision_record(r: &TxnResponse, time: u64, origin: &Origin) -> Option<WalRecord> {
    if !r.succeeded || r.events.is_empty() {
        return None;
    }
    Some(WalRecord::Revision {
        revision: r.revision,
        time,
        user: origin.user.clone(),
        verb: origin.verb.clone(),
        ops: r
            .events
            .iter()
            .map(|e| match e.typ {
                EventType::Put => WalOp::Put {
                    key: e.kv.key.clone(),
                    value: e.kv.value.clone(),
                    lease: e.kv.lease,
                },
                EventType::Delete => WalOp::Delete {
                    key: e.kv.key.clone(),
                },
            })
            .collect(),
    })
}

/// Answers every request of a group that failed as a whole with the same error.
fn answer_all(batch: Vec<Request>, e: &StoreError) {
    for req in batch {
        match req {
            Request::Txn { resp, .. } | Request::LeaseRevoke { resp, .. } => {
                drop(resp.send(Err(e.for_waiter())))
            }
            Request::LeaseGrant { resp, .. } => drop(resp.send(Err(e.for_waiter()))),
            Request::Compact { resp, .. } => drop(resp.send(Err(e.for_waiter()))),
            Request::Checkpoint => {}
        }
    }
}

enum Outcome {
    Txn(TxnResponse),
    Lease(u64),
    Compacted,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::{Origin, Store, StoreError, StoreOptions};

    /// A group commit whose records reached the log but whose database commit failed is
    /// answered with the error and cut from the log: neither the reopen that follows the
    /// failure nor a restart replays it, and revisions stay gapless.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_that_fails_after_its_log_append_leaves_nothing_to_replay() {
        let d = tempfile::tempdir().unwrap();
        let me = || Origin::new("alice", "create");
        let s = Store::open(d.path(), StoreOptions::default()).unwrap();
        s.put(b"/k/a", b"1", me()).await.unwrap();
        s.engine.fail_commits.store(1, Ordering::SeqCst);
        match s.put(b"/k/refused", b"2", me()).await {
            Err(StoreError::DiskFull(m)) => assert!(m.contains("database"), "{m}"),
            other => panic!("not a disk-full error: {other:?}"),
        }
        s.put(b"/k/c", b"3", me()).await.unwrap();
        let check = |s: &Store, when: &str| {
            assert!(s.get(b"/k/refused").unwrap().is_none(), "{when}: replayed");
            assert_eq!(s.get(b"/k/a").unwrap().unwrap().value, b"1", "{when}");
            let c = s.get(b"/k/c").unwrap().unwrap();
            assert_eq!(
                (c.value.as_slice(), c.mod_revision),
                (&b"3"[..], 2),
                "{when}"
            );
            assert_eq!(s.current_revision(), 2, "{when}");
        };
        check(&s, "after the failure");
        drop(s);
        let s = Store::open(d.path(), StoreOptions::default()).unwrap();
        check(&s, "reopened");
    }
}
