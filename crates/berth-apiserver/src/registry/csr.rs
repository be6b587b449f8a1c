//! CertificateSigningRequests, as kube-apiserver keeps them: the requester is recorded by
//! the server (`spec.username`, `spec.uid`, `spec.groups`, whatever the client wrote), the
//! request must be a certificate request whose signature holds, and approval
//! (`.../approval`) only ever adds an `Approved` or `Denied` condition: it cannot write a
//! certificate or take a decision back. The certificate is the signer's to write
//! (`berth-controllers`' CSR controller), through the status.

use berth_api::kinds::ResourceKind;
use berth_api::object::Object;
use berth_api::status::FieldError;
use serde_json::{Value, json};

use super::Registry;
use crate::error::{ApiError, ApiResult};

/// The user and groups the PEM request in a CSR's `spec.request` asks for.
pub fn requested_subject(csr: &Object) -> Option<(String, Vec<String>)> {
    let b64 = csr.get("spec")?.get("request")?.as_str()?;
    let pem = String::from_utf8(berth_api::base64::decode(b64)?).ok()?;
    berth_tls::request_subject(&pem).ok()
}

impl Registry {
    /// What the server sets on a CSR being created: who asked, and a check that the request
    /// is one.
    pub(super) fn prepare_csr(kind: &ResourceKind, obj: &mut Object) -> ApiResult<()> {
        if kind.kind != "CertificateSigningRequest" {
            return Ok(());
        }
        if requested_subject(obj).is_none() {
            return Err(ApiError::invalid(
                kind,
                obj.name(),
                &[FieldError::invalid(
                    "spec.request",
                    "<the request>",
                    "is not a certificate request whose signature holds",
                )],
            ));
        }
        if let Some(user) = crate::authz::requester()
            && let Some(Value::Object(spec)) = obj.0.get_mut("spec")
        {
            spec.insert("username".into(), user.name.clone().into());
            spec.insert("uid".into(), user.uid.clone().into());
            spec.insert("groups".into(), json!(user.groups));
        }
        Ok(())
    }

    /// Adds the `Approved` or `Denied` conditions of `body` to a CSR, as `kubectl
    /// certificate approve|deny` asks.
    pub async fn approve_csr(
        &self,
        kind: &ResourceKind,
        name: &str,
        body: &Object,
        user: &str,
    ) -> ApiResult<Object> {
        let old = self.get(kind, None, name)?;
        let had: Vec<Value> = old
            .get("status")
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let decided = |cs: &[Value], t: &str| cs.iter().any(|c| c["type"] == t);
        let mut conditions = had.clone();
        let asked = body
            .get("status")
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in asked {
            let t = c["type"].as_str().unwrap_or("");
            if !matches!(t, "Approved" | "Denied") || decided(&had, t) {
                continue;
            }
            let other = if t == "Approved" {
                "Denied"
            } else {
                "Approved"
            };
            if decided(&conditions, other) {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    &[FieldError::invalid(
                        "status.conditions",
                        t,
                        "Approved and Denied conditions are mutually exclusive",
                    )],
                ));
            }
            let mut c = c.clone();
            if c["status"].as_str().unwrap_or("").is_empty() {
                c["status"] = "True".into();
            }
            if c["lastUpdateTime"].is_null() {
                c["lastUpdateTime"] = berth_api::timefmt::now_rfc3339().into();
            }
            conditions.push(c);
        }
        let mut new = old.clone();
        let status = new
            .0
            .entry("status")
            .or_insert_with(|| Value::Object(Default::default()));
        status["conditions"] = Value::Array(conditions);
        self.update_status(kind, None, name, new, user, false).await
    }
}
