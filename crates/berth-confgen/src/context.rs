//! What a template sees, and the template environment.
//!
//! - `pods`: each pod as `{name, namespace, ip, node, phase, ready, labels, annotations, env,
//!   ports, object}` (`env`: the literal environment variables of its containers, so
//!   `VIRTUAL_HOST` works as in docker-gen);
//! - `services`: `{name, namespace, type, clusterIP, ports, labels, selector, endpoints,
//!   object}` with `endpoints` the ready `{ip, pod, node, ports}`;
//! - `endpoints`, `nodes` (`{name, ip, ready, unschedulable, labels, object}`);
//! - `virtual_hosts`: host → the ready pods that name it in `VIRTUAL_HOST` (comma-separated),
//!   each with `port` (its `VIRTUAL_PORT`, or its first container port, or 80);
//! - `kv`: key → value of the prefixes the template reads;
//! - `revision`, `node`.
//!
//! Filters and functions beyond minijinja's: `fromjson`, `kv_get(key, default)`. Block tags
//! alone on their line leave no trace (`trim_blocks`, `lstrip_blocks`), and the file's last
//! newline is kept. A render has fuel (a bound on its work) and an output limit (16 MiB,
//! [`MAX_OUTPUT`]): output is collected as it is written and the render stops when the next
//! write would pass the limit.

use std::collections::BTreeMap;

use berth_api::configtemplate::MAX_OUTPUT;
use berth_api::object::condition_true;
use minijinja::{Environment, Error, ErrorKind, Value as J, value::Serde};
use serde_json::{Value, json};

use super::sources::View;

/// The most work one render may do (minijinja's fuel): enough for many thousand objects,
/// and a bound on a template that loops for ever.
const FUEL: u64 = 50_000_000;

fn pod_view(p: &Value) -> Value {
    let mut env = serde_json::Map::new();
    let mut ports = Vec::new();
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        for e in c["env"].as_array().into_iter().flatten() {
            if let (Some(n), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                env.insert(n.to_string(), json!(v));
            }
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            ports.push(port.clone());
        }
    }
    let ready = condition_true(p, "Ready") && p["metadata"]["deletionTimestamp"].is_null();
    json!({
        "name": p["metadata"]["name"], "namespace": p["metadata"]["namespace"],
        "ip": p["status"]["podIP"], "node": p["spec"]["nodeName"], "phase": p["status"]["phase"],
        "ready": ready, "labels": p["metadata"]["labels"], "annotations": p["metadata"]["annotations"],
        "env": env, "ports": ports, "object": p,
    })
}

fn in_scope(o: &Value, namespaces: &[String]) -> bool {
    namespaces.is_empty()
        || o["metadata"]["namespace"]
            .as_str()
            .is_some_and(|ns| namespaces.iter().any(|n| n == ns))
}

/// The context of one render.
pub fn build(data: &View<'_>, namespaces: &[String], node: &str) -> Value {
    let of = |kind: &str| -> Vec<&Value> {
        data.objects
            .get(kind)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|o| kind == "nodes" || in_scope(o, namespaces))
            .collect()
    };
    let pods: Vec<Value> = of("pods").into_iter().map(pod_view).collect();
    let endpoints = of("endpoints");
    let services: Vec<Value> = of("services")
        .into_iter()
        .map(|s| {
            let (ns, name) = (&s["metadata"]["namespace"], &s["metadata"]["name"]);
            let ready: Vec<Value> = endpoints
                .iter()
                .filter(|e| e["metadata"]["namespace"] == *ns && e["metadata"]["name"] == *name)
                .flat_map(|e| e["subsets"].as_array().cloned().unwrap_or_default())
                .flat_map(|sub| {
                    sub["addresses"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |a| {
                            json!({"ip": a["ip"], "pod": a["targetRef"]["name"], "node": a["nodeName"], "ports": sub["ports"]})
                        })
                })
                .collect();
            json!({
                "name": name, "namespace": ns, "type": s["spec"]["type"], "clusterIP": s["spec"]["clusterIP"],
                "ports": s["spec"]["ports"], "labels": s["metadata"]["labels"], "selector": s["spec"]["selector"],
                "endpoints": ready, "object": s,
            })
        })
        .collect();
    let nodes: Vec<Value> = of("nodes")
        .into_iter()
        .map(|n| {
            let ip = berth_api::object::node_internal_ip(n);
            let ready = condition_true(n, "Ready");
            json!({"name": n["metadata"]["name"], "ip": ip, "ready": ready,
                "unschedulable": n["spec"]["unschedulable"] == true, "labels": n["metadata"]["labels"], "object": n})
        })
        .collect();
    let mut hosts: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in pods
        .iter()
        .filter(|p| p["ready"] == true && p["ip"].is_string())
    {
        let Some(vh) = p["env"]["VIRTUAL_HOST"].as_str() else {
            continue;
        };
        let port = p["env"]["VIRTUAL_PORT"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or_else(|| p["ports"][0]["containerPort"].as_u64())
            .unwrap_or(80);
        for h in vh.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let mut entry = p.clone();
            entry["port"] = json!(port);
            hosts.entry(h.to_lowercase()).or_default().push(entry);
        }
    }
    json!({
        "pods": pods, "services": services, "endpoints": endpoints, "nodes": nodes,
        "virtual_hosts": hosts, "kv": data.kv, "revision": data.revision, "node": node,
    })
}

