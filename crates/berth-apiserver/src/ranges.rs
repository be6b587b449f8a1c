//! What a Service holds of the cluster's shared ranges: its cluster IP and its node ports.
//!
//! Each held value is a key of its own (`/registry/ranges/serviceips/IP`,
//! `/registry/ranges/servicenodeports/PORT`), created in the same transaction as the Service's
//! write only if no one holds it, and deleted in the transaction that lets it go. So two
//! Services never hold the same address or port, and nothing leaks when a write fails.

use berth_api::object::Object;
use berth_store::{Compare, CompareOp, Op, Txn};
use serde_json::{Value, json};

/// Where an allocated cluster IP is recorded.
pub(crate) const SERVICE_IPS: &str = "/registry/ranges/serviceips/";
/// Where an allocated node port is recorded.
pub(crate) const NODE_PORTS: &str = "/registry/ranges/servicenodeports/";
/// Kubernetes' default node port range.
pub(crate) const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

fn spec(obj: &Object) -> Option<&serde_json::Map<String, Value>> {
    obj.get("spec").and_then(Value::as_object)
}

/// Whether the Service's type exposes node ports.
pub(crate) fn wants_node_ports(obj: &Object) -> bool {
    matches!(
        spec(obj)
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

fn ports_mut(obj: &mut Object) -> Option<&mut Vec<Value>> {
    obj.0
        .get_mut("spec")?
        .as_object_mut()?
        .get_mut("ports")?
        .as_array_mut()
}

/// The node ports a Service holds.
pub(crate) fn node_ports(obj: &Object) -> Vec<u16> {
    spec(obj)
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.get("nodePort")?.as_u64()?).ok())
        .filter(|p| *p != 0)
        .collect()
}

/// The range keys a Service holds (cluster IP, node ports).
pub(crate) fn held(obj: &Object) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if let Some(ip) = spec(obj)
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
    {
        keys.push(format!("{SERVICE_IPS}{ip}").into_bytes());
    }
    let mut ports = node_ports(obj);
    ports.sort_unstable();
    ports.dedup();
    keys.extend(
        ports
            .into_iter()
            .map(|p| format!("{NODE_PORTS}{p}").into_bytes()),
    );
    keys
}

/// Adds to `txn` what going from `old` to `new` takes: each newly held key created (only if
/// free), each released one deleted.
pub(crate) fn transition(mut txn: Txn, old: Option<&Object>, new: Option<&Object>) -> Txn {
    let before = old.map(held).unwrap_or_default();
    let after = new.map(held).unwrap_or_default();
    let holder = new
        .or(old)
        .map(|o| format!("{}/{}", o.namespace().unwrap_or(""), o.name()))
        .unwrap_or_default();
    for k in after.iter().filter(|k| !before.contains(k)) {
        txn = txn
            .when(Compare::mod_revision(k.clone(), CompareOp::Equal, 0))
            .then(Op::Put {
                key: k.clone(),
                value: holder.clone().into_bytes(),
                lease: 0,
            });
    }
    for k in before.into_iter().filter(|k| !after.contains(k)) {
        txn = txn.then(Op::Delete { key: k });
    }
    txn
}

/// On an update, what the server allocated and the new object leaves out is kept: the cluster
/// IP (and its families), and each port's node port (matched by port and protocol) while the
/// type still has node ports. Going to a type without them drops the ones carried over.
pub(crate) fn carry_over(old: &Object, new: &mut Object) {
    let Some(old_spec) = spec(old) else { return };
    let keep_ports = wants_node_ports(new);
    let Some(Value::Object(s)) = new.0.get_mut("spec") else {
        return;
    };
    for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = s.get(f).is_none_or(|v| v == "" || v.is_null());
        if missing && let Some(v) = old_spec.get(f) {
            s.insert(f.into(), v.clone());
        }
    }
    let old_ports: Vec<(u64, String, u64)> = old_spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("port")?.as_u64()?,
                p.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string(),
                p.get("nodePort")?.as_u64()?,
            ))
        })
        .collect();
    let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
        let port = p.get("port").and_then(Value::as_u64);
        let proto = p
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string();
        let old = old_ports
            .iter()
            .find(|(op, opr, _)| Some(*op) == port && *opr == proto)
            .map(|(_, _, np)| *np);
        let given = p
            .get("nodePort")
            .and_then(Value::as_u64)
            .filter(|n| *n != 0);
        match (keep_ports, given, old) {
            (true, None, Some(np)) => {
                p.insert("nodePort".into(), json!(np));
            }
            // Carried over by a merge from the old type; not asked for.
            (false, Some(g), Some(np)) if g == np => {
                p.remove("nodePort");
            }
            _ => {}
        }
    }
}

