//! berth's container runtime: OCI runtime specs with Docker's defaults, overlay roots from
//! image layers, and running containers through youki's `libcontainer`.
//!
//! Architecture invariant: `libcontainer`'s create/start run only in a single-threaded
//! process (`berth`'s hidden shim role); everything here that forks does so from there.

pub mod net;
pub mod netlink;
pub mod rootfs;
pub mod run;
pub mod spec;

pub use spec::ContainerSpec;
