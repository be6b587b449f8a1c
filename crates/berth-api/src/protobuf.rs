//! Request bodies in Kubernetes' protobuf encoding, for the kinds clients send that way:
//! kubectl 1.32's `create rolebinding` and `create clusterrolebinding` post
//! `application/vnd.kubernetes.protobuf`, so berth reads the RBAC kinds in it (and answers in
//! JSON, which those clients accept). Everything else is JSON or YAML.
//!
//! The encoding: the magic `k8s\0`, then a `runtime.Unknown` message holding the `TypeMeta`
//! (apiVersion, kind) and the object's own message as bytes. Messages are decoded by the
//! field numbers of Kubernetes' `generated.proto` into the same JSON a client would have sent;
//! fields berth does not know are skipped, as protobuf readers do.
//!
//! Invariant: any input gives a value or an error naming what is wrong, never a panic
//! (nesting is bounded, every length is checked against what is left).

use serde_json::{Map, Value};

/// The content type of Kubernetes' protobuf encoding.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// How deep messages may nest (ObjectMeta in a binding is 2; a label selector in a role 3).
const MAX_DEPTH: usize = 8;

/// How a field is read.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Strings,
    Int,
    Bool,
    /// `map<string, string>`: repeated entries of key = 1, value = 2.
    StringMap,
    Message(&'static [Field]),
    Messages(&'static [Field]),
}

type Field = (u32, &'static str, Kind);

const TYPE_META: &[Field] = &[(1, "apiVersion", Kind::Str), (2, "kind", Kind::Str)];

const UNKNOWN: &[Field] = &[
    (1, "typeMeta", Kind::Message(TYPE_META)),
    // `raw` is bytes: read apart, see `decode`.
    (3, "contentEncoding", Kind::Str),
    (4, "contentType", Kind::Str),
];

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "generation", Kind::Int),
    (11, "labels", Kind::StringMap),
    (12, "annotations", Kind::StringMap),
    (13, "ownerReferences", Kind::Messages(OWNER_REFERENCE)),
    (14, "finalizers", Kind::Strings),
];

const SUBJECT: &[Field] = &[
    (1, "kind", Kind::Str),
    (2, "apiGroup", Kind::Str),
    (3, "name", Kind::Str),
    (4, "namespace", Kind::Str),
];

const ROLE_REF: &[Field] = &[
    (1, "apiGroup", Kind::Str),
    (2, "kind", Kind::Str),
    (3, "name", Kind::Str),
];

const BINDING: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (2, "subjects", Kind::Messages(SUBJECT)),
    (3, "roleRef", Kind::Message(ROLE_REF)),
];

const POLICY_RULE: &[Field] = &[
    (1, "verbs", Kind::Strings),
    (2, "apiGroups", Kind::Strings),
    (3, "resources", Kind::Strings),
    (4, "resourceNames", Kind::Strings),
    (5, "nonResourceURLs", Kind::Strings),
];

const SELECTOR_REQUIREMENT: &[Field] = &[
    (1, "key", Kind::Str),
    (2, "operator", Kind::Str),
    (3, "values", Kind::Strings),
];

const LABEL_SELECTOR: &[Field] = &[
    (1, "matchLabels", Kind::StringMap),
    (2, "matchExpressions", Kind::Messages(SELECTOR_REQUIREMENT)),
];

const AGGREGATION_RULE: &[Field] = &[(1, "clusterRoleSelectors", Kind::Messages(LABEL_SELECTOR))];

const ROLE: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (2, "rules", Kind::Messages(POLICY_RULE)),
    (3, "aggregationRule", Kind::Message(AGGREGATION_RULE)),
];

/// The message of each kind berth reads in protobuf.
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => Some(BINDING),
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => Some(ROLE),
        _ => None,
    }
}

