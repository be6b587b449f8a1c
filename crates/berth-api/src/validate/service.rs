//! Services and their endpoints: ports, selectors, cluster IPs, session affinity, and the
//! addresses of Endpoints and EndpointSlices.

use serde_json::Value;

use super::pod::validate_port_ref;
use super::walker::{V, describe};
use crate::names;
use crate::object::Object;
use crate::status::FieldError;

pub(super) fn validate_service(v: &mut V, obj: &Object) {
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

pub(super) fn validate_endpoint_slice(v: &mut V, obj: &Object) {
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
                Some(ip) if ty != Some("FQDN") && ip.parse::<std::net::IpAddr>().is_err() => v
                    .push(FieldError::invalid(
                        ap,
                        format!("\"{ip}\""),
                        "must be a valid IP address",
                    )),
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

pub(super) fn validate_endpoints(v: &mut V, obj: &Object) {
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
