//! Kubernetes-shaped API types, the kind registry, selectors, quantities, CIDRs and validation.
//!
//! Architecture invariant: this crate does no IO and depends on no async runtime. Everything in
//! it is a pure function of its inputs, so the API server, the CLI and future controllers share
//! one definition of what a valid object is.

pub mod base64;
pub mod cidr;
pub mod configtemplate;
pub mod duration;
pub mod kinds;
pub mod manifest;
pub mod names;
pub mod object;
pub mod podsecurity;
pub mod protobuf;
pub mod quantity;
pub mod rbac;
pub mod selector;
pub mod status;
pub mod table;
pub mod timefmt;
pub mod url;
pub mod validate;
pub mod wellknown;

pub use kinds::{KINDS, ResourceKind};
pub use object::Object;
pub use status::{FieldError, Status};
