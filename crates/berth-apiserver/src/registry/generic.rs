//! The registry: create, read, update, patch and delete of objects in the store, with
//! Kubernetes' semantics (resource versions, generations, status subresources, finalizers,
//! owner references). HTTP-free, so controllers inside the server use it directly.
//!
//! Invariants: an object's `resourceVersion` is the store's mod revision of its key and is
//! never stored in the value; every write is a store transaction that compares the mod revision
//! it read, so concurrent writers get 409 Conflict rather than lost updates.

use berth_api::cidr::Ipv4Net;
use berth_api::kinds::{self, ResourceKind};
use berth_api::object::Object;
use berth_api::selector::{FieldSelector, LabelSelector};
use berth_api::timefmt;
use berth_api::validate;
use berth_store::{Compare, CompareOp, KeyValue, Op, Origin, Store, Txn};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::ranges;

/// What a list returns: the items, the revision read, and a continue token.
#[derive(Debug)]
pub struct ListResult {
    pub items: Vec<Object>,
    pub revision: u64,
    pub continue_token: Option<String>,
}

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    /// Seconds a running pod gets to stop; `None` = its `terminationGracePeriodSeconds`.
    pub grace_period: Option<i64>,
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

/// Decodes a stored value into an object carrying its resource version.
pub fn decode(kv: &KeyValue) -> ApiResult<Object> {
    let v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored object {} is not JSON: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    let mut obj = Object::from_value(v)
        .ok_or_else(|| ApiError::internal("stored object is not a JSON object"))?;
    obj.set_meta("resourceVersion", kv.mod_revision.to_string());
    Ok(obj)
}

fn encode(obj: &Object) -> Vec<u8> {
    let mut o = obj.clone();
    o.remove_meta("resourceVersion");
    serde_json::to_vec(&o.0).unwrap_or_default()
}

