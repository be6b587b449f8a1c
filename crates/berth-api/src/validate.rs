//! Validation and defaulting of objects, kind by kind, with errors naming each bad field.
//!
//! Invariant: `validate_create` and `validate_update` report every error they find, not just
//! the first, and never panic on any JSON input (fuzzed in `tests/fuzz_bodies.rs` of the API
//! server).

use serde_json::{Map, Value};

use crate::kinds::ResourceKind;
use crate::names;
use crate::object::Object;
use crate::quantity::Quantity;
use crate::selector::LabelSelector;
use crate::status::FieldError;

/// The largest value of an int32 field, as Kubernetes' types hold it. Every count and every
/// duration in seconds of a manifest is held to it too (Kubernetes keeps a few of those in
/// int64): 68 years, so a deadline computed from one never overflows.
pub const MAX_INT32: i64 = i32::MAX as i64;

/// A duration in seconds read from an object already stored (maybe before this validation
/// held it): a missing, negative or non-integer value gives `default`, and a value above
/// `MAX_INT32` counts as `MAX_INT32`. Controllers and agents read durations through this.
pub fn seconds_of(v: Option<&Value>, default: u64) -> u64 {
    match v.and_then(Value::as_i64) {
        Some(n) if n >= 0 => n.min(MAX_INT32) as u64,
        _ => default,
    }
}

/// Collects field errors while walking an object.
#[derive(Default)]
struct V {
    errs: Vec<FieldError>,
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

impl V {
    fn push(&mut self, e: FieldError) {
        self.errs.push(e);
    }

    fn obj<'a>(&mut self, path: &str, v: Option<&'a Value>) -> Option<&'a Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.push(FieldError::invalid(
                    path,
                    describe(other),
                    "must be an object",
                ));
                None
            }
        }
    }

    fn arr<'a>(&mut self, path: &str, v: Option<&'a Value>) -> &'a [Value] {
        match v {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.push(FieldError::invalid(path, describe(other), "must be a list"));
                &[]
            }
        }
    }

    fn str<'a>(&mut self, path: &str, v: Option<&'a Value>) -> Option<&'a str> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.push(FieldError::invalid(
                    path,
                    describe(other),
                    "must be a string",
                ));
                None
            }
        }
    }

    fn req_str<'a>(&mut self, path: &str, v: Option<&'a Value>) -> Option<&'a str> {
        match self.str(path, v) {
            Some(s) if !s.is_empty() => Some(s),
            Some(_) | None => {
                if !matches!(
                    v,
                    Some(Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))
                ) {
                    self.push(FieldError::required(path));
                }
                None
            }
        }
    }

    fn int(&mut self, path: &str, v: Option<&Value>) -> Option<i64> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
            Some(other) => {
                self.push(FieldError::invalid(
                    path,
                    describe(other),
                    "must be an integer",
                ));
                None
            }
        }
    }

    fn bool(&mut self, path: &str, v: Option<&Value>) {
        if let Some(other) = v.filter(|v| !v.is_boolean() && !v.is_null()) {
            self.push(FieldError::invalid(
                path,
                describe(other),
                "must be a boolean",
            ));
        }
    }

    /// An int32 that is 0 or more.
    fn non_negative(&mut self, path: &str, v: Option<&Value>) -> Option<i64> {
        let n = self.int(path, v)?;
        if n < 0 {
            self.push(FieldError::invalid(
                path,
                n,
                "must be greater than or equal to 0",
            ));
            return None;
        }
        if n > MAX_INT32 {
            self.push(FieldError::invalid(
                path,
                n,
                &format!("must be less than or equal to {MAX_INT32}"),
            ));
            return None;
        }
        Some(n)
    }

    /// An integer from `min` to `max`.
    fn in_range(&mut self, path: &str, v: Option<&Value>, min: i64, max: i64) -> Option<i64> {
        let n = self.int(path, v)?;
        if !(min..=max).contains(&n) {
            self.push(FieldError::invalid(
                path,
                n,
                &format!("must be between {min} and {max}, inclusive"),
            ));
            return None;
        }
        Some(n)
    }

    fn one_of(&mut self, path: &str, v: Option<&Value>, allowed: &[&str]) -> Option<String> {
        let s = self.str(path, v)?;
        if !allowed.contains(&s) {
            self.push(FieldError::not_supported(path, s, allowed));
        }
        Some(s.to_string())
    }

    fn port(&mut self, path: &str, v: Option<&Value>, required: bool) -> Option<i64> {
        match self.int(path, v) {
            Some(p) if !(1..=65535).contains(&p) => {
                self.push(FieldError::invalid(
                    path,
                    p,
                    "must be between 1 and 65535, inclusive",
                ));
                None
            }
            None if required
                && !matches!(
                    v,
                    Some(Value::String(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))
                ) =>
            {
                self.push(FieldError::required(path));
                None
            }
            other => other,
        }
    }

    fn string_map(
        &mut self,
        path: &str,
        v: Option<&Value>,
        check_key: fn(&str) -> Option<String>,
        check_value: Option<fn(&str) -> Option<String>>,
    ) {
        let Some(m) = self.obj(path, v) else { return };
        for (k, val) in m {
            if let Some(e) = check_key(k) {
                self.push(FieldError::invalid(path, format!("\"{k}\""), &e));
            }
            match val {
                Value::String(s) => {
                    if let Some(e) = check_value.and_then(|c| c(s)) {
                        self.push(FieldError::invalid(
                            format!("{path}.{k}"),
                            format!("\"{s}\""),
                            &e,
                        ));
                    }
                }
                other => self.push(FieldError::invalid(
                    format!("{path}.{k}"),
                    describe(other),
                    "must be a string",
                )),
            }
        }
    }

    fn quantity(&mut self, path: &str, v: &Value) -> Option<Quantity> {
        let parsed = match v {
            Value::String(s) => Quantity::parse(s).map_err(|e| (describe(v), e.0)),
            Value::Number(n) => Quantity::parse(&n.to_string()).map_err(|e| (describe(v), e.0)),
            other => Err((
                describe(other),
                "must be a quantity string such as 100m or 128Mi".to_string(),
            )),
        };
        match parsed {
            Ok(q) => Some(q),
            Err((shown, why)) => {
                self.push(FieldError::invalid(path, shown, &why));
                None
            }
        }
    }
}

/// Which name syntax a kind requires.
fn name_check(kind: &ResourceKind) -> fn(&str) -> Option<String> {
    match kind.kind {
        "Namespace" => names::dns1123_label,
        "Service" => names::dns1035_label,
        _ => names::dns1123_subdomain,
    }
}

fn validate_metadata(v: &mut V, kind: &ResourceKind, obj: &Object) {
    let meta = obj.get("metadata");
    let Some(m) = v.obj("metadata", meta) else {
        v.push(FieldError::required("metadata.name"));
        return;
    };
    let name = v.str("metadata.name", m.get("name"));
    let generate = v.str("metadata.generateName", m.get("generateName"));
    match name {
        Some(n) if !n.is_empty() => {
            if let Some(e) = name_check(kind)(n) {
                v.push(FieldError::invalid("metadata.name", format!("\"{n}\""), &e));
            }
        }
        _ => {
            if generate.is_none_or(str::is_empty) {
                v.push(FieldError::required("metadata.name"));
            }
        }
    }
    if kind.namespaced
        && let Some(ns) = v.str("metadata.namespace", m.get("namespace"))
        && let Some(e) = names::dns1123_label(ns)
    {
        v.push(FieldError::invalid(
            "metadata.namespace",
            format!("\"{ns}\""),
            &e,
        ));
    }
    v.string_map(
        "metadata.labels",
        m.get("labels"),
        names::qualified_name,
        Some(names::label_value),
    );
    if kind.kind == "Namespace"
        && let Some(labels) = m.get("labels").and_then(Value::as_object)
    {
        for e in crate::podsecurity::validate_labels(labels) {
            v.push(e);
        }
    }
    v.string_map(
        "metadata.annotations",
        m.get("annotations"),
        names::qualified_name,
        None,
    );
    let total: usize = m
        .get("annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if total > 256 * 1024 {
        v.push(FieldError::invalid(
            "metadata.annotations",
            format!("{total} bytes"),
            "must have at most 262144 bytes",
        ));
    }
    for (i, r) in v
        .arr("metadata.ownerReferences", m.get("ownerReferences"))
        .iter()
        .enumerate()
    {
        let p = format!("metadata.ownerReferences[{i}]");
        if v.obj(&p, Some(r)).is_some() {
            for f in ["apiVersion", "kind", "name", "uid"] {
                v.req_str(&format!("{p}.{f}"), r.get(f));
            }
            v.bool(&format!("{p}.controller"), r.get("controller"));
            v.bool(
                &format!("{p}.blockOwnerDeletion"),
                r.get("blockOwnerDeletion"),
            );
        }
    }
    for (i, f) in v
        .arr("metadata.finalizers", m.get("finalizers"))
        .iter()
        .enumerate()
    {
        if let Some(s) = v.str(&format!("metadata.finalizers[{i}]"), Some(f))
            && let Some(e) = names::qualified_name(s)
        {
            v.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                format!("\"{s}\""),
                &e,
            ));
        }
    }
}

