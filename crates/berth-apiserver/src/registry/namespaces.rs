//! Namespaces: the namespace a request writes to (the URL's and the object's must agree;
//! cluster-scoped kinds have none), refusing new content in a namespace that is absent or
//! terminating, and creating the namespaces every cluster starts with.

use berth_api::kinds::{self, ResourceKind};
use berth_api::object::Object;
use serde_json::json;

use super::Registry;
use crate::error::{ApiError, ApiResult};

impl Registry {
    /// The namespace a request writes to, checked against the object.
    pub(super) fn bind_namespace(
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

    pub(super) async fn check_namespace_open(&self, ns: Option<&str>) -> ApiResult<()> {
        let Some(ns) = ns else { return Ok(()) };
        let nsk = kinds::resolve("namespaces")
            .ok_or_else(|| ApiError::internal("namespace kind missing"))?;
        match self.store.get(&Self::key(nsk, None, ns))? {
            None => Err(ApiError::not_found(nsk, ns)),
            Some(kv) => {
                let obj = self.decode_stored(&kv)?;
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
