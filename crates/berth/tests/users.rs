//! `berth user create|list|revoke` against `berth server`, with kubectl as the user's client:
//! a certificate user and a token user get exactly the role they were given in their
//! namespace, list shows both, revocation refuses a token and a certificate from the next
//! request on, an expired token is refused, and only who may approve certificates and write
//! Secrets in kube-system can make users.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{BerthProcess, berth, eventually, kubeconfig_for, kubectl, stderr, stdout};

struct Cluster {
    dir: tempfile::TempDir,
    _server: BerthProcess,
    home: PathBuf,
    admin: PathBuf,
    nobody: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("tokens.csv"),
            "admin-token-0123456789,admin,1,system:masters\nnobody-token-0123456789,nobody,2\n",
        )
        .unwrap();
        let server = BerthProcess::start("server", &data);
        let admin = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
        let nobody = kubeconfig_for(dir.path(), &server, "nobody", "nobody-token-0123456789");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        Cluster {
            dir,
            _server: server,
            home,
            admin,
            nobody,
        }
    }

    fn kubectl(&self, kc: &Path, args: &[&str]) -> Output {
        kubectl(&self.home, kc, args)
    }

    /// `berth user ...` as the admin; insists it works and returns its output.
    fn user(&self, args: &[&str]) -> String {
        let mut all = vec!["user"];
        all.extend_from_slice(args);
        let o = berth(&self.admin, &all);
        assert!(o.status.success(), "{all:?}: {}", text(&o));
        stdout(&o)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

fn status_of(o: &Output) -> &'static str {
    let e = stderr(o);
    if o.status.success() {
        "ok"
    } else if e.contains("Unauthorized") || e.contains("provide credentials") {
        "401"
    } else if e.contains("forbidden") {
        "403"
    } else {
        "other"
    }
}

/// Waits until `args` as `kc` answers `want` ("ok", "401", "403").
fn settles(c: &Cluster, kc: &Path, args: &[&str], want: &str) -> Output {
    eventually(10, &format!("{args:?} to answer {want}"), || {
        let o = c.kubectl(kc, args);
        (status_of(&o) == want).then_some(o)
    })
}

