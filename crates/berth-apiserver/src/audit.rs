//! The audit log: requests that were refused (401, 403), reads of Secrets and requests that
//! change state, one JSON line each, as Kubernetes' `audit.k8s.io/v1` `Event`.
//!
//! - What a request is audited with is gathered while it is handled (see [`scope`]): what it
//!   asked (the RBAC attributes), who asked, the authorizer's decision and, for writes of
//!   objects other than Secrets, the request body. The handler turns that into an event once
//!   the response has been sent (or dropped), so a watch's event is written when it ends.
//! - Level `Request` (with `requestObject`) for writes of objects other than Secrets;
//!   `Metadata` for everything else: a Secret's data, a Secret's request body, key/value
//!   values and exec's streams are never written.
//! - A background thread writes the events (a bounded queue): a request never waits for the
//!   disk. When the queue is full the event is dropped and counted
//!   (`berth_audit_events_dropped_total{reason="queue_full"}`), with one warning; an event
//!   the file refused is counted with `reason="write_failed"`.
//! - The file (mode 0600) is rotated once it would pass `max_bytes`: `audit.log` becomes
//!   `audit.log.1`, `.1` becomes `.2`, and so on; at most `max_backups` old files are kept.
//!
//! Invariant: recording an event never blocks and never fails the request it describes.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use berth_api::rbac::Request;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::server::Route;

const DROPPED: &str = "berth_audit_events_dropped_total";
const DROPPED_HELP: &str = "Audit events not written: the queue to the writer was full, or the audit log could not be written";

/// The verbs that change state.
const WRITES: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// How far back the denied view reads, over all the files: it answers from the recent past
/// without reading hundreds of MiB of rotated logs.
const VIEW_SCAN_BYTES: u64 = 64 * 1024 * 1024;

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A file, rotated by size.
    File(PathBuf),
    /// The process's standard output (`--audit-log-path -`); nothing is rotated or read back.
    Stdout,
}

/// How the audit log is written.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub sink: Sink,
    /// The size past which the file is rotated (`--audit-log-maxsize`, given in MiB).
    pub max_bytes: u64,
    /// How many rotated files are kept (`--audit-log-maxbackup`); 0 keeps none.
    pub max_backups: usize,
    /// Events waiting for the writer at most; more are dropped and counted.
    pub queue: usize,
}

impl AuditConfig {
    /// kube-apiserver's defaults for a file: rotated at 100 MiB, five old files kept.
    pub fn file(path: PathBuf) -> Self {
        AuditConfig {
            sink: Sink::File(path),
            max_bytes: 100 * 1024 * 1024,
            max_backups: 5,
            queue: 4096,
        }
    }
}

/// The log as requests see it: a queue to the writer.
#[derive(Debug, Default)]
pub struct AuditLog {
    tx: Option<SyncSender<Record>>,
    config: Option<AuditConfig>,
    dropped: Arc<AtomicU64>,
    warned: AtomicBool,
}

impl AuditLog {
    /// Starts the writer for `config`; with none, nothing is audited.
    pub fn start(config: Option<AuditConfig>) -> AuditLog {
        let Some(config) = config else {
            return AuditLog::default();
        };
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer::new(&config, dropped.clone());
        let started = std::thread::Builder::new()
            .name("berth-audit".into())
            .spawn(move || writer.run(rx));
        if let Err(e) = started {
            // Without a writer every event is counted as dropped: the server still serves.
            tracing::error!(error = %e, "cannot start the audit log writer; audit events are dropped");
        }
        AuditLog {
            tx: Some(tx),
            config: Some(config),
            dropped,
            warned: AtomicBool::new(false),
        }
    }

    /// Events dropped so far (a full queue, or a file that could not be written).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hands `event` to the writer, or drops it when the writer is behind.
    fn record(&self, event: Record) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                berth_metrics::inc(DROPPED, DROPPED_HELP, &[("reason", "queue_full")]);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        metric = DROPPED,
                        "the audit log writer is behind: audit events are being dropped (counted in the metric)"
                    );
                }
            }
        }
    }

    /// The recent events, oldest first: the last `limit`, only refusals (401, 403) with
    /// `denied`, from the file and its rotated copies.
    pub(crate) async fn recent(&self, denied: bool, limit: usize) -> ApiResult<Vec<Value>> {
        let Some(AuditConfig {
            sink: Sink::File(path),
            max_backups,
            ..
        }) = self.config.clone()
        else {
            return Err(ApiError::new(
                404,
                "NotFound",
                "this server keeps no audit log file to read (it writes none, or writes it to standard output)",
            ));
        };
        tokio::task::spawn_blocking(move || read_recent(&path, max_backups, denied, limit))
            .await
            .map_err(|e| ApiError::internal(format!("reading the audit log failed: {e}")))?
            .map_err(|e| ApiError::internal(format!("cannot read the audit log: {e}")))
    }
}

