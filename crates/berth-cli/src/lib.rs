//! The kubectl-like verbs of `berth`, one file per verb (or family of verbs): `apply`, `get`,
//! `describe`, `delete`, `diff`, `history` (`denied`: its refusals from the audit log),
//! `export`, `discovery` (api-resources, version), `rollout` (and scale), `nodes` (cordon,
//! uncordon, drain), `stream` (logs, exec, top), `kv`, `tokens`, `image`, `secrets` (rotate),
//! `auth` (can-i, whoami), `users` (user create, list, revoke). Here: the verbs' flags (`Verb`), the connection they share, and `run`,
//! which sends each verb to its file.
//!
//! Output goes to the writer a verb is given, so tests read exactly what a user sees.

mod apply;
pub mod auth;
pub mod delete;
mod denied;
mod describe;
mod diff;
mod discovery;
mod export;
pub mod get;
mod history;
pub mod image;
pub mod kv;
pub mod manifests;
pub mod nodes;
pub mod print;
pub mod rollout;
pub mod secrets;
pub mod stream;
pub mod tokens;
pub mod users;

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use berth_api::kinds::{self, ResourceKind};
use berth_client::{Client, ClientError, KubeConfig};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

/// Flags every verb takes.
#[derive(Args, Debug, Clone, Default)]
pub struct Conn {
    /// kubeconfig file to use (default: $KUBECONFIG, then the file `berth up` wrote, then
    /// ~/.kube/config)
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace to work in (default: the context's namespace, usually "default")
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Verb {
    /// Create or update objects from manifests (multi-document YAML or JSON)
    ///
    /// Every document of every file is parsed and validated first; if any is bad, nothing is
    /// applied. Objects that exist are updated with a three-way merge against the last applied
    /// manifest, as `kubectl apply` does.
    Apply {
        /// File, directory (its .yaml/.yml/.json files) or - for standard input; repeatable
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Show what would change without changing anything
        #[arg(long)]
        dry_run: bool,
    },
    /// List objects, or show one
    ///
    /// Examples: `berth get pods`, `berth get deploy web -o yaml`, `berth get cm -A -l app=web`,
    /// `berth get deploy web --revision 12` (as it was then).
    Get(get::GetArgs),
    /// Show an object in detail, with its recent events
    Describe { kind: String, name: String },
    /// Delete objects by kind and name, or those in manifests
    Delete(delete::DeleteArgs),
    /// Show what `apply -f` would change, as a unified diff (exit code 1 when it would)
    Diff {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Who changed an object, when and how (`berth history deploy/web --diff`); with no
    /// object, the cluster's recent revisions; with `--denied`, the requests the API refused
    History {
        /// KIND/NAME, or KIND NAME
        target: Vec<String>,
        /// The recent requests the API refused (401, 403), from its audit log (cluster-admin)
        #[arg(long, conflicts_with_all = ["target", "diff", "status"])]
        denied: bool,
        /// Show what each revision changed
        #[arg(long)]
        diff: bool,
        /// Also show revisions that changed only the status (controllers and agents
        /// reporting), not the desired state
        #[arg(long)]
        status: bool,
        /// With no object: how many recent revisions (or refusals) to show
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Print the history document instead of a table (times with nanoseconds)
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// Write the whole desired state as one multi-document manifest
    ///
    /// Applying the output to a fresh server reproduces the same objects. Status, server-set
    /// fields, runtime state (events, leases, nodes, endpoints) and objects a controller owns
    /// are left out. Secrets are left out too (named in a comment) unless --include-secrets
    /// asks for the current ones: no past Secret's values are ever exported.
    Export {
        /// The state as of this store revision
        #[arg(long, conflicts_with = "at")]
        revision: Option<u64>,
        /// The state as of this time (RFC 3339)
        #[arg(long)]
        at: Option<String>,
        /// Include the Secrets, values and all (current state only)
        #[arg(long, conflicts_with_all = ["revision", "at"])]
        include_secrets: bool,
    },
    /// Manage the images of this host's data directory (no server needed)
    Image {
        /// The data directory whose image store to use
        #[arg(long, value_name = "DIR", env = "BERTH_DATA_DIR", global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Set the number of replicas of a deployment or replicaset (`berth scale deploy/web
    /// --replicas 5`)
    Scale {
        /// KIND/NAME, or KIND NAME
        target: Vec<String>,
        #[arg(long, required = true)]
        replicas: i64,
    },
    /// A Deployment's rollout: status (wait for it), history, undo
    Rollout {
        #[command(subcommand)]
        cmd: rollout::RolloutCmd,
    },
    /// Mark a node unschedulable: new pods go elsewhere; its pods stay
    Cordon { node: String },
    /// Mark a node schedulable again
    Uncordon { node: String },
    /// Cordon a node and move its pods away (their controllers start them elsewhere)
    Drain {
        node: String,
        /// Also delete pods no controller will replace
        #[arg(long)]
        force: bool,
        /// Seconds each pod gets to stop (default: its own terminationGracePeriodSeconds)
        #[arg(long, allow_negative_numbers = true, default_value_t = -1)]
        grace_period: i64,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Tokens nodes join with: create, list, delete
    Token {
        #[command(subcommand)]
        cmd: tokens::TokenCmd,
    },
    /// Print a container's log (`berth logs web-7d9f`), or every replica's of a workload
    /// (`berth logs deploy/web -f`, each line prefixed with its pod and container)
    Logs(stream::LogArgs),
    /// Run a command in a running container (`berth exec -it web-7d9f -- sh`)
    ///
    /// The command's output streams here and berth exits with its code. -i passes standard
    /// input; -t gives the command a terminal (with this terminal's size, raw keystrokes).
    Exec(stream::ExecArgs),
    /// Show CPU and memory use of nodes or pods (`berth top pods`, `berth top nodes`)
    Top {
        /// nodes or pods
        what: String,
        /// One node or pod
        name: Option<String>,
        /// Pods of every namespace
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Pods matching this label selector
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// One row per container
        #[arg(long)]
        containers: bool,
    },
    /// Read, write and watch the cluster's key/value tree (`berth kv ls /services/default`)
    ///
    /// Keys are /-separated paths. Every ready pod of a Service is registered under
    /// /services/NAMESPACE/SERVICE/POD; the rest of the tree is free for configuration.
    Kv {
        #[command(subcommand)]
        cmd: kv::KvCmd,
    },
    /// What you may do, and who the server takes you for (`berth auth can-i create pods`,
    /// `berth auth whoami`)
    Auth {
        #[command(subcommand)]
        cmd: auth::AuthCmd,
    },
    /// People's identities: `berth user create alice --role view -n shop` writes
    /// alice.kubeconfig (a client certificate, or with --token a revocable token); list, revoke
    User {
        #[command(subcommand)]
        cmd: users::UserCmd,
    },
    /// Secrets encrypted at rest: `berth secrets rotate` moves every Secret to the current
    /// first key of the server's encryption config
    Secrets {
        #[command(subcommand)]
        cmd: secrets::SecretsCmd,
    },
    /// List the kinds the server serves
    ApiResources,
    /// Show client and server versions
    Version,
}

/// The default kubeconfig `berth up` writes: `$XDG_DATA_HOME/berth/kubeconfig.yaml`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/berth"),
        None => PathBuf::from("/var/lib/berth"),
    }
}

pub(crate) struct Ctx {
    client: Client,
    namespace: String,
}

/// A client for the cluster `conn` names, and the namespace to work in.
pub fn client(conn: &Conn) -> anyhow::Result<(Client, String)> {
    let ctx = connect(conn)?;
    Ok((ctx.client, ctx.namespace))
}

pub(crate) fn connect(conn: &Conn) -> anyhow::Result<Ctx> {
    let cfg = KubeConfig::discover(
        conn.kubeconfig.as_deref(),
        &default_data_dir().join("kubeconfig.yaml"),
    )?;
    let ctx = cfg.current()?;
    Ok(Ctx {
        client: Client::from_kubeconfig(&cfg)?.printing_warnings(),
        namespace: conn.namespace.clone().unwrap_or(ctx.namespace),
    })
}

pub(crate) fn resolve_kind(name: &str) -> anyhow::Result<&'static ResourceKind> {
    kinds::resolve(name).ok_or_else(|| {
        anyhow!("the server doesn't have a resource type \"{name}\" (see `berth api-resources`)")
    })
}

/// kubectl's wording for server errors: `Error from server (NotFound): ...`.
pub fn describe_error(e: &anyhow::Error) -> String {
    if let Some(said) = e
        .chain()
        .find_map(|c| c.downcast_ref::<stream::ServerSaid>())
    {
        return said.0.clone();
    }
    if let Some(ClientError::Api(s)) = e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        return format!("Error from server ({}): {}", s.reason, s.message);
    }
    format!("error: {e:#}")
}

pub(crate) fn ns_for<'a>(kind: &ResourceKind, ns: &'a str) -> Option<&'a str> {
    kind.namespaced.then_some(ns)
}

