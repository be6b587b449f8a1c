//! `berth user create|list|revoke`: people's identities, each handed out as a kubeconfig.
//!
//! - A certificate user (the default): the key is made here and never leaves this machine but
//!   in the kubeconfig written; its request (`CN=NAME, O=GROUP`, one group at most: the
//!   signer keeps one organization) goes to the server as a
//!   CertificateSigningRequest of signer `kubernetes.io/kube-apiserver-client`, which the
//!   caller approves (`.../approval`, as `kubectl certificate approve`) and the certificate
//!   controller signs with the cluster CA, for `--ttl` or the server's `--user-cert-lifetime`,
//!   whichever is shorter.
//! - A token user (`--token`): a Secret `kube-system/user-token-ID` of type
//!   `berth.dev/user-token` with the user, groups, expiry and the SHA-256 of the token's secret
//!   half; the token itself is printed into the kubeconfig only.
//! - `--role` binds a default ClusterRole to the user: a RoleBinding in `-n NS`, or a
//!   ClusterRoleBinding with `--all-namespaces` (and for `cluster-admin` without `-n`); other
//!   roles need one of the two, so no user gets a role everywhere by omission.
//! - Revocation: a token's Secret is deleted (refused from the next request); a certificate's
//!   fingerprint goes into the ConfigMap `kube-system/berth-revoked-certificates`, which the
//!   API server checks on every certificate it is shown, and its request is deleted. The
//!   bindings `user create` made (label `berth.dev/user`) go too.
//!
//! All of it is ordinary API objects written with the caller's own identity, so only whoever
//! RBAC lets approve client certificates or write Secrets in `kube-system` can make users.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_api::base64;
use berth_api::kinds::{self, ResourceKind};
use berth_client::{Client, Method};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sha2::Digest;

/// Users' client certificates.
const SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The type of the Secrets that hold user tokens (the API server's `auth::USER_TOKEN_TYPE`).
const TOKEN_TYPE: &str = "berth.dev/user-token";
/// The ConfigMap of revoked certificates (the API server's `auth::REVOKED_CERTIFICATES`).
const REVOKED: &str = "berth-revoked-certificates";
/// The label on what `user create` makes for a user: its CSRs, token Secrets and bindings.
const LABEL: &str = "berth.dev/user";

#[derive(Subcommand, Debug, Clone)]
pub enum UserCmd {
    /// Make a user and write a kubeconfig for them (a client certificate, or with --token a
    /// revocable bearer token)
    Create(CreateArgs),
    /// List users: their certificates and tokens, groups, expiry and role bindings
    List {
        /// json or yaml instead of a table
        #[arg(short = 'o', long)]
        output: Option<ListOutput>,
    },
    /// Revoke every certificate and token of a user, and remove the bindings `user create` made
    Revoke { name: String },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOutput {
    Json,
    Yaml,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    View,
    Edit,
    Admin,
    ClusterAdmin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Edit => "edit",
            Role::Admin => "admin",
            Role::ClusterAdmin => "cluster-admin",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// The user's name (lowercase letters, digits, '-' and '.'; at most 63 characters)
    pub name: String,
    /// A group the user is in (repeatable with --token; a certificate names one)
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Bind this default role to the user: in -n NS, or everywhere with --all-namespaces
    /// (cluster-admin without -n is everywhere)
    #[arg(long)]
    pub role: Option<Role>,
    /// With --role: bind it in every namespace (a ClusterRoleBinding)
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// How long the certificate or token is valid (e.g. 8h, 30d); certificates live at least
    /// 10m and at most the server's --user-cert-lifetime
    #[arg(long, default_value = "30d")]
    pub ttl: String,
    /// A bearer token instead of a client certificate (revoked the moment it is deleted)
    #[arg(long)]
    pub token: bool,
    /// Where to write the kubeconfig (mode 0600) [default: ./NAME.kubeconfig]
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The admin's connection: its client, the namespace `-n` named (if any), and the server and
/// CA a user's kubeconfig names.
pub struct Conn<'a> {
    pub client: &'a Client,
    pub namespace: Option<&'a str>,
    pub server: &'a str,
    pub ca_pem: &'a str,
}

pub async fn run(conn: &Conn<'_>, cmd: UserCmd, out: &mut dyn Write) -> anyhow::Result<i32> {
    match cmd {
        UserCmd::Create(args) => create(conn, args, out).await,
        UserCmd::List { output } => list(conn.client, output, out).await,
        UserCmd::Revoke { name } => revoke(conn.client, &name, out).await,
    }
}

fn kind(name: &str) -> anyhow::Result<&'static ResourceKind> {
    kinds::resolve(name).ok_or_else(|| anyhow!("the server has no {name}"))
}

/// A user name that is also usable in object names and label values, and never a
/// `system:` identity.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name == berth_tls::AGENT_CLIENT_USER {
        bail!("{name:?} is the API server's own identity toward node agents");
    }
    if !ok {
        bail!(
            "invalid user name {name:?}: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 63 characters"
        );
    }
    Ok(())
}

