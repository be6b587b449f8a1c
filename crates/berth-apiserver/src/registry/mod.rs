//! The registry (see `generic.rs`, which holds all of it until it is split by kind).

mod generic;

pub use generic::{
    DeleteOptions, ListOptions, ListResult, Propagation, Registry, decode, list_body,
};