fn random_suffix() -> String {
    // The alphabet Kubernetes uses for generated names: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    let _ = getrandom::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
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

/// A handle on the store that speaks objects.
#[derive(Clone, Debug)]
pub struct Registry {
    pub store: Store,
    /// Where Services' cluster IPs come from (`--service-cidr`; 10.43.0.0/16 by default).
    service_range: Ipv4Net,
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Registry {
            store,
            service_range: Ipv4Net {
                addr: std::net::Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
        }
    }

    /// The same, giving Services cluster IPs from `range`.
    pub fn with_service_range(mut self, range: Ipv4Net) -> Self {
        self.service_range = range;
        self
    }

    /// The cluster IP a Service needs allocated: the one it asks for, or a free one (`None`
    /// asked: any). `Err` for one outside the range. Headless and ExternalName Services get
    /// none (`Ok(None)` with `wants` false).
    fn wanted_cluster_ip(&self, svc: &Object) -> ApiResult<(bool, Option<std::net::Ipv4Addr>)> {
        let spec = svc.get("spec");
        let ty = spec
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let asked = spec
            .and_then(|s| s.get("clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if ty == "ExternalName" || asked == "None" {
            return Ok((false, None));
        }
        if asked.is_empty() {
            return Ok((true, None));
        }
        let range = self.service_range;
        let ip: std::net::Ipv4Addr = asked.parse().map_err(|_| {
            ApiError::invalid(
                kinds::resolve("services").unwrap_or(&kinds::KINDS[0]),
                svc.name(),
                &[berth_api::FieldError::invalid(
                    "spec.clusterIP",
                    format!("\"{asked}\""),
                    "must be empty, 'None', or a valid IPv4 address",
                )],
            )
        })?;
        if !range.contains(ip) {
            return Err(ApiError::invalid(
                kinds::resolve("services").unwrap_or(&kinds::KINDS[0]),
                svc.name(),
                &[berth_api::FieldError::invalid(
                    "spec.clusterIPs",
                    format!("[]string{{\"{asked}\"}}"),
                    &format!(
                        "failed to allocate IP {asked}: the provided IP ({asked}) is not in the valid range. The range of valid IPs is {range}"
                    ),
                )],
            ));
        }
        Ok((true, Some(ip)))
    }

    /// A free-looking address of the service range, at random from its upper part (the lower
    /// 256 are left for Services that name theirs, as Kubernetes' static band).
    fn random_service_ip(&self) -> std::net::Ipv4Addr {
        let Ipv4Net { addr: base, prefix } = self.service_range;
        let size = 1u32 << (32 - prefix);
        let low = if size > 1024 { 256 } else { 2 };
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        let offset = low + u32::from_le_bytes(b) % (size - low - 1);
        std::net::Ipv4Addr::from(u32::from(base) + offset)
    }

    fn key(kind: &ResourceKind, ns: Option<&str>, name: &str) -> Vec<u8> {
        kind.key(ns, name).into_bytes()
    }

    /// The namespace a request writes to, checked against the object.
    fn bind_namespace(
        kind: &ResourceKind,
        url_ns: Option<&str>,
        obj: &mut Object,
    ) -> ApiResult<Option<String>> {
        if !kind.namespaced {
            obj.remove_meta("namespace");
            return Ok(None);
        }
        let ns = match (url_ns, obj.namespace()) {
            (Some(u), Some(b)) if u != b => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({b}) does not match the namespace sent on the request ({u})"
                )));
            }
            (Some(u), _) => u.to_string(),
            (None, Some(b)) => b.to_string(),
            (None, None) => "default".to_string(),
        };
        obj.set_meta("namespace", ns.clone());
        Ok(Some(ns))
    }

    fn check_type(kind: &ResourceKind, obj: &Object) -> ApiResult<()> {
        if obj.kind() != kind.kind || obj.api_version() != kind.api_version() {
            return Err(ApiError::bad_request(format!(
                "the object is {} {} but this URL serves {} {}; send it to {}",
                obj.api_version(),
                obj.kind(),
                kind.api_version(),
                kind.kind,
                kind.collection_path(obj.namespace()),
            )));
        }
        Ok(())
    }

    async fn check_namespace_open(&self, ns: Option<&str>) -> ApiResult<()> {
        let Some(ns) = ns else { return Ok(()) };
        let nsk = kinds::resolve("namespaces")
            .ok_or_else(|| ApiError::internal("namespace kind missing"))?;
        match self.store.get(&Self::key(nsk, None, ns))? {
            None => Err(ApiError::not_found(nsk, ns)),
            Some(kv) => {
                let obj = decode(&kv)?;
                if obj.deletion_timestamp().is_some() {
                    Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    pub fn get(&self, kind: &ResourceKind, ns: Option<&str>, name: &str) -> ApiResult<Object> {
        match self.store.get(&Self::key(kind, ns, name))? {
            Some(kv) => decode(&kv),
            None => Err(ApiError::not_found(kind, name)),
        }
    }

    pub fn get_at(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        revision: u64,
    ) -> ApiResult<Object> {
        match self.store.get_at(&Self::key(kind, ns, name), revision)? {
            Some(kv) => decode(&kv),
            None => Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "{} \"{name}\" did not exist at revision {revision}",
                    kind.qualified_plural()
                ),
            )),
        }
    }

    /// The store prefix a list or watch covers.
    pub fn prefix(kind: &ResourceKind, ns: Option<&str>) -> Vec<u8> {
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
                let obj = decode(kv)?;
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

    pub async fn create(
        &self,
        kind: &ResourceKind,
        url_ns: Option<&str>,
        obj: Object,
        user: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        let (key, mut obj) = self.prepare_create(kind, url_ns, obj)?;
        self.check_namespace_open(obj.namespace()).await?;
        let admitted = crate::podsecurity::admit(self, kind, &obj)?;
        if dry_run {
            return Ok(obj);
        }
        let name = obj.name().to_string();
        let (wants_ip, asked) = if kind.kind == "Service" {
            self.wanted_cluster_ip(&obj)?
        } else {
            (false, None)
        };
        // A Service takes its cluster IP and node ports in the same transaction; taken random
        // ones are tried again with others.
        let random_ports = if kind.kind == "Service" {
            ranges::fill_node_ports(&mut obj)
        } else {
            Vec::new()
        };
        for _ in 0..32 {
            let ip = wants_ip.then(|| asked.unwrap_or_else(|| self.random_service_ip()));
            if let Some(ip) = ip
                && let Some(Value::Object(spec)) = obj.0.get_mut("spec")
            {
                spec.insert("clusterIP".into(), json!(ip.to_string()));
                spec.insert("clusterIPs".into(), json!([ip.to_string()]));
                spec.insert("ipFamilies".into(), json!(["IPv4"]));
                spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
            }
            let mut txn =
                Txn::default().when(Compare::mod_revision(key.clone(), CompareOp::Equal, 0));
            if kind.kind == "Service" {
                txn = ranges::transition(txn, None, Some(&obj));
            }
            let txn = txn.then(Op::Put {
                key: key.clone(),
                value: encode(&obj),
                lease: 0,
            });
            let r = self.store.txn(txn, Origin::new(user, "create")).await?;
            if r.succeeded {
                obj.set_meta("resourceVersion", r.revision.to_string());
                crate::podsecurity::record(self, &obj, admitted).await;
                return Ok(obj);
            }
            if r.current.first().is_some_and(Option::is_some) {
                return Err(ApiError::already_exists(kind, &name));
            }
            let taken: Vec<&[u8]> = r
                .current
                .iter()
                .skip(1)
                .flatten()
                .map(|kv| kv.key.as_slice())
                .collect();
            if let Some(ip) = asked
                && taken.contains(&format!("{}{ip}", ranges::SERVICE_IPS).as_bytes())
            {
                return Err(ApiError::invalid(
                    kind,
                    &name,
                    &[berth_api::FieldError::invalid(
                        "spec.clusterIPs",
                        format!("[]string{{\"{ip}\"}}"),
                        &format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    )],
                ));
            }
            self.check_node_ports_free(kind, &obj, &taken, &random_ports)?;
            ranges::reroll(&mut obj, &random_ports);
        }
        Err(ApiError::new(
            500,
            "InternalError",
            "failed to allocate a cluster IP: the service range is (nearly) full",
        ))
    }

    /// 422 naming the port when one of the `taken` range keys is a node port the Service asked
    /// for (not one of the `random` ports given it).
    fn check_node_ports_free(
        &self,
        kind: &ResourceKind,
        obj: &Object,
        taken: &[&[u8]],
        random: &[usize],
    ) -> ApiResult<()> {
        for k in taken {
            let Some(port) = std::str::from_utf8(k)
                .ok()
                .and_then(|k| k.strip_prefix(ranges::NODE_PORTS))
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            if let Some(i) = ranges::port_index(obj, port).filter(|i| !random.contains(i)) {
                return Err(ApiError::invalid(
                    kind,
                    obj.name(),
                    &[berth_api::FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        port,
                        "provided port is already allocated",
                    )],
                ));
            }
        }
        Ok(())
    }

    /// Before a Service's update: its newly wanted node ports that someone holds. Asked-for
    /// ones are refused (422); random ones are drawn again.
    fn settle_node_ports(
        &self,
        kind: &ResourceKind,
        old: &Object,
        obj: &mut Object,
        random: &[usize],
    ) -> ApiResult<()> {
        for _ in 0..32 {
            let before = ranges::held(old);
            let mut taken = Vec::new();
            for k in ranges::held(obj) {
                if !before.contains(&k) && self.store.get(&k)?.is_some() {
                    taken.push(k);
                }
            }
            if taken.is_empty() {
                return Ok(());
            }
            let taken: Vec<&[u8]> = taken.iter().map(Vec::as_slice).collect();
            self.check_node_ports_free(kind, obj, &taken, random)?;
            ranges::reroll(obj, random);
        }
        Err(ApiError::internal(
            "failed to allocate a node port: the range is (nearly) full",
        ))
    }

    /// What a create stores, and where: the object named, defaulted, validated and stamped
    /// (uid, creation time, generation).
    fn prepare_create(
        &self,
        kind: &ResourceKind,
        url_ns: Option<&str>,
        mut obj: Object,
    ) -> ApiResult<(Vec<u8>, Object)> {
        Self::check_type(kind, &obj)?;
        let ns = Self::bind_namespace(kind, url_ns, &mut obj)?;
        if obj.name().is_empty()
            && let Some(g) = obj
                .metadata()
                .and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
        {
            let name = format!("{g}{}", random_suffix());
            obj.set_meta("name", name);
        }
        if kind.has_status && kind.kind != "Node" {
            obj.0.remove("status");
        }
        validate::apply_defaults(kind, &mut obj);
        let errs = validate::validate_create(kind, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(kind, obj.name(), &errs));
        }
        let name = obj.name().to_string();
        obj.set_meta("uid", uuid::Uuid::new_v4().to_string());
        obj.set_meta("creationTimestamp", timefmt::now_rfc3339());
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            obj.remove_meta(f);
        }
        if kind.has_status {
            obj.set_meta("generation", 1);
        } else {
            obj.remove_meta("generation");
        }
        let key = Self::key(kind, ns.as_deref(), &name);
        Ok((key, obj))
    }

    /// Writes `new` over the object at `old_kv` if nobody changed it meanwhile. A no-op update
    /// writes nothing and returns the object as it is.
    async fn commit_update(
        &self,
        kind: &ResourceKind,
        key: Vec<u8>,
        old_kv: &KeyValue,
        old: &Object,
        mut new: Object,
        user: &str,
        verb: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        let name = old.name().to_string();
        new.set_meta("resourceVersion", old.resource_version().to_string());
        if &new == old {
            return Ok(new);
        }
        // Deleting an object waits for its finalizers; the update that removes the last one
        // completes the delete.
        // (A namespace is the exception: the namespace controller deletes it once it is empty.
        // So is a pod in its grace period: its node's agent deletes it once it has stopped.)
        let graceful_pod = kind.kind == "Pod"
            && new
                .metadata()
                .and_then(|m| m.get("deletionGracePeriodSeconds"))
                .and_then(Value::as_i64)
                .is_some_and(|g| g > 0);
        if new.deletion_timestamp().is_some()
            && new.finalizers().is_empty()
            && kind.kind != "Namespace"
            && !graceful_pod
        {
            if dry_run {
                return Ok(new);
            }
            let revision = self
                .delete_if_unchanged(kind, key, old_kv.mod_revision, old, user)
                .await?;
            new.set_meta("resourceVersion", revision.to_string());
            return Ok(new);
        }
        if dry_run {
            return Ok(new);
        }
        let mut txn = Txn::default().when(Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            old_kv.mod_revision,
        ));
        if kind.kind == "Service" {
            txn = ranges::transition(txn, Some(old), Some(&new));
        }
        let txn = txn.then(Op::Put {
            key,
            value: encode(&new),
            lease: 0,
        });
        let r = self.store.txn(txn, Origin::new(user, verb)).await?;
        if !r.succeeded {
            return Err(ApiError::conflict(kind, &name));
        }
        new.set_meta("resourceVersion", r.revision.to_string());
        Ok(new)
    }

    /// Deletes the key if its mod revision is still `mod_revision`; returns the delete's
    /// revision, or 409 Conflict when someone changed the object meanwhile.
    pub async fn delete_if_unchanged(
        &self,
        kind: &ResourceKind,
        key: Vec<u8>,
        mod_revision: u64,
        obj: &Object,
        user: &str,
    ) -> ApiResult<u64> {
        let mut txn = Txn::default()
            .when(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            ))
            .then(Op::Delete { key });
        // A Service gives its cluster IP and node ports back with it.
        if kind.kind == "Service" {
            txn = ranges::transition(txn, Some(obj), None);
        }
        let r = self.store.txn(txn, Origin::new(user, "delete")).await?;
        if !r.succeeded {
            return Err(ApiError::conflict(kind, obj.name()));
        }
        Ok(r.revision)
    }

    fn load_for_update(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<(Vec<u8>, KeyValue, Object)> {
        let key = Self::key(kind, ns, name);
        let kv = self
            .store
            .get(&key)?
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let obj = decode(&kv)?;
        Ok((key, kv, obj))
    }

    fn check_update_target(
        kind: &ResourceKind,
        name: &str,
        old: &Object,
        new: &Object,
    ) -> ApiResult<()> {
        if new.name() != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                new.name()
            )));
        }
        let rv = new.resource_version();
        if !rv.is_empty() && rv != old.resource_version() {
            return Err(ApiError::conflict(kind, name));
        }
        let uid = new.uid();
        if !uid.is_empty() && uid != old.uid() {
            return Err(ApiError::conflict(kind, name).with_message(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old.uid()
            )));
        }
        Ok(())
    }

    /// PUT of the main resource: spec and metadata change, status is kept.
    pub async fn update(
        &self,
        kind: &ResourceKind,
        url_ns: Option<&str>,
        name: &str,
        mut obj: Object,
        user: &str,
        verb: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        Self::check_type(kind, &obj)?;
        let ns = Self::bind_namespace(kind, url_ns, &mut obj)?;
        let (key, kv, old) = self.load_for_update(kind, ns.as_deref(), name)?;
        Self::check_update_target(kind, name, &old, &obj)?;
        // Server-owned fields come from the stored object.
        let old_meta = old.metadata().cloned().unwrap_or_default();
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(f) {
                Some(v) => obj.set_meta(f, v.clone()),
                None => obj.remove_meta(f),
            }
        }
        if kind.has_status {
            match old.get("status") {
                Some(s) => obj.0.insert("status".into(), s.clone()),
                None => obj.0.remove("status"),
            };
        }
        let random_ports = if kind.kind == "Service" {
            ranges::carry_over(&old, &mut obj);
            ranges::fill_node_ports(&mut obj)
        } else {
            Vec::new()
        };
        validate::apply_defaults(kind, &mut obj);
        let errs = validate::validate_update(kind, &old, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(kind, name, &errs));
        }
        if kind.kind == "Service" {
            self.settle_node_ports(kind, &old, &mut obj, &random_ports)?;
        }
        // Pod Security: a workload's template is looked at again when it changes (as
        // Kubernetes does; controllers' writes of the rest add no warnings or audit events);
        // a pod's spec cannot change in a way the standards look at (see `validate_update`).
        let template = |o: &Object| o.get("spec").and_then(|s| s.get("template")).cloned();
        let admitted = if kind.kind == "Pod" || template(&old) == template(&obj) {
            Default::default()
        } else {
            crate::podsecurity::admit(self, kind, &obj)?
        };
        if kind.kind == "Namespace" {
            crate::podsecurity::check_existing_pods(self, &old, &obj)?;
        }
        if kind.has_status && obj.desired_state() != old.desired_state() {
            obj.set_meta("generation", old.generation() + 1);
        }
        if old.deletion_timestamp().is_some() {
            let added: Vec<String> = obj
                .finalizers()
                .into_iter()
                .filter(|f| !old.finalizers().contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    &[berth_api::FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        let out = self
            .commit_update(kind, key, &kv, &old, obj, user, verb, dry_run)
            .await?;
        if !dry_run && out.resource_version() != old.resource_version() {
            crate::podsecurity::record(self, &out, admitted).await;
        }
        Ok(out)
    }

    /// PUT of the `status` subresource: only status changes.
    pub async fn update_status(
        &self,
        kind: &ResourceKind,
        url_ns: Option<&str>,
        name: &str,
        mut obj: Object,
        user: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        if !kind.has_status {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} has no status subresource", kind.qualified_plural()),
            ));
        }
        Self::check_type(kind, &obj)?;
        let ns = Self::bind_namespace(kind, url_ns, &mut obj)?;
        let (key, kv, old) = self.load_for_update(kind, ns.as_deref(), name)?;
        Self::check_update_target(kind, name, &old, &obj)?;
        let mut new = old.clone();
        match obj.0.remove("status") {
            Some(s) => new.0.insert("status".into(), s),
            None => new.0.remove("status"),
        };
        if let Some(Value::Object(_)) = new.get("status") {
        } else if new.get("status").is_some() {
            return Err(ApiError::invalid(
                kind,
                name,
                &[berth_api::FieldError::invalid(
                    "status",
                    "",
                    "must be an object",
                )],
            ));
        }
        self.commit_update(kind, key, &kv, &old, new, user, "update-status", dry_run)
            .await
    }

    /// PATCH: applies the patch to the stored object, then updates as PUT would.
    pub async fn patch(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        patch_type: crate::patch::PatchType,
        body: &[u8],
        user: &str,
        status: bool,
        dry_run: bool,
    ) -> ApiResult<Object> {
        // A patch that names no resource version applies to the latest version: when another
        // writer (a controller reporting status) gets in between the read and the write, it
        // is applied again to what that writer left, as Kubernetes does.
        let names_version = serde_json::from_slice::<Value>(body).is_ok_and(|v| {
            v.pointer("/metadata/resourceVersion").is_some()
                || v.as_array().is_some_and(|ops| {
                    ops.iter().any(|op| {
                        op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                    })
                })
        });
        let mut attempts = 0;
        loop {
            let current = self.get(kind, ns, name)?;
            let patched = crate::patch::apply(kind, &current, patch_type, body)?;
            let mut obj = Object::from_value(patched).ok_or_else(|| {
                ApiError::bad_request(
                    "the patch made the object something other than a JSON object",
                )
            })?;
            // It applies to the version it read; the store compare refuses a concurrent change.
            if obj.resource_version().is_empty() {
                obj.set_meta("resourceVersion", current.resource_version().to_string());
            }
            let r = if status {
                self.update_status(kind, ns, name, obj, user, dry_run).await
            } else {
                self.update(kind, ns, name, obj, user, "patch", dry_run)
                    .await
            };
            match r {
                Err(e) if e.0.code == 409 && !names_version && attempts < 10 => attempts += 1,
                r => return r,
            }
        }
    }

    /// A JSON merge patch from a controller (of the status subresource when `status`).
    pub async fn merge_patch(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
        user: &str,
        status: bool,
    ) -> ApiResult<Object> {
        let body = serde_json::to_vec(patch).unwrap_or_default();
        self.patch(
            kind,
            ns,
            name,
            crate::patch::PatchType::Merge,
            &body,
            user,
            status,
            false,
        )
        .await
    }

    /// The `scale` subresource: an `autoscaling/v1` `Scale` view of a workload.
    pub fn get_scale(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Object> {
        if !kind.has_scale() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} has no scale subresource", kind.qualified_plural()),
            ));
        }
        Ok(scale_of(&self.get(kind, ns, name)?))
    }

    /// PUT (or the result of a PATCH) of the `scale` subresource: sets `spec.replicas`.
    pub async fn update_scale(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        scale: Object,
        user: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        let current = self.get(kind, ns, name)?;
        let rv = scale.resource_version();
        if !rv.is_empty() && rv != current.resource_version() {
            return Err(ApiError::conflict(kind, name));
        }
        let replicas = scale.get("spec").and_then(|s| s.get("replicas"));
        let replicas = match replicas {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n >= 0) => n.clone(),
            other => {
                let shown = other.map_or("null".to_string(), Value::to_string);
                return Err(ApiError(Box::new(berth_api::Status::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    &[berth_api::FieldError::invalid(
                        "spec.replicas",
                        shown,
                        "must be a non-negative integer",
                    )],
                ))));
            }
        };
        let mut new = current.clone();
        if let Some(Value::Object(spec)) = new.0.get_mut("spec") {
            spec.insert("replicas".into(), Value::Number(replicas));
        }
        let updated = self
            .update(kind, ns, name, new, user, "scale", dry_run)
            .await?;
        Ok(scale_of(&updated))
    }

    /// DELETE. Returns the object as deleted (or as marked for deletion when finalizers hold
    /// it).
    pub async fn delete(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
        user: &str,
    ) -> ApiResult<Object> {
        // A delete without preconditions is not refused because someone (a controller
        // reporting status) wrote the object between the read and the delete: it reads again
        // and retries, as Kubernetes' storage does.
        let unconditional = opts.precondition_uid.is_none() && opts.precondition_rv.is_none();
        let mut attempts = 0;
        loop {
            match self.delete_once(kind, ns, name, opts, user).await {
                Err(e) if unconditional && e.0.code == 409 && attempts < 10 => attempts += 1,
                r => return r,
            }
        }
    }

    async fn delete_once(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
        user: &str,
    ) -> ApiResult<Object> {
        let (key, kv, old) = self.load_for_update(kind, ns, name)?;
        if let Some(uid) = &opts.precondition_uid
            && uid != old.uid()
        {
            return Err(ApiError::conflict(kind, name).with_message(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old.uid()
            )));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != old.resource_version()
        {
            return Err(ApiError::conflict(kind, name));
        }
        if kind.kind == "Namespace" {
            return self
                .delete_namespace(key, &kv, old, user, opts.dry_run)
                .await;
        }
        let propagation = opts.propagation.unwrap_or(Propagation::Background);
        if opts.dry_run {
            return Ok(old);
        }
        match propagation {
            Propagation::Orphan => self.orphan_dependents(old.uid(), user).await?,
            Propagation::Foreground => self.delete_dependents_now(old.uid(), user).await?,
            Propagation::Background => {}
        }
        if let Some(grace) = Self::pod_grace(kind, &old, opts.grace_period) {
            // A pod on a node stops first: its node's agent sees the deletion timestamp,
            // stops the containers within the grace period, then deletes it for good.
            let mut marked = old.clone();
            let nanos = berth_api::timefmt::now_nanos()
                .saturating_add((grace as u64).saturating_mul(1_000_000_000));
            marked.set_meta(
                "deletionTimestamp",
                berth_api::timefmt::rfc3339_from_nanos(nanos),
            );
            marked.set_meta("deletionGracePeriodSeconds", grace);
            return self
                .commit_update(kind, key, &kv, &old, marked, user, "delete", false)
                .await;
        }
        if !old.finalizers().is_empty() {
            if old.deletion_timestamp().is_some() {
                return Ok(old);
            }
            let mut marked = old.clone();
            marked.set_meta("deletionTimestamp", timefmt::now_rfc3339());
            marked.set_meta("deletionGracePeriodSeconds", 0);
            return self
                .commit_update(kind, key, &kv, &old, marked, user, "delete", false)
                .await;
        }
        let revision = self
            .delete_if_unchanged(kind, key, kv.mod_revision, &old, user)
            .await?;
        let mut gone = old;
        gone.set_meta("resourceVersion", revision.to_string());
        Ok(gone)
    }

    /// The grace period a pod's deletion gets, or `None` when it goes at once: a pod not on
    /// a node, one that has finished, a grace of 0 (force), or a second deletion that does
    /// not shorten the first's.
    fn pod_grace(kind: &ResourceKind, pod: &Object, asked: Option<i64>) -> Option<i64> {
        if kind.kind != "Pod" {
            return None;
        }
        let spec = pod.get("spec");
        let bound = spec
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = pod
            .get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound || matches!(phase, "Succeeded" | "Failed") {
            return None;
        }
        // Held to 0..=MAX_INT32 whatever a pod stored before validation did so says.
        let grace = asked
            .unwrap_or_else(|| {
                spec.and_then(|s| s.get("terminationGracePeriodSeconds"))
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            })
            .clamp(0, berth_api::validate::MAX_INT32);
        if grace == 0 {
            return None;
        }
        let current = pod
            .metadata()
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64);
        match current {
            Some(c) if pod.deletion_timestamp().is_some() && grace >= c => Some(c),
            _ => Some(grace),
        }
    }

    /// The `binding` subresource: assigns a pod to a node, once.
    pub async fn bind(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        user: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        let kind = kinds::resolve("pods").ok_or_else(|| ApiError::internal("pod kind missing"))?;
        let (key, kv, pod) = self.load_for_update(kind, Some(ns), name)?;
        let bound = Self::bound(&pod, node)?;
        self.commit_update(kind, key, &kv, &pod, bound, user, "bind", dry_run)
            .await
    }

    /// The pod as a binding leaves it: its node, and the PodScheduled condition, in one write,
    /// as Kubernetes' binding does. A pod already bound, or being deleted, is refused (409).
    fn bound(pod: &Object, node: &str) -> ApiResult<Object> {
        let kind = kinds::resolve("pods").ok_or_else(|| ApiError::internal("pod kind missing"))?;
        let name = pod.name();
        let current = pod
            .get("spec")
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            return Err(ApiError::conflict(kind, name).with_message(format!(
                "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
            )));
        }
        if pod.deletion_timestamp().is_some() {
            return Err(ApiError::conflict(kind, name).with_message(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        let mut bound = pod.clone();
        if let Some(Value::Object(spec)) = bound.0.get_mut("spec") {
            spec.insert("nodeName".into(), Value::String(node.to_string()));
        }
        let status = bound.0.entry("status").or_insert_with(|| json!({}));
        if let Value::Object(st) = status {
            let mut conditions: Vec<Value> = st
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": timefmt::now_rfc3339()}));
            st.insert("conditions".into(), Value::Array(conditions));
        }
        Ok(bound)
    }

    /// Binds many pods in one store transaction, each with the objects `also` makes for it
    /// (the scheduler's Scheduled Event), created in the same transaction. What cannot go in
    /// the batch (a pod gone, bound or changed meanwhile) is bound alone, so one conflict
    /// costs only itself. Returns each pod's result, in order.
    pub async fn bind_all(
        &self,
        bindings: &[(Object, String)],
        also: impl Fn(&Object) -> Vec<(&'static ResourceKind, Object)>,
        user: &str,
    ) -> Vec<ApiResult<Object>> {
        let Some(kind) = kinds::resolve("pods") else {
            return Vec::new();
        };
        let mut results: Vec<Option<ApiResult<Object>>> = Vec::with_capacity(bindings.len());
        let mut txn = Txn::default();
        let mut batched = Vec::new();
        for (i, (pod, node)) in bindings.iter().enumerate() {
            // The caller's copy of the pod is the base; the compare refuses it if it is stale.
            let seen: u64 = pod.resource_version().parse().unwrap_or(0);
            match Self::bound(pod, node) {
                Ok(bound) => {
                    let key = Self::key(kind, pod.namespace(), pod.name());
                    txn = txn
                        .when(Compare::mod_revision(key.clone(), CompareOp::Equal, seen))
                        .then(Op::Put {
                            key,
                            value: encode(&bound),
                            lease: 0,
                        });
                    for (kind, obj) in also(&bound) {
                        let ns = obj.namespace().map(String::from);
                        if let Ok((key, obj)) = self.prepare_create(kind, ns.as_deref(), obj) {
                            txn = txn
                                .when(Compare::mod_revision(key.clone(), CompareOp::Equal, 0))
                                .then(Op::Put {
                                    key,
                                    value: encode(&obj),
                                    lease: 0,
                                });
                        }
                    }
                    batched.push((i, bound));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        if !batched.is_empty() {
            match self.store.txn(txn, Origin::new(user, "bind")).await {
                Ok(r) if r.succeeded => {
                    for (i, mut bound) in batched {
                        bound.set_meta("resourceVersion", r.revision.to_string());
                        results[i] = Some(Ok(bound));
                    }
                }
                // Someone changed one of them: each goes alone.
                _ => {
                    for (i, _) in batched {
                        let (pod, node) = &bindings[i];
                        let ns = pod.namespace().unwrap_or("default");
                        let r = self.bind(ns, pod.name(), node, user, false).await;
                        if let Ok(bound) = &r {
                            for (kind, obj) in also(bound) {
                                let ns = obj.namespace().map(String::from);
                                let _ = self.create(kind, ns.as_deref(), obj, user, false).await;
                            }
                        }
                        results[i] = Some(r);
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ApiError::internal("binding lost"))))
            .collect()
    }

    async fn delete_namespace(
        &self,
        key: Vec<u8>,
        kv: &KeyValue,
        old: Object,
        user: &str,
        dry_run: bool,
    ) -> ApiResult<Object> {
        let name = old.name().to_string();
        if matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        if dry_run || old.deletion_timestamp().is_some() {
            return Ok(old);
        }
        let nsk = kinds::resolve("namespaces")
            .ok_or_else(|| ApiError::internal("namespace kind missing"))?;
        let mut marked = old.clone();
        marked.set_meta("deletionTimestamp", timefmt::now_rfc3339());
        marked
            .0
            .insert("status".into(), json!({"phase": "Terminating"}));
        // The namespace controller (gc.rs) empties it and then deletes it.
        self.commit_update(nsk, key, kv, &old, marked, user, "delete", false)
            .await
    }

    /// Every stored object, for the garbage collector's initial scan and for export.
    pub fn all_objects(&self, revision: Option<u64>) -> ApiResult<(Vec<Object>, u64)> {
        let mut out = Vec::new();
        let mut rev = revision;
        for kind in berth_api::KINDS {
            let r = self.list(
                kind,
                None,
                &ListOptions {
                    at_revision: rev,
                    ..Default::default()
                },
            )?;
            rev.get_or_insert(r.revision);
            out.extend(r.items);
        }
        Ok((out, rev.unwrap_or(0)))
    }

    fn dependents_of(&self, uid: &str) -> ApiResult<Vec<Object>> {
        let (all, _) = self.all_objects(None)?;
        Ok(all
            .into_iter()
            .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
            .collect())
    }

    async fn orphan_dependents(&self, uid: &str, user: &str) -> ApiResult<()> {
        for dep in self.dependents_of(uid)? {
            let Some(kind) = dep.resource_kind() else {
                continue;
            };
            let mut new = dep.clone();
            let refs: Vec<Value> = new
                .metadata()
                .and_then(|m| m.get("ownerReferences"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter(|r| r["uid"] != uid).cloned().collect())
                .unwrap_or_default();
            if refs.is_empty() {
                new.remove_meta("ownerReferences");
            } else {
                new.set_meta("ownerReferences", Value::Array(refs));
            }
            match self
                .update(
                    kind,
                    dep.namespace(),
                    dep.name(),
                    new,
                    user,
                    "orphan",
                    false,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn delete_dependents_now<'a>(
        &'a self,
        uid: &'a str,
        user: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<()>> + Send + 'a>> {
        Box::pin(async move {
            for dep in self.dependents_of(uid)? {
                let Some(kind) = dep.resource_kind() else {
                    continue;
                };
                let opts = DeleteOptions {
                    propagation: Some(Propagation::Foreground),
                    ..Default::default()
                };
                match self
                    .delete(kind, dep.namespace(), dep.name(), &opts, user)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code() == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// Creates the namespaces every cluster starts with, if absent.
    pub async fn ensure_default_namespaces(&self) -> ApiResult<()> {
        let nsk = kinds::resolve("namespaces")
            .ok_or_else(|| ApiError::internal("namespace kind missing"))?;
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = Object::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .ok_or_else(|| ApiError::internal("bad namespace literal"))?;
            match self.create(nsk, None, obj, "system:apiserver", false).await {
                Ok(_) => {}
                Err(e) if e.code() == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ApiError {
    pub fn with_message(mut self, message: String) -> Self {
        self.0.message = message;
        self
    }
}

fn scale_of(o: &Object) -> Object {
    let selector = o
        .get("spec")
        .and_then(|s| s.get("selector"))
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let meta = o.metadata().cloned().unwrap_or_default();
    let keep: Map<String, Value> = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ]
    .iter()
    .filter_map(|k| meta.get(*k).map(|v| (k.to_string(), v.clone())))
    .collect();
    let v = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": keep,
        "spec": {"replicas": o.get("spec").and_then(|s| s.get("replicas")).cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": o.get("status").and_then(|s| s.get("replicas")).cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    });
    Object::from_value(v).unwrap_or_else(|| Object(Map::new()))
}

/// Builds `{kind: XList, apiVersion, metadata: {resourceVersion, continue}, items}`.
pub fn list_body(kind: &ResourceKind, r: ListResult) -> Value {
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
