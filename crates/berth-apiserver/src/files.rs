//! Files the server keeps secrets in.

pub use berth_tls::write_private;
