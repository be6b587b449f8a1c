//! Shared set-up of the in-process tests: a control plane on a loopback port of its own, with
//! a data directory of its own, and clients for three users.
#![allow(dead_code)]

use std::time::Duration;

use berth_app::{RunningServer, ServerOptions};
use berth_client::Client;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub admin: Client,
    pub alice: Client,
    pub bob: Client,
    pub anonymous: Client,
}

pub const ALICE_TOKEN: &str = "alice-token-0123456789";
pub const BOB_TOKEN: &str = "bob-token-0123456789";
pub const CAROL_TOKEN: &str = "carol-token-0123456789";

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerOptions)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokens.csv"),
            // alice and bob are cluster admins too (the tests that need them tell writers
            // apart); carol holds only what RBAC tests bind to her.
            format!(
                "admin-token-0123456789,admin,1,system:masters\n{ALICE_TOKEN},alice,2,system:masters\n{BOB_TOKEN},bob,3,system:masters\n{CAROL_TOKEN},carol,4\n"
            ),
        )
        .unwrap();
        let mut opts = ServerOptions::new(dir.path());
        opts.listen = "127.0.0.1:0".parse().unwrap();
        opts.bookmark_interval = Duration::from_millis(200);
        // These tests check the API server's own behaviour: no scheduler or workload
        // controller touches their objects.
        opts.controllers = false;
        tweak(&mut opts);
        let server = berth_app::start(opts).await.unwrap();
        let url = server.url.clone();
        let ca = server.ca_pem.clone();
        TestServer {
            admin: Client::new(&url, &server.token, &ca),
            alice: Client::new(&url, ALICE_TOKEN, &ca),
            bob: Client::new(&url, BOB_TOKEN, &ca),
            anonymous: Client::new(&url, "", &ca),
            server: Some(server),
            dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
