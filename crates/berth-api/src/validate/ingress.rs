//! Ingress: rules by host and path, backends naming a Service and one of its ports, TLS.

use serde_json::Value;

use super::walker::{V, describe};
use crate::names;
use crate::object::Object;
use crate::status::FieldError;

/// An Ingress backend: a Service and one of its ports (by number or name).
fn validate_ingress_backend(v: &mut V, path: &str, b: Option<&Value>) {
    let Some(bm) = v.obj(path, b) else {
        v.push(FieldError::required(path));
        return;
    };
    if bm.get("resource").is_some() {
        v.push(FieldError::forbidden(
            format!("{path}.resource"),
            "resource backends are not supported by berth's ingress; use a service backend",
        ));
        return;
    }
    let sp = format!("{path}.service");
    let Some(svc) = v.obj(&sp, bm.get("service")) else {
        v.push(FieldError::required(sp));
        return;
    };
    if let Some(n) = v.req_str(&format!("{sp}.name"), svc.get("name"))
        && let Some(e) = names::dns1035_label(n)
    {
        v.push(FieldError::invalid(
            format!("{sp}.name"),
            format!("\"{n}\""),
            &e,
        ));
    }
    let pp = format!("{sp}.port");
    let Some(port) = v.obj(&pp, svc.get("port")) else {
        v.push(FieldError::required(pp));
        return;
    };
    match (port.get("number"), port.get("name")) {
        (Some(_), Some(_)) => v.push(FieldError::invalid(
            pp.clone(),
            "{...}",
            "cannot set both port name & port number",
        )),
        (Some(n), None) => {
            v.port(&format!("{pp}.number"), Some(n), true);
        }
        (None, Some(Value::String(n))) => {
            if let Some(e) = names::port_name(n) {
                v.push(FieldError::invalid(
                    format!("{pp}.name"),
                    format!("\"{n}\""),
                    &e,
                ));
            }
        }
        (None, Some(other)) => v.push(FieldError::invalid(
            format!("{pp}.name"),
            describe(other),
            "must be a string",
        )),
        (None, None) => v.push(FieldError::required(format!("{pp}.number"))),
    }
}

pub(super) fn validate_ingress(v: &mut V, obj: &Object) {
    let Some(spec) = v.obj("spec", obj.get("spec")) else {
        v.push(FieldError::required("spec"));
        return;
    };
    v.str("spec.ingressClassName", spec.get("ingressClassName"));
    if spec.get("defaultBackend").is_some() {
        validate_ingress_backend(v, "spec.defaultBackend", spec.get("defaultBackend"));
    }
    let rules = v.arr("spec.rules", spec.get("rules"));
    if rules.is_empty() && spec.get("defaultBackend").is_none() {
        v.push(FieldError::invalid(
            "spec",
            "{...}",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        let Some(rm) = v.obj(&rp, Some(r)) else {
            continue;
        };
        if let Some(h) = v.str(&format!("{rp}.host"), rm.get("host")) {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if h.parse::<std::net::IpAddr>().is_ok() {
                v.push(FieldError::invalid(
                    format!("{rp}.host"),
                    format!("\"{h}\""),
                    "must be a DNS name, not an IP address",
                ));
            } else if let Some(e) = names::dns1123_subdomain(bare).filter(|_| !h.is_empty()) {
                v.push(FieldError::invalid(
                    format!("{rp}.host"),
                    format!("\"{h}\""),
                    &e,
                ));
            }
        }
        let Some(http) = v.obj(&format!("{rp}.http"), rm.get("http")) else {
            continue;
        };
        let paths = v.arr(&format!("{rp}.http.paths"), http.get("paths"));
        if paths.is_empty() {
            v.push(FieldError::required(format!("{rp}.http.paths")));
        }
        for (j, p) in paths.iter().enumerate() {
            let pp = format!("{rp}.http.paths[{j}]");
            let Some(pm) = v.obj(&pp, Some(p)) else {
                continue;
            };
            let ty = v.one_of(
                &format!("{pp}.pathType"),
                pm.get("pathType"),
                &["Exact", "Prefix", "ImplementationSpecific"],
            );
            if ty.is_none() && pm.get("pathType").is_none() {
                v.push(FieldError::required(format!("{pp}.pathType")));
            }
            if let Some(path) = v.str(&format!("{pp}.path"), pm.get("path"))
                && !path.starts_with('/')
            {
                v.push(FieldError::invalid(
                    format!("{pp}.path"),
                    format!("\"{path}\""),
                    "must be an absolute path",
                ));
            }
            validate_ingress_backend(v, &format!("{pp}.backend"), pm.get("backend"));
        }
    }
}