/// `n` random characters of `[a-z0-9]`; an error, never a guessable value, without randomness.
fn random(n: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).context("the OS gave no randomness")?;
    Ok(b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect())
}

fn rfc3339_in(d: Duration) -> String {
    let t = std::time::SystemTime::now() + d;
    let nanos = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    berth_api::timefmt::rfc3339_from_nanos(nanos)
}

fn rfc3339_at(secs: i64) -> String {
    berth_api::timefmt::rfc3339_from_nanos(u64::try_from(secs).unwrap_or(0) * 1_000_000_000)
}

fn is_past(rfc3339: &str) -> bool {
    berth_api::timefmt::parse_rfc3339(rfc3339).is_ok_and(|t| t <= berth_api::timefmt::now_nanos())
}

/// Where the role goes: `Some(namespace)` for a RoleBinding, `None` for a ClusterRoleBinding.
fn binding_scope(role: Role, namespace: Option<&str>, all: bool) -> anyhow::Result<Option<&str>> {
    match (namespace, all) {
        (Some(_), true) => bail!("--role: give -n NAMESPACE or --all-namespaces, not both"),
        (Some(ns), false) => Ok(Some(ns)),
        (None, true) => Ok(None),
        (None, false) if role == Role::ClusterAdmin => Ok(None),
        (None, false) => bail!(
            "--role {}: say where, with -n NAMESPACE (a RoleBinding) or --all-namespaces (a ClusterRoleBinding)",
            role.name()
        ),
    }
}

async fn create(conn: &Conn<'_>, args: CreateArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let name = args.name.as_str();
    check_name(name)?;
    if let Some(g) = args.groups.iter().find(|g| g.is_empty() || g.contains(',')) {
        bail!("invalid group {g:?}: a group is a non-empty name without commas");
    }
    let ttl = berth_api::duration::parse(&args.ttl).map_err(anyhow::Error::msg)?;
    if ttl.is_zero() {
        bail!("--ttl must be longer than 0");
    }
    if !args.token && args.groups.len() > 1 {
        // The signer (rcgen) keeps one organization per subject: a second would be dropped.
        bail!(
            "a certificate names at most one group (its O); use --token for a user in several groups, or bind the roles to the user"
        );
    }
    if !args.token && ttl < Duration::from_secs(600) {
        bail!("a certificate lives at least 10m (--ttl); use --token for a shorter-lived user");
    }
    let scope = args
        .role
        .map(|r| binding_scope(r, conn.namespace, args.all_namespaces))
        .transpose()?;
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.kubeconfig")));
    let namespace = conn.namespace.unwrap_or("default");
    // The binding first: if the caller may not grant the role, nothing is issued; a binding
    // without its user grants nobody anything.
    if let (Some(role), Some(scope)) = (args.role, scope) {
        bind(conn.client, name, role, scope).await?;
    }
    let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
    let (kubeconfig, expires) = if args.token {
        issue_token(conn, name, &args.groups, ttl, namespace).await?
    } else {
        issue_certificate(conn, name, &groups, ttl, namespace).await?
    };
    berth_tls::write_private(&path, &kubeconfig)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let what = if args.token {
        "a token"
    } else {
        "a client certificate"
    };
    writeln!(
        out,
        "user \"{name}\" created: {what} valid until {expires}; kubeconfig written to {} (hand it to {name}: `kubectl --kubeconfig {} get pods`)",
        path.display(),
        path.display()
    )?;
    if let (Some(role), Some(scope)) = (args.role, scope) {
        match scope {
            Some(ns) => writeln!(out, "bound role \"{}\" in namespace \"{ns}\"", role.name())?,
            None => writeln!(out, "bound role \"{}\" in every namespace", role.name())?,
        }
    }
    Ok(0)
}