fn validate_resources(v: &mut V, path: &str, r: Option<&Value>) {
    let Some(r) = v.obj(path, r) else { return };
    let mut parsed: [Map<String, Value>; 2] = Default::default();
    for (i, part) in ["limits", "requests"].iter().enumerate() {
        let p = format!("{path}.{part}");
        if let Some(m) = v.obj(&p, r.get(*part)) {
            for (res, q) in m {
                if let Some(q) = v.quantity(&format!("{p}.{res}"), q) {
                    parsed[i].insert(res.clone(), Value::from(q.millis() as f64));
                }
            }
        }
    }
    for (res, req) in &parsed[1] {
        if let Some(lim) = parsed[0].get(res)
            && req.as_f64() > lim.as_f64()
        {
            let shown = r["requests"][res].clone();
            v.push(FieldError::invalid(
                format!("{path}.requests.{res}"),
                describe(&shown),
                &format!(
                    "must be less than or equal to {res} limit of {}",
                    describe(&r["limits"][res])
                ),
            ));
        }
    }
}

fn validate_probe(v: &mut V, path: &str, p: Option<&Value>) {
    let Some(m) = v.obj(path, p) else { return };
    for f in [
        "initialDelaySeconds",
        "periodSeconds",
        "timeoutSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        v.non_negative(&format!("{path}.{f}"), m.get(f));
    }
    // Kubernetes: when set, a probe's own grace period must be positive.
    v.in_range(
        &format!("{path}.terminationGracePeriodSeconds"),
        m.get("terminationGracePeriodSeconds"),
        1,
        MAX_INT32,
    );
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"];
    let set: Vec<_> = handlers.iter().filter(|h| m.get(**h).is_some()).collect();
    if set.is_empty() {
        v.push(
            FieldError::required(format!("{path}.exec")).with_message(format!(
                "{path}: Required value: must specify a handler type"
            )),
        );
    } else if set.len() > 1 {
        v.push(FieldError::forbidden(
            format!("{path}.{}", set[1]),
            "may not specify more than 1 handler type",
        ));
    }
    if let Some(h) = v.obj(&format!("{path}.httpGet"), m.get("httpGet")) {
        validate_port_ref(v, &format!("{path}.httpGet.port"), h.get("port"));
    }
    if let Some(h) = v.obj(&format!("{path}.tcpSocket"), m.get("tcpSocket")) {
        validate_port_ref(v, &format!("{path}.tcpSocket.port"), h.get("port"));
    }
    if let Some(e) = v.obj(&format!("{path}.exec"), m.get("exec")) {
        for (i, c) in v
            .arr(&format!("{path}.exec.command"), e.get("command"))
            .iter()
            .enumerate()
        {
            v.str(&format!("{path}.exec.command[{i}]"), Some(c));
        }
    }
}

/// A port given by number or by name (`targetPort`, probe ports).
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