/// What the authorizer decided.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// Allowed, and why (the binding and role, the Node authorizer, `system:masters`).
    Allow(String),
    Forbid,
}

/// What a request is audited with, gathered while it is handled.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    request: Option<Request>,
    api_version: String,
    user: Option<UserInfo>,
    decision: Option<Decision>,
    /// A write of an object (not a Secret, not exec, not a key): its body is kept.
    object_write: bool,
    /// An access review: answered, never stored, so not a change of state.
    review: bool,
    body: Option<Bytes>,
    content_type: String,
}

tokio::task_local! {
    static FACTS: RefCell<Facts>;
}

/// Runs a request's handling, returning what it produced and what it is audited with.
pub(crate) async fn scope<F: std::future::Future>(f: F) -> (F::Output, Facts) {
    FACTS
        .scope(RefCell::new(Facts::default()), async {
            let out = f.await;
            let facts = FACTS.with(|c| std::mem::take(&mut *c.borrow_mut()));
            (out, facts)
        })
        .await
}

fn note(f: impl FnOnce(&mut Facts)) {
    let _ = FACTS.try_with(|c| f(&mut c.borrow_mut()));
}

/// The request's route, RBAC attributes and body's content type (before authentication: a
/// 401 names them too).
pub(crate) fn note_request(
    route: &Route,
    path: &str,
    request: Option<&Request>,
    content_type: &str,
) {
    let secret = |kind: &berth_api::ResourceKind| kind.group.is_empty() && kind.plural == "secrets";
    let (object_write, review) = match route {
        Route::Collection { kind, .. } => (!secret(kind) && !kind.is_review(), kind.is_review()),
        Route::Object { kind, sub, .. } => (
            !secret(kind) && !matches!(sub.as_deref(), Some("exec" | "attach" | "portforward")),
            false,
        ),
        _ => (false, false),
    };
    let mut segs = path.trim_matches('/').split('/');
    let api_version = match segs.next() {
        Some("api") => segs.next(),
        Some("apis") => segs.nth(1),
        _ => None,
    }
    .unwrap_or("")
    .to_string();
    note(|f| {
        f.request = request.cloned();
        f.api_version = api_version;
        f.object_write = object_write
            && request.is_some_and(
                |r| matches!(r, Request::Resource(r) if WRITES.contains(&r.verb.as_str())),
            );
        f.review = review;
        f.content_type = content_type.to_string();
    });
}

/// Who the request comes from.
pub(crate) fn note_user(user: &UserInfo) {
    note(|f| f.user = Some(user.clone()));
}

/// What the authorizer decided.
pub(crate) fn note_decision(decision: Decision) {
    note(|f| f.decision = Some(decision));
}

/// The request body, kept only for a write of an object other than a Secret.
pub(crate) fn note_body(body: &Bytes) {
    note(|f| {
        if f.object_write {
            f.body = Some(body.clone());
        }
    });
}

/// The request as the handler saw it, for its event.
#[derive(Debug)]
pub(crate) struct Seen {
    pub uri: String,
    pub user_agent: String,
    pub source_ip: Option<std::net::IpAddr>,
    pub received_nanos: u64,
}

impl Facts {
    /// The level the request is audited at, or `None` when it is not audited.
    fn level(&self, code: u16) -> Option<&'static str> {
        let denied = code == 401 || code == 403;
        let Some(Request::Resource(r)) = &self.request else {
            return denied.then_some("Metadata");
        };
        let read_secret = r.api_group.is_empty()
            && r.resource == "secrets"
            && matches!(r.verb.as_str(), "get" | "list" | "watch");
        let write = WRITES.contains(&r.verb.as_str()) && !self.review;
        if !(denied || read_secret || write) {
            return None;
        }
        Some(if self.object_write {
            "Request"
        } else {
            "Metadata"
        })
    }
}