/// Runs a verb; returns the process exit code.
pub async fn run(conn: &Conn, verb: Verb, out: &mut dyn Write) -> anyhow::Result<i32> {
    match verb {
        Verb::Token { cmd } => {
            let ctx = connect(conn)?;
            tokens::run(&ctx.client, cmd, out).await
        }
        Verb::Cordon { node } => {
            let ctx = connect(conn)?;
            nodes::cordon(&ctx.client, &node, true, out).await
        }
        Verb::Uncordon { node } => {
            let ctx = connect(conn)?;
            nodes::cordon(&ctx.client, &node, false, out).await
        }
        Verb::Drain {
            node,
            force,
            grace_period,
            timeout,
        } => {
            let ctx = connect(conn)?;
            nodes::drain(
                &ctx.client,
                &node,
                force,
                grace_period,
                std::time::Duration::from_secs(timeout),
                out,
            )
            .await
        }
        Verb::Kv { cmd } => {
            let ctx = connect(conn)?;
            kv::run(&ctx.client, cmd, out).await
        }
        Verb::Auth { cmd } => {
            let ctx = connect(conn)?;
            auth::run(&ctx.client, &ctx.namespace, cmd, out).await
        }
        Verb::User { cmd } => {
            let cfg = KubeConfig::discover(
                conn.kubeconfig.as_deref(),
                &default_data_dir().join("kubeconfig.yaml"),
            )?;
            let current = cfg.current()?;
            let client = Client::from_kubeconfig(&cfg)?.printing_warnings();
            let user_conn = users::Conn {
                client: &client,
                namespace: conn.namespace.as_deref(),
                server: &current.server,
                ca_pem: current.ca_pem.as_deref().unwrap_or(""),
            };
            users::run(&user_conn, cmd, out).await
        }
        Verb::Secrets { cmd } => {
            let ctx = connect(conn)?;
            secrets::run(&ctx.client, cmd, out).await
        }
        Verb::Logs(args) => {
            let ctx = connect(conn)?;
            stream::logs(&ctx.client, &ctx.namespace, args, out).await
        }
        Verb::Exec(args) => {
            let ctx = connect(conn)?;
            stream::exec(&ctx.client, &ctx.namespace, args).await
        }
        Verb::Top {
            what,
            name,
            all_namespaces,
            selector,
            containers,
        } => {
            let ctx = connect(conn)?;
            stream::top(
                &ctx.client,
                &ctx.namespace,
                &what,
                name.as_deref(),
                all_namespaces,
                selector.as_deref(),
                containers,
                out,
            )
            .await
        }
        Verb::Scale { target, replicas } => {
            let ctx = connect(conn)?;
            rollout::scale(&ctx.client, &ctx.namespace, &target, replicas, out).await
        }
        Verb::Rollout { cmd } => {
            let ctx = connect(conn)?;
            rollout::rollout(&ctx.client, &ctx.namespace, cmd, out).await
        }
        Verb::Version => discovery::version(conn, out).await,
        Verb::Image { data_dir, cmd } => {
            image::run(&data_dir.unwrap_or_else(default_data_dir), cmd, out).await
        }
        Verb::ApiResources => {
            let ctx = connect(conn)?;
            discovery::api_resources(&ctx, out).await
        }
        Verb::Apply { files, dry_run } => {
            let ctx = connect(conn)?;
            let items = manifests::read_all(&files, &ctx.namespace)?;
            apply::apply(&ctx, items, dry_run, out).await
        }
        Verb::Get(args) => {
            let ctx = connect(conn)?;
            get::run(&ctx, args, out).await
        }
        Verb::Describe { kind, name } => {
            let ctx = connect(conn)?;
            let kind = resolve_kind(&kind)?;
            describe::describe(&ctx, kind, &name, out).await
        }
        Verb::Delete(args) => delete::run(conn, args, out).await,
        Verb::Diff { files } => {
            let ctx = connect(conn)?;
            let items = manifests::read_all(&files, &ctx.namespace)?;
            diff::diff(&ctx, items, out).await
        }
        Verb::History {
            target,
            denied,
            diff,
            status,
            limit,
            output,
        } => {
            let ctx = connect(conn)?;
            if denied {
                return denied::denied(&ctx, limit, output, out).await;
            }
            history::history(&ctx, target, diff, status, limit, output, out).await
        }
        Verb::Export {
            revision,
            at,
            include_secrets,
        } => {
            let ctx = connect(conn)?;
            export::export(&ctx, revision, at, include_secrets, out).await
        }
    }
}

pub(crate) fn hyper_get() -> berth_client::Method {
    berth_client::Method::GET
}

/// Times in tables: to the second, as kubectl shows them.
pub(crate) fn short_time(v: &Value) -> String {
    let t = v.as_str().unwrap_or("");
    match berth_api::timefmt::parse_rfc3339(t) {
        Ok(n) => berth_api::timefmt::rfc3339_from_nanos(n),
        Err(_) => t.to_string(),
    }
}

pub(crate) fn print_document(
    v: &Value,
    output: Option<Output>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    match output {
        Some(Output::Json) => write!(out, "{}", print::to_json(v))?,
        Some(Output::Yaml) => write!(out, "{}", print::to_yaml(v))?,
        _ => return Ok(false),
    }
    Ok(true)
}
