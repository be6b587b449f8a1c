//! Kubernetes `Status` error bodies and the field errors validation produces.

use serde::{Deserialize, Serialize};

/// Why one field is wrong, in Kubernetes' `CauseType` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
}

impl FieldErrorKind {
    /// The `reason` a `StatusCause` carries.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }
}

/// One bad field: its path (`spec.containers[0].image`), what is wrong and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        FieldError {
            message: format!("{field}: Required value"),
            field,
            kind: FieldErrorKind::Required,
        }
    }

    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Self {
        let field = field.into();
        FieldError {
            message: format!("{field}: Invalid value: {value}: {why}"),
            field,
            kind: FieldErrorKind::Invalid,
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let field = field.into();
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            message: format!("{field}: Unsupported value: \"{value}\": supported values: {list}"),
            field,
            kind: FieldErrorKind::NotSupported,
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        let field = field.into();
        FieldError {
            message: format!("{field}: Duplicate value: {value}"),
            field,
            kind: FieldErrorKind::Duplicate,
        }
    }

    pub fn forbidden(field: impl Into<String>, why: &str) -> Self {
        let field = field.into();
        FieldError {
            message: format!("{field}: Forbidden: {why}"),
            field,
            kind: FieldErrorKind::Forbidden,
        }
    }
}

/// A cause inside `Status.details`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct StatusCause {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(
        default,
        rename = "retryAfterSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after_seconds: Option<u32>,
}

/// The body of every API error, as Kubernetes returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub kind: String,
    pub api_version: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    pub code: u16,
}

impl Status {
    /// A failure with a reason (`NotFound`, `Conflict`, ...) and an HTTP code.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: Default::default(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            details: None,
            code,
        }
    }

    /// `Success`, as a delete returns it for kinds that are gone at once.
    pub fn success(details: StatusDetails) -> Self {
        Status {
            status: "Success".into(),
            code: 200,
            details: Some(details),
            ..Status::failure(200, "", "")
        }
    }

    pub fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let details = self.details.get_or_insert_with(Default::default);
        details.group = group.into();
        details.kind = kind.into();
        details.name = name.into();
        self
    }

    /// 422 Invalid with one cause per bad field, worded as Kubernetes words it.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let list = errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let message = if errors.len() == 1 {
            format!("{kind} \"{name}\" is invalid: {list}")
        } else {
            format!("{kind} \"{name}\" is invalid: [{list}]")
        };
        let mut s = Status::failure(422, "Invalid", message).with_details(group, kind, name);
        if let Some(d) = s.details.as_mut() {
            d.causes = errors
                .iter()
                .map(|e| StatusCause {
                    reason: e.kind.reason().into(),
                    // As Kubernetes words causes: the field stands beside the message.
                    message: e
                        .message
                        .strip_prefix(&format!("{}: ", e.field))
                        .unwrap_or(&e.message)
                        .to_string(),
                    field: e.field.clone(),
                })
                .collect();
        }
        s
    }
}
