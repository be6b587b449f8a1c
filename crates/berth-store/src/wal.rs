//! The write-ahead log: what makes a write durable before it is acknowledged.
//!
//! Each group commit appends its records to the current segment with one `write` and one
//! `fdatasync`, then commits the batch to redb without syncing. Every second (and when a
//! segment grows past `SEGMENT_LIMIT`) the writer makes redb durable with one synced commit
//! (a checkpoint) and starts a new segment, deleting the old ones. On open, records after the
//! last checkpoint are replayed. A torn record at the end of the last segment (a crash in the
//! middle of an append) was never acknowledged and is cut off.
//!
//! A failed append (a short `write`, ENOSPC, a failed `fdatasync`) is cut back off the
//! segment at once: the file is truncated to the end of the last durable record and synced
//! again, so no torn or unacknowledged record stays in front of the records that follow.
//! After a failed `fdatasync` the page cache cannot be trusted to reach the disk (Linux marks
//! the failed pages clean), so nothing past the last good sync is kept. If the cut itself
//! fails, the log refuses every append until a later cut succeeds. The engine cuts a record
//! back the same way when the database commit after it fails, so a revision answered with an
//! error is never replayed.
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::codec::{Reader, Writer};

/// A segment this large triggers a checkpoint.
pub(crate) const SEGMENT_LIMIT: u64 = 64 * 1024 * 1024;