#[test]
fn certificate_and_token_users_get_their_role_and_lose_it_on_revoke() {
    let c = Cluster::start();
    let admin = |args: &[&str]| {
        let o = c.kubectl(&c.admin, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    admin(&["create", "namespace", "shop"]);
    admin(&["create", "namespace", "other"]);
    admin(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "menu",
        "--from-literal=a=b",
    ]);

    // A certificate user, view in shop.
    let alice = c.file("alice.kubeconfig");
    let said = c.user(&[
        "create",
        "alice",
        "--group",
        "cooks",
        "--role",
        "view",
        "-n",
        "shop",
        "--ttl",
        "1h",
        "-o",
        alice.to_str().unwrap(),
    ]);
    assert!(
        said.contains("user \"alice\" created: a client certificate"),
        "{said}"
    );
    assert!(
        said.contains("bound role \"view\" in namespace \"shop\""),
        "{said}"
    );
    let mode = std::fs::metadata(&alice).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the kubeconfig holds a private key");
    let written = std::fs::read_to_string(&alice).unwrap();
    assert!(written.contains("client-certificate-data") && written.contains("client-key-data"));
    assert!(!written.contains("token"), "{written}");

    // kubectl reads the kubeconfig: who it is, what it may do.
    let who = settles(&c, &alice, &["auth", "whoami", "-o", "json"], "ok");
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("cooks"), "{groups}");
    let o = settles(&c, &alice, &["get", "pods", "-n", "shop"], "ok");
    assert!(status_of(&o) == "ok");
    let o = c.kubectl(&alice, &["get", "configmaps"]);
    assert!(
        text(&o).contains("menu"),
        "the kubeconfig's namespace is shop: {}",
        text(&o)
    );
    let o = c.kubectl(&alice, &["-n", "shop", "delete", "configmap", "menu"]);
    assert_eq!(status_of(&o), "403", "{}", text(&o));
    let o = c.kubectl(&alice, &["get", "pods", "-n", "other"]);
    assert_eq!(status_of(&o), "403", "{}", text(&o));
    // berth's own client reads it too.
    let o = berth(&alice, &["get", "configmaps", "-n", "shop"]);
    assert!(
        o.status.success() && stdout(&o).contains("menu"),
        "{}",
        text(&o)
    );

    // A token user, edit in shop.
    let bob = c.file("bob.kubeconfig");
    let said = c.user(&[
        "create",
        "bob",
        "--token",
        "--group",
        "devs",
        "--group",
        "ops",
        "--role",
        "edit",
        "-n",
        "shop",
        "-o",
        bob.to_str().unwrap(),
    ]);
    assert!(said.contains("user \"bob\" created: a token"), "{said}");
    settles(
        &c,
        &bob,
        &[
            "-n",
            "shop",
            "create",
            "configmap",
            "bobs",
            "--from-literal=x=y",
        ],
        "ok",
    );
    let o = c.kubectl(&bob, &["-n", "other", "get", "configmaps"]);
    assert_eq!(status_of(&o), "403", "{}", text(&o));
    // The Secret holds no token: only its hash.
    let token = std::fs::read_to_string(&bob)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("token: ")
                .map(|t| t.trim().to_string())
        })
        .unwrap();
    let secret_half = token.split('.').nth(1).unwrap();
    let secrets = c.kubectl(
        &c.admin,
        &["-n", "kube-system", "get", "secrets", "-o", "json"],
    );
    let secrets = stdout(&secrets);
    assert!(secrets.contains("berth.dev/user-token"), "{secrets}");
    assert!(!secrets.contains(secret_half));
    assert!(!secrets.contains(&berth_api::base64::encode(secret_half.as_bytes())));

    // list: both, with their bindings.
    let listed = c.user(&["list"]);
    let line = |user: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{user} ")))
            .unwrap_or_else(|| panic!("{user} in {listed}"))
            .to_string()
    };
    let a = line("alice");
    assert!(
        a.contains("certificate") && a.contains("cooks") && a.contains("view@shop"),
        "{a}"
    );
    let b = line("bob");
    assert!(
        b.contains("token") && b.contains("devs,ops") && b.contains("edit@shop"),
        "{b}"
    );
    let json: serde_json::Value = serde_json::from_str(&c.user(&["list", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");

    // Revocation: from the next request on.
    let said = c.user(&["revoke", "bob"]);
    assert!(said.contains("1 token(s)"), "{said}");
    let o = c.kubectl(&bob, &["-n", "shop", "get", "configmaps"]);
    assert_eq!(status_of(&o), "401", "{}", text(&o));
    let said = c.user(&["revoke", "alice"]);
    assert!(
        said.contains("1 certificate(s)") && said.contains("view@shop"),
        "{said}"
    );
    let o = c.kubectl(&alice, &["-n", "shop", "get", "configmaps"]);
    assert_eq!(status_of(&o), "401", "{}", text(&o));
    let listed = c.user(&["list"]);
    assert!(
        !listed.contains("alice") && !listed.contains("bob"),
        "{listed}"
    );
    let o = c.kubectl(
        &c.admin,
        &["-n", "shop", "get", "rolebindings", "-o", "name"],
    );
    assert!(!stdout(&o).contains("user-alice"), "{}", text(&o));
    // Nothing left to revoke.
    let o = berth(&c.admin, &["user", "revoke", "alice"]);
    assert!(
        !o.status.success() && stderr(&o).contains("no user"),
        "{}",
        text(&o)
    );

    // A certificate names one group (the signer keeps one O); a token any number.
    let o = berth(
        &c.admin,
        &["user", "create", "carol", "--group", "a", "--group", "b"],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("at most one group"),
        "{}",
        text(&o)
    );

    // A cluster-wide role needs saying so.
    let o = berth(&c.admin, &["user", "create", "carol", "--role", "edit"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--all-namespaces"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_expired_token_is_refused_and_only_admins_make_users() {
    let c = Cluster::start();
    let dave = c.file("dave.kubeconfig");
    c.user(&[
        "create",
        "dave",
        "--token",
        "--role",
        "view",
        "-n",
        "default",
        "--ttl",
        "2s",
        "-o",
        dave.to_str().unwrap(),
    ]);
    // Valid at first (unless this machine is very slow), refused once expired.
    let first = c.kubectl(&dave, &["get", "pods"]);
    assert!(
        matches!(status_of(&first), "ok" | "401"),
        "{}",
        text(&first)
    );
    settles(&c, &dave, &["get", "pods"], "401");
    let listed = c.user(&["list"]);
    assert!(listed.contains("(expired)"), "{listed}");

    // A user without RBAC on CSRs and kube-system Secrets can make nobody.
    let out = c.file("eve.kubeconfig");
    for extra in [&[][..], &["--token"][..]] {
        let mut args = vec!["user", "create", "eve", "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = berth(&c.nobody, &args);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(stderr(&o).contains("forbidden"), "{}", text(&o));
        assert!(!out.exists());
    }
}