/// Binds the default ClusterRole `role` to user `name`, in `scope` (a namespace) or cluster-wide.
async fn bind(client: &Client, name: &str, role: Role, scope: Option<&str>) -> anyhow::Result<()> {
    let (kind, binding_kind) = match scope {
        Some(_) => (kind("rolebindings")?, "RoleBinding"),
        None => (kind("clusterrolebindings")?, "ClusterRoleBinding"),
    };
    let mut metadata =
        json!({"name": format!("user-{name}-{}", role.name()), "labels": {LABEL: name}});
    if let Some(ns) = scope {
        metadata["namespace"] = json!(ns);
    }
    let obj = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": binding_kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role.name()},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
    });
    match client.create(kind, scope, &obj, "").await {
        // The same name binds the same role to the same user: made by an earlier create.
        Err(e) if e.code() == Some(409) => Ok(()),
        r => r.map(drop).context("cannot bind the role"),
    }
}

async fn issue_token(
    conn: &Conn<'_>,
    name: &str,
    groups: &[String],
    ttl: Duration,
    namespace: &str,
) -> anyhow::Result<(String, String)> {
    let (id, secret) = (random(8)?, random(32)?);
    let hash: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expires = rfc3339_in(ttl);
    let b64 = |s: &str| json!(base64::encode(s.as_bytes()));
    let obj = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("user-token-{id}"), "namespace": "kube-system",
                     "labels": {LABEL: name}},
        "type": TOKEN_TYPE,
        "data": {
            "user": b64(name),
            "groups": b64(&groups.join(",")),
            "expiration": b64(&expires),
            "token-hash": b64(&hash),
        },
    });
    conn.client
        .create(kind("secrets")?, Some("kube-system"), &obj, "")
        .await
        .context("cannot store the token")?;
    let kubeconfig = berth_client::kubeconfig::render_token(
        conn.server,
        conn.ca_pem,
        name,
        &format!("{id}.{secret}"),
        namespace,
    );
    Ok((kubeconfig, expires))
}

