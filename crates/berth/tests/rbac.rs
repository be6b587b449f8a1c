//! Who may do what, through kubectl (a real client) against `berth server`: the default roles
//! mean what they mean in Kubernetes, refusals are worded as kube-apiserver words them,
//! `kubectl auth can-i` and `whoami` answer truthfully, no one grants what they do not
//! hold, ConfigTemplates that run commands or write outside a node's template directories take
//! a permission of their own, and the key/value tree is authorized by key prefix.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{BerthProcess, berth, eventually, kubeconfig_for, kubectl};
use serde_json::Value;

const USERS: &[(&str, &str)] = &[
    ("vera", "vera-token-0123456789"),
    ("eddie", "eddie-token-0123456789"),
    ("adam", "adam-token-0123456789"),
    ("nobody", "nobody-token-0123456789"),
];

struct Cluster {
    dir: tempfile::TempDir,
    server: BerthProcess,
    home: PathBuf,
    admin: PathBuf,
    users: Vec<(String, PathBuf)>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut tokens = String::from("admin-token-0123456789,admin,1,system:masters\n");
        for (i, (user, token)) in USERS.iter().enumerate() {
            tokens.push_str(&format!("{token},{user},{}\n", i + 2));
        }
        std::fs::write(data.join("tokens.csv"), tokens).unwrap();
        let server = BerthProcess::start("server", &data);
        let admin = kubeconfig_for(dir.path(), &server, "admin", "admin-token-0123456789");
        let users = USERS
            .iter()
            .map(|(u, t)| (u.to_string(), kubeconfig_for(dir.path(), &server, u, t)))
            .collect();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        Cluster {
            dir,
            server,
            home,
            admin,
            users,
        }
    }

    fn as_user(&self, user: &str, args: &[&str]) -> Output {
        kubectl(&self.home, self.kubeconfig(user), args)
    }

    /// Runs as the admin and insists it works.
    fn admin(&self, args: &[&str]) -> String {
        let o = self.as_user("admin", args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Binds `role` to `user` in every namespace (a ClusterRoleBinding named `USER-ROLE`).
    fn bind_cluster_wide(&self, role: &str, user: &str) {
        let (name, role_arg, user_arg) = (
            format!("{user}-{role}"),
            format!("--clusterrole={role}"),
            format!("--user={user}"),
        );
        self.admin(&["create", "clusterrolebinding", &name, &role_arg, &user_arg]);
    }

    fn apply(&self, user: &str, manifest: &str) -> Output {
        let path = self.home.join(format!("{user}-manifest.yaml"));
        std::fs::write(&path, manifest).unwrap();
        self.as_user(
            user,
            &["apply", "--validate=false", "-f", path.to_str().unwrap()],
        )
    }
    fn kubeconfig(&self, user: &str) -> &PathBuf {
        if user == "admin" {
            &self.admin
        } else {
            &self.users.iter().find(|(u, _)| u == user).unwrap().1
        }
    }

    /// `berth kv ARGS` as `user`.
    fn kv(&self, user: &str, args: &[&str]) -> Output {
        let mut all = vec!["kv"];
        all.extend_from_slice(args);
        berth(self.kubeconfig(user), &all)
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls until `user` running `args` succeeds (`want`) or fails, as a new binding or role
/// takes effect within moments of its write.
fn settles(c: &Cluster, user: &str, args: &[&str], want: bool) -> Output {
    eventually(10, &format!("{user} {args:?} to be {want}"), || {
        let o = c.as_user(user, args);
        (o.status.success() == want).then_some(o)
    })
}

fn forbidden(o: &Output) -> String {
    assert!(!o.status.success(), "expected a refusal: {}", text(o));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(e.contains("is forbidden"), "{e}");
    e
}

fn binding(
    kind: &str,
    name: &str,
    ns: Option<&str>,
    role_kind: &str,
    role: &str,
    user: &str,
) -> String {
    let ns = ns.map_or(String::new(), |n| format!("\n  namespace: {n}"));
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}{ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {role_kind}\n  name: {role}\nsubjects:\n- kind: User\n  name: {user}\n"
    )
}

#[test]
fn the_default_roles_allow_what_kubernetes_allows_and_refusals_read_like_kubernetes() {
    let c = Cluster::start();
    c.admin(&["create", "namespace", "shop"]);
    c.admin(&["create", "namespace", "other"]);
    c.admin(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "menu",
        "--from-literal=soup=tomato",
    ]);
    c.admin(&[
        "-n",
        "shop",
        "create",
        "secret",
        "generic",
        "till",
        "--from-literal=pin=1234",
    ]);

    // Before any binding: authenticated, but allowed nothing beyond discovery.
    let e = forbidden(&c.as_user("vera", &["get", "configmaps", "-n", "shop"]));
    assert!(
        e.contains(r#"configmaps is forbidden: User "vera" cannot list resource "configmaps" in API group "" in the namespace "shop""#),
        "{e}"
    );
    let o = c.as_user("vera", &["api-resources", "--api-group=apps", "-o", "name"]);
    assert!(
        o.status.success(),
        "discovery is open to every user: {}",
        text(&o)
    );

    // view, cluster-wide: reads everything but Secrets, changes nothing.
    c.bind_cluster_wide("view", "vera");
    let got = settles(&c, "vera", &["get", "configmaps", "-n", "shop"], true);
    assert!(text(&got).contains("menu"), "{}", text(&got));
    assert!(c.as_user("vera", &["get", "pods", "-A"]).status.success());
    let e = forbidden(&c.as_user("vera", &["get", "secret", "till", "-n", "shop"]));
    assert!(
        e.contains(r#"secrets "till" is forbidden: User "vera" cannot get resource "secrets" in API group "" in the namespace "shop""#),
        "{e}"
    );
    let e = forbidden(&c.as_user("vera", &["delete", "configmap", "menu", "-n", "shop"]));
    assert!(e.contains(r#"cannot delete resource "configmaps""#), "{e}");
    // Nothing a refused request asked for happened.
    assert!(
        c.admin(&["get", "configmap", "menu", "-n", "shop"])
            .contains("menu")
    );

    // edit, in one namespace: writes there (Secrets included), nowhere else, and no RBAC.
    c.admin(&[
        "-n",
        "shop",
        "create",
        "rolebinding",
        "eddie-edit",
        "--clusterrole=edit",
        "--user=eddie",
    ]);
    settles(
        &c,
        "eddie",
        &["-n", "shop", "create", "deployment", "web", "--image=host"],
        true,
    );
    assert!(
        c.as_user("eddie", &["-n", "shop", "get", "secret", "till"])
            .status
            .success()
    );
    let e = forbidden(&c.as_user(
        "eddie",
        &["-n", "other", "create", "deployment", "web", "--image=host"],
    ));
    assert!(
        e.contains(r#"deployments.apps is forbidden: User "eddie" cannot create resource "deployments" in API group "apps" in the namespace "other""#),
        "{e}"
    );
    forbidden(&c.as_user("eddie", &["get", "nodes"]));
    forbidden(&c.as_user(
        "eddie",
        &[
            "-n",
            "shop",
            "create",
            "rolebinding",
            "x",
            "--clusterrole=view",
            "--user=vera",
        ],
    ));

    // kubectl auth can-i and whoami say the same.
    let can = |user: &str, args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let o = c.as_user(user, &all);
        (
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            o.status.success(),
        )
    };
    for (user, question, answer) in [
        ("eddie", "create deployments -n shop", "yes"),
        ("eddie", "create deployments -n other", "no"),
        ("eddie", "get secrets -n shop", "yes"),
        ("vera", "get secrets -n shop", "no"),
        ("vera", "get pods/log -n shop", "yes"),
        ("vera", "create pods/exec -n shop", "no"),
    ] {
        let args: Vec<&str> = question.split(' ').collect();
        assert_eq!(
            can(user, &args),
            (answer.to_string(), answer == "yes"),
            "{user}: can-i {question}"
        );
    }
    assert_eq!(can("admin", &["delete", "nodes"]), ("yes".into(), true));
    let list = c.as_user("eddie", &["auth", "can-i", "--list", "-n", "shop"]);
    let list = text(&list);
    assert!(
        list.contains("deployments.apps")
            && list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    let other = text(&c.as_user("eddie", &["auth", "can-i", "--list", "-n", "other"]));
    assert!(!other.contains("deployments.apps"), "{other}");
    let me = text(&c.as_user("eddie", &["auth", "whoami", "-o", "json"]));
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["status"]["userInfo"]["username"], "eddie", "{me}");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!(["system:authenticated"]),
        "{me}"
    );

    // berth's own CLI asks the same questions.
    let eddie = &c.users.iter().find(|(u, _)| u == "eddie").unwrap().1;
    let berth = |args: &[&str]| {
        let o = common::berth(eddie, args);
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            o.status.code(),
        )
    };
    assert_eq!(
        berth(&["auth", "can-i", "create", "deployments", "-n", "shop"]),
        ("yes\n".into(), Some(0))
    );
    assert_eq!(
        berth(&["auth", "can-i", "delete", "secret/till", "-n", "other"]),
        ("no\n".into(), Some(1))
    );
    let (me, code) = berth(&["auth", "whoami"]);
    assert_eq!(code, Some(0));
    assert!(
        me.contains("Username") && me.contains("eddie") && me.contains("[system:authenticated]"),
        "{me}"
    );
    let (rules, _) = berth(&["auth", "can-i", "--list", "-n", "shop"]);
    assert!(
        rules.starts_with("Resources") && rules.contains("deployments.apps"),
        "{rules}"
    );

    // A binding taken away takes its grant with it.
    c.admin(&["-n", "shop", "delete", "rolebinding", "eddie-edit"]);
    settles(&c, "eddie", &["-n", "shop", "get", "deployments"], false);
}

#[test]
fn no_one_grants_what_they_do_not_hold() {
    let c = Cluster::start();
    c.admin(&["create", "namespace", "shop"]);
    // adam administers shop: he may grant there what he holds.
    c.admin(&[
        "-n",
        "shop",
        "create",
        "rolebinding",
        "adam-admin",
        "--clusterrole=admin",
        "--user=adam",
    ]);
    let view = binding(
        "RoleBinding",
        "vera-view",
        Some("shop"),
        "ClusterRole",
        "view",
        "vera",
    );
    let o = eventually(10, "adam to hold admin in shop", || {
        let o = c.apply("adam", &view);
        o.status.success().then_some(o)
    });
    assert!(text(&o).contains("created"), "{}", text(&o));
    settles(&c, "vera", &["-n", "shop", "get", "pods"], true);

    // Not cluster-admin, not even in his own namespace.
    let root = binding(
        "RoleBinding",
        "vera-root",
        Some("shop"),
        "ClusterRole",
        "cluster-admin",
        "vera",
    );
    let e = forbidden(&c.apply("adam", &root));
    assert!(
        e.contains(r#"rolebindings.rbac.authorization.k8s.io "vera-root" is forbidden: user "adam" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held"#),
        "{e}"
    );
    // Not a Role with more than he holds (nodes are cluster-wide; he holds none).
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: spy\n  namespace: shop\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\", \"nodes\"]\n  verbs: [\"get\", \"list\"]\n";
    let e = forbidden(&c.apply("adam", role));
    assert!(
        e.contains(r#"{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}"#),
        "{e}"
    );
    // A Role within what he holds is fine.
    let fine = role.replace(", \"nodes\"", "");
    let o = c.apply("adam", &fine);
    assert!(o.status.success(), "{}", text(&o));
    // Not a ClusterRoleBinding at all (admin is a namespace's role).
    let cluster = binding(
        "ClusterRoleBinding",
        "vera-everywhere",
        None,
        "ClusterRole",
        "view",
        "vera",
    );
    let e = forbidden(&c.apply("adam", &cluster));
    assert!(
        e.contains(r#"clusterrolebindings.rbac.authorization.k8s.io "vera-everywhere" is forbidden: User "adam""#),
        "{e}"
    );
    // And none of the refused writes happened.
    let bindings = c.admin(&[
        "get",
        "rolebindings,clusterrolebindings",
        "-A",
        "-o",
        "name",
    ]);
    assert!(
        !bindings.contains("vera-root") && !bindings.contains("vera-everywhere"),
        "{bindings}"
    );
    let roles = c.admin(&[
        "-n",
        "shop",
        "get",
        "role",
        "spy",
        "-o",
        "jsonpath={.rules[0].resources}",
    ]);
    assert_eq!(roles, r#"["pods"]"#);

    // An unbound user may ask about themselves and nothing else.
    let o = c.as_user("nobody", &["auth", "can-i", "list", "pods", "-A"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no");
    forbidden(&c.as_user("nobody", &["get", "pods", "-A"]));
}

#[test]
fn the_admins_group_needs_no_binding_and_the_default_roles_are_kubernetes_own() {
    let c = Cluster::start();
    // A broken policy cannot lock the admin out: system:masters needs no binding.
    c.admin(&["delete", "clusterrolebinding", "cluster-admin"]);
    let o = c.as_user("admin", &["get", "secrets", "-A"]);
    assert!(o.status.success(), "{}", text(&o));
    // The default roles are there, aggregated as in Kubernetes.
    let view = c.admin(&["get", "clusterrole", "view", "-o", "json"]);
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    let rules = view["rules"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "deployments")),
        "{view}"
    );
    let labels = c.admin(&[
        "get",
        "clusterrole",
        "edit",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("rbac.authorization.k8s.io/aggregate-to-admin"),
        "{labels}"
    );

    // A role labelled for view is folded into it (and so into edit and admin), and taken
    // out when it goes.
    c.bind_cluster_wide("view", "vera");
    settles(&c, "vera", &["get", "pods", "-A"], true);
    forbidden(&c.as_user("vera", &["get", "leases", "-A"]));
    let extra = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: lease-reader\n  labels:\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  verbs: [get, list, watch]\n";
    let o = c.apply("admin", extra);
    assert!(o.status.success(), "{}", text(&o));
    settles(&c, "vera", &["get", "leases", "-A"], true);
    c.admin(&["delete", "clusterrole", "lease-reader"]);
    settles(&c, "vera", &["get", "leases", "-A"], false);
}

/// The audit log's events, once `want` finds what it waits for in them.
fn audited(c: &Cluster, what: &str, want: impl Fn(&[Value]) -> bool) -> (String, Vec<Value>) {
    let path = c.server.data_dir.join("audit").join("audit.log");
    eventually(10, what, || {
        let text = std::fs::read_to_string(&path).ok()?;
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
            .collect();
        want(&events).then_some((text, events))
    })
}

fn find(events: &[Value], f: impl Fn(&Value) -> bool) -> Option<&Value> {
    events.iter().find(|e| f(e))
}

#[test]
fn refusals_secret_reads_and_writes_are_audited_and_only_admins_see_the_refusals() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start();
    let pin = "s3cr3t-pin-4711";
    c.admin(&["create", "namespace", "shop"]);
    c.admin(&[
        "-n",
        "shop",
        "create",
        "secret",
        "generic",
        "till",
        &format!("--from-literal=pin={pin}"),
    ]);
    c.admin(&["-n", "shop", "get", "secret", "till", "-o", "yaml"]);
    c.admin(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "menu",
        "--from-literal=soup=tomato",
    ]);
    forbidden(&c.as_user("nobody", &["-n", "shop", "get", "secret", "till"]));
    forbidden(&c.as_user("nobody", &["-n", "shop", "delete", "configmap", "menu"]));
    let stranger = kubeconfig_for(
        c.dir.path(),
        &c.server,
        "mallory",
        "no-such-token-0123456789",
    );
    let o = kubectl(&c.home, &stranger, &["-n", "shop", "get", "pods"]);
    assert!(!o.status.success(), "{}", text(&o));

    let refused_get = |e: &Value| {
        e["user"]["username"] == "nobody"
            && e["verb"] == "get"
            && e["responseStatus"]["code"] == 403
    };
    let (log, events) = audited(
        &c,
        "the refusals and the Secret's reads in the audit log",
        |ev| {
            find(ev, refused_get).is_some()
                && find(ev, |e| {
                    e["verb"] == "delete" && e["responseStatus"]["code"] == 403
                })
                .is_some()
                && find(ev, |e| e["responseStatus"]["code"] == 401).is_some()
                && find(ev, |e| {
                    e["user"]["username"] == "admin"
                        && e["verb"] == "get"
                        && e["objectRef"]["resource"] == "secrets"
                })
                .is_some()
                && find(ev, |e| {
                    e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps"
                })
                .is_some()
        },
    );

    let e = find(&events, refused_get).unwrap();
    assert_eq!(e["kind"], "Event", "{e}");
    assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(e["level"], "Metadata");
    assert_eq!(e["stage"], "ResponseComplete");
    assert_eq!(
        e["objectRef"],
        serde_json::json!({"resource": "secrets", "namespace": "shop", "name": "till", "apiVersion": "v1"})
    );
    assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert!(
        e["responseStatus"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"User "nobody" cannot get resource "secrets""#),
        "{e}"
    );
    assert_eq!(e["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert!(
        e["userAgent"].as_str().unwrap().starts_with("kubectl"),
        "{e}"
    );
    assert_eq!(e["requestURI"], "/api/v1/namespaces/shop/secrets/till");
    assert!(uuid_like(e["auditID"].as_str().unwrap()), "{e}");
    assert!(
        e["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&Value::from("system:authenticated"))
    );

    let d = find(&events, |e| {
        e["verb"] == "delete" && e["responseStatus"]["code"] == 403
    })
    .unwrap();
    assert_eq!(d["objectRef"]["name"], "menu");
    assert_eq!(d["objectRef"]["resource"], "configmaps");

    let unauthorized = find(&events, |e| e["responseStatus"]["code"] == 401).unwrap();
    assert_eq!(
        unauthorized["user"],
        serde_json::json!({}),
        "{unauthorized}"
    );
    assert!(unauthorized.get("annotations").is_none());

    let read = find(&events, |e| {
        e["user"]["username"] == "admin"
            && e["verb"] == "get"
            && e["objectRef"]["resource"] == "secrets"
    })
    .unwrap();
    assert_eq!(read["level"], "Metadata");
    assert_eq!(read["responseStatus"]["code"], 200);
    assert_eq!(
        read["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    assert!(read.get("responseObject").is_none() && read.get("requestObject").is_none());
    let create_secret = find(&events, |e| {
        e["verb"] == "create" && e["objectRef"]["resource"] == "secrets"
    })
    .unwrap();
    assert_eq!(create_secret["level"], "Metadata");
    assert!(create_secret.get("requestObject").is_none());
    // The Secret's value is nowhere in the log, in plain text or in base64.
    let b64 = "czNjcjN0LXBpbi00NzEx";
    assert!(
        !log.contains(pin) && !log.contains(b64),
        "a Secret's data leaked into the audit log"
    );
    // A write of another kind carries its body.
    let cm = find(&events, |e| {
        e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps"
    })
    .unwrap();
    assert_eq!(cm["level"], "Request");
    assert_eq!(cm["requestObject"]["data"]["soup"], "tomato", "{cm}");

    let audit_dir = c.server.data_dir.join("audit");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&audit_dir), 0o700);
    assert_eq!(mode(&audit_dir.join("audit.log")), 0o600);

    // The view of refusals: the admin's, as a table and as the events themselves.
    let o = common::berth(&c.admin, &["history", "--denied"]);
    let table = text(&o);
    assert!(o.status.success(), "{table}");
    assert!(table.starts_with("TIME"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("secrets shop/till"))
        .unwrap_or_else(|| panic!("no refusal of the Secret in:\n{table}"));
    assert!(
        row.contains("nobody") && row.contains(" get ") && row.contains("403"),
        "{row}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("(unknown)") && l.contains("401")),
        "{table}"
    );
    assert!(!table.contains(" 200 "), "only refusals: {table}");
    let o = common::berth(
        &c.admin,
        &["history", "--denied", "--limit", "1", "-o", "json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Anyone else is refused it (and that refusal is audited in its turn).
    let vera = &c.users.iter().find(|(u, _)| u == "vera").unwrap().1;
    c.bind_cluster_wide("view", "vera");
    let o = common::berth(vera, &["history", "--denied"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(r#"audit.berth.dev is forbidden: User "vera" cannot get resource "audit" in API group "berth.dev""#),
        "{}",
        text(&o)
    );
}

fn uuid_like(s: &str) -> bool {
    let parts: Vec<usize> = s.split('-').map(str::len).collect();
    parts == [8, 4, 4, 4, 12] && s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

/// A ConfigTemplate for node-a in shop, writing `destination`, with `extra` spec lines.
fn config_template(name: &str, destination: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1\nkind: ConfigTemplate\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  nodeName: node-a\n  destination: {destination}\n  template: \"{{{{ pods|length }}}}\"\n{extra}"
    )
}

#[test]
fn config_templates_with_commands_or_outside_the_nodes_directories_are_cluster_admins_alone() {
    let c = Cluster::start();
    c.admin(&["create", "namespace", "shop"]);
    // node-a's agent renders into /srv/templates (what an agent publishes when it registers).
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  annotations:\n    berth.dev/config-template-dirs: '[\"/srv/templates\"]'\n";
    let o = c.apply("admin", node);
    assert!(o.status.success(), "{}", text(&o));
    c.admin(&[
        "-n",
        "shop",
        "create",
        "rolebinding",
        "eddie-edit",
        "--clusterrole=edit",
        "--user=eddie",
    ]);
    // edit writes a template that runs nothing, inside the node's directories.
    let plain = config_template("plain", "/srv/templates/app/plain.conf", "");
    eventually(10, "eddie to create a plain template", || {
        c.apply("eddie", &plain).status.success().then_some(())
    });
    // Commands (a reload, a check, an exec probe) are another permission, on create and on
    // a change that adds them.
    for (name, extra) in [
        ("reloads", "  reload: {command: [/bin/true]}\n"),
        (
            "checks",
            "  check: {command: [/bin/true, \"{candidate}\"]}\n",
        ),
        ("plain", "  probe: {exec: {command: [/bin/true]}}\n"),
    ] {
        let e = forbidden(&c.apply(
            "eddie",
            &config_template(name, "/srv/templates/app/x.conf", extra),
        ));
        assert!(
            e.contains(&format!(r#"configtemplates.berth.dev "{name}" is forbidden: User "eddie" cannot create resource "configtemplates/commands" in API group "berth.dev" in the namespace "shop""#)),
            "{e}"
        );
        assert!(e.contains("runs commands"), "{e}");
    }
    // So is a destination outside them (or on a node that publishes none).
    for (name, destination) in [
        ("etc", "/etc/cron.d/x"),
        ("climbs", "/srv/templates/../../etc/x"),
        ("near", "/srv/templates2/x"),
    ] {
        let o = c.apply("eddie", &config_template(name, destination, ""));
        assert!(!o.status.success(), "{destination}: {}", text(&o));
        if !destination.contains("..") {
            let e = forbidden(&o);
            assert!(
                e.contains(
                    r#"cannot create resource "configtemplates/anywhere" in API group "berth.dev""#
                ) && e.contains(destination)
                    && e.contains("/srv/templates"),
                "{e}"
            );
        }
    }
    let e = forbidden(&c.apply(
        "eddie",
        &config_template("plain", "/srv/templates/app/plain.conf", "").replace("node-a", "node-b"),
    ));
    assert!(e.contains("configtemplates/anywhere"), "{e}");
    // cluster-admin holds both; a template that has commands is then cluster-admin's to
    // change, though edit may still delete it.
    let admins = config_template(
        "reloads",
        "/etc/nginx/nginx.conf",
        "  reload: {command: [/usr/sbin/nginx, -s, reload]}\n",
    );
    let o = c.apply("admin", &admins);
    assert!(o.status.success(), "{}", text(&o));
    let e = forbidden(&c.apply("eddie", &admins.replace("pods|length", "services|length")));
    assert!(e.contains("configtemplates/commands"), "{e}");
    let o = c.as_user(
        "eddie",
        &["-n", "shop", "label", "configtemplate", "reloads", "a=b"],
    );
    assert!(o.status.success(), "a label is not the spec: {}", text(&o));
    for (user, want) in [("eddie", "no"), ("admin", "yes")] {
        let o = c.as_user(
            user,
            &[
                "-n",
                "shop",
                "auth",
                "can-i",
                "create",
                "configtemplates.berth.dev",
                "--subresource=commands",
            ],
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want, "{user}");
    }
    let o = c.as_user(
        "eddie",
        &["-n", "shop", "delete", "configtemplate", "reloads"],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn the_key_value_tree_is_authorized_by_key_prefix() {
    let c = Cluster::start();
    for (key, value) in [("/other/y", "o"), ("/app/x", "a0")] {
        let o = c.kv("admin", &["put", key, value]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // nobody holds keys under /app (a prefix rule) and nothing else.
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: app-keys\nrules:\n- apiGroups: [kv.berth.dev]\n  resources: [keys]\n  resourceNames: [\"/app/*\"]\n  verbs: [get, list, watch, update, delete, deletecollection]\n";
    let o = c.apply("admin", role);
    assert!(o.status.success(), "{}", text(&o));
    c.bind_cluster_wide("app-keys", "nobody");
    eventually(10, "nobody to write /app/x", || {
        c.kv("nobody", &["put", "/app/x", "a1"])
            .status
            .success()
            .then_some(())
    });
    let o = c.kv("nobody", &["get", "/app/x"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "a1",
        "{}",
        text(&o)
    );
    let o = c.kv("nobody", &["put", "/app/deeper/z", "z"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = c.kv("nobody", &["ls", "-R", "/app"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("/app/deeper/z"),
        "{}",
        text(&o)
    );
    let o = c.kv("nobody", &["get", "/other/y"]);
    assert!(!o.status.success(), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        e.contains(r#"keys.kv.berth.dev "/other/y" is forbidden: User "nobody" cannot get resource "keys" in API group "kv.berth.dev" at the cluster scope"#),
        "{e}"
    );
    for args in [
        &["put", "/other/y", "n"][..],
        &["put", "/apple", "n"],
        &["put", "/services/shop/web/p1", "10.0.0.1"],
        &["ls", "-R", "/"],
    ] {
        let o = c.kv("nobody", args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("forbidden"),
            "{args:?}: {}",
            text(&o)
        );
    }
    // edit (cluster-wide) writes the tree but for the endpoints controller's /services,
    // which it reads.
    c.bind_cluster_wide("edit", "eddie");
    eventually(10, "eddie to write /other/y", || {
        c.kv("eddie", &["put", "/other/y", "e"])
            .status
            .success()
            .then_some(())
    });
    let o = c.kv("eddie", &["put", "/services/shop/web/p1", "10.0.0.1"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(r#"cannot update resource "keys/services""#),
        "{}",
        text(&o)
    );
    let o = c.kv("eddie", &["ls", "-R", "/"]);
    assert!(o.status.success(), "{}", text(&o));
    // view reads it all.
    c.bind_cluster_wide("view", "vera");
    eventually(10, "vera to read the tree", || {
        c.kv("vera", &["ls", "-R", "/"])
            .status
            .success()
            .then_some(())
    });
    assert!(!c.kv("vera", &["put", "/app/x", "v"]).status.success());
}

#[test]
fn service_account_tokens_authenticate_their_account_until_it_goes() {
    let c = Cluster::start();
    c.admin(&["create", "namespace", "shop"]);
    c.admin(&["-n", "shop", "create", "serviceaccount", "ci"]);
    c.admin(&[
        "-n",
        "shop",
        "create",
        "rolebinding",
        "ci-view",
        "--clusterrole=view",
        "--serviceaccount=shop:ci",
    ]);
    // kubectl create token: a TokenRequest, answered with a signed, expiring token.
    let token = c.admin(&["-n", "shop", "create", "token", "ci", "--duration=10m"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let kc = kubeconfig_for(c.dir.path(), &c.server, "ci", token);
    let as_ci = |args: &[&str]| kubectl(&c.home, &kc, args);
    let me = as_ci(&["auth", "whoami", "-o", "json"]);
    let me: serde_json::Value = serde_json::from_slice(&me.stdout).unwrap();
    assert_eq!(
        me["status"]["userInfo"]["username"], "system:serviceaccount:shop:ci",
        "{me}"
    );
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:shop",
            "system:authenticated"
        ]),
        "{me}"
    );
    // It holds what its account is bound to.
    eventually(10, "the account's binding in force", || {
        as_ci(&["-n", "shop", "get", "pods"])
            .status
            .success()
            .then_some(())
    });
    let e = forbidden(&as_ci(&["-n", "shop", "get", "secrets"]));
    assert!(
        e.contains(r#"User "system:serviceaccount:shop:ci" cannot list resource "secrets""#),
        "{e}"
    );
    // A token whose signature does not hold is no token.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let kc_forged = kubeconfig_for(c.dir.path(), &c.server, "forged", &forged);
    let o = kubectl(&c.home, &kc_forged, &["-n", "shop", "get", "pods"]);
    assert!(
        !o.status.success() && text(&o).contains("Unauthorized"),
        "{}",
        text(&o)
    );
    // Deleting the account, even to make one of the same name, revokes its tokens.
    c.admin(&["-n", "shop", "delete", "serviceaccount", "ci"]);
    c.admin(&["-n", "shop", "create", "serviceaccount", "ci"]);
    let o = as_ci(&["-n", "shop", "get", "pods"]);
    assert!(
        !o.status.success() && text(&o).contains("Unauthorized"),
        "{}",
        text(&o)
    );
    // Lifetimes under ten minutes are refused.
    let o = c.as_user(
        "admin",
        &["-n", "shop", "create", "token", "ci", "--duration=1m"],
    );
    assert!(
        !o.status.success() && text(&o).contains("less than 600 seconds"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_client_certificate_of_another_ca_is_no_credential() {
    let c = Cluster::start();
    let dir = c.dir.path();
    let ca = dir.join("cluster-ca.crt");
    std::fs::write(&ca, c.server.ca_pem()).unwrap();
    // Two certificates naming the same admin: one from a CA of the attacker's own, one from
    // the cluster's (the control: the request itself is fine).
    let (key, csr) = berth_tls::certificate_request("mallory", &["system:masters"]).unwrap();
    let foreign = berth_tls::Ca::generate("not-the-cluster-ca").unwrap();
    let cluster = berth_tls::Ca::load_or_create(&dir.join("data/pki"), "berth-ca").unwrap();
    let get_secrets = |signer: &berth_tls::Ca, tag: &str| {
        let cert = signer
            .sign_client_request(&csr, std::time::Duration::from_secs(3600))
            .unwrap();
        let (crt, k) = (
            dir.join(format!("{tag}.crt")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&crt, cert).unwrap();
        std::fs::write(&k, &key).unwrap();
        let o = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .arg("--cert")
            .arg(&crt)
            .arg("--key")
            .arg(&k)
            .arg(format!("{}/api/v1/secrets", c.server.url))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(get_secrets(&cluster, "ours"), "200");
    // The handshake refuses it: no HTTP answer at all, let alone the Secrets.
    assert_eq!(get_secrets(&foreign, "theirs"), "000");
}
