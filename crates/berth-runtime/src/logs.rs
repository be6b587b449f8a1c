//! Container log files in the CRI format Kubernetes' kubelet reads and writes:
//! `2026-11-27T10:00:00.123456789Z stdout F the line` — a timestamp, the stream, `F` for a full
//! line or `P` for part of a longer one, and the text. Files are rotated by size
//! (`0.log` → `0.log.1` → ...), keeping a bounded number.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest piece of a line written as one record; longer lines become `P` records.
pub const MAX_RECORD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends records to a size-rotated log file.
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl LogWriter {
    /// `max_size` bytes per file, `max_files` files in all (the current one included).
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<LogWriter> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_size: max_size.max(1024),
            max_files: max_files.max(1),
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.max_files > 1 {
            for i in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            std::fs::rename(&self.path, name(1))?;
        }
        self.file = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }

    /// Writes one record; `full` says whether it ends a line.
    pub fn record(&mut self, stream: Stream, full: bool, text: &[u8]) -> std::io::Result<()> {
        let ts = berth_api::timefmt::rfc3339_nanos_from_nanos(berth_api::timefmt::now_nanos());
        let mut rec = Vec::with_capacity(text.len() + 48);
        rec.extend_from_slice(ts.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_str().as_bytes());
        rec.extend_from_slice(if full { b" F " } else { b" P " });
        rec.extend_from_slice(text);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => return Err(std::io::Error::other("log file closed")),
        };
        file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }
}

/// Splits a stream's bytes into records, keeping an unfinished line for later.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes read from the stream; `emit(full, text)` gets each record.
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(bool, &[u8])) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = &self.pending[start..start + nl];
            for (i, chunk) in line.chunks(MAX_RECORD).enumerate() {
                let last = (i + 1) * MAX_RECORD >= line.len();
                emit(last, chunk);
            }
            if line.is_empty() {
                emit(true, b"");
            }
            start += nl + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_RECORD {
            let chunk: Vec<u8> = self.pending.drain(..MAX_RECORD).collect();
            emit(false, &chunk);
        }
    }

    /// The stream ended: what is left is a last line without its newline.
    pub fn finish(&mut self, mut emit: impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            emit(true, &rest);
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: String,
    pub stream: Stream,
    pub full: bool,
    pub text: Vec<u8>,
}

/// Parses one line of a log file; `None` for a line that is not a record.
pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let text = parts.next().unwrap_or_default().to_vec();
    Some(Record {
        time,
        stream,
        full,
        text,
    })
}

/// The log files of a container in a pod directory: `(attempt, path)` sorted by attempt
/// (each attempt's current file; rotated `.N` files are older parts of it).
pub fn attempts(pod_dir: &Path, container: &str) -> Vec<(u32, PathBuf)> {
    let dir = pod_dir.join("logs").join(container);
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_suffix(".log")?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    out
}

/// How a log is read back, as `kubectl logs` asks: `--tail`, `--since`/`--since-time`,
/// `--timestamps` and `--limit-bytes`.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub tail_lines: Option<usize>,
    /// Only records at or after this unix time (ns).
    pub since_nanos: Option<u64>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

/// Turns records into what a reader sees: each text, a newline after a full line, the time
/// first when asked.
pub fn render(records: &[Record], timestamps: bool, out: &mut Vec<u8>) {
    for r in records {
        if timestamps {
            out.extend_from_slice(r.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&r.text);
        if r.full {
            out.push(b'\n');
        }
    }
}

fn record_time(r: &Record) -> u64 {
    berth_api::timefmt::parse_rfc3339(&r.time).unwrap_or(0)
}

/// Reads an attempt's log (its rotated parts first) as `opts` asks; returns the rendered
/// bytes and where the current file ended, for following from there.
pub fn read(path: &Path, opts: &ReadOptions) -> std::io::Result<(Vec<u8>, u64)> {
    let mut files = Vec::new();
    for i in (1..16).rev() {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}"));
        let p = PathBuf::from(p);
        if p.exists() {
            files.push(p);
        }
    }
    let current = std::fs::read(path)?;
    let mut records = Vec::new();
    for f in &files {
        if let Ok(bytes) = std::fs::read(f) {
            records.extend(bytes.split(|b| *b == b'\n').filter_map(parse_record));
        }
    }
    records.extend(current.split(|b| *b == b'\n').filter_map(parse_record));
    if let Some(since) = opts.since_nanos {
        records.retain(|r| record_time(r) >= since);
    }
    if let Some(n) = opts.tail_lines {
        // Lines, not records: a long line is several `P` records and one `F`.
        let mut lines = 0;
        let mut start = records.len();
        while start > 0 {
            if records[start - 1].full {
                if lines == n {
                    break;
                }
                lines += 1;
            }
            start -= 1;
        }
        records.drain(..start);
    }
    let mut out = Vec::new();
    render(&records, opts.timestamps, &mut out);
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit as usize);
    }
    Ok((out, current.len() as u64))
}

