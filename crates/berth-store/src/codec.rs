//! The byte layout of records in the embedded database.
//!
//! Records are small and fixed in shape, so they are written as length-prefixed fields rather
//! than through a serialization framework: decoding is a handful of slice reads and cannot fail
//! on anything this module wrote. A record that does not decode is reported as corruption.

use crate::{EventType, KeyValue, StoreError};

pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn new() -> Self {
        Writer(Vec::with_capacity(64))
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

pub(crate) struct Reader<'a>(&'a [u8]);

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("truncated {what} record"))
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader(b)
    }
    pub fn u64(&mut self) -> Result<u64, StoreError> {
        let (head, rest) = self.0.split_at_checked(8).ok_or_else(|| corrupt("u64"))?;
        self.0 = rest;
        Ok(u64::from_le_bytes(
            head.try_into().map_err(|_| corrupt("u64"))?,
        ))
    }
    pub fn u8(&mut self) -> Result<u8, StoreError> {
        let (&b, rest) = self.0.split_first().ok_or_else(|| corrupt("u8"))?;
        self.0 = rest;
        Ok(b)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = usize::try_from(self.u64()?).map_err(|_| corrupt("length"))?;
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(|| corrupt("bytes"))?;
        self.0 = rest;
        Ok(head)
    }
}

/// The current state of a key (table `kv`): everything but the key itself.
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(kv.create_revision)
        .u64(kv.mod_revision)
        .u64(kv.version)
        .u64(kv.lease)
        .bytes(&kv.value);
    w.0
}

pub(crate) fn decode_kv(key: &[u8], b: &[u8]) -> Result<KeyValue, StoreError> {
    let mut r = Reader::new(b);
    Ok(KeyValue {
        key: key.to_vec(),
        create_revision: r.u64()?,
        mod_revision: r.u64()?,
        version: r.u64()?,
        lease: r.u64()?,
        value: r.bytes()?.to_vec(),
    })
}

/// One change in the revision log (table `events`). For a delete, `kv.value` is the value the
/// key had, so a watcher sees the last state of what went away.
pub(crate) struct EventRecord {
    pub typ: EventType,
    pub kv: KeyValue,
    /// The mod revision the key had before this change (0 if it did not exist).
    pub prev_mod_revision: u64,
}

pub(crate) fn encode_event(e: &EventRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(match e.typ {
        EventType::Put => 0,
        EventType::Delete => 1,
    })
    .bytes(&e.kv.key)
    .u64(e.prev_mod_revision);
    w.0.extend_from_slice(&encode_kv(&e.kv));
    w.0
}

pub(crate) fn decode_event(b: &[u8]) -> Result<EventRecord, StoreError> {
    let mut r = Reader::new(b);
    let typ = match r.u8()? {
        0 => EventType::Put,
        1 => EventType::Delete,
        t => return Err(StoreError::Corrupt(format!("unknown event type {t}"))),
    };
    let key = r.bytes()?.to_vec();
    let prev_mod_revision = r.u64()?;
    let kv = decode_kv(&key, r.0)?;
    Ok(EventRecord {
        typ,
        kv,
        prev_mod_revision,
    })
}

/// Who made a revision, how and when (table `revisions`).
pub(crate) fn encode_rev(time_nanos: u64, user: &str, verb: &str, events: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(time_nanos)
        .bytes(user.as_bytes())
        .bytes(verb.as_bytes())
        .u64(events);
    w.0
}

pub(crate) fn decode_rev(revision: u64, b: &[u8]) -> Result<crate::RevisionInfo, StoreError> {
    let mut r = Reader::new(b);
    Ok(crate::RevisionInfo {
        revision,
        time_nanos: r.u64()?,
        user: String::from_utf8_lossy(r.bytes()?).into_owned(),
        verb: String::from_utf8_lossy(r.bytes()?).into_owned(),
        events: r.u64()?,
    })
}
