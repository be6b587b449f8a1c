//! Configuration objects: ConfigMaps and Secrets (keys, base64 data, the 1 MiB limit) and
//! ConfigTemplates (through their own parser).

use serde_json::Value;

use super::walker::V;
use crate::names;
use crate::object::Object;
use crate::status::FieldError;

fn check_base64(s: &str) -> Option<String> {
    crate::base64::decode(s)
        .is_none()
        .then(|| "illegal base64 data".to_string())
}

pub(super) fn validate_config_map(v: &mut V, obj: &Object) {
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

pub(super) fn validate_secret(v: &mut V, obj: &Object) {
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

pub(super) fn validate_config_template(v: &mut V, obj: &Object) {
    if let Err(errs) = crate::configtemplate::parse(obj.get("spec"), true) {
        for e in errs {
            v.push(e);
        }
    }
}
