//! A pod's spec, alone or as a workload's template: containers (image, command, ports,
//! environment, resources, probes, volume mounts), volumes, and the host namespaces and ports
//! a pod may ask for. Security contexts are in `security`.

use serde_json::{Map, Value};

use super::MAX_INT32;
use super::security::{validate_container_security, validate_pod_security};
use super::walker::{V, describe};
use crate::names;
use crate::status::FieldError;

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

pub(super) fn validate_probe(v: &mut V, path: &str, p: Option<&Value>) {
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
pub(super) fn validate_port_ref(v: &mut V, path: &str, p: Option<&Value>) {
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

pub(super) fn validate_pod_spec(v: &mut V, path: &str, spec: Option<&Value>, template: bool) {
    let Some(s) = v.obj(path, spec) else {
        v.push(FieldError::required(path));
        return;
    };
    // The account it runs as (and the deprecated alias, which must agree).
    for field in ["serviceAccountName", "serviceAccount"] {
        if let Some(n) = v.str(&format!("{path}.{field}"), s.get(field))
            && !n.is_empty()
            && let Some(e) = names::dns1123_subdomain(n)
        {
            v.push(FieldError::invalid(
                format!("{path}.{field}"),
                format!("\"{n}\""),
                &e,
            ));
        }
    }
    v.bool(
        &format!("{path}.automountServiceAccountToken"),
        s.get("automountServiceAccountToken"),
    );
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