async fn issue_certificate(
    conn: &Conn<'_>,
    name: &str,
    groups: &[&str],
    ttl: Duration,
    namespace: &str,
) -> anyhow::Result<(String, String)> {
    if conn.ca_pem.is_empty() {
        bail!("the server is plain HTTP: client certificates need TLS (use --token)");
    }
    let csrs = kind("certificatesigningrequests")?;
    let (key_pem, request_pem) = berth_tls::certificate_request(name, groups)?;
    let csr_name = format!("user-{name}-{}", random(5)?);
    let obj = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name, "labels": {LABEL: name}},
        "spec": {
            "request": base64::encode(request_pem.as_bytes()),
            "signerName": SIGNER,
            "expirationSeconds": ttl.as_secs(),
            "usages": ["digital signature", "key encipherment", "client auth"],
        },
    });
    let mut csr = conn
        .client
        .create(csrs, None, &obj, "")
        .await
        .context("cannot ask for a certificate")?;
    // The caller's own approval, as `kubectl certificate approve` gives it.
    csr["status"]["conditions"] = json!([{
        "type": "Approved", "status": "True", "reason": "BerthUserCreate",
        "message": "approved by `berth user create`",
        "lastUpdateTime": berth_api::timefmt::now_rfc3339(),
    }]);
    let path = format!("{}/approval", Client::object_path(csrs, None, &csr_name));
    conn.client
        .json(
            Method::PUT,
            &path,
            Some(("application/json", serde_json::to_vec(&csr)?)),
        )
        .await
        .context("cannot approve the certificate request")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let cert_pem = loop {
        let csr = conn.client.get(csrs, None, &csr_name).await?;
        if let Some(pem) = csr["status"]["certificate"]
            .as_str()
            .filter(|c| !c.is_empty())
            .and_then(base64::decode)
            .and_then(|b| String::from_utf8(b).ok())
        {
            break pem;
        }
        let failed = csr["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Denied" || c["type"] == "Failed");
        if let Some(c) = failed {
            bail!(
                "the certificate request {csr_name} was {}: {}",
                c["type"].as_str().unwrap_or("").to_lowercase(),
                c["message"].as_str().unwrap_or("")
            );
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the certificate request {csr_name} was approved but not signed within 30s (is the server's certificate controller running?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, not_after) = berth_tls::certificate_facts(&cert_pem)
        .ok_or_else(|| anyhow!("the signed certificate of {csr_name} cannot be read"))?;
    let kubeconfig = berth_client::kubeconfig::render_client_cert(
        conn.server,
        conn.ca_pem,
        name,
        &cert_pem,
        &key_pem,
        namespace,
    );
    Ok((kubeconfig, rfc3339_at(not_after)))
}

/// A certificate or token of a user.
struct Credential {
    user: String,
    kind: &'static str,
    groups: Vec<String>,
    expires: String,
    /// The object that holds it: a CSR's name, or a token Secret's.
    object: String,
    /// A certificate's fingerprint.
    fingerprint: Option<String>,
}

fn secret_field(secret: &Value, key: &str) -> String {
    secret["data"][key]
        .as_str()
        .and_then(base64::decode)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The revoked certificates' fingerprints, with what each entry says (user and expiry).
async fn revoked(
    client: &Client,
) -> anyhow::Result<(Option<Value>, serde_json::Map<String, Value>)> {
    match client
        .get(kind("configmaps")?, Some("kube-system"), REVOKED)
        .await
    {
        Ok(cm) => {
            let data = cm["data"].as_object().cloned().unwrap_or_default();
            Ok((Some(cm), data))
        }
        Err(e) if e.code() == Some(404) => Ok((None, Default::default())),
        Err(e) => Err(e.into()),
    }
}

/// Every user certificate issued and not revoked, and every user token.
async fn credentials(client: &Client) -> anyhow::Result<Vec<Credential>> {
    let mut creds = Vec::new();
    let secrets = client
        .list(kind("secrets")?, Some("kube-system"), "")
        .await?;
    for s in secrets["items"].as_array().into_iter().flatten() {
        if s["type"] != TOKEN_TYPE {
            continue;
        }
        creds.push(Credential {
            user: secret_field(s, "user"),
            kind: "token",
            groups: secret_field(s, "groups")
                .split(',')
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect(),
            expires: secret_field(s, "expiration"),
            object: s["metadata"]["name"].as_str().unwrap_or("").to_string(),
            fingerprint: None,
        });
    }
    let (_, revoked) = revoked(client).await?;
    let csrs = client
        .list(kind("certificatesigningrequests")?, None, "")
        .await?;
    for c in csrs["items"].as_array().into_iter().flatten() {
        if c["spec"]["signerName"] != SIGNER {
            continue;
        }
        let pem = |v: &Value| {
            v.as_str()
                .and_then(base64::decode)
                .and_then(|b| String::from_utf8(b).ok())
        };
        let (Some(cert), Some(request)) =
            (pem(&c["status"]["certificate"]), pem(&c["spec"]["request"]))
        else {
            continue;
        };
        let (Some((fingerprint, not_after)), Ok((user, groups))) = (
            berth_tls::certificate_facts(&cert),
            berth_tls::request_subject(&request),
        ) else {
            continue;
        };
        if revoked.contains_key(&fingerprint) {
            continue;
        }
        creds.push(Credential {
            user,
            kind: "certificate",
            groups,
            expires: rfc3339_at(not_after),
            object: c["metadata"]["name"].as_str().unwrap_or("").to_string(),
            fingerprint: Some(fingerprint),
        });
    }
    creds.sort_by(|a, b| (&a.user, a.kind, &a.expires).cmp(&(&b.user, b.kind, &b.expires)));
    Ok(creds)
}

/// Every User subject of every RoleBinding and ClusterRoleBinding: (user, the binding's
/// namespace (none for a ClusterRoleBinding), binding, role, whether `user create` made it
/// for that user).
async fn bindings_of(
    client: &Client,
) -> anyhow::Result<Vec<(String, Option<String>, String, String, bool)>> {
    let mut found = Vec::new();
    for (resource, namespaced) in [("rolebindings", true), ("clusterrolebindings", false)] {
        let list = client.list(kind(resource)?, None, "").await?;
        for b in list["items"].as_array().into_iter().flatten() {
            let ns = namespaced
                .then(|| b["metadata"]["namespace"].as_str().map(String::from))
                .flatten();
            let name = b["metadata"]["name"].as_str().unwrap_or("").to_string();
            let role = b["roleRef"]["name"].as_str().unwrap_or("").to_string();
            let ours = b["metadata"]["labels"][LABEL].as_str();
            for s in b["subjects"].as_array().into_iter().flatten() {
                if s["kind"] == "User"
                    && let Some(user) = s["name"].as_str()
                {
                    found.push((
                        user.to_string(),
                        ns.clone(),
                        name.clone(),
                        role.clone(),
                        ours == Some(user),
                    ));
                }
            }
        }
    }
    Ok(found)
}

async fn list(
    client: &Client,
    output: Option<ListOutput>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let creds = credentials(client).await?;
    let bindings = bindings_of(client).await?;
    let roles_of = |user: &str| -> Vec<String> {
        let mut r: Vec<String> = bindings
            .iter()
            .filter(|b| b.0 == user)
            .map(|(_, ns, _, role, _)| match ns {
                Some(ns) => format!("{role}@{ns}"),
                None => role.clone(),
            })
            .collect();
        r.sort();
        r.dedup();
        r
    };
    let items: Vec<Value> = creds
        .iter()
        .map(|c| {
            json!({
                "name": c.user, "kind": c.kind, "groups": c.groups,
                "expires": c.expires, "expired": is_past(&c.expires),
                "bindings": roles_of(&c.user), "object": c.object,
            })
        })
        .collect();
    match output {
        Some(ListOutput::Json) => write!(out, "{}", crate::print::to_json(&json!(items)))?,
        Some(ListOutput::Yaml) => write!(out, "{}", crate::print::to_yaml(&json!(items)))?,
        None => {
            let none = || "<none>".to_string();
            let rows: Vec<Vec<String>> = creds
                .iter()
                .map(|c| {
                    let roles = roles_of(&c.user);
                    vec![
                        c.user.clone(),
                        c.kind.to_string(),
                        Some(c.groups.join(","))
                            .filter(|g| !g.is_empty())
                            .unwrap_or_else(none),
                        if is_past(&c.expires) {
                            format!("{} (expired)", c.expires)
                        } else {
                            c.expires.clone()
                        },
                        Some(roles.join(","))
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(none),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                crate::print::table(&["NAME", "KIND", "GROUPS", "EXPIRES", "BINDINGS"], &rows)
            )?;
        }
    }
    Ok(0)
}

/// Adds `certs` (fingerprint, user, expiry) to the revoked certificates, dropping entries
/// whose certificates have expired (they are refused anyway); retried on a conflicting write.
async fn add_revoked(client: &Client, certs: &[(String, String, String)]) -> anyhow::Result<()> {
    let configmaps = kind("configmaps")?;
    for _ in 0..5 {
        let (existing, mut data) = revoked(client).await?;
        data.retain(|_, v| {
            !v.as_str()
                .and_then(|v| v.split_once(' '))
                .is_some_and(|(_, exp)| is_past(exp))
        });
        for (fp, user, exp) in certs {
            data.insert(fp.clone(), json!(format!("{user} {exp}")));
        }
        let written = match existing {
            None => {
                let obj = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": REVOKED, "namespace": "kube-system"},
                    "data": data,
                });
                client
                    .create(configmaps, Some("kube-system"), &obj, "")
                    .await
                    .map(drop)
            }
            Some(mut cm) => {
                cm["data"] = json!(data);
                client
                    .replace(configmaps, Some("kube-system"), REVOKED, &cm)
                    .await
                    .map(drop)
            }
        };
        match written {
            Err(e) if e.code() == Some(409) => continue,
            r => return r.context("cannot record the revoked certificates"),
        }
    }
    bail!("cannot record the revoked certificates: the ConfigMap {REVOKED} kept changing")
}

async fn revoke(client: &Client, name: &str, out: &mut dyn Write) -> anyhow::Result<i32> {
    check_name(name)?;
    let creds: Vec<Credential> = credentials(client)
        .await?
        .into_iter()
        .filter(|c| c.user == name)
        .collect();
    // Requests of this user not signed yet go too, so none is signed after the revocation.
    let csrs = kind("certificatesigningrequests")?;
    let pending: Vec<String> = client
        .list(csrs, None, &format!("labelSelector={LABEL}%3D{name}"))
        .await?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["status"]["certificate"]
                .as_str()
                .is_none_or(str::is_empty)
        })
        .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
        .collect();
    let certs: Vec<(String, String, String)> = creds
        .iter()
        .filter_map(|c| {
            c.fingerprint
                .clone()
                .map(|fp| (fp, c.user.clone(), c.expires.clone()))
        })
        .collect();
    if !certs.is_empty() {
        add_revoked(client, &certs).await?;
    }
    let (mut certificates, mut tokens) = (0, 0);
    for c in &creds {
        let r = if c.fingerprint.is_some() {
            certificates += 1;
            client.delete(csrs, None, &c.object, "").await
        } else {
            tokens += 1;
            client
                .delete(kind("secrets")?, Some("kube-system"), &c.object, "")
                .await
        };
        match r {
            Err(e) if e.code() == Some(404) => {}
            r => {
                r.with_context(|| format!("cannot delete {}", c.object))?;
            }
        }
    }
    for csr in &pending {
        match client.delete(csrs, None, csr, "").await {
            Err(e) if e.code() == Some(404) => {}
            r => {
                r.with_context(|| format!("cannot delete {csr}"))?;
            }
        }
    }
    let mut unbound = Vec::new();
    for (user, ns, binding, role, ours) in bindings_of(client).await? {
        if user != name || !ours {
            continue;
        }
        let k = kind(if ns.is_some() {
            "rolebindings"
        } else {
            "clusterrolebindings"
        })?;
        match client.delete(k, ns.as_deref(), &binding, "").await {
            Err(e) if e.code() == Some(404) => {}
            r => {
                r.with_context(|| format!("cannot delete the binding {binding}"))?;
            }
        }
        unbound.push(match ns {
            Some(ns) => format!("{role}@{ns}"),
            None => role,
        });
    }
    if creds.is_empty() && pending.is_empty() && unbound.is_empty() {
        bail!("no user \"{name}\": no certificate, token or binding of theirs was found");
    }
    writeln!(
        out,
        "user \"{name}\" revoked: {certificates} certificate(s), {tokens} token(s); bindings removed: {}",
        if unbound.is_empty() {
            "none".to_string()
        } else {
            unbound.join(", ")
        }
    )?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_fit_object_names_and_labels() {
        for ok in ["alice", "bob-2", "a.b", "x"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "Alice",
            "system:admin",
            "-a",
            "a-",
            &"a".repeat(64),
            "a b",
            berth_tls::AGENT_CLIENT_USER,
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_role_is_bound_where_it_is_asked_for() {
        assert_eq!(
            binding_scope(Role::View, Some("shop"), false).unwrap(),
            Some("shop")
        );
        assert_eq!(binding_scope(Role::View, None, true).unwrap(), None);
        assert_eq!(
            binding_scope(Role::ClusterAdmin, None, false).unwrap(),
            None
        );
        assert_eq!(
            binding_scope(Role::ClusterAdmin, Some("shop"), false).unwrap(),
            Some("shop")
        );
        assert!(binding_scope(Role::Edit, None, false).is_err());
        assert!(binding_scope(Role::Edit, Some("shop"), true).is_err());
    }
}