fn validate_ingress(v: &mut V, obj: &Object) {
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

fn validate_port_ref(v: &mut V, path: &str, p: Option<&Value>) {
    match p {
        None | Some(Value::Null) => v.push(FieldError::required(path)),
        Some(Value::String(s)) => {
            if let Ok(n) = s.parse::<i64>() {
                if !(1..=65535).contains(&n) {
                    v.push(FieldError::invalid(
                        path,
                        n,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            } else if let Some(e) = names::port_name(s) {
                v.push(FieldError::invalid(path, format!("\"{s}\""), &e));
            }
        }
        Some(other) => {
            v.port(path, Some(other), true);
        }
    }
}

fn validate_container(
    v: &mut V,
    path: &str,
    c: &Value,
    volumes: &[String],
    names_seen: &mut Vec<String>,
    init: bool,
) {
    let Some(m) = v.obj(path, Some(c)) else {
        return;
    };
    if let Some(n) = v.req_str(&format!("{path}.name"), m.get("name")) {
        if let Some(e) = names::dns1123_label(n) {
            v.push(FieldError::invalid(
                format!("{path}.name"),
                format!("\"{n}\""),
                &e,
            ));
        } else if names_seen.iter().any(|s| s == n) {
            v.push(FieldError::duplicate(
                format!("{path}.name"),
                format!("\"{n}\""),
            ));
        } else {
            names_seen.push(n.to_string());
        }
    }
    v.req_str(&format!("{path}.image"), m.get("image"));
    for f in ["command", "args"] {
        for (i, a) in v.arr(&format!("{path}.{f}"), m.get(f)).iter().enumerate() {
            v.str(&format!("{path}.{f}[{i}]"), Some(a));
        }
    }
    v.str(&format!("{path}.workingDir"), m.get("workingDir"));
    v.one_of(
        &format!("{path}.imagePullPolicy"),
        m.get("imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
    );
    let mut port_names: Vec<String> = Vec::new();
    for (i, p) in v
        .arr(&format!("{path}.ports"), m.get("ports"))
        .iter()
        .enumerate()
    {
        let pp = format!("{path}.ports[{i}]");
        let Some(pm) = v.obj(&pp, Some(p)) else {
            continue;
        };
        v.port(
            &format!("{pp}.containerPort"),
            pm.get("containerPort"),
            true,
        );
        v.port(&format!("{pp}.hostPort"), pm.get("hostPort"), false);
        v.one_of(
            &format!("{pp}.protocol"),
            pm.get("protocol"),
            &["TCP", "UDP", "SCTP"],
        );
        if let Some(n) = v.str(&format!("{pp}.name"), pm.get("name")) {
            if let Some(e) = names::port_name(n) {
                v.push(FieldError::invalid(
                    format!("{pp}.name"),
                    format!("\"{n}\""),
                    &e,
                ));
            } else if port_names.iter().any(|s| s == n) {
                v.push(FieldError::duplicate(
                    format!("{pp}.name"),
                    format!("\"{n}\""),
                ));
            } else {
                port_names.push(n.to_string());
            }
        }
    }
    for (i, e) in v
        .arr(&format!("{path}.env"), m.get("env"))
        .iter()
        .enumerate()
    {
        let ep = format!("{path}.env[{i}]");
        let Some(em) = v.obj(&ep, Some(e)) else {
            continue;
        };
        if let Some(n) = v.req_str(&format!("{ep}.name"), em.get("name"))
            && (n.contains('=') || n.chars().any(char::is_control))
        {
            v.push(FieldError::invalid(format!("{ep}.name"), format!("\"{n}\""), "a valid environment variable name must consist of printable characters other than '='"));
        }
        v.str(&format!("{ep}.value"), em.get("value"));
        if em.get("value").is_some() && em.get("valueFrom").is_some() {
            v.push(FieldError::invalid(
                format!("{ep}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        v.obj(&format!("{ep}.valueFrom"), em.get("valueFrom"));
    }
    v.arr(&format!("{path}.envFrom"), m.get("envFrom"));
    validate_resources(v, &format!("{path}.resources"), m.get("resources"));
    for (i, vm) in v
        .arr(&format!("{path}.volumeMounts"), m.get("volumeMounts"))
        .iter()
        .enumerate()
    {
        let mp = format!("{path}.volumeMounts[{i}]");
        let Some(mm) = v.obj(&mp, Some(vm)) else {
            continue;
        };
        if let Some(n) = v.req_str(&format!("{mp}.name"), mm.get("name"))
            && !volumes.iter().any(|x| x == n)
        {
            v.push(FieldError {
                field: format!("{mp}.name"),
                kind: crate::status::FieldErrorKind::Invalid,
                message: format!("{mp}.name: Not found: \"{n}\""),
            });
        }
        if let Some(p) = v.req_str(&format!("{mp}.mountPath"), mm.get("mountPath"))
            && !p.starts_with('/')
        {
            v.push(FieldError::invalid(
                format!("{mp}.mountPath"),
                format!("\"{p}\""),
                "must be an absolute path",
            ));
        }
        v.bool(&format!("{mp}.readOnly"), mm.get("readOnly"));
        let sub = mm.get("subPath").and_then(Value::as_str).unwrap_or("");
        let expr = mm.get("subPathExpr").and_then(Value::as_str).unwrap_or("");
        if !sub.is_empty() && !expr.is_empty() {
            v.push(FieldError::invalid(
                format!("{mp}.subPathExpr"),
                format!("\"{expr}\""),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        for (field, p) in [("subPath", sub), ("subPathExpr", expr)] {
            if let Some(why) = local_descending_path(p) {
                v.push(FieldError::invalid(
                    format!("{mp}.{field}"),
                    format!("\"{p}\""),
                    why,
                ));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if init && m.get(probe).is_some() {
            v.push(FieldError::forbidden(
                format!("{path}.{probe}"),
                "may not be set for init containers",
            ));
            continue;
        }
        validate_probe(v, &format!("{path}.{probe}"), m.get(probe));
    }
    if let Some(l) = v.obj(&format!("{path}.lifecycle"), m.get("lifecycle")) {
        for hook in ["postStart", "preStop"] {
            let hp = format!("{path}.lifecycle.{hook}");
            if let Some(h) = v.obj(&hp, l.get(hook))
                && let Some(sl) = v.obj(&format!("{hp}.sleep"), h.get("sleep"))
            {
                v.non_negative(&format!("{hp}.sleep.seconds"), sl.get("seconds"));
            }
        }
    }
    validate_container_security(
        v,
        &format!("{path}.securityContext"),
        m.get("securityContext"),
    );
}

/// Container securityContext fields berth gives their real effect.
const CONTAINER_SECURITY_FIELDS: &[&str] = &[
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "privileged",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",
    "procMount",
];

/// Pod securityContext fields berth gives their real effect.
const POD_SECURITY_FIELDS: &[&str] = &[
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "supplementalGroups",
    "fsGroup",
    "fsGroupChangePolicy",
    "seccompProfile",
    "sysctls",
];

/// Linux capabilities by the names Kubernetes uses (no `CAP_` prefix).
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Refuses every key of a securityContext berth does not implement, naming it: nothing a pod
/// asks for is silently left out.
fn refuse_unimplemented(v: &mut V, path: &str, m: &Map<String, Value>, known: &[&str]) {
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            v.push(FieldError::forbidden(
                format!("{path}.{k}"),
                &format!(
                    "berth does not implement this field; supported fields are {}",
                    known.join(", ")
                ),
            ));
        }
    }
}

fn validate_seccomp(v: &mut V, path: &str, p: Option<&Value>) {
    let Some(sp) = v.obj(path, p) else { return };
    let ty = v.one_of(
        &format!("{path}.type"),
        sp.get("type"),
        &["RuntimeDefault", "Unconfined", "Localhost"],
    );
    if ty.is_none() && sp.get("type").is_none() {
        v.push(FieldError::required(format!("{path}.type")));
    }
    let profile = v.str(
        &format!("{path}.localhostProfile"),
        sp.get("localhostProfile"),
    );
    match (ty.as_deref(), profile) {
        (Some("Localhost"), None) | (Some("Localhost"), Some("")) => v.push(
            FieldError::required(format!("{path}.localhostProfile")).with_message(format!(
                "{path}.localhostProfile: Required value: must be set when seccomp type is Localhost"
            )),
        ),
        (Some("Localhost"), Some(p))
            if p.starts_with('/') || p.split('/').any(|c| c == ".." || c == ".") =>
        {
            v.push(FieldError::invalid(
                format!("{path}.localhostProfile"),
                format!("\"{p}\""),
                "must be a relative path inside the node's seccomp directory, without '.' or '..' components",
            ));
        }
        (Some("Localhost"), Some(_)) => {}
        (_, Some(_)) => v.push(FieldError::invalid(
            format!("{path}.localhostProfile"),
            format!("\"{}\"", profile.unwrap_or("")),
            "can only be set when seccomp type is Localhost",
        )),
        _ => {}
    }
}

fn validate_container_security(v: &mut V, path: &str, sc: Option<&Value>) {
    let Some(sc) = v.obj(path, sc) else { return };
    refuse_unimplemented(v, path, sc, CONTAINER_SECURITY_FIELDS);
    for f in ["runAsUser", "runAsGroup"] {
        v.non_negative(&format!("{path}.{f}"), sc.get(f));
    }
    for f in [
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "privileged",
        "allowPrivilegeEscalation",
    ] {
        v.bool(&format!("{path}.{f}"), sc.get(f));
    }
    let privileged = sc.get("privileged") == Some(&Value::Bool(true));
    if let Some(caps) = v.obj(&format!("{path}.capabilities"), sc.get("capabilities")) {
        refuse_unimplemented(v, &format!("{path}.capabilities"), caps, &["add", "drop"]);
        for list in ["add", "drop"] {
            let lp = format!("{path}.capabilities.{list}");
            for (i, c) in v.arr(&lp, caps.get(list)).iter().enumerate() {
                let Some(name) = v.str(&format!("{lp}[{i}]"), Some(c)) else {
                    continue;
                };
                let n = crate::podsecurity::capability_name(name);
                if n != "ALL" && !CAPABILITIES.contains(&n.as_str()) {
                    v.push(FieldError::invalid(
                        format!("{lp}[{i}]"),
                        format!("\"{name}\""),
                        "is not a Linux capability (names such as NET_ADMIN or ALL)",
                    ));
                }
            }
        }
    }
    let adds_sys_admin = sc
        .get("capabilities")
        .and_then(|c| c.get("add"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|c| crate::podsecurity::capability_name(c) == "SYS_ADMIN");
    if sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)) {
        if privileged {
            v.push(FieldError::invalid(
                path,
                "{...}",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        } else if adds_sys_admin {
            v.push(FieldError::invalid(
                path,
                "{...}",
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
    validate_seccomp(
        v,
        &format!("{path}.seccompProfile"),
        sc.get("seccompProfile"),
    );
    v.one_of(
        &format!("{path}.procMount"),
        sc.get("procMount"),
        &["Default", "Unmasked"],
    );
}

fn validate_pod_security(v: &mut V, path: &str, s: &Map<String, Value>) {
    for f in ["hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"] {
        v.bool(&format!("{path}.{f}"), s.get(f));
    }
    v.bool(&format!("{path}.hostUsers"), s.get("hostUsers"));
    if s.get("hostUsers") == Some(&Value::Bool(false)) {
        v.push(FieldError::forbidden(
            format!("{path}.hostUsers"),
            "berth does not run pods in user namespaces of their own; leave hostUsers unset or true",
        ));
    }
    if s.get("ephemeralContainers").is_some_and(|e| !e.is_null()) {
        v.push(FieldError::forbidden(
            format!("{path}.ephemeralContainers"),
            "berth does not implement ephemeral containers; use exec",
        ));
    }
    if s.get("shareProcessNamespace") == Some(&Value::Bool(true)) {
        v.push(FieldError::forbidden(
            format!("{path}.shareProcessNamespace"),
            "berth gives each container its own process namespace and does not implement a shared one",
        ));
    }
    let sp = format!("{path}.securityContext");
    let Some(sc) = v.obj(&sp, s.get("securityContext")) else {
        return;
    };
    refuse_unimplemented(v, &sp, sc, POD_SECURITY_FIELDS);
    for f in ["runAsUser", "runAsGroup", "fsGroup"] {
        v.non_negative(&format!("{sp}.{f}"), sc.get(f));
    }
    if sc.get("fsGroupChangePolicy").is_some() {
        v.one_of(
            &format!("{sp}.fsGroupChangePolicy"),
            sc.get("fsGroupChangePolicy"),
            &["OnRootMismatch", "Always"],
        );
    }
    v.bool(&format!("{sp}.runAsNonRoot"), sc.get("runAsNonRoot"));
    for (i, g) in v
        .arr(
            &format!("{sp}.supplementalGroups"),
            sc.get("supplementalGroups"),
        )
        .iter()
        .enumerate()
    {
        v.non_negative(&format!("{sp}.supplementalGroups[{i}]"), Some(g));
    }
    validate_seccomp(v, &format!("{sp}.seccompProfile"), sc.get("seccompProfile"));
    let host_net = s.get("hostNetwork") == Some(&Value::Bool(true));
    let host_ipc = s.get("hostIPC") == Some(&Value::Bool(true));
    for (i, x) in v
        .arr(&format!("{sp}.sysctls"), sc.get("sysctls"))
        .iter()
        .enumerate()
    {
        let xp = format!("{sp}.sysctls[{i}]");
        let Some(xm) = v.obj(&xp, Some(x)) else {
            continue;
        };
        v.req_str(&format!("{xp}.value"), xm.get("value"));
        let Some(name) = v.req_str(&format!("{xp}.name"), xm.get("name")) else {
            continue;
        };
        let shaped = !name.is_empty()
            && name.split(['.', '/']).all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
            });
        if !shaped {
            v.push(FieldError::invalid(
                format!("{xp}.name"),
                format!("\"{name}\""),
                "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
            ));
        } else if !name.starts_with("net.")
            && !name.starts_with("kernel.shm")
            && !name.starts_with("kernel.msg")
            && !name.starts_with("kernel.sem")
            && !name.starts_with("fs.mqueue.")
        {
            v.push(FieldError::forbidden(
                format!("{xp}.name"),
                &format!("sysctl \"{name}\" is not namespaced: a pod may set only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* sysctls"),
            ));
        } else if host_net && name.starts_with("net.") {
            v.push(FieldError::forbidden(
                format!("{xp}.name"),
                &format!("sysctl \"{name}\" not allowed with hostNetwork enabled"),
            ));
        } else if host_ipc && !name.starts_with("net.") {
            v.push(FieldError::forbidden(
                format!("{xp}.name"),
                &format!("sysctl \"{name}\" not allowed with hostIPC enabled"),
            ));
        }
    }
}

/// Why `p` is not a path that stays below the directory it is taken from (Kubernetes'
/// rule for `subPath`): absolute, or with a `..` component.
fn local_descending_path(p: &str) -> Option<&'static str> {
    if p.starts_with('/') {
        Some("must be a relative path")
    } else if p.split('/').any(|c| c == "..") {
        Some("must not contain '..'")
    } else {
        None
    }
}

fn validate_pod_spec(v: &mut V, path: &str, spec: Option<&Value>, template: bool) {
    let Some(s) = v.obj(path, spec) else {
        v.push(FieldError::required(path));
        return;
    };
    let mut volumes: Vec<String> = Vec::new();
    for (i, vol) in v
        .arr(&format!("{path}.volumes"), s.get("volumes"))
        .iter()
        .enumerate()
    {
        let vp = format!("{path}.volumes[{i}]");
        let Some(vm) = v.obj(&vp, Some(vol)) else {
            continue;
        };
        if let Some(n) = v.req_str(&format!("{vp}.name"), vm.get("name")) {
            if let Some(e) = names::dns1123_label(n) {
                v.push(FieldError::invalid(
                    format!("{vp}.name"),
                    format!("\"{n}\""),
                    &e,
                ));
            } else if volumes.iter().any(|x| x == n) {
                v.push(FieldError::duplicate(
                    format!("{vp}.name"),
                    format!("\"{n}\""),
                ));
            } else {
                volumes.push(n.to_string());
            }
        }
        let sources = vm.keys().filter(|k| *k != "name").count();
        if sources == 0 {
            v.push(
                FieldError::required(vp.to_string())
                    .with_message(format!("{vp}: Required value: must specify a volume type")),
            );
        } else if sources > 1 {
            v.push(FieldError::forbidden(
                vp.clone(),
                "may not specify more than 1 volume type",
            ));
        }
        if let Some(ed) = v.obj(&format!("{vp}.emptyDir"), vm.get("emptyDir")) {
            v.one_of(
                &format!("{vp}.emptyDir.medium"),
                ed.get("medium"),
                &["", "Memory"],
            );
            if let Some(q) = ed.get("sizeLimit") {
                v.quantity(&format!("{vp}.emptyDir.sizeLimit"), q);
            }
        }
        if let Some(hp) = v.obj(&format!("{vp}.hostPath"), vm.get("hostPath")) {
            if let Some(p) = v.req_str(&format!("{vp}.hostPath.path"), hp.get("path"))
                && (!p.starts_with('/') || p.split('/').any(|c| c == ".."))
            {
                v.push(FieldError::invalid(
                    format!("{vp}.hostPath.path"),
                    format!("\"{p}\""),
                    "must be an absolute path without '..'",
                ));
            }
            v.one_of(
                &format!("{vp}.hostPath.type"),
                hp.get("type"),
                &[
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ],
            );
        }
    }
    let mut names_seen = Vec::new();
    let containers = v.arr(&format!("{path}.containers"), s.get("containers"));
    if containers.is_empty() {
        v.push(FieldError::required(format!("{path}.containers")));
    }
    for (i, c) in containers.iter().enumerate() {
        validate_container(
            v,
            &format!("{path}.containers[{i}]"),
            c,
            &volumes,
            &mut names_seen,
            false,
        );
    }
    for (i, c) in v
        .arr(&format!("{path}.initContainers"), s.get("initContainers"))
        .iter()
        .enumerate()
    {
        validate_container(
            v,
            &format!("{path}.initContainers[{i}]"),
            c,
            &volumes,
            &mut names_seen,
            true,
        );
    }
    let restart = v.one_of(
        &format!("{path}.restartPolicy"),
        s.get("restartPolicy"),
        &["Always", "OnFailure", "Never"],
    );
    if template && restart.as_deref().is_some_and(|r| r != "Always") {
        v.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            restart.as_deref().unwrap_or(""),
            &["Always"],
        ));
    }
    v.one_of(
        &format!("{path}.dnsPolicy"),
        s.get("dnsPolicy"),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    v.non_negative(
        &format!("{path}.terminationGracePeriodSeconds"),
        s.get("terminationGracePeriodSeconds"),
    );
    v.in_range(
        &format!("{path}.activeDeadlineSeconds"),
        s.get("activeDeadlineSeconds"),
        1,
        MAX_INT32,
    );
    if let Some(n) = v.str(&format!("{path}.nodeName"), s.get("nodeName"))
        && !n.is_empty()
        && let Some(e) = names::dns1123_subdomain(n)
    {
        v.push(FieldError::invalid(
            format!("{path}.nodeName"),
            format!("\"{n}\""),
            &e,
        ));
    }
    v.string_map(
        &format!("{path}.nodeSelector"),
        s.get("nodeSelector"),
        names::qualified_name,
        Some(names::label_value),
    );
    for (i, t) in v
        .arr(&format!("{path}.tolerations"), s.get("tolerations"))
        .iter()
        .enumerate()
    {
        let tp = format!("{path}.tolerations[{i}]");
        if let Some(tm) = v.obj(&tp, Some(t)) {
            v.one_of(
                &format!("{tp}.operator"),
                tm.get("operator"),
                &["Exists", "Equal"],
            );
            v.one_of(
                &format!("{tp}.effect"),
                tm.get("effect"),
                &["", "NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
    validate_pod_security(v, path, s);
    validate_host_ports(v, path, s);
    v.str(&format!("{path}.hostname"), s.get("hostname"));
    v.str(&format!("{path}.schedulerName"), s.get("schedulerName"));
}

/// hostPort has its real effect only with hostNetwork (the container listens on the node
/// itself, and hostPort must then equal containerPort, as in Kubernetes); berth forwards no
/// node port into a pod's own network, so elsewhere it is refused.
fn validate_host_ports(v: &mut V, path: &str, s: &Map<String, Value>) {
    let host_net = s.get("hostNetwork") == Some(&Value::Bool(true));
    for list in ["containers", "initContainers"] {
        for (i, c) in s
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let Some(h) = p
                    .get("hostPort")
                    .and_then(Value::as_i64)
                    .filter(|h| *h != 0)
                else {
                    continue;
                };
                let field = format!("{path}.{list}[{i}].ports[{j}].hostPort");
                if !host_net {
                    v.push(FieldError::forbidden(
                        field,
                        "berth does not forward node ports into a pod's network; use hostNetwork: true or a Service of type NodePort",
                    ));
                } else if p.get("containerPort").and_then(Value::as_i64) != Some(h) {
                    v.push(FieldError::invalid(
                        field,
                        h,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
}

fn validate_template(v: &mut V, kind: &str, spec: &Map<String, Value>) {
    let selector = match v.obj("spec.selector", spec.get("selector")) {
        None => {
            v.push(FieldError::required("spec.selector"));
            None
        }
        Some(sel) => match LabelSelector::from_object(&Value::Object(sel.clone())) {
            Ok(s) if s.is_empty() => {
                v.push(FieldError::invalid(
                    "spec.selector",
                    "{}",
                    "empty selector is invalid for deployment",
                ));
                None
            }
            Ok(s) => {
                v.string_map(
                    "spec.selector.matchLabels",
                    sel.get("matchLabels"),
                    names::qualified_name,
                    Some(names::label_value),
                );
                Some(s)
            }
            Err(e) => {
                v.push(FieldError::invalid(
                    "spec.selector",
                    describe(&Value::Object(sel.clone())),
                    &e,
                ));
                None
            }
        },
    };
    v.non_negative("spec.replicas", spec.get("replicas"));
    v.non_negative("spec.minReadySeconds", spec.get("minReadySeconds"));
    let Some(t) = v.obj("spec.template", spec.get("template")) else {
        v.push(FieldError::required("spec.template"));
        return;
    };
    let tmeta = v.obj("spec.template.metadata", t.get("metadata"));
    let labels = tmeta.and_then(|m| m.get("labels"));
    v.string_map(
        "spec.template.metadata.labels",
        labels,
        names::qualified_name,
        Some(names::label_value),
    );
    let label_map = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(sel) = selector
        && !sel.matches(&label_map)
    {
        v.push(FieldError::invalid(
            "spec.template.metadata.labels",
            describe(labels.unwrap_or(&Value::Null)),
            &format!("`selector` does not match template `labels` of this {kind}"),
        ));
    }
    validate_pod_spec(v, "spec.template.spec", t.get("spec"), true);
}

fn validate_int_or_percent(v: &mut V, path: &str, val: Option<&Value>) {
    match val {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (0..=MAX_INT32).contains(&n)) => {}
        Some(Value::String(s))
            if s.strip_suffix('%')
                .is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p <= 100)) => {}
        Some(other) => v.push(FieldError::invalid(
            path,
            describe(other),
            &format!("must be an integer from 0 to {MAX_INT32} or a percentage such as '25%'"),
        )),
    }
}

fn validate_spec(v: &mut V, kind: &ResourceKind, obj: &Object) {
    match kind.kind {
        "Pod" => validate_pod_spec(v, "spec", obj.get("spec"), false),
        "ReplicaSet" => match v.obj("spec", obj.get("spec")) {
            Some(spec) => validate_template(v, "ReplicaSet", spec),
            None => v.push(FieldError::required("spec")),
        },
        "Deployment" => match v.obj("spec", obj.get("spec")) {
            Some(spec) => {
                validate_template(v, "Deployment", spec);
                v.non_negative(
                    "spec.revisionHistoryLimit",
                    spec.get("revisionHistoryLimit"),
                );
                let deadline = v.non_negative(
                    "spec.progressDeadlineSeconds",
                    spec.get("progressDeadlineSeconds"),
                );
                let min_ready = spec
                    .get("minReadySeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if let Some(d) = deadline
                    && d <= min_ready
                {
                    v.push(FieldError::invalid(
                        "spec.progressDeadlineSeconds",
                        d,
                        "must be greater than minReadySeconds",
                    ));
                }
                if let Some(st) = v.obj("spec.strategy", spec.get("strategy")) {
                    let t = v.one_of(
                        "spec.strategy.type",
                        st.get("type"),
                        &["RollingUpdate", "Recreate"],
                    );
                    if let Some(ru) = v.obj("spec.strategy.rollingUpdate", st.get("rollingUpdate"))
                    {
                        if t.as_deref() == Some("Recreate") {
                            v.push(FieldError::forbidden(
                                "spec.strategy.rollingUpdate",
                                "may not be specified when strategy `type` is 'Recreate'",
                            ));
                        }
                        validate_int_or_percent(
                            v,
                            "spec.strategy.rollingUpdate.maxSurge",
                            ru.get("maxSurge"),
                        );
                        validate_int_or_percent(
                            v,
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            ru.get("maxUnavailable"),
                        );
                        let zero = |x: Option<&Value>| {
                            matches!(x, Some(Value::Number(n)) if n.as_i64() == Some(0))
                                || matches!(x, Some(Value::String(s)) if s == "0%")
                        };
                        if zero(ru.get("maxSurge")) && zero(ru.get("maxUnavailable")) {
                            v.push(FieldError::invalid(
                                "spec.strategy.rollingUpdate.maxUnavailable",
                                0,
                                "may not be 0 when `maxSurge` is 0",
                            ));
                        }
                    }
                }
            }
            None => v.push(FieldError::required("spec")),
        },
        "Service" => validate_service(v, obj),
        "ConfigMap" => {
            v.string_map("data", obj.get("data"), names::config_key, None);
            v.string_map(
                "binaryData",
                obj.get("binaryData"),
                names::config_key,
                Some(check_base64),
            );
            v.bool("immutable", obj.get("immutable"));
            let size: usize = ["data", "binaryData"]
                .iter()
                .filter_map(|f| obj.get(f).and_then(Value::as_object))
                .flat_map(|m| {
                    m.iter()
                        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                })
                .sum();
            if size > 1024 * 1024 {
                v.push(FieldError {
                    field: String::new(),
                    kind: crate::status::FieldErrorKind::TooLong,
                    message: format!("Too long: must have at most 1048576 bytes (has {size})"),
                });
            }
        }
        "Secret" => {
            v.string_map(
                "data",
                obj.get("data"),
                names::config_key,
                Some(check_base64),
            );
            v.string_map("stringData", obj.get("stringData"), names::config_key, None);
            v.str("type", obj.get("type"));
            v.bool("immutable", obj.get("immutable"));
        }
        "Ingress" => validate_ingress(v, obj),
        "ConfigTemplate" => {
            if let Err(errs) = crate::configtemplate::parse(obj.get("spec"), true) {
                for e in errs {
                    v.push(e);
                }
            }
        }
        "EndpointSlice" => {
            let ty = v.req_str("addressType", obj.get("addressType"));
            if let Some(t) = ty
                && !matches!(t, "IPv4" | "IPv6" | "FQDN")
            {
                v.push(FieldError::not_supported(
                    "addressType",
                    t,
                    &["IPv4", "IPv6", "FQDN"],
                ));
            }
            for (i, e) in v.arr("endpoints", obj.get("endpoints")).iter().enumerate() {
                let ep = format!("endpoints[{i}]");
                let Some(em) = v.obj(&ep, Some(e)) else {
                    continue;
                };
                let addrs = v.arr(&format!("{ep}.addresses"), em.get("addresses"));
                if addrs.is_empty() {
                    v.push(FieldError::required(format!("{ep}.addresses")));
                }
                for (j, a) in addrs.iter().enumerate() {
                    let ap = format!("{ep}.addresses[{j}]");
                    match a.as_str() {
                        Some(ip)
                            if ty != Some("FQDN") && ip.parse::<std::net::IpAddr>().is_err() =>
                        {
                            v.push(FieldError::invalid(
                                ap,
                                format!("\"{ip}\""),
                                "must be a valid IP address",
                            ))
                        }
                        Some(_) => {}
                        None => v.push(FieldError::invalid(ap, describe(a), "must be a string")),
                    }
                }
            }
            for (j, p) in v.arr("ports", obj.get("ports")).iter().enumerate() {
                if let Some(pm) = v.obj(&format!("ports[{j}]"), Some(p))
                    && let Some(n) = pm.get("port").and_then(Value::as_i64)
                    && !(1..=65535).contains(&n)
                {
                    v.push(FieldError::invalid(
                        format!("ports[{j}].port"),
                        n,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        "Endpoints" => {
            for (i, s) in v.arr("subsets", obj.get("subsets")).iter().enumerate() {
                let sp = format!("subsets[{i}]");
                let Some(sm) = v.obj(&sp, Some(s)) else {
                    continue;
                };
                for list in ["addresses", "notReadyAddresses"] {
                    for (j, a) in v
                        .arr(&format!("{sp}.{list}"), sm.get(list))
                        .iter()
                        .enumerate()
                    {
                        let ap = format!("{sp}.{list}[{j}]");
                        if let Some(am) = v.obj(&ap, Some(a))
                            && let Some(ip) = v.req_str(&format!("{ap}.ip"), am.get("ip"))
                            && ip.parse::<std::net::IpAddr>().is_err()
                        {
                            v.push(FieldError::invalid(
                                format!("{ap}.ip"),
                                format!("\"{ip}\""),
                                "must be a valid IP address",
                            ));
                        }
                    }
                }
                for (j, p) in v
                    .arr(&format!("{sp}.ports"), sm.get("ports"))
                    .iter()
                    .enumerate()
                {
                    let pp = format!("{sp}.ports[{j}]");
                    if let Some(pm) = v.obj(&pp, Some(p)) {
                        v.port(&format!("{pp}.port"), pm.get("port"), true);
                        v.one_of(
                            &format!("{pp}.protocol"),
                            pm.get("protocol"),
                            &["TCP", "UDP", "SCTP"],
                        );
                    }
                }
            }
        }
        "Event" => {
            match v.obj("involvedObject", obj.get("involvedObject")) {
                Some(io) => {
                    v.str("involvedObject.name", io.get("name"));
                    v.str("involvedObject.kind", io.get("kind"));
                }
                None => v.push(FieldError::required("involvedObject")),
            }
            v.one_of("type", obj.get("type"), &["Normal", "Warning"]);
            v.str("reason", obj.get("reason"));
            v.str("message", obj.get("message"));
            v.non_negative("count", obj.get("count"));
        }
        "Lease" => {
            if let Some(s) = v.obj("spec", obj.get("spec")) {
                v.str("spec.holderIdentity", s.get("holderIdentity"));
                v.non_negative("spec.leaseDurationSeconds", s.get("leaseDurationSeconds"));
                v.non_negative("spec.leaseTransitions", s.get("leaseTransitions"));
                v.str("spec.renewTime", s.get("renewTime"));
                v.str("spec.acquireTime", s.get("acquireTime"));
            }
        }
        "Node" => {
            if let Some(s) = v.obj("spec", obj.get("spec")) {
                v.bool("spec.unschedulable", s.get("unschedulable"));
                v.str("spec.podCIDR", s.get("podCIDR"));
                for (i, t) in v.arr("spec.taints", s.get("taints")).iter().enumerate() {
                    let tp = format!("spec.taints[{i}]");
                    if let Some(tm) = v.obj(&tp, Some(t)) {
                        if let Some(k) = v.req_str(&format!("{tp}.key"), tm.get("key"))
                            && let Some(e) = names::qualified_name(k)
                        {
                            v.push(FieldError::invalid(
                                format!("{tp}.key"),
                                format!("\"{k}\""),
                                &e,
                            ));
                        }
                        if tm.get("effect").is_none() {
                            v.push(FieldError::required(format!("{tp}.effect")));
                        }
                        v.one_of(
                            &format!("{tp}.effect"),
                            tm.get("effect"),
                            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                        );
                    }
                }
            }
        }
        "Namespace" => {
            if let Some(s) = v.obj("spec", obj.get("spec")) {
                v.arr("spec.finalizers", s.get("finalizers"));
            }
        }
        _ => {}
    }
}

fn check_base64(s: &str) -> Option<String> {
    crate::validate::base64_decode(s)
        .is_none()
        .then(|| "illegal base64 data".to_string())
}

fn validate_service(v: &mut V, obj: &Object) {
    let Some(spec) = v.obj("spec", obj.get("spec")) else {
        v.push(FieldError::required("spec"));
        return;
    };
    let ty = v
        .one_of(
            "spec.type",
            spec.get("type"),
            &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        )
        .unwrap_or_else(|| "ClusterIP".into());
    let cluster_ip = v.str("spec.clusterIP", spec.get("clusterIP")).unwrap_or("");
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        v.push(FieldError::invalid(
            "spec.clusterIP",
            format!("\"{cluster_ip}\""),
            "must be empty, 'None', or a valid IP address",
        ));
    }
    if ty == "ExternalName" {
        match v.str("spec.externalName", spec.get("externalName")) {
            Some(n) if names::dns1123_subdomain(n).is_none() => {}
            Some(n) => v.push(FieldError::invalid(
                "spec.externalName",
                format!("\"{n}\""),
                "must be a valid DNS name",
            )),
            None => v.push(FieldError::required("spec.externalName")),
        }
    }
    let ports = v.arr("spec.ports", spec.get("ports"));
    if ports.is_empty() && !headless && ty != "ExternalName" {
        v.push(FieldError::required("spec.ports"));
    }
    let mut seen_names: Vec<String> = Vec::new();
    let mut seen_ports: Vec<(i64, String)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let Some(pm) = v.obj(&pp, Some(p)) else {
            continue;
        };
        let port = v.port(&format!("{pp}.port"), pm.get("port"), true);
        let proto = v
            .one_of(
                &format!("{pp}.protocol"),
                pm.get("protocol"),
                &["TCP", "UDP", "SCTP"],
            )
            .unwrap_or_else(|| "TCP".into());
        if let Some(port) = port {
            if seen_ports.contains(&(port, proto.clone())) {
                v.push(FieldError::duplicate(
                    pp.to_string(),
                    format!("{{\"{proto}\", {port}}}"),
                ));
            }
            seen_ports.push((port, proto));
        }
        match v.str(&format!("{pp}.name"), pm.get("name")) {
            Some(n) if !n.is_empty() => {
                if let Some(e) = names::dns1123_label(n) {
                    v.push(FieldError::invalid(
                        format!("{pp}.name"),
                        format!("\"{n}\""),
                        &e,
                    ));
                } else if seen_names.iter().any(|s| s == n) {
                    v.push(FieldError::duplicate(
                        format!("{pp}.name"),
                        format!("\"{n}\""),
                    ));
                } else {
                    seen_names.push(n.to_string());
                }
            }
            _ if ports.len() > 1 => v.push(FieldError::required(format!("{pp}.name"))),
            _ => {}
        }
        if pm.get("targetPort").is_some() {
            validate_port_ref(v, &format!("{pp}.targetPort"), pm.get("targetPort"));
        }
        if let Some(np) = v.int(&format!("{pp}.nodePort"), pm.get("nodePort")) {
            if ty == "ClusterIP" && np != 0 {
                v.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if np != 0 && !(30000..=32767).contains(&np) {
                v.push(FieldError::invalid(format!("{pp}.nodePort"), np, "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
        }
    }
    if let Some(sel) = spec.get("selector") {
        v.string_map(
            "spec.selector",
            Some(sel),
            names::qualified_name,
            Some(names::label_value),
        );
    }
    v.one_of(
        "spec.sessionAffinity",
        spec.get("sessionAffinity"),
        &["None", "ClientIP"],
    );
    if let Some(c) = v.obj(
        "spec.sessionAffinityConfig",
        spec.get("sessionAffinityConfig"),
    ) && let Some(ip) = v.obj("spec.sessionAffinityConfig.clientIP", c.get("clientIP"))
    {
        // Kubernetes' range: up to a day.
        v.in_range(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            ip.get("timeoutSeconds"),
            1,
            86400,
        );
    }
}

impl FieldError {
    fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}

/// Validates an object about to be created.
pub fn validate_create(kind: &ResourceKind, obj: &Object) -> Vec<FieldError> {
    let mut v = V::default();
    validate_metadata(&mut v, kind, obj);
    validate_spec(&mut v, kind, obj);
    v.errs
}

fn immutable(v: &mut V, path: &str, old: Option<&Value>, new: Option<&Value>) {
    if old != new {
        v.push(FieldError {
            field: path.into(),
            kind: crate::status::FieldErrorKind::Invalid,
            message: format!(
                "{path}: Invalid value: {}: field is immutable",
                describe(new.unwrap_or(&Value::Null))
            ),
        });
    }
}

/// Validates an update: everything `validate_create` checks, plus the fields that may not
/// change once set.
pub fn validate_update(kind: &ResourceKind, old: &Object, new: &Object) -> Vec<FieldError> {
    let mut v = V::default();
    validate_metadata(&mut v, kind, new);
    validate_spec(&mut v, kind, new);
    match kind.kind {
        "Pod" => {
            // A pod's spec may change only in its containers' images and a few scheduling
            // fields, as in Kubernetes.
            let strip = |o: &Object| {
                let mut spec = o.get("spec").cloned().unwrap_or(Value::Null);
                for list in ["containers", "initContainers"] {
                    if let Some(Value::Array(cs)) = spec.get_mut(list) {
                        for c in cs {
                            if let Value::Object(m) = c {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Value::Object(m) = &mut spec {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                    m.remove("terminationGracePeriodSeconds");
                    // nodeName may be set once, by binding.
                    if old
                        .get("spec")
                        .and_then(|s| s.get("nodeName"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        m.remove("nodeName");
                    }
                }
                spec
            };
            if strip(old) != strip(new) {
                v.push(FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`"));
            }
        }
        "Deployment" | "ReplicaSet" => {
            immutable(
                &mut v,
                "spec.selector",
                old.get("spec").and_then(|s| s.get("selector")),
                new.get("spec").and_then(|s| s.get("selector")),
            );
        }
        "Service" => {
            let ip = |o: &Object| o.get("spec").and_then(|s| s.get("clusterIP")).cloned();
            if ip(old).is_some_and(|i| i != "") {
                immutable(&mut v, "spec.clusterIP", ip(old).as_ref(), ip(new).as_ref());
            }
        }
        "ConfigMap" | "Secret" if old.get("immutable") == Some(&Value::Bool(true)) => {
            for f in ["data", "binaryData", "immutable"] {
                if old.get(f) != new.get(f) {
                    v.push(FieldError::forbidden(
                        f,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        _ => {}
    }
    if old.namespace() != new.namespace() && kind.namespaced {
        immutable(
            &mut v,
            "metadata.namespace",
            old.metadata().and_then(|m| m.get("namespace")),
            new.metadata().and_then(|m| m.get("namespace")),
        );
    }
    v.errs
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as Secret data is written.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; `None` when it is not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (ci, chunk) in bytes.chunks(4).enumerate() {
        let last = ci == bytes.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let val = if c == b'=' {
                if !last || i < 2 {
                    return None;
                }
                pad += 1;
                0
            } else {
                if pad > 0 {
                    return None;
                }
                B64.iter().position(|&x| x == c)? as u32
            };
            n = (n << 6) | val;
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Some(out)
}

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.to_string(), v);
    }
}

fn default_pod_spec(spec: &mut Value) {
    let Value::Object(s) = spec else { return };
    set_default(s, "restartPolicy", "Always".into());
    set_default(s, "dnsPolicy", "ClusterFirst".into());
    set_default(s, "terminationGracePeriodSeconds", 30.into());
    set_default(s, "schedulerName", "default-scheduler".into());
    let host_net = s.get("hostNetwork") == Some(&Value::Bool(true));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = s.get_mut(list) {
            for c in cs {
                let Value::Object(c) = c else { continue };
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                    || image.ends_with(":latest");
                let policy = if latest && !image.contains('@') {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                set_default(c, "imagePullPolicy", policy.into());
                set_default(c, "terminationMessagePath", "/dev/termination-log".into());
                if let Some(Value::Array(ps)) = c.get_mut("ports") {
                    for p in ps {
                        if let Value::Object(p) = p {
                            set_default(p, "protocol", "TCP".into());
                            if host_net && let Some(port) = p.get("containerPort").cloned() {
                                set_default(p, "hostPort", port);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fills in the defaults Kubernetes fills in, so stored objects look as they would there.
pub fn apply_defaults(kind: &ResourceKind, obj: &mut Object) {
    let map = &mut obj.0;
    match kind.kind {
        "Pod" => {
            if let Some(spec) = map.get_mut("spec") {
                default_pod_spec(spec);
            }
            if let Value::Object(st) = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                set_default(st, "phase", "Pending".into());
            }
        }
        "ReplicaSet" | "Deployment" => {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                set_default(spec, "replicas", 1.into());
                if kind.kind == "Deployment" {
                    set_default(spec, "revisionHistoryLimit", 10.into());
                    set_default(spec, "progressDeadlineSeconds", 600.into());
                    let st = spec
                        .entry("strategy")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(st) = st {
                        set_default(st, "type", "RollingUpdate".into());
                        if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                            let ru = st
                                .entry("rollingUpdate")
                                .or_insert_with(|| Value::Object(Map::new()));
                            if let Value::Object(ru) = ru {
                                set_default(ru, "maxSurge", "25%".into());
                                set_default(ru, "maxUnavailable", "25%".into());
                            }
                        }
                    }
                }
                if let Some(Value::Object(t)) = spec.get_mut("template")
                    && let Some(ts) = t.get_mut("spec")
                {
                    default_pod_spec(ts);
                }
            }
        }
        "Service" => {
            if let Some(Value::Object(spec)) = map.get_mut("spec") {
                set_default(spec, "type", "ClusterIP".into());
                set_default(spec, "sessionAffinity", "None".into());
                if let Some(Value::Array(ps)) = spec.get_mut("ports") {
                    for p in ps {
                        if let Value::Object(p) = p {
                            set_default(p, "protocol", "TCP".into());
                            if let Some(port) = p.get("port").cloned() {
                                set_default(p, "targetPort", port);
                            }
                        }
                    }
                }
            }
        }
        "Secret" => {
            set_default(map, "type", "Opaque".into());
            if let Some(Value::Object(sd)) = map.remove("stringData") {
                let data = map
                    .entry("data")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(d) = data {
                    for (k, v) in sd {
                        if let Value::String(s) = v {
                            d.insert(k, Value::String(base64_encode(s.as_bytes())));
                        }
                    }
                }
            }
        }
        "Namespace" => {
            if let Value::Object(st) = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                set_default(st, "phase", "Active".into());
            }
            // Kubernetes labels every namespace with its own name.
            let name = obj.name().to_string();
            let m = obj.metadata_mut();
            let labels = m
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(l) = labels {
                l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::resolve;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        Object::from_value(v).unwrap()
    }

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_good_deployment_passes() {
        let d = obj(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "host", "ports": [{"containerPort": 80}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}}}
        }));
        assert_eq!(validate_create(resolve("deploy").unwrap(), &d), vec![]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let d = obj(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "Web_1", "labels": {"bad key": "x"}},
            "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "other"}},
                    "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}],
                        "resources": {"requests": {"cpu": "lots"}}}]}}}
        }));
        let errs = validate_create(resolve("deploy").unwrap(), &d);
        let f = fields(&errs);
        for want in [
            "metadata.name",
            "metadata.labels",
            "spec.replicas",
            "spec.template.metadata.labels",
            "spec.template.spec.containers[0].image",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "spec.template.spec.containers[0].resources.requests.cpu",
        ] {
            assert!(f.contains(&want), "missing {want} in {f:?}");
        }
    }

    /// A Deployment whose every duration and count is `n`, and a Service whose affinity
    /// timeout is `n`.
    fn with_numbers(n: Value) -> (Object, Object) {
        let probe = json!({"exec": {"command": ["true"]}, "initialDelaySeconds": n,
            "periodSeconds": n, "timeoutSeconds": n, "successThreshold": n,
            "failureThreshold": n, "terminationGracePeriodSeconds": n});
        let d = obj(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": n, "minReadySeconds": 0, "revisionHistoryLimit": n,
                "progressDeadlineSeconds": n,
                "strategy": {"rollingUpdate": {"maxSurge": n, "maxUnavailable": n}},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": n, "activeDeadlineSeconds": n,
                        "securityContext": {"runAsUser": n, "runAsGroup": n, "fsGroup": n},
                        "containers": [{"name": "c", "image": "i",
                            "livenessProbe": probe, "readinessProbe": probe,
                            "lifecycle": {"preStop": {"sleep": {"seconds": n}}},
                            "securityContext": {"runAsUser": n, "runAsGroup": n}}]}}}
        }));
        let svc = obj(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": n}}}}),
        );
        (d, svc)
    }

    #[test]
    fn every_duration_and_count_is_range_checked() {
        let deploy = resolve("deploy").unwrap();
        let svc = resolve("svc").unwrap();
        // The biggest values Kubernetes' int32 fields hold pass (the affinity timeout aside,
        // which Kubernetes holds to a day).
        let (d, s) = with_numbers(json!(MAX_INT32));
        assert_eq!(validate_create(deploy, &d), vec![]);
        assert_eq!(
            fields(&validate_create(svc, &s)),
            vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds"]
        );
        let c = "spec.template.spec.containers[0]";
        let named = [
            "spec.replicas".to_string(),
            "spec.revisionHistoryLimit".into(),
            "spec.progressDeadlineSeconds".into(),
            "spec.strategy.rollingUpdate.maxSurge".into(),
            "spec.strategy.rollingUpdate.maxUnavailable".into(),
            "spec.template.spec.terminationGracePeriodSeconds".into(),
            "spec.template.spec.activeDeadlineSeconds".into(),
            "spec.template.spec.securityContext.runAsUser".into(),
            "spec.template.spec.securityContext.runAsGroup".into(),
            "spec.template.spec.securityContext.fsGroup".into(),
            format!("{c}.livenessProbe.initialDelaySeconds"),
            format!("{c}.livenessProbe.periodSeconds"),
            format!("{c}.livenessProbe.timeoutSeconds"),
            format!("{c}.livenessProbe.successThreshold"),
            format!("{c}.livenessProbe.failureThreshold"),
            format!("{c}.livenessProbe.terminationGracePeriodSeconds"),
            format!("{c}.readinessProbe.periodSeconds"),
            format!("{c}.lifecycle.preStop.sleep.seconds"),
            format!("{c}.securityContext.runAsUser"),
            format!("{c}.securityContext.runAsGroup"),
        ];
        // One past int32, the largest JSON integer, and a negative number: each field named,
        // with what is wrong.
        for n in [json!(MAX_INT32 + 1), json!(i64::MAX), json!(-1)] {
            let (d, s) = with_numbers(n.clone());
            let errs = validate_create(deploy, &d);
            for want in &named {
                let e = errs
                    .iter()
                    .find(|e| e.field == *want)
                    .unwrap_or_else(|| panic!("{n}: {want} not named in {errs:?}"));
                assert!(e.message.contains("must be"), "{n}: {want}: {}", e.message);
            }
            assert_eq!(
                fields(&validate_create(svc, &s)),
                vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds"]
            );
        }
        // A number too big for any integer, or a fraction, is named as not an integer.
        let (d, _) = with_numbers(json!(1e300));
        let errs = validate_create(deploy, &d);
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.progressDeadlineSeconds"
                    && e.message.contains("must be an integer")),
            "{errs:?}"
        );
        // Kubernetes: the progress deadline must exceed minReadySeconds.
        let mut d = with_numbers(json!(5)).0.into_value();
        d["spec"]["minReadySeconds"] = json!(5);
        let errs = validate_create(deploy, &obj(d));
        assert_eq!(fields(&errs), vec!["spec.progressDeadlineSeconds"]);
        assert!(errs[0].message.contains("greater than minReadySeconds"));
    }

    #[test]
    fn stored_durations_are_read_within_bounds() {
        assert_eq!(seconds_of(Some(&json!(i64::MAX)), 600), MAX_INT32 as u64);
        assert_eq!(seconds_of(Some(&json!(u64::MAX)), 600), 600);
        assert_eq!(seconds_of(Some(&json!(-5)), 600), 600);
        assert_eq!(seconds_of(Some(&json!("10")), 600), 600);
        assert_eq!(seconds_of(None, 600), 600);
        assert_eq!(seconds_of(Some(&json!(42)), 600), 42);
    }

    fn pod_errors(spec: Value) -> Vec<String> {
        let p = obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}),
        );
        validate_create(resolve("pods").unwrap(), &p)
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn security_context_fields_are_checked_and_unimplemented_ones_refused() {
        assert_eq!(
            pod_errors(json!({
                "hostNetwork": true, "hostPID": true, "hostIPC": false,
                "securityContext": {"runAsNonRoot": true, "supplementalGroups": [5],
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/a.json"},
                    "sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]},
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}],
                    "securityContext": {"privileged": true, "allowPrivilegeEscalation": true,
                    "capabilities": {"add": ["NET_ADMIN", "CAP_SYS_TIME"], "drop": ["ALL"]},
                    "seccompProfile": {"type": "Unconfined"}, "procMount": "Unmasked",
                    "runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": true}}],
            })),
            Vec::<String>::new()
        );
        let errs = pod_errors(json!({
            "hostPID": "yes", "shareProcessNamespace": true, "hostUsers": false,
            "ephemeralContainers": [{"name": "debug", "image": "i"}],
            "securityContext": {"fsGroup": -2, "fsGroupChangePolicy": "Sometimes", "seLinuxOptions": {"type": "x"},
                "seccompProfile": {"type": "Localhost", "localhostProfile": "../etc/shadow"},
                "sysctls": [{"name": "vm.overcommit_memory", "value": "1"}]},
            "volumes": [{"name": "h", "hostPath": {"path": "relative", "type": "Directroy"}}],
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMN"]}, "appArmorProfile": {"type": "RuntimeDefault"},
                "seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "a"},
                "procMount": "Masked", "runAsUser": -1}}],
        }));
        for want in [
            "spec.hostPID: Invalid value: \"yes\": must be a boolean",
            "spec.shareProcessNamespace: Forbidden: berth gives each container its own process namespace and does not implement a shared one",
            "spec.hostUsers: Forbidden: berth does not run pods in user namespaces of their own; leave hostUsers unset or true",
            "spec.ephemeralContainers: Forbidden: berth does not implement ephemeral containers; use exec",
            "spec.securityContext.fsGroup: Invalid value: -2: must be greater than or equal to 0",
            "spec.securityContext.fsGroupChangePolicy: Unsupported value: \"Sometimes\": supported values: \"OnRootMismatch\", \"Always\"",
            "spec.securityContext.seLinuxOptions: Forbidden: berth does not implement this field; supported fields are runAsUser, runAsGroup, runAsNonRoot, supplementalGroups, fsGroup, fsGroupChangePolicy, seccompProfile, sysctls",
            "spec.securityContext.seccompProfile.localhostProfile: Invalid value: \"../etc/shadow\": must be a relative path inside the node's seccomp directory, without '.' or '..' components",
            "spec.securityContext.sysctls[0].name: Forbidden: sysctl \"vm.overcommit_memory\" is not namespaced: a pod may set only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* sysctls",
            "spec.volumes[0].hostPath.path: Invalid value: \"relative\": must be an absolute path without '..'",
            "spec.volumes[0].hostPath.type: Unsupported value: \"Directroy\": supported values: \"\", \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\"",
            "spec.containers[0].ports[0].hostPort: Forbidden: berth does not forward node ports into a pod's network; use hostNetwork: true or a Service of type NodePort",
            "spec.containers[0].securityContext.appArmorProfile: Forbidden: berth does not implement this field; supported fields are runAsUser, runAsGroup, runAsNonRoot, readOnlyRootFilesystem, privileged, allowPrivilegeEscalation, capabilities, seccompProfile, procMount",
            "spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be greater than or equal to 0",
            "spec.containers[0].securityContext.capabilities.add[0]: Invalid value: \"NET_ADMN\": is not a Linux capability (names such as NET_ADMIN or ALL)",
            "spec.containers[0].securityContext: Invalid value: {...}: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            "spec.containers[0].securityContext.seccompProfile.localhostProfile: Invalid value: \"a\": can only be set when seccomp type is Localhost",
            "spec.containers[0].securityContext.procMount: Unsupported value: \"Masked\": supported values: \"Default\", \"Unmasked\"",
        ] {
            assert!(
                errs.iter().any(|e| e == want),
                "missing {want} in {errs:#?}"
            );
        }
        let errs = pod_errors(json!({"hostNetwork": true,
            "securityContext": {"seccompProfile": {"type": "Localhost"}, "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 81}]}]}));
        for want in [
            "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
            "spec.securityContext.sysctls[0].name: Forbidden: sysctl \"net.ipv4.tcp_syncookies\" not allowed with hostNetwork enabled",
            "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true",
        ] {
            assert!(
                errs.iter().any(|e| e == want),
                "missing {want} in {errs:#?}"
            );
        }
    }

    #[test]
    fn host_network_defaults_host_ports_and_namespace_labels_are_checked() {
        let mut p = obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}]}}),
        );
        apply_defaults(resolve("pods").unwrap(), &mut p);
        assert_eq!(p.0["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
        assert!(validate_create(resolve("pods").unwrap(), &p).is_empty());
        let ns = obj(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n",
            "labels": {"pod-security.kubernetes.io/warn": "lax"}}}),
        );
        assert_eq!(
            fields(&validate_create(resolve("namespaces").unwrap(), &ns)),
            vec!["metadata.labels[pod-security.kubernetes.io/warn]"]
        );
    }

    #[test]
    fn immutable_fields() {
        let k = resolve("deploy").unwrap();
        let mk = |app: &str| {
            obj(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": app}}, "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            )
        };
        let errs = validate_update(k, &mk("a"), &mk("b"));
        assert_eq!(fields(&errs), vec!["spec.selector"]);
        let pod = |cmd: &str| {
            obj(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "command": [cmd]}]}}),
            )
        };
        assert_eq!(
            fields(&validate_update(
                resolve("po").unwrap(),
                &pod("a"),
                &pod("b")
            )),
            vec!["spec"]
        );
    }

    #[test]
    fn sub_paths_stay_below_their_volume() {
        let pod = |mount: Value| {
            obj(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"volumes": [{"name": "v", "emptyDir": {}}],
                    "containers": [{"name": "c", "image": "i", "volumeMounts": [mount]}]}}),
            )
        };
        let errs = |mount: Value| validate_create(resolve("po").unwrap(), &pod(mount));
        let mp = "spec.containers[0].volumeMounts[0]";
        for (mount, field, why) in [
            (
                json!({"name": "v", "mountPath": "/m", "subPath": "/etc"}),
                "subPath",
                "must be a relative path",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "subPath": "a/../../b"}),
                "subPath",
                "must not contain '..'",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "subPathExpr": "$(X)/.."}),
                "subPathExpr",
                "must not contain '..'",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "subPath": "a", "subPathExpr": "b"}),
                "subPathExpr",
                "mutually exclusive",
            ),
        ] {
            let e = errs(mount.clone());
            assert_eq!(fields(&e), vec![format!("{mp}.{field}")], "{mount}");
            assert!(e[0].message.contains(why), "{}", e[0].message);
        }
        for ok in ["a", "a/b..c/d", "..x", "$(POD)/logs"] {
            assert_eq!(
                errs(json!({"name": "v", "mountPath": "/m", "subPath": ok})),
                vec![],
                "{ok}"
            );
        }
    }

    #[test]
    fn service_ports() {
        let s = obj(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "ClusterIP", "ports": [{"port": 80}, {"port": 0, "name": "x"}]}}),
        );
        let errs = validate_create(resolve("svc").unwrap(), &s);
        assert!(fields(&errs).contains(&"spec.ports[0].name"));
        assert!(fields(&errs).contains(&"spec.ports[1].port"));
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "hello world"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert!(base64_decode("a=bc").is_none());
        assert!(base64_decode("abc").is_none());
    }

    #[test]
    fn defaults_like_kubernetes() {
        let mut s = obj(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "hello"}}),
        );
        apply_defaults(resolve("secret").unwrap(), &mut s);
        assert_eq!(s.get("data").unwrap()["k"], "aGVsbG8=");
        assert_eq!(s.get("type").unwrap(), "Opaque");
        let mut d = obj(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        );
        apply_defaults(resolve("deploy").unwrap(), &mut d);
        assert_eq!(d.get("spec").unwrap()["replicas"], 1);
        assert_eq!(
            d.get("spec").unwrap()["strategy"]["rollingUpdate"]["maxSurge"],
            "25%"
        );
        assert_eq!(
            d.get("spec").unwrap()["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
    }
}