/// The environment templates render in.
pub fn environment(kv: BTreeMap<String, String>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // As config files want them: the file's last newline kept, and block tags on lines of
    // their own leave no blank lines or indentation behind (Ansible's defaults).
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.add_filter("fromjson", |s: String| -> Result<J, Error> {
        serde_json::from_str::<Value>(&s)
            .map(|v| J::from(Serde(v)))
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}")))
    });
    env.add_function("kv_get", move |key: String, default: Option<String>| {
        kv.get(&key).cloned().or(default).unwrap_or_default()
    });
    env
}

/// Collects a render's output up to a limit, refusing the write that would pass it, so a
/// template that blows up never takes more memory than the limit.
struct Capped {
    out: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + b.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("the output limit is reached"));
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `source` over `ctx`, at most [`MAX_OUTPUT`] bytes of it; the error says where, or
/// that the output is too large.
pub fn render(env: &Environment<'static>, source: &str, ctx: &Value) -> Result<String, String> {
    render_limited(env, source, ctx, MAX_OUTPUT)
}

fn render_limited(
    env: &Environment<'static>,
    source: &str,
    ctx: &Value,
    limit: usize,
) -> Result<String, String> {
    let t = env.template_from_str(source).map_err(describe)?;
    let mut out = Capped {
        out: Vec::new(),
        limit,
        exceeded: false,
    };
    let rendered = t
        .render_captured_to(J::from(Serde(ctx)), &mut out)
        .map(drop);
    if out.exceeded {
        return Err(format!(
            "the output is larger than {limit} bytes ({} MiB), the limit",
            limit >> 20
        ));
    }
    rendered.map_err(describe)?;
    String::from_utf8(out.out).map_err(|e| format!("the output is not UTF-8: {e}"))
}

fn describe(e: Error) -> String {
    let mut msg = e
        .detail()
        .map(String::from)
        .unwrap_or_else(|| e.to_string());
    if let Some(line) = e.line() {
        msg = format!("line {line}: {msg}");
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Data;

    fn data() -> Data {
        let mut d = Data::default();
        let pod = |name: &str, ip: &str, ready: bool, vh: &str| {
            json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "env": [{"name": "VIRTUAL_HOST", "value": vh}], "ports": [{"containerPort": 8080}]}]},
                "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
        };
        let pods = d.objects.entry("pods").or_default();
        pods.insert(
            "default/a".into(),
            pod("a", "10.0.0.1", true, "web.test, Www.Test"),
        );
        pods.insert("default/b".into(), pod("b", "10.0.0.2", true, "web.test"));
        pods.insert("default/c".into(), pod("c", "10.0.0.3", false, "web.test"));
        d.kv.insert("/cfg/level".into(), "debug".into());
        d
    }

    #[test]
    fn virtual_hosts_group_ready_pods() {
        let ctx = build(&data().view(), &[], "n1");
        let env = environment(data().kv);
        let out = render(
            &env,
            "{% for host, pods in virtual_hosts|items %}{{ host }}:{% for p in pods %} {{ p.ip }}:{{ p.port }}{% endfor %};{% endfor %} {{ kv_get('/cfg/level') }} {{ kv_get('/nope', 'x') }} {{ ('{\"a\": 1}'|fromjson).a }}",
            &ctx,
        )
        .unwrap();
        assert_eq!(
            out,
            "web.test: 10.0.0.1:8080 10.0.0.2:8080;www.test: 10.0.0.1:8080; debug x 1"
        );
    }

    #[test]
    fn errors_say_where_and_loops_end() {
        let env = environment(BTreeMap::new());
        let e = render(&env, "ok\n{{ 1 + }}", &json!({})).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = render(
            &env,
            "{% for i in range(100000) %}{% for j in range(100000) %}{% set x = j %}{% endfor %}{% endfor %}",
            &json!({}),
        )
        .unwrap_err();
        assert!(e.contains("fuel"), "{e}");
    }

    #[test]
    fn output_stops_at_the_limit() {
        let env = environment(BTreeMap::new());
        let blow_up = "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}";
        let e = render_limited(&env, blow_up, &json!({}), 1 << 20).unwrap_err();
        assert_eq!(
            e,
            "the output is larger than 1048576 bytes (1 MiB), the limit"
        );
        // Right at the limit is fine.
        let out = render_limited(&env, "{{ 'y' * 1024 }}", &json!({}), 1024).unwrap();
        assert_eq!(out.len(), 1024);
        // The default limit.
        let e = render(&env, blow_up, &json!({})).unwrap_err();
        assert!(e.contains("16 MiB"), "{e}");
    }
}
