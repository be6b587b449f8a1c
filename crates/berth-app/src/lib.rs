//! Wiring: the roles of the one `berth` binary (`up`, `server`, the CLI verbs), reused by the
//! integration tests.

pub mod cli;
pub mod confgen;
pub mod run;
pub mod server;

pub use server::{RunningServer, ServerOptions, start};
