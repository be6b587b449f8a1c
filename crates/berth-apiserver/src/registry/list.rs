//! Lists: label and field selectors, `limit` and an opaque continue token (the first page's
//! revision and the last key), every page read at the first page's revision so the whole list
//! is one consistent view; `all_objects` for the garbage collector and export; and the
//! `{kind: XList, ...}` body the server sends.

use berth_api::kinds::ResourceKind;
use berth_api::object::Object;
use berth_api::selector::{FieldSelector, LabelSelector};
use serde_json::{Map, Value, json};

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// What a list returns: the items, the revision read, and a continue token.
#[derive(Debug)]
pub struct ListResult {
    pub items: Vec<Object>,
    pub revision: u64,
    pub continue_token: Option<String>,
}

/// Parameters of a list.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: usize,
    pub continue_token: Option<String>,
    /// Read at this exact revision (history, or a continued list).
    pub at_revision: Option<u64>,
}

/// The continue token: the revision of the first page and the last key returned, hex-encoded
/// so it is opaque and URL-safe.
fn encode_continue(rev: u64, key: &[u8]) -> String {
    let mut s = format!("{rev:x}.");
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode_continue(token: &str) -> ApiResult<(u64, Vec<u8>)> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid continue token {token:?}; start the list again without it"
        ))
    };
    let (rev, key) = token.split_once('.').ok_or_else(bad)?;
    let rev = u64::from_str_radix(rev, 16).map_err(|_| bad())?;
    if key.len() % 2 != 0 || !key.is_ascii() {
        return Err(bad());
    }
    let key = (0..key.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    Ok((rev, key))
}

impl Registry {
    /// The store prefix a list or watch covers.
    pub(crate) fn prefix(kind: &ResourceKind, ns: Option<&str>) -> Vec<u8> {
        match ns {
            Some(ns) if kind.namespaced => format!("{}{ns}/", kind.key_prefix()).into_bytes(),
            _ => kind.key_prefix().into_bytes(),
        }
    }

    pub fn list(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<ListResult> {
        self.list_inner(kind, ns, opts, None)
    }

    /// A list; with `unreadable`, objects whose value does not decrypt are left out and their
    /// errors pushed there instead of failing the list.
    fn list_inner(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        opts: &ListOptions,
        mut unreadable: Option<&mut Vec<String>>,
    ) -> ApiResult<ListResult> {
        let prefix = Self::prefix(kind, ns);
        let (mut revision, mut after) = match &opts.continue_token {
            Some(t) => {
                let (rev, key) = decode_continue(t)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "the continue token belongs to another list",
                    ));
                }
                (Some(rev), Some(key))
            }
            None => (opts.at_revision, None),
        };
        if let Some(rev) = revision
            && rev < self.store.compacted_revision()
        {
            return Err(ApiError::gone(format!(
                "The provided continue parameter is too old to display a consistent list result (revision {rev} was compacted); start the list again"
            )));
        }
        let mut items = Vec::new();
        let chunk = if opts.limit > 0 {
            opts.limit.max(64)
        } else {
            0
        };
        loop {
            let page = match revision {
                Some(rev) => self.store.range_at(&prefix, after.as_deref(), chunk, rev)?,
                None => self.store.range(&prefix, after.as_deref(), chunk)?,
            };
            // Later pages read at the same revision as the first, for one consistent list.
            revision.get_or_insert(page.revision);
            let mut stopped_at: Option<Vec<u8>> = None;
            for kv in &page.kvs {
                let obj = match (self.decode_stored(kv), unreadable.as_deref_mut()) {
                    (Ok(obj), _) => obj,
                    (Err(e), Some(skipped)) => {
                        skipped.push(e.to_string());
                        continue;
                    }
                    (Err(e), None) => return Err(e),
                };
                if opts.labels.matches(&obj.labels()) && opts.fields.matches(&obj.as_value()) {
                    items.push(obj);
                    if opts.limit > 0 && items.len() == opts.limit {
                        stopped_at = Some(kv.key.clone());
                        break;
                    }
                }
            }
            let rev = revision.unwrap_or(page.revision);
            if let Some(key) = stopped_at {
                let last_in_page = page.kvs.last().map(|k| k.key.clone());
                let more = page.more || last_in_page.as_ref() != Some(&key);
                return Ok(ListResult {
                    items,
                    revision: rev,
                    continue_token: more.then(|| encode_continue(rev, &key)),
                });
            }
            if !page.more {
                return Ok(ListResult {
                    items,
                    revision: rev,
                    continue_token: None,
                });
            }
            after = page.kvs.last().map(|k| k.key.clone());
        }
    }

    /// Every stored object, for the controllers' informer and for export. An object whose
    /// value does not decrypt (its key removed from the encryption config) is left out and
    /// logged, so one such Secret does not stop every controller.
    pub fn all_objects(&self, revision: Option<u64>) -> ApiResult<(Vec<Object>, u64)> {
        let (out, unreadable, rev) = self.all_readable_objects(revision)?;
        for e in unreadable {
            tracing::warn!(error = %e, "an object is left out: its value does not decrypt");
        }
        Ok((out, rev))
    }

    /// Every stored object that reads, with the errors of those that do not decrypt.
    pub(crate) fn all_readable_objects(
        &self,
        revision: Option<u64>,
    ) -> ApiResult<(Vec<Object>, Vec<String>, u64)> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        let mut rev = revision;
        for kind in berth_api::KINDS {
            let r = self.list_inner(
                kind,
                None,
                &ListOptions {
                    at_revision: rev,
                    ..Default::default()
                },
                Some(&mut unreadable),
            )?;
            rev.get_or_insert(r.revision);
            out.extend(r.items);
        }
        Ok((out, unreadable, rev.unwrap_or(0)))
    }
}

/// Builds `{kind: XList, apiVersion, metadata: {resourceVersion, continue}, items}`.
pub(crate) fn list_body(kind: &ResourceKind, r: ListResult) -> Value {
    let mut meta = Map::new();
    meta.insert(
        "resourceVersion".into(),
        Value::String(r.revision.to_string()),
    );
    if let Some(c) = r.continue_token {
        meta.insert("continue".into(), Value::String(c));
    }
    json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": meta,
        "items": r.items.into_iter().map(Object::into_value).collect::<Vec<_>>(),
    })
}