/// Gives each port of a NodePort or LoadBalancer Service that has none a random node port;
/// returns the indexes of the ports given one (the rest were asked for).
pub(crate) fn fill_node_ports(obj: &mut Object) -> Vec<usize> {
    if !wants_node_ports(obj) {
        return Vec::new();
    }
    let mut taken = node_ports(obj);
    let mut filled = Vec::new();
    let Some(ports) = ports_mut(obj) else {
        return filled;
    };
    for (i, p) in ports.iter_mut().enumerate() {
        let Some(p) = p.as_object_mut() else { continue };
        if p.get("nodePort")
            .and_then(Value::as_u64)
            .is_some_and(|n| n != 0)
        {
            continue;
        }
        let np = loop {
            let np = random_node_port();
            if !taken.contains(&np) {
                break np;
            }
        };
        taken.push(np);
        p.insert("nodePort".into(), json!(np));
        filled.push(i);
    }
    filled
}

/// Gives the ports at `indexes` new random node ports (after a race for the old ones).
pub(crate) fn reroll(obj: &mut Object, indexes: &[usize]) {
    if let Some(ports) = ports_mut(obj) {
        for i in indexes {
            if let Some(p) = ports.get_mut(*i).and_then(Value::as_object_mut) {
                p.remove("nodePort");
            }
        }
    }
    fill_node_ports(obj);
}

fn random_node_port() -> u16 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let size = NODE_PORT_RANGE.end() - NODE_PORT_RANGE.start() + 1;
    NODE_PORT_RANGE.start() + u16::from_le_bytes(b) % size
}

/// The index of the port asking for `port` as its node port.
pub(crate) fn port_index(obj: &Object, port: u16) -> Option<usize> {
    spec(obj)?
        .get("ports")?
        .as_array()?
        .iter()
        .position(|p| p.get("nodePort").and_then(Value::as_u64) == Some(u64::from(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: Value) -> Object {
        Object::from_value(v).unwrap()
    }

    #[test]
    fn node_ports_are_filled_kept_and_dropped() {
        let mut s = svc(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "d"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP", "nodePort": 30001}]}}),
        );
        assert_eq!(fill_node_ports(&mut s), vec![0]);
        let np = node_ports(&s);
        assert_eq!(np.len(), 2);
        assert!(NODE_PORT_RANGE.contains(&np[0]) && np[1] == 30001);
        assert_eq!(held(&s).len(), 3);
        // An update that leaves them out keeps them (and the cluster IP).
        let mut u = svc(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "d"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}}),
        );
        carry_over(&s, &mut u);
        assert_eq!(held(&u), held(&s));
        // Back to ClusterIP: the merged-in node ports go.
        let mut c = s.clone();
        c.0["spec"]["type"] = json!("ClusterIP");
        carry_over(&s, &mut c);
        assert!(node_ports(&c).is_empty());
        let txn = transition(Txn::default(), Some(&s), Some(&c));
        assert_eq!(txn.success.len(), 2, "two node ports released");
        reroll(&mut s, &[0]);
        assert_eq!(node_ports(&s).len(), 2);
        assert_eq!(port_index(&s, 30001), Some(1));
    }
}