/// One change to one key, as a revision record replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
    Delete {
        key: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalRecord {
    Revision {
        revision: u64,
        time: u64,
        user: String,
        verb: String,
        ops: Vec<WalOp>,
    },
    LeaseGrant {
        id: u64,
        ttl_ms: u64,
    },
    LeaseRevoke {
        id: u64,
    },
    Compact {
        revision: u64,
    },
}

fn encode(r: &WalRecord, w: &mut Writer) {
    match r {
        WalRecord::Revision {
            revision,
            time,
            user,
            verb,
            ops,
        } => {
            w.u8(1)
                .u64(*revision)
                .u64(*time)
                .bytes(user.as_bytes())
                .bytes(verb.as_bytes())
                .u64(ops.len() as u64);
            for op in ops {
                match op {
                    WalOp::Put { key, value, lease } => {
                        w.u8(0).bytes(key).bytes(value).u64(*lease);
                    }
                    WalOp::Delete { key } => {
                        w.u8(1).bytes(key);
                    }
                }
            }
        }
        WalRecord::LeaseGrant { id, ttl_ms } => {
            w.u8(2).u64(*id).u64(*ttl_ms);
        }
        WalRecord::LeaseRevoke { id } => {
            w.u8(3).u64(*id);
        }
        WalRecord::Compact { revision } => {
            w.u8(4).u64(*revision);
        }
    }
}

fn decode(b: &[u8]) -> Result<WalRecord, StoreError> {
    let mut r = Reader::new(b);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(match r.u8()? {
        1 => {
            let revision = r.u64()?;
            let time = r.u64()?;
            let user = text(r.bytes()?);
            let verb = text(r.bytes()?);
            let n = r.u64()?;
            let mut ops = Vec::new();
            for _ in 0..n {
                ops.push(match r.u8()? {
                    0 => WalOp::Put {
                        key: r.bytes()?.to_vec(),
                        value: r.bytes()?.to_vec(),
                        lease: r.u64()?,
                    },
                    1 => WalOp::Delete {
                        key: r.bytes()?.to_vec(),
                    },
                    t => return Err(StoreError::Corrupt(format!("unknown WAL op {t}"))),
                });
            }
            WalRecord::Revision {
                revision,
                time,
                user,
                verb,
                ops,
            }
        }
        2 => WalRecord::LeaseGrant {
            id: r.u64()?,
            ttl_ms: r.u64()?,
        },
        3 => WalRecord::LeaseRevoke { id: r.u64()? },
        4 => WalRecord::Compact { revision: r.u64()? },
        t => return Err(StoreError::Corrupt(format!("unknown WAL record type {t}"))),
    })
}

pub(crate) struct Wal {
    dir: PathBuf,
    seq: u64,
    file: File,
    /// The end of the last durable record: everything before it was synced.
    size: u64,
    /// Why the segment may hold bytes past `size` that could not be cut off: appends are
    /// refused until a cut succeeds.
    damaged: Option<String>,
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    crate::io_error(format!("write-ahead log {}", path.display()), &e)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

impl Wal {
    /// Opens the log in `dir`, returning the records of every segment in order. A torn tail
    /// of the last segment is cut off; damage anywhere else is corruption.
    pub(crate) fn open(dir: &Path) -> Result<(Wal, Vec<WalRecord>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| io_err(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".wal")
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
            })
            .collect();
        seqs.sort_unstable();
        let mut records = Vec::new();
        let mut good_len = 0u64;
        for (i, seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, *seq);
            let mut data = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| io_err(&path, e))?;
            let mut pos = 0usize;
            let last = i + 1 == seqs.len();
            while pos < data.len() {
                let torn = || {
                    if last {
                        Ok(())
                    } else {
                        Err(StoreError::Corrupt(format!(
                            "write-ahead log segment {} is damaged at byte {pos}",
                            path.display()
                        )))
                    }
                };
                let Some(head) = data.get(pos..pos + 8) else {
                    torn()?;
                    break;
                };
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                let Some(payload) = data.get(pos + 8..pos + 8 + len) else {
                    torn()?;
                    break;
                };
                if crc32fast::hash(payload) != crc {
                    torn()?;
                    break;
                }
                records.push(decode(payload)?);
                pos += 8 + len;
            }
            if last {
                good_len = pos as u64;
            }
        }
        let seq = seqs.last().copied().unwrap_or(1);
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        // Cut a torn tail so new records follow the last good one.
        file.set_len(good_len).map_err(|e| io_err(&path, e))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        if seqs.is_empty() {
            sync_dir(dir)?;
        }
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                seq,
                file,
                size: good_len,
                damaged: None,
            },
            records,
        ))
    }

    /// Appends records and makes them durable: one write, one fdatasync. On failure nothing
    /// of them stays in the log (or, if it cannot be cut off, the log refuses appends).
    pub(crate) fn append(&mut self, records: &[WalRecord]) -> Result<(), StoreError> {
        self.repair()?;
        let mut buf = Vec::new();
        for r in records {
            let mut w = Writer::new();
            encode(r, &mut w);
            buf.extend_from_slice(&(w.0.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&w.0).to_le_bytes());
            buf.extend_from_slice(&w.0);
        }
        let path = segment_path(&self.dir, self.seq);
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            let err = io_err(&path, e);
            self.cut(self.size, &err);
            return Err(err);
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    /// The end of the last durable record, for `cut_back`.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Takes records appended after `mark` (a `size()` taken before) back out of the log:
    /// their commit failed, so they must never be replayed.
    pub(crate) fn cut_back(&mut self, mark: u64, why: &StoreError) {
        if mark < self.size {
            self.cut(mark, why);
        }
    }

    /// Truncates the segment to `len` and syncs it; if that fails, marks the log damaged.
    fn cut(&mut self, len: u64, why: &StoreError) {
        self.size = len;
        let path = segment_path(&self.dir, self.seq);
        match self.file.set_len(len).and_then(|()| self.file.sync_all()) {
            Ok(()) => self.damaged = None,
            Err(e) => {
                let e = io_err(&path, e);
                tracing::error!(error = %e, after = %why, "cannot cut a failed write out of the write-ahead log");
                self.damaged = Some(format!(
                    "the write-ahead log could not be cut back after a failed write ({e}); writes are refused until it can"
                ));
            }
        }
    }

    /// Before an append or a replay: if an earlier cut failed, tries it again.
    pub(crate) fn repair(&mut self) -> Result<(), StoreError> {
        let Some(why) = self.damaged.clone() else {
            return Ok(());
        };
        let path = segment_path(&self.dir, self.seq);
        self.file
            .set_len(self.size)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| match io_err(&path, e) {
                StoreError::DiskFull(_) => StoreError::DiskFull(why),
                _ => StoreError::Commit(why),
            })?;
        self.damaged = None;
        Ok(())
    }

    /// After a durable checkpoint: start an empty segment and delete the old ones.
    pub(crate) fn rotate(&mut self) -> Result<(), StoreError> {
        // A segment left with a tail that could not be cut is not passed over: a torn record
        // in front of a later segment would read as damage.
        self.repair()?;
        let next = self.seq + 1;
        let path = segment_path(&self.dir, next);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        sync_dir(&self.dir)?;
        let old = self.seq;
        self.file = file;
        self.seq = next;
        self.size = 0;
        for seq in (old.saturating_sub(4))..=old {
            let p = segment_path(&self.dir, seq);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            WalRecord::Revision {
                revision: 1,
                time: 5,
                user: "u".into(),
                verb: "create".into(),
                ops: vec![
                    WalOp::Put {
                        key: b"k".to_vec(),
                        value: b"v".to_vec(),
                        lease: 0,
                    },
                    WalOp::Delete { key: b"x".to_vec() },
                ],
            },
            WalRecord::LeaseGrant {
                id: 7,
                ttl_ms: 1000,
            },
            WalRecord::LeaseRevoke { id: 7 },
            WalRecord::Compact { revision: 1 },
        ];
        {
            let (mut w, old) = Wal::open(dir.path()).unwrap();
            assert!(old.is_empty());
            w.append(&recs).unwrap();
        }
        // A crash in the middle of the next append leaves half a record.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut w, got) = Wal::open(dir.path()).unwrap();
        assert_eq!(got, recs);
        w.append(&recs[1..2]).unwrap();
        drop(w);
        let (mut w, got) = Wal::open(dir.path()).unwrap();
        assert_eq!(got.len(), 5);
        w.rotate().unwrap();
        drop(w);
        let (_, got) = Wal::open(dir.path()).unwrap();
        assert!(got.is_empty());
    }

    fn put(revision: u64, size: usize) -> WalRecord {
        WalRecord::Revision {
            revision,
            time: revision,
            user: "u".into(),
            verb: "create".into(),
            ops: vec![WalOp::Put {
                key: format!("k{revision}").into_bytes(),
                value: vec![b'v'; size],
                lease: 0,
            }],
        }
    }

    #[test]
    fn a_failed_append_on_a_full_disk_leaves_nothing_behind() {
        let fs = berth_testkit::tmpfs::Tmpfs::mount("1m");
        let dir = fs.path().join("wal");
        let seg = segment_path(&dir, 1);
        let (mut w, _) = Wal::open(&dir).unwrap();
        w.append(&[put(1, 100)]).unwrap();
        let good = w.size();
        let filler = fs.fill("filler");
        // Part of the record fits in the segment's last page: the write is short, then
        // ENOSPC. The part must not stay.
        let err = w.append(&[put(2, 64 * 1024)]).unwrap_err();
        assert!(matches!(err, StoreError::DiskFull(_)), "{err}");
        assert!(
            err.to_string().contains(&seg.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), good);
        assert_eq!(w.size(), good);
        std::fs::remove_file(&filler).unwrap();
        w.append(&[put(3, 64 * 1024)]).unwrap();
        // A record whose database commit failed is cut back out.
        let mark = w.size();
        w.append(&[put(4, 10)]).unwrap();
        w.cut_back(mark, &StoreError::Commit("test".into()));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), mark);
        w.append(&[put(5, 10)]).unwrap();
        drop(w);
        let (_, got) = Wal::open(&dir).unwrap();
        assert_eq!(got, vec![put(1, 100), put(3, 64 * 1024), put(5, 10)]);
    }
}