/// An event waiting for its response to end; recorded when dropped (the response body sent,
/// or the client gone).
#[derive(Debug)]
pub(crate) struct Pending {
    log: Arc<AuditLog>,
    event: Option<Record>,
}

/// An event on its way to the writer, with the request body its `requestObject` is read from
/// there (off the request's path).
#[derive(Debug)]
pub(crate) struct Record {
    event: Value,
    body: Option<(String, Bytes)>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut record) = self.event.take() {
            record.event["stageTimestamp"] = Value::String(
                berth_api::timefmt::rfc3339_micros_from_nanos(berth_api::timefmt::now_nanos()),
            );
            self.log.record(record);
        }
    }
}

/// The event for a request answered with `code` (and `failure`, when it failed), if the
/// request is audited.
pub(crate) fn pending(
    log: &Arc<AuditLog>,
    facts: Facts,
    seen: impl FnOnce() -> Seen,
    code: u16,
    failure: Option<&berth_api::Status>,
) -> Option<Pending> {
    log.tx.as_ref()?;
    let level = facts.level(code)?;
    Some(Pending {
        log: log.clone(),
        event: Some(event(level, facts, seen(), code, failure)),
    })
}

impl Pending {
    /// Keeps the event for as long as whatever holds it (a response body).
    pub(crate) fn hold(&self) {}
}

fn put(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), Value::String(v.into()));
    }
}

fn event(
    level: &str,
    facts: Facts,
    seen: Seen,
    code: u16,
    failure: Option<&berth_api::Status>,
) -> Record {
    let mut user = Map::new();
    if let Some(u) = &facts.user {
        put(&mut user, "username", &u.name);
        put(&mut user, "uid", &u.uid);
        user.insert("groups".into(), json!(u.groups));
    }
    let mut e = Map::new();
    e.insert("kind".into(), json!("Event"));
    e.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
    e.insert("level".into(), json!(level));
    e.insert("auditID".into(), json!(uuid::Uuid::new_v4().to_string()));
    e.insert("stage".into(), json!("ResponseComplete"));
    e.insert("requestURI".into(), json!(seen.uri));
    let verb = match &facts.request {
        Some(Request::Resource(r)) => r.verb.as_str(),
        Some(Request::NonResource { verb, .. }) => verb.as_str(),
        None => "",
    };
    e.insert("verb".into(), json!(verb));
    e.insert("user".into(), Value::Object(user));
    if let Some(ip) = seen.source_ip {
        e.insert("sourceIPs".into(), json!([ip.to_string()]));
    }
    put(&mut e, "userAgent", &seen.user_agent);
    if let Some(Request::Resource(r)) = &facts.request {
        let mut o = Map::new();
        put(&mut o, "resource", &r.resource);
        put(&mut o, "namespace", &r.namespace);
        put(&mut o, "name", &r.name);
        // The core group is "" and, as in Kubernetes' events, left out.
        put(&mut o, "apiGroup", &r.api_group);
        put(&mut o, "apiVersion", &facts.api_version);
        put(&mut o, "subresource", &r.subresource);
        e.insert("objectRef".into(), Value::Object(o));
    }
    let mut status = Map::new();
    status.insert("metadata".into(), json!({}));
    if let Some(f) = failure {
        status.insert("status".into(), json!("Failure"));
        put(&mut status, "message", &f.message);
        put(&mut status, "reason", &f.reason);
    }
    status.insert("code".into(), json!(code));
    e.insert("responseStatus".into(), Value::Object(status));
    // The body is read into `requestObject` by the writer; its place is kept here, in
    // Kubernetes' order of the fields.
    let body = match facts.body {
        Some(b) if level == "Request" && !b.is_empty() => {
            e.insert("requestObject".into(), Value::Null);
            Some((facts.content_type, b))
        }
        _ => None,
    };
    let received = berth_api::timefmt::rfc3339_micros_from_nanos(seen.received_nanos);
    e.insert("requestReceivedTimestamp".into(), json!(received));
    e.insert("stageTimestamp".into(), json!(received));
    let mut annotations = Map::new();
    match &facts.decision {
        Some(Decision::Allow(reason)) => {
            put(&mut annotations, "authorization.k8s.io/decision", "allow");
            put(&mut annotations, "authorization.k8s.io/reason", reason);
        }
        Some(Decision::Forbid) => {
            put(&mut annotations, "authorization.k8s.io/decision", "forbid");
        }
        None => {}
    }
    if !annotations.is_empty() {
        e.insert("annotations".into(), Value::Object(annotations));
    }
    Record {
        event: Value::Object(e),
        body,
    }
}

