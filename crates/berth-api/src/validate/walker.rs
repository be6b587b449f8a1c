//! The walker every validation uses: `V` collects field errors while it reads an object's
//! JSON, with one helper per shape a field can take (object, array, string, bool, integer in
//! a range, port, one of a set, a map of strings, a quantity), each naming the field when it
//! is wrong.

use serde_json::{Map, Value};

use super::MAX_INT32;
use crate::quantity::Quantity;
use crate::status::FieldError;

/// Collects field errors while walking an object.
#[derive(Default)]
pub(super) struct V {
    pub(super) errs: Vec<FieldError>,
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

impl V {
    pub(super) fn push(&mut self, e: FieldError) {
        self.errs.push(e);
    }

    pub(super) fn obj<'a>(
        &mut self,
        path: &str,
        v: Option<&'a Value>,
    ) -> Option<&'a Map<String, Value>> {
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

    pub(super) fn arr<'a>(&mut self, path: &str, v: Option<&'a Value>) -> &'a [Value] {
        match v {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.push(FieldError::invalid(path, describe(other), "must be a list"));
                &[]
            }
        }
    }

    pub(super) fn str<'a>(&mut self, path: &str, v: Option<&'a Value>) -> Option<&'a str> {
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

    pub(super) fn req_str<'a>(&mut self, path: &str, v: Option<&'a Value>) -> Option<&'a str> {
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

    pub(super) fn int(&mut self, path: &str, v: Option<&Value>) -> Option<i64> {
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

    pub(super) fn bool(&mut self, path: &str, v: Option<&Value>) {
        if let Some(other) = v.filter(|v| !v.is_boolean() && !v.is_null()) {
            self.push(FieldError::invalid(
                path,
                describe(other),
                "must be a boolean",
            ));
        }
    }

    /// An int32 that is 0 or more.
    pub(super) fn non_negative(&mut self, path: &str, v: Option<&Value>) -> Option<i64> {
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
    pub(super) fn in_range(
        &mut self,
        path: &str,
        v: Option<&Value>,
        min: i64,
        max: i64,
    ) -> Option<i64> {
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

    pub(super) fn one_of(
        &mut self,
        path: &str,
        v: Option<&Value>,
        allowed: &[&str],
    ) -> Option<String> {
        let s = self.str(path, v)?;
        if !allowed.contains(&s) {
            self.push(FieldError::not_supported(path, s, allowed));
        }
        Some(s.to_string())
    }

    pub(super) fn port(&mut self, path: &str, v: Option<&Value>, required: bool) -> Option<i64> {
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

    pub(super) fn string_map(
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

    pub(super) fn quantity(&mut self, path: &str, v: &Value) -> Option<Quantity> {
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

impl FieldError {
    pub(super) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}