/// Follows an attempt's current file from an offset: new whole records as they are written,
/// across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    pending: Vec<u8>,
    timestamps: bool,
}

impl Follower {
    pub fn new(path: &Path, offset: u64, timestamps: bool) -> Follower {
        Follower {
            path: path.to_path_buf(),
            file: None,
            offset,
            pending: Vec::new(),
            timestamps,
        }
    }

    /// What was written since the last call (rendered); empty when nothing was.
    pub fn poll(&mut self) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        if self.file.is_none() {
            let mut f = File::open(&self.path)?;
            f.seek(SeekFrom::Start(self.offset))?;
            self.file = Some(f);
        }
        let mut bytes = Vec::new();
        while let Some(f) = self.file.as_mut() {
            f.read_to_end(&mut bytes)?;
            // Rotated: the path now names a new file; what the old one held is read, go on
            // with the new one from its start.
            let rotated = match (std::fs::metadata(&self.path), f.metadata()) {
                (Ok(now), Ok(open)) => now.ino() != open.ino(),
                _ => false,
            };
            if !rotated {
                break;
            }
            f.read_to_end(&mut bytes)?;
            self.file = Some(File::open(&self.path)?);
        }
        self.pending.extend_from_slice(&bytes);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let whole: Vec<u8> = self.pending.drain(..=end).collect();
        let records: Vec<Record> = whole
            .split(|b| *b == b'\n')
            .filter_map(parse_record)
            .collect();
        let mut out = Vec::new();
        render(&records, self.timestamps, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_records_and_rotation() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"one\ntw", |f, t| out.push((f, t.to_vec())));
        s.feed(b"o\n\nthree", |f, t| out.push((f, t.to_vec())));
        s.finish(|f, t| out.push((f, t.to_vec())));
        assert_eq!(
            out,
            vec![
                (true, b"one".to_vec()),
                (true, b"two".to_vec()),
                (true, b"".to_vec()),
                (true, b"three".to_vec())
            ]
        );
        let long = vec![b'x'; MAX_RECORD + 10];
        let mut out = Vec::new();
        s.feed(&long, |f, t| out.push((f, t.len())));
        s.feed(b"\n", |f, t| out.push((f, t.len())));
        assert_eq!(out, vec![(false, MAX_RECORD), (true, 10)]);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut w = LogWriter::open(&path, 1024, 3).unwrap();
        for i in 0..100 {
            w.record(Stream::Stderr, true, format!("line {i}").as_bytes())
                .unwrap();
        }
        let cur = std::fs::read(&path).unwrap();
        assert!(cur.len() <= 1024);
        let last = cur.split(|b| *b == b'\n').rev().nth(1).unwrap();
        let rec = parse_record(last).unwrap();
        assert_eq!(rec.text, b"line 99");
        assert_eq!(rec.stream, Stream::Stderr);
        assert!(rec.full);
        assert!(dir.path().join("c/0.log.1").exists());
        assert!(dir.path().join("c/0.log.2").exists());
        assert!(!dir.path().join("c/0.log.3").exists(), "at most 3 files");
        assert_eq!(parse_record(b"garbage"), None);
    }

    #[test]
    fn read_back_with_tail_since_and_follow_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/c/0.log");
        let mut w = LogWriter::open(&path, 4096, 3).unwrap();
        w.record(Stream::Stdout, true, b"one").unwrap();
        w.record(Stream::Stdout, false, b"tw").unwrap();
        w.record(Stream::Stdout, true, b"o").unwrap();
        w.record(Stream::Stderr, true, b"three").unwrap();
        let all = read(&path, &ReadOptions::default()).unwrap();
        assert_eq!(all.0, b"one\ntwo\nthree\n");
        let tail = ReadOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(read(&path, &tail).unwrap().0, b"two\nthree\n");
        let future = ReadOptions {
            since_nanos: Some(berth_api::timefmt::now_nanos() + 60_000_000_000),
            ..Default::default()
        };
        assert_eq!(read(&path, &future).unwrap().0, b"");
        let stamped = ReadOptions {
            timestamps: true,
            limit_bytes: Some(10),
            ..Default::default()
        };
        assert_eq!(read(&path, &stamped).unwrap().0.len(), 10);
        assert_eq!(attempts(dir.path(), "c"), vec![(0, path.clone())]);

        let mut f = Follower::new(&path, all.1, false);
        assert_eq!(f.poll().unwrap(), b"");
        w.record(Stream::Stdout, true, b"four").unwrap();
        assert_eq!(f.poll().unwrap(), b"four\n");
        // Enough to rotate several times: nothing is lost or repeated.
        let mut seen = Vec::new();
        for i in 0..100 {
            w.record(Stream::Stdout, true, format!("line {i:03}").as_bytes())
                .unwrap();
            if i % 20 == 0 {
                seen.extend(f.poll().unwrap());
            }
        }
        seen.extend(f.poll().unwrap());
        let text = String::from_utf8(seen).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100, "{text}");
        assert_eq!(lines[99], "line 099");
    }
}