impl Record {
    /// The event as written: the request body read into its `requestObject`, or left out
    /// when it cannot be read.
    fn finish(self) -> Value {
        let Record { mut event, body } = self;
        if let Some((content_type, body)) = body {
            match request_object(&content_type, &body) {
                Some(o) => event["requestObject"] = o,
                None => {
                    if let Some(e) = event.as_object_mut() {
                        e.shift_remove("requestObject");
                    }
                }
            }
        }
        event
    }
}

/// A request body as JSON: JSON and YAML as sent, RBAC's protobuf decoded; nothing for a
/// body that cannot be read (the request failed on it anyway).
fn request_object(content_type: &str, body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    if content_type.starts_with(berth_api::protobuf::CONTENT_TYPE) {
        return berth_api::protobuf::decode(body).ok();
    }
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(body).ok()?;
        let docs = berth_api::manifest::parse("request body", text).ok()?;
        return docs.into_iter().next().map(|d| d.object.into_value());
    }
    serde_json::from_slice(body).ok()
}

/// The writer thread's side.
struct Writer {
    sink: Sink,
    max_bytes: u64,
    max_backups: usize,
    dropped: Arc<AtomicU64>,
    file: Option<File>,
    size: u64,
}

/// `path.N`: the Nth newest rotated file.
fn backup(path: &Path, n: usize) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Writer {
    fn new(config: &AuditConfig, dropped: Arc<AtomicU64>) -> Writer {
        Writer {
            sink: config.sink.clone(),
            max_bytes: config.max_bytes.max(1),
            max_backups: config.max_backups,
            dropped,
            file: None,
            size: 0,
        }
    }

    /// Writes events until every sender is gone.
    fn run(mut self, rx: Receiver<Record>) {
        let mut failing = false;
        for record in rx {
            let mut line = serde_json::to_vec(&record.finish()).unwrap_or_default();
            line.push(b'\n');
            match self.write(&line) {
                Ok(()) => failing = false,
                Err(e) => {
                    self.file = None;
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    berth_metrics::inc(DROPPED, DROPPED_HELP, &[("reason", "write_failed")]);
                    // One warning per spell of failures, not one per event.
                    if !failing {
                        tracing::warn!(error = %e, "cannot write the audit log; audit events are dropped until it can be written");
                    }
                    failing = true;
                }
            }
        }
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let path = match &self.sink {
            Sink::Stdout => return io::stdout().lock().write_all(line),
            Sink::File(p) => p.clone(),
        };
        if self.file.is_some() && self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.file = None;
            self.rotate(&path)?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&path)?;
                let meta = f.metadata()?;
                // A file made by someone else, or before: the events are root's alone.
                if meta.permissions().mode() & 0o077 != 0 {
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
                self.size = meta.len();
                if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
                    drop(f);
                    self.rotate(&path)?;
                    return self.write(line);
                }
                self.file.insert(f)
            }
        };
        file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `audit.log` → `audit.log.1` → `.2` …, keeping `max_backups` old files.
    fn rotate(&mut self, path: &Path) -> io::Result<()> {
        self.size = 0;
        if self.max_backups == 0 {
            return ignore_missing(std::fs::remove_file(path));
        }
        for n in (1..self.max_backups).rev() {
            ignore_missing(std::fs::rename(backup(path, n), backup(path, n + 1)))?;
        }
        ignore_missing(std::fs::rename(path, backup(path, 1)))?;
        // Files past the limit (kept under a larger one before) go.
        let mut n = self.max_backups + 1;
        while std::fs::remove_file(backup(path, n)).is_ok() {
            n += 1;
        }
        Ok(())
    }
}

/// Calls `f` on each line of `path`, last first, until it returns false or `budget` bytes
/// have been read.
fn lines_backwards(
    path: &Path,
    budget: &mut u64,
    f: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<bool> {
    const CHUNK: u64 = 64 * 1024;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let mut pos = file.metadata()?.len();
    let mut rest: Vec<u8> = Vec::new();
    while pos > 0 {
        if *budget == 0 {
            return Ok(false);
        }
        let n = CHUNK.min(pos).min(*budget);
        pos -= n;
        *budget -= n;
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, pos)?;
        buf.extend_from_slice(&rest);
        let mut end = buf.len();
        while let Some(i) = buf[..end].iter().rposition(|&b| b == b'\n') {
            let line = &buf[i + 1..end];
            if !line.is_empty() && !f(line) {
                return Ok(false);
            }
            end = i;
        }
        rest = buf[..end].to_vec();
    }
    Ok(rest.is_empty() || f(&rest))
}

