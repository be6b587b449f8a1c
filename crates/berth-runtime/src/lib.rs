//! berth's container runtime: OCI runtime specs with Docker's defaults, overlay roots from
//! image layers, and running containers through youki's `libcontainer`.
//!
//! Architecture invariant: `libcontainer`'s create/start run only in a single-threaded
//! process (`berth`'s hidden shim role); everything here that forks does so from there.

pub mod exec;
pub mod host;
pub mod logs;
pub mod net;
pub mod pod;
pub mod pty;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod stats;
pub mod user;
pub mod volumes;

pub use spec::ContainerSpec;
