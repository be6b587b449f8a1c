//! The generic store (kube-apiserver's `registry/generic/registry/store.go`): what every
//! kind shares. Keys, encoding (the resource version is never stored), get and get at a
//! revision, create (named, defaulted, validated, stamped, written only if absent), update and
//! update_status (server-owned fields kept, generation bumped on spec changes), patch (retried
//! on a concurrent change unless it names a version), and delete (preconditions, grace,
//! finalizers). Every write compares the mod revision it read. Kind-specific steps call into
//! the sibling files.

use berth_api::kinds::ResourceKind;
use berth_api::object::Object;
use berth_api::timefmt;
use berth_api::validate;
use berth_store::{Compare, CompareOp, KeyValue, Op, Origin, Txn};
use serde_json::{Value, json};

use super::{Propagation, Registry};
use crate::error::{ApiError, ApiResult};
use crate::ranges;

/// How a delete goes (Kubernetes' `DeleteOptions`). Other crates delete with the default
/// (background propagation, no preconditions, the pod's own grace period); a request's options
/// are read from it by the HTTP side.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub(crate) propagation: Option<Propagation>,
    pub(crate) precondition_uid: Option<String>,
    pub(crate) precondition_rv: Option<String>,
    pub(crate) dry_run: bool,
    /// Seconds a running pod gets to stop; `None` = its `terminationGracePeriodSeconds`.
    pub(crate) grace_period: Option<i64>,
}

/// Decodes a plaintext value (one from `Registry::watch_objects`) into an object carrying
/// its resource version. Values read from the store itself go through
/// `Registry::decode_stored`, which decrypts first.
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

fn encode_plain(obj: &Object) -> Vec<u8> {
    let mut o = obj.clone();
    o.remove_meta("resourceVersion");
    serde_json::to_vec(&o.0).unwrap_or_default()
}

/// Five random characters for a `generateName`, as Kubernetes makes them. Without the OS's
/// randomness they would repeat; a repeat is refused as AlreadyExists, never overwrites.
fn random_suffix() -> String {
    let mut bytes = [0u8; 5];
    let _ = getrandom::fill(&mut bytes);
    berth_api::names::safe_suffix(&bytes)
}

impl Registry {
    /// The bytes stored for `obj` at `key`: its JSON, without the resource version, encrypted
    /// when the encryption config names its resource.
    pub(super) fn encode(&self, key: &[u8], obj: &Object) -> ApiResult<Vec<u8>> {
        self.values
            .seal(key, encode_plain(obj))
            .map_err(ApiError::internal)
    }

    /// Decodes a value read from the store, decrypting it first; a value that does not
    /// decrypt is a 500 naming the object and the key.
    pub(crate) fn decode_stored(&self, kv: &KeyValue) -> ApiResult<Object> {
        if !crate::encryption::is_sealed(&kv.value) {
            return decode(kv);
        }
        let opened = self
            .values
            .open(&kv.key, &kv.value)
            .map_err(|e| ApiError::internal(e.0))?;
        decode(&KeyValue {
            value: opened.value.into_owned(),
            ..kv.clone()
        })
    }

    /// Writes again, unchanged, every object of the resources the encryption config names
    /// that was stored with another key or before encryption was on (as the server does at
    /// the start that first writes the config); returns how many. Objects that do not
    /// decrypt are left as they are.
    pub async fn rewrite_stale(&self, user: &str) -> ApiResult<usize> {
        let mut rewritten = 0;
        for kind in berth_api::KINDS {
            let prefix = kind.key_prefix().into_bytes();
            if !self.values.covers(&prefix) {
                continue;
            }
            for kv in self.store.range(&prefix, None, 0)?.kvs {
                if !self.values.is_stale(&kv.key, &kv.value) {
                    continue;
                }
                let Ok(obj) = self.decode_stored(&kv) else {
                    continue;
                };
                let txn = Txn::default()
                    .when(Compare::mod_revision(
                        kv.key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision,
                    ))
                    .then(Op::Put {
                        value: self.encode(&kv.key, &obj)?,
                        key: kv.key,
                        lease: kv.lease,
                    });
                // A concurrent write lost the race to nobody: it was encrypted anyway.
                if self
                    .store
                    .txn(txn, Origin::new(user, "rewrite"))
                    .await?
                    .succeeded
                {
                    rewritten += 1;
                }
            }
        }
        Ok(rewritten)
    }

    pub(super) fn key(kind: &ResourceKind, ns: Option<&str>, name: &str) -> Vec<u8> {
        kind.key(ns, name).into_bytes()
    }

    pub(super) fn check_type(kind: &ResourceKind, obj: &Object) -> ApiResult<()> {
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

    pub fn get(&self, kind: &ResourceKind, ns: Option<&str>, name: &str) -> ApiResult<Object> {
        match self.store.get(&Self::key(kind, ns, name))? {
            Some(kv) => self.decode_stored(&kv),
            None => Err(ApiError::not_found(kind, name)),
        }
    }

    pub(crate) fn get_at(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        revision: u64,
    ) -> ApiResult<Object> {
        match self.store.get_at(&Self::key(kind, ns, name), revision)? {
            Some(kv) => self.decode_stored(&kv),
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
        crate::authz::admit_rbac(kind, &obj)?;
        crate::authz::admit_node(kind, None, Some(&obj))?;
        crate::authz::admit_config_template(self, kind, None, &obj)?;
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
                value: self.encode(&key, &obj)?,
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

    /// What a create stores, and where: the object named, defaulted, validated and stamped
    /// (uid, creation time, generation).
    pub(super) fn prepare_create(
        &self,
        kind: &ResourceKind,
        url_ns: Option<&str>,
        mut obj: Object,
    ) -> ApiResult<(Vec<u8>, Object)> {
        if kind.is_review() {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{} are answered, not stored", kind.plural),
            ));
        }
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
        Self::prepare_csr(kind, &mut obj)?;
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
    pub(super) async fn commit_update(
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
        // An object last written with another key (or before encryption was on) is written
        // again even unchanged: that is how rotation reaches every object.
        if &new == old && !self.values.is_stale(&key, &old_kv.value) {
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
        let value = self.encode(&key, &new)?;
        let txn = txn.then(Op::Put {
            key,
            value,
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

    pub(super) fn load_for_update(
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
        let obj = self.decode_stored(&kv)?;
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
        crate::authz::admit_rbac(kind, &obj)?;
        crate::authz::admit_node(kind, Some(&old), Some(&obj))?;
        crate::authz::admit_config_template(self, kind, Some(&old), &obj)?;
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
    pub(crate) async fn update_status(
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
        crate::authz::admit_node(kind, Some(&old), Some(&new))?;
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
        crate::authz::admit_node(kind, Some(&old), None)?;
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
}