/// Reads one body in Kubernetes' protobuf encoding into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the protobuf envelope's magic (k8s\\0)")?;
    let mut raw: Option<&[u8]> = None;
    let envelope = message(rest, UNKNOWN, 0, &mut |n, bytes| {
        if n == 2 {
            raw = Some(bytes);
        }
    })?;
    let api_version = envelope["typeMeta"]["apiVersion"].as_str().unwrap_or("");
    let kind = envelope["typeMeta"]["kind"].as_str().unwrap_or("");
    if envelope["contentEncoding"]
        .as_str()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(
            "compressed protobuf bodies are not read; send it uncompressed or as JSON".into(),
        );
    }
    let fields = schema(api_version, kind).ok_or_else(|| {
        format!("berth reads protobuf bodies of RBAC objects only, not {api_version:?} {kind:?}; send it as JSON")
    })?;
    let mut obj = message(raw.unwrap_or_default(), fields, 0, &mut |_, _| {})?;
    obj["apiVersion"] = Value::from(api_version);
    obj["kind"] = Value::from(kind);
    Ok(obj)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("a number runs past the end")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number is longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "a length is too large")?;
        if n > self.buf.len() {
            return Err(format!(
                "a field of {n} bytes runs past the end ({} left)",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

fn text(bytes: &[u8], name: &str) -> Result<Value, String> {
    std::str::from_utf8(bytes)
        .map(Value::from)
        .map_err(|_| format!("{name} is not UTF-8"))
}

/// Decodes one message by `fields`; `bytes_field` sees every length-delimited field not in
/// `fields` (for the envelope's raw bytes).
fn message<'a>(
    buf: &'a [u8],
    fields: &[Field],
    depth: usize,
    bytes_field: &mut dyn FnMut(u32, &'a [u8]),
) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("messages nest too deep".into());
    }
    let mut r = Reader { buf };
    let mut out = Map::new();
    while !r.buf.is_empty() {
        let key = r.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "a field number is too large")?;
        let wire = key & 7;
        let field = fields.iter().find(|(n, _, _)| *n == number);
        match wire {
            0 => {
                let v = r.varint()?;
                match field {
                    Some((_, name, Kind::Int)) => {
                        out.insert((*name).into(), Value::from(v as i64));
                    }
                    Some((_, name, Kind::Bool)) => {
                        out.insert((*name).into(), Value::from(v != 0));
                    }
                    Some((_, name, _)) => return Err(format!("{name} is not a number")),
                    None => {}
                }
            }
            1 => {
                r.take(8)?;
            }
            5 => {
                r.take(4)?;
            }
            2 => {
                let len = r.varint()?;
                let bytes = r.take(len)?;
                let Some((_, name, kind)) = field else {
                    bytes_field(number, bytes);
                    continue;
                };
                let name = *name;
                match *kind {
                    Kind::Str => {
                        out.insert(name.into(), text(bytes, name)?);
                    }
                    Kind::Strings => {
                        let list = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                        if let Value::Array(a) = list {
                            a.push(text(bytes, name)?);
                        }
                    }
                    Kind::StringMap => {
                        let entry = message(
                            bytes,
                            &[(1, "key", Kind::Str), (2, "value", Kind::Str)],
                            depth + 1,
                            &mut |_, _| {},
                        )?;
                        let map = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                        if let (Value::Object(m), Some(k)) = (map, entry["key"].as_str()) {
                            m.insert(
                                k.into(),
                                entry.get("value").cloned().unwrap_or(Value::from("")),
                            );
                        }
                    }
                    Kind::Message(sub) => {
                        out.insert(name.into(), message(bytes, sub, depth + 1, &mut |_, _| {})?);
                    }
                    Kind::Messages(sub) => {
                        let item = message(bytes, sub, depth + 1, &mut |_, _| {})?;
                        let list = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                        if let Value::Array(a) = list {
                            a.push(item);
                        }
                    }
                    Kind::Int | Kind::Bool => return Err(format!("{name} is not a number")),
                }
            }
            other => {
                return Err(format!(
                    "field {number} has wire type {other}, which Kubernetes' messages do not use"
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(n: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(n) << 3 | 2, &mut out);
        varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        let mut out = MAGIC.to_vec();
        out.extend(field(1, &type_meta));
        out.extend(field(2, raw));
        out.extend(field(4, CONTENT_TYPE.as_bytes()));
        out
    }

    /// What kubectl 1.32's `create rolebinding web --clusterrole=view --user=alice -n shop`
    /// sends, built by field number.
    fn rolebinding() -> Vec<u8> {
        let label = [field(1, b"team"), field(2, b"web")].concat();
        let meta = [field(1, b"web"), field(3, b"shop"), field(11, &label)].concat();
        let subject = [
            field(1, b"User"),
            field(2, b"rbac.authorization.k8s.io"),
            field(3, b"alice"),
        ]
        .concat();
        let role_ref = [
            field(1, b"rbac.authorization.k8s.io"),
            field(2, b"ClusterRole"),
            field(3, b"view"),
        ]
        .concat();
        // A timestamp berth does not read (creationTimestamp, field 8) and a fixed64 are
        // skipped.
        let mut raw = [
            field(1, &[meta, field(8, b"\x08\x01")].concat()),
            field(2, &subject),
            field(3, &role_ref),
        ]
        .concat();
        raw.extend([9u8 << 3 | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        envelope("rbac.authorization.k8s.io/v1", "RoleBinding", &raw)
    }

    #[test]
    fn a_rolebinding_reads_as_the_json_a_client_would_send() {
        assert_eq!(
            decode(&rolebinding()).unwrap(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "web"}},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}})
        );
        let rule = [
            field(1, b"get"),
            field(1, b"list"),
            field(2, b""),
            field(3, b"pods"),
        ]
        .concat();
        let role = envelope(
            "rbac.authorization.k8s.io/v1",
            "Role",
            &[field(1, &field(1, b"r")), field(2, &rule)].concat(),
        );
        assert_eq!(
            decode(&role).unwrap()["rules"],
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        );
    }

    #[test]
    fn other_kinds_and_broken_bodies_are_refused_by_name() {
        let cm = envelope("v1", "ConfigMap", &[]);
        assert!(
            decode(&cm)
                .unwrap_err()
                .contains("RBAC objects only, not \"v1\" \"ConfigMap\"")
        );
        assert!(decode(b"{\"kind\": \"x\"}").unwrap_err().contains("magic"));
        let body = rolebinding();
        for cut in 0..body.len() {
            // Every truncation is an error or a smaller object, never a panic.
            let _ = decode(&body[..cut]);
        }
        let bad_name = envelope(
            "rbac.authorization.k8s.io/v1",
            "Role",
            &field(1, &field(1, b"\xff\xfe")),
        );
        assert_eq!(decode(&bad_name).unwrap_err(), "name is not UTF-8");
        let group = [MAGIC, &[1u8 << 3 | 3][..]].concat();
        assert!(decode(&group).unwrap_err().contains("wire type 3"));
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut body = MAGIC.to_vec();
            body.extend(bytes);
            let _ = decode(&body);
        }
    }
}
