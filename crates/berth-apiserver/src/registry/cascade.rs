//! What a delete does beyond the object: its dependents (found by owner reference; orphaned,
//! or deleted first in the foreground) and a namespace's deletion (marked Terminating; the
//! namespace controller empties it and deletes it). Background deletion is the garbage
//! collector's, in berth-controllers.

use berth_api::kinds;
use berth_api::object::Object;
use berth_api::timefmt;
use berth_store::KeyValue;
use serde_json::{Value, json};

use super::{DeleteOptions, Registry};
use crate::error::{ApiError, ApiResult};

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Registry {
    pub(super) async fn delete_namespace(
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

    fn dependents_of(&self, uid: &str) -> ApiResult<Vec<Object>> {
        let (all, _) = self.all_objects(None)?;
        Ok(all
            .into_iter()
            .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
            .collect())
    }

    pub(super) async fn orphan_dependents(&self, uid: &str, user: &str) -> ApiResult<()> {
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

    pub(super) fn delete_dependents_now<'a>(
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
}