fn read_recent(
    path: &Path,
    max_backups: usize,
    denied: bool,
    limit: usize,
) -> io::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut budget = VIEW_SCAN_BYTES;
    let mut take = |line: &[u8]| {
        // The last line may be half written; a line that is not an event is skipped.
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return true;
        };
        let code = v["responseStatus"]["code"].as_u64().unwrap_or(0);
        if !denied || code == 401 || code == 403 {
            out.push(v);
        }
        out.len() < limit
    };
    let files =
        std::iter::once(path.to_path_buf()).chain((1..=max_backups).map(|n| backup(path, n)));
    for file in files {
        if !lines_backwards(&file, &mut budget, &mut take)? {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
        }
    }

    fn seen() -> Seen {
        Seen {
            uri: "/api/v1/namespaces/shop/secrets/db".into(),
            user_agent: "kubectl/v1.32".into(),
            source_ip: Some("127.0.0.1".parse().unwrap()),
            received_nanos: 1_800_000_000_123_456_789,
        }
    }

    fn facts(method: axum::http::Method, path: &str, who: Option<&str>) -> Facts {
        let route = crate::server::route(path).unwrap();
        let request = crate::authz::attributes(&method, &route, path, &Default::default());
        let (out, facts) = futures_util::FutureExt::now_or_never(scope(async {
            note_request(&route, path, request.as_ref(), "application/json");
            if let Some(w) = who {
                note_user(&user(w));
            }
            note_body(&Bytes::from_static(
                br#"{"kind":"ConfigMap","data":{"k":"v"}}"#,
            ));
        }))
        .unwrap();
        let () = out;
        facts
    }

    #[test]
    fn refusals_secret_reads_and_writes_are_audited_at_their_levels() {
        use axum::http::Method;
        let get_secret = facts(Method::GET, "/api/v1/namespaces/shop/secrets/db", Some("a"));
        assert_eq!(get_secret.level(200), Some("Metadata"));
        let list_pods = facts(Method::GET, "/api/v1/namespaces/shop/pods", Some("a"));
        assert_eq!(list_pods.level(200), None, "plain reads are not audited");
        assert_eq!(list_pods.level(403), Some("Metadata"));
        assert_eq!(list_pods.level(401), Some("Metadata"));
        let create_cm = facts(
            Method::POST,
            "/api/v1/namespaces/shop/configmaps",
            Some("a"),
        );
        assert_eq!(create_cm.level(201), Some("Request"));
        assert!(create_cm.body.is_some());
        let create_secret = facts(Method::POST, "/api/v1/namespaces/shop/secrets", Some("a"));
        assert_eq!(create_secret.level(201), Some("Metadata"));
        assert!(
            create_secret.body.is_none(),
            "a Secret's body is never kept"
        );
        let exec = facts(
            Method::POST,
            "/api/v1/namespaces/shop/pods/web/exec",
            Some("a"),
        );
        assert_eq!(exec.level(101), Some("Metadata"));
        let kv = facts(Method::PUT, "/apis/kv.berth.dev/v1/keys/app/db", Some("a"));
        assert_eq!(kv.level(200), Some("Metadata"));
        assert!(kv.body.is_none());
        let review = facts(
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some("a"),
        );
        assert_eq!(review.level(201), None, "a review changes nothing");
        let discovery = facts(Method::GET, "/apis", None);
        assert_eq!(discovery.level(200), None);
        assert_eq!(discovery.level(401), Some("Metadata"));
    }

    #[test]
    fn events_have_kubernetes_shape() {
        let mut f = facts(
            axum::http::Method::GET,
            "/api/v1/namespaces/shop/secrets/db",
            Some("alice"),
        );
        f.decision = Some(Decision::Forbid);
        let status = berth_api::Status::failure(403, "Forbidden", "secrets \"db\" is forbidden");
        let e = event("Metadata", f, seen(), 403, Some(&status)).finish();
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(e["stage"], "ResponseComplete");
        assert_eq!(e["verb"], "get");
        assert_eq!(e["user"]["username"], "alice");
        assert_eq!(e["sourceIPs"], json!(["127.0.0.1"]));
        assert_eq!(e["userAgent"], "kubectl/v1.32");
        assert_eq!(
            e["objectRef"],
            json!({"resource": "secrets", "namespace": "shop", "name": "db", "apiVersion": "v1"})
        );
        assert_eq!(e["responseStatus"]["code"], 403);
        assert_eq!(
            e["responseStatus"]["message"],
            "secrets \"db\" is forbidden"
        );
        assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "forbid");
        assert_eq!(e["requestReceivedTimestamp"], "2027-01-15T08:00:00.123456Z");
        assert_eq!(
            uuid::Uuid::parse_str(e["auditID"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        assert!(e.get("requestObject").is_none());
        let mut f = facts(
            axum::http::Method::POST,
            "/api/v1/namespaces/shop/configmaps",
            Some("bob"),
        );
        f.decision = Some(Decision::Allow(
            berth_api::rbac::Allowed {
                binding_kind: "ClusterRoleBinding",
                binding: "bob-edit".into(),
                role: berth_api::rbac::RoleRef {
                    kind: "ClusterRole".into(),
                    name: "edit".into(),
                },
            }
            .to_string(),
        ));
        let e = event("Request", f, seen(), 201, None).finish();
        assert_eq!(e["requestObject"]["data"]["k"], "v");
        assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "allow");
        assert!(
            e["annotations"]["authorization.k8s.io/reason"]
                .as_str()
                .unwrap()
                .starts_with("RBAC: allowed by")
        );
        assert!(e["responseStatus"].get("message").is_none());
        let e = event("Metadata", Facts::default(), seen(), 401, None).finish();
        assert_eq!(e["user"], json!({}), "no user is known for a bad token");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (tx, _rx) = mpsc::sync_channel(2);
        let log = AuditLog {
            tx: Some(tx),
            config: None,
            dropped: Arc::default(),
            warned: AtomicBool::new(false),
        };
        let started = std::time::Instant::now();
        for i in 0..1000 {
            log.record(Record {
                event: json!({"n": i}),
                body: None,
            });
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(log.dropped(), 998);
        assert!(
            berth_metrics::render()
                .contains("berth_audit_events_dropped_total{reason=\"queue_full\"}")
        );
    }

    #[test]
    fn rotation_keeps_at_most_max_backups_files_and_the_view_reads_them_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig {
            max_bytes: 300,
            max_backups: 2,
            ..AuditConfig::file(path.clone())
        };
        let mut w = Writer::new(&config, Arc::default());
        for i in 0..100u32 {
            let code = if i % 3 == 0 { 403 } else { 200 };
            let mut line =
                serde_json::to_vec(&json!({"n": i, "responseStatus": {"code": code}})).unwrap();
            line.push(b'\n');
            w.write(&line).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
        for n in &names {
            let meta = std::fs::metadata(dir.path().join(n)).unwrap();
            assert!(meta.len() <= 300, "{n} is {} bytes", meta.len());
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        let all = read_recent(&path, 2, false, 1000).unwrap();
        let ns: Vec<u64> = all.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert_eq!(*ns.last().unwrap(), 99);
        assert!(ns.windows(2).all(|w| w[1] == w[0] + 1), "in order: {ns:?}");
        let denied = read_recent(&path, 2, true, 3).unwrap();
        let ns: Vec<u64> = denied.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, [93, 96, 99]);
        // Fewer backups kept from now on: the older files go at the next rotation.
        let mut w = Writer::new(
            &AuditConfig {
                max_backups: 1,
                ..config
            },
            Arc::default(),
        );
        for _ in 0..20 {
            w.write(b"{\"n\":0,\"responseStatus\":{\"code\":200}}\n")
                .unwrap();
        }
        assert!(!dir.path().join("audit.log.2").exists());
    }

    #[test]
    fn reads_lines_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let long = "x".repeat(100_000);
        std::fs::write(&path, format!("a\n{long}\nb\nhalf")).unwrap();
        let mut seen = Vec::new();
        let mut budget = u64::MAX;
        lines_backwards(&path, &mut budget, &mut |l| {
            seen.push(l.len());
            true
        })
        .unwrap();
        assert_eq!(seen, [4, 1, 100_000, 1]);
    }
}
