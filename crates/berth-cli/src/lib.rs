//! The kubectl-like verbs of `berth`: apply, get, describe, delete, diff, history, export,
//! api-resources, version.
//!
//! Output goes to the writer a verb is given, so tests read exactly what a user sees.

pub mod image;
pub mod kv;
pub mod manifests;
pub mod nodes;
pub mod print;
pub mod rollout;
pub mod stream;
pub mod tokens;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use berth_api::kinds::{self, ResourceKind};
use berth_client::{Client, ClientError, KubeConfig, encode_query};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

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
    Get {
        /// Kind: plural, singular or short name (po, deploy, rs, svc, ep, cm, ns, no)
        kind: String,
        /// Names (all objects of the kind if none)
        names: Vec<String>,
        /// Label selector, e.g. app=web,tier!=db
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Field selector, e.g. status.phase=Running
        #[arg(long)]
        field_selector: Option<String>,
        /// List across all namespaces
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
        /// After listing, watch for changes
        #[arg(short = 'w', long)]
        watch: bool,
        /// Show the object as it was at this store revision
        #[arg(long, conflicts_with = "at")]
        revision: Option<u64>,
        /// Show the object as it was at this time (RFC 3339, e.g. 2026-11-27T10:00:00Z)
        #[arg(long)]
        at: Option<String>,
    },
    /// Show an object in detail, with its recent events
    Describe { kind: String, name: String },
    /// Delete objects by kind and name, or those in manifests
    Delete {
        /// Kind, then names; or use -f
        args: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// What happens to dependents (objects this one owns)
        #[arg(long, value_enum, default_value = "background")]
        cascade: Cascade,
        /// Succeed when the object does not exist
        #[arg(long)]
        ignore_not_found: bool,
        /// Seconds a pod gets to stop (default: its terminationGracePeriodSeconds); 0 with
        /// --force removes it from the API at once, whatever still runs
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value_t = -1)]
        grace_period: i64,
        /// With --grace-period=0: do not wait for the node to confirm the pod stopped
        #[arg(long)]
        force: bool,
        /// Wait until the objects are gone (pods: stopped by their node)
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        wait: bool,
    },
    /// Show what `apply -f` would change, as a unified diff (exit code 1 when it would)
    Diff {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Who changed an object, when and how (`berth history deploy/web --diff`); with no
    /// object, the cluster's recent revisions
    History {
        /// KIND/NAME, or KIND NAME
        target: Vec<String>,
        /// Show what each revision changed
        #[arg(long)]
        diff: bool,
        /// Also show revisions that changed only the status (controllers and agents
        /// reporting), not the desired state
        #[arg(long)]
        status: bool,
        /// With no object: how many recent revisions to show
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

struct Ctx {
    client: Client,
    namespace: String,
}

/// A client for the cluster `conn` names, and the namespace to work in.
pub fn client(conn: &Conn) -> anyhow::Result<(Client, String)> {
    let ctx = connect(conn)?;
    Ok((ctx.client, ctx.namespace))
}

fn connect(conn: &Conn) -> anyhow::Result<Ctx> {
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

fn resolve_kind(name: &str) -> anyhow::Result<&'static ResourceKind> {
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

fn ns_for<'a>(kind: &ResourceKind, ns: &'a str) -> Option<&'a str> {
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
        Verb::Version => {
            writeln!(out, "Client Version: v{}", env!("CARGO_PKG_VERSION"))?;
            match connect(conn) {
                Ok(ctx) => match ctx.client.json(hyper_get(), "/version", None).await {
                    Ok(v) => writeln!(
                        out,
                        "Server Version: {}",
                        v["gitVersion"].as_str().unwrap_or("?")
                    )?,
                    Err(e) => writeln!(out, "Server Version: unreachable ({e})")?,
                },
                Err(e) => writeln!(out, "Server Version: unknown ({e})")?,
            }
            Ok(0)
        }
        Verb::Image { data_dir, cmd } => {
            image::run(&data_dir.unwrap_or_else(default_data_dir), cmd, out).await
        }
        Verb::ApiResources => {
            let ctx = connect(conn)?;
            let mut rows = Vec::new();
            let mut lists = vec![ctx.client.json(hyper_get(), "/api/v1", None).await?];
            let groups = ctx.client.json(hyper_get(), "/apis", None).await?;
            for g in groups["groups"].as_array().cloned().unwrap_or_default() {
                let gv = g["preferredVersion"]["groupVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                lists.push(
                    ctx.client
                        .json(hyper_get(), &format!("/apis/{gv}"), None)
                        .await?,
                );
            }
            for l in lists {
                for r in l["resources"].as_array().cloned().unwrap_or_default() {
                    let name = r["name"].as_str().unwrap_or("");
                    if name.contains('/') {
                        continue;
                    }
                    let short = r["shortNames"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    rows.push(vec![
                        name.to_string(),
                        short,
                        l["groupVersion"].as_str().unwrap_or("").into(),
                        r["namespaced"].to_string(),
                        r["kind"].as_str().unwrap_or("").into(),
                    ]);
                }
            }
            write!(
                out,
                "{}",
                print::table(
                    &["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
                    &rows
                )
            )?;
            Ok(0)
        }
        Verb::Apply { files, dry_run } => {
            let ctx = connect(conn)?;
            let items = manifests::read_all(&files, &ctx.namespace)?;
            apply(&ctx, items, dry_run, out).await
        }
        Verb::Get {
            kind,
            names,
            selector,
            field_selector,
            all_namespaces,
            output,
            watch,
            revision,
            at,
        } => {
            let ctx = connect(conn)?;
            // `get deploy,cm` lists several kinds, one table each.
            let kinds = kind
                .split(',')
                .map(resolve_kind)
                .collect::<anyhow::Result<Vec<_>>>()?;
            if kinds.len() > 1 && (!names.is_empty() || watch) {
                bail!("names and --watch go with one kind at a time");
            }
            let mut code = 0;
            for (i, k) in kinds.into_iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                code = code.max(
                    get(
                        &ctx,
                        k,
                        names.clone(),
                        selector.clone(),
                        field_selector.clone(),
                        all_namespaces,
                        output,
                        watch,
                        revision,
                        at.clone(),
                        out,
                    )
                    .await?,
                );
            }
            Ok(code)
        }
        Verb::Describe { kind, name } => {
            let ctx = connect(conn)?;
            let kind = resolve_kind(&kind)?;
            describe(&ctx, kind, &name, out).await
        }
        Verb::Delete {
            args,
            files,
            cascade,
            ignore_not_found,
            grace_period,
            force,
            wait,
        } => {
            if grace_period == 0 && !force {
                bail!(
                    "--grace-period=0 removes pods without waiting for their node to stop them; add --force to do that, or give a grace period of 1 or more"
                );
            }
            let ctx = connect(conn)?;
            let policy = match cascade {
                Cascade::Background => "Background",
                Cascade::Foreground => "Foreground",
                Cascade::Orphan => "Orphan",
            };
            let mut targets: Vec<(&'static ResourceKind, Option<String>, String)> = Vec::new();
            if !files.is_empty() {
                for it in manifests::read_all(&files, &ctx.namespace)? {
                    targets.push((
                        it.kind,
                        it.object.namespace().map(String::from),
                        it.object.name().to_string(),
                    ));
                }
            } else {
                let (kind, names) = match args.split_first() {
                    Some((k, rest)) if k.contains('/') => {
                        let (k, n) = k.split_once('/').unwrap_or((k, ""));
                        let mut names = vec![n.to_string()];
                        names.extend(rest.iter().cloned());
                        (resolve_kind(k)?, names)
                    }
                    Some((k, rest)) => (resolve_kind(k)?, rest.to_vec()),
                    None => bail!("give a kind and names (berth delete deploy web) or -f FILE"),
                };
                if names.is_empty() {
                    bail!("give the names of the {} to delete", kind.plural);
                }
                for n in names {
                    targets.push((kind, ns_for(kind, &ctx.namespace).map(String::from), n));
                }
            }
            let mut code = 0;
            for (kind, ns, name) in targets {
                match ctx
                    .client
                    .delete(
                        kind,
                        ns.as_deref(),
                        &name,
                        &if grace_period >= 0 {
                            format!("propagationPolicy={policy}&gracePeriodSeconds={grace_period}")
                        } else {
                            format!("propagationPolicy={policy}")
                        },
                    )
                    .await
                {
                    Ok(gone) => {
                        writeln!(out, "{}/{} deleted", kind.qualified_singular(), name)?;
                        if wait {
                            wait_deleted(&ctx.client, kind, ns.as_deref(), &name, &gone).await?;
                        }
                    }
                    Err(e) if e.code() == Some(404) && ignore_not_found => {}
                    Err(e) => {
                        eprintln!("{}", describe_error(&e.into()));
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Verb::Diff { files } => {
            let ctx = connect(conn)?;
            let items = manifests::read_all(&files, &ctx.namespace)?;
            diff(&ctx, items, out).await
        }
        Verb::History {
            target,
            diff,
            status,
            limit,
            output,
        } => {
            let ctx = connect(conn)?;
            history(&ctx, target, diff, status, limit, output, out).await
        }
        Verb::Export {
            revision,
            at,
            include_secrets,
        } => {
            let ctx = connect(conn)?;
            let q = match (revision, at) {
                (Some(r), _) => format!("revision={r}"),
                (None, Some(t)) => format!("at={}", encode_query(&t)),
                _ if include_secrets => "includeSecrets=true".to_string(),
                _ => String::new(),
            };
            let list = ctx.client.export(&q).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            writeln!(
                out,
                "# berth export at revision {}",
                list["metadata"]["resourceVersion"].as_str().unwrap_or("?")
            )?;
            for s in list["omittedSecrets"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "# left out: secret {} (Secrets are exported only with --include-secrets, at the current revision)",
                    s.as_str().unwrap_or("?")
                )?;
            }
            for it in items {
                writeln!(out, "---")?;
                write!(out, "{}", print::to_yaml(&it))?;
            }
            Ok(0)
        }
    }
}

fn hyper_get() -> berth_client::Method {
    berth_client::Method::GET
}

async fn apply(
    ctx: &Ctx,
    items: Vec<manifests::Item>,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let suffix = if dry_run { " (dry run)" } else { "" };
    let q = if dry_run { "dryRun=All" } else { "" };
    for it in items {
        let ns = it.object.namespace().map(String::from);
        let ns = ns.as_deref().filter(|_| it.kind.namespaced);
        let name = it.object.name().to_string();
        let desired = manifests::with_last_applied(&it.object);
        let label = format!("{}/{}", it.kind.qualified_singular(), name);
        let at = || format!("{}: document {}", it.source, it.doc);
        match ctx.client.get(it.kind, ns, &name).await {
            Err(e) if e.code() == Some(404) => {
                ctx.client
                    .create(it.kind, ns, &desired.as_value(), q)
                    .await
                    .map_err(|e| anyhow!("{}: {}", at(), describe_error(&e.into())))?;
                writeln!(out, "{label} created{suffix}")?;
            }
            Err(e) => return Err(e.into()),
            Ok(live) => {
                let patch = manifests::patch_against(&live, &desired);
                if patch.is_empty() {
                    writeln!(out, "{label} unchanged")?;
                    continue;
                }
                ctx.client
                    .patch(
                        it.kind,
                        ns,
                        &name,
                        "application/merge-patch+json",
                        &Value::Object(patch),
                        q,
                    )
                    .await
                    .map_err(|e| anyhow!("{}: {}", at(), describe_error(&e.into())))?;
                writeln!(out, "{label} configured{suffix}")?;
            }
        }
    }
    Ok(0)
}

async fn get(
    ctx: &Ctx,
    kind: &'static ResourceKind,
    names: Vec<String>,
    selector: Option<String>,
    field_selector: Option<String>,
    all_namespaces: bool,
    output: Option<Output>,
    watch: bool,
    revision: Option<u64>,
    at: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let ns = if all_namespaces {
        None
    } else {
        ns_for(kind, &ctx.namespace)
    };
    let show_ns = all_namespaces && kind.namespaced;
    let mut objects: Vec<Value> = Vec::new();
    if revision.is_some() || at.is_some() {
        let [name] = names.as_slice() else {
            bail!("--revision and --at show one object: give its name")
        };
        let mut q = format!(
            "resource={}&name={}",
            kind.qualified_plural(),
            encode_query(name)
        );
        if let Some(ns) = ns {
            q.push_str(&format!("&namespace={ns}"));
        }
        match (revision, &at) {
            (Some(r), _) => q.push_str(&format!("&revision={r}")),
            (None, Some(t)) => q.push_str(&format!("&at={}", encode_query(t))),
            _ => {}
        }
        objects.push(ctx.client.history(&q).await?);
    } else if !names.is_empty() {
        for n in &names {
            objects.push(ctx.client.get(kind, ns, n).await?);
        }
    } else {
        let mut q = Vec::new();
        if let Some(s) = &selector {
            q.push(format!("labelSelector={}", encode_query(s)));
        }
        if let Some(f) = &field_selector {
            q.push(format!("fieldSelector={}", encode_query(f)));
        }
        let list = ctx.client.list(kind, ns, &q.join("&")).await?;
        objects = list["items"].as_array().cloned().unwrap_or_default();
        if !watch && objects.is_empty() && matches!(output, None | Some(Output::Wide)) {
            match ns {
                Some(ns) => eprintln!("No resources found in {ns} namespace."),
                None => eprintln!("No resources found"),
            }
            return Ok(0);
        }
        if watch {
            let rv = list["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .to_string();
            print_objects(kind, &objects, output, show_ns, false, false, out)?;
            out.flush()?;
            let mut wq = q.clone();
            wq.push(format!("resourceVersion={rv}"));
            let mut w = ctx.client.watch(kind, ns, &wq.join("&")).await?;
            while let Some(ev) = w.next().await? {
                if ev.typ == "ERROR" {
                    bail!(
                        "watch ended: {}",
                        ev.object["message"].as_str().unwrap_or("error")
                    );
                }
                if ev.typ == "BOOKMARK" {
                    continue;
                }
                print_objects(kind, &[ev.object], output, show_ns, true, true, out)?;
                out.flush()?;
            }
            return Ok(0);
        }
    }
    let single = names.len() == 1;
    print_objects(kind, &objects, output, show_ns, false, single, out)?;
    Ok(0)
}

fn print_objects(
    kind: &ResourceKind,
    objects: &[Value],
    output: Option<Output>,
    show_ns: bool,
    no_headers: bool,
    single: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match output {
        Some(Output::Yaml) | Some(Output::Json) => {
            // One object asked for by name (or one watch event) prints as itself; a listing
            // is always a List, as kubectl prints it.
            let v = if objects.len() == 1 && (no_headers || single) {
                objects[0].clone()
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}})
            };
            if output == Some(Output::Yaml) {
                if no_headers {
                    writeln!(out, "---")?;
                }
                write!(out, "{}", print::to_yaml(&v))?;
            } else {
                write!(out, "{}", print::to_json(&v))?;
            }
        }
        Some(Output::Name) => {
            for o in objects {
                writeln!(
                    out,
                    "{}/{}",
                    kind.qualified_singular(),
                    o["metadata"]["name"].as_str().unwrap_or("")
                )?;
            }
        }
        None | Some(Output::Wide) => {
            let wide = output == Some(Output::Wide);
            let now = print::now_nanos();
            let mut headers = print::columns(kind, wide);
            if show_ns {
                headers.insert(0, "NAMESPACE");
            }
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| {
                    let mut r = print::row(kind, o, wide, now);
                    if show_ns {
                        r.insert(
                            0,
                            o["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        );
                    }
                    r
                })
                .collect();
            let t = print::table(&headers, &rows);
            if no_headers {
                for l in t.lines().skip(1) {
                    writeln!(out, "{l}")?;
                }
            } else {
                write!(out, "{t}")?;
            }
        }
    }
    Ok(())
}

async fn describe(
    ctx: &Ctx,
    kind: &'static ResourceKind,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let ns = ns_for(kind, &ctx.namespace);
    let o = ctx.client.get(kind, ns, name).await?;
    let m = &o["metadata"];
    let kv = |v: &Value| -> String {
        match v.as_object() {
            Some(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n              "),
            _ => "<none>".into(),
        }
    };
    writeln!(out, "Name:         {}", m["name"].as_str().unwrap_or(""))?;
    if kind.namespaced {
        writeln!(
            out,
            "Namespace:    {}",
            m["namespace"].as_str().unwrap_or("")
        )?;
    }
    writeln!(out, "Kind:         {}", kind.kind)?;
    writeln!(out, "Labels:       {}", kv(&m["labels"]))?;
    let mut ann = m["annotations"].clone();
    if let Some(a) = ann.as_object_mut() {
        a.remove(manifests::LAST_APPLIED);
    }
    writeln!(out, "Annotations:  {}", kv(&ann))?;
    writeln!(
        out,
        "Created:      {}",
        m["creationTimestamp"].as_str().unwrap_or("")
    )?;
    writeln!(out, "UID:          {}", m["uid"].as_str().unwrap_or(""))?;
    writeln!(
        out,
        "Version:      {} (generation {})",
        m["resourceVersion"].as_str().unwrap_or(""),
        m["generation"].as_i64().unwrap_or(0)
    )?;
    if let Some(owners) = m["ownerReferences"].as_array() {
        for r in owners {
            writeln!(
                out,
                "Controlled By:  {}/{}",
                r["kind"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            )?;
        }
    }
    if m["deletionTimestamp"].is_string() {
        writeln!(
            out,
            "Terminating:  since {}",
            m["deletionTimestamp"].as_str().unwrap_or("")
        )?;
    }
    let body: serde_json::Map<String, Value> = o
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "apiVersion" | "kind"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &body {
        let mut title = k.clone();
        if let Some(f) = title.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        writeln!(out, "{title}:")?;
        let kind_secret = kind.kind == "Secret" && k == "data";
        if kind_secret {
            for (dk, dv) in v.as_object().cloned().unwrap_or_default() {
                let len =
                    berth_api::base64::decode(dv.as_str().unwrap_or("")).map_or(0, |b| b.len());
                writeln!(out, "  {dk}:  {len} bytes")?;
            }
            continue;
        }
        for l in print::to_yaml(v).lines() {
            writeln!(out, "  {l}")?;
        }
    }
    // Events about this object.
    let evk = resolve_kind("events")?;
    let q = format!(
        "fieldSelector={}",
        encode_query(&format!(
            "involvedObject.name={name},involvedObject.kind={}",
            kind.kind
        ))
    );
    let events = ctx
        .client
        .list(evk, ns.or(Some("default")), &q)
        .await
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default();
    if events.is_empty() {
        writeln!(out, "Events:       <none>")?;
    } else {
        writeln!(out, "Events:")?;
        let now = print::now_nanos();
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e["type"].as_str().unwrap_or("").into(),
                    e["reason"].as_str().unwrap_or("").into(),
                    print::age(e, now),
                    e["source"]["component"].as_str().unwrap_or("").into(),
                    e["message"].as_str().unwrap_or("").into(),
                ]
            })
            .collect();
        for l in print::table(&["Type", "Reason", "Age", "From", "Message"], &rows).lines() {
            writeln!(out, "  {l}")?;
        }
    }
    Ok(0)
}

/// YAML of an object for diffs: without the fields that change on every write.
fn diffable(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
        // The last-applied copy repeats the whole manifest; the diff of the object says it.
        let empty = match m.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                a.remove(manifests::LAST_APPLIED);
                a.is_empty()
            }
            None => false,
        };
        if empty {
            m.remove("annotations");
        }
    }
    if v.is_null() {
        String::new()
    } else {
        print::to_yaml(&v)
    }
}

async fn diff(ctx: &Ctx, items: Vec<manifests::Item>, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut changed = false;
    for it in items {
        let ns = it.object.namespace().map(String::from);
        let ns = ns.as_deref().filter(|_| it.kind.namespaced);
        let name = it.object.name().to_string();
        let desired = manifests::with_last_applied(&it.object);
        let (live, merged) = match ctx.client.get(it.kind, ns, &name).await {
            Err(e) if e.code() == Some(404) => (
                Value::Null,
                ctx.client
                    .create(it.kind, ns, &desired.as_value(), "dryRun=All")
                    .await?,
            ),
            Err(e) => return Err(e.into()),
            Ok(live) => {
                let patch = manifests::patch_against(&live, &desired);
                let merged = if patch.is_empty() {
                    live.clone()
                } else {
                    ctx.client
                        .patch(
                            it.kind,
                            ns,
                            &name,
                            "application/merge-patch+json",
                            &Value::Object(patch),
                            "dryRun=All",
                        )
                        .await?
                };
                (live, merged)
            }
        };
        let mut merged = merged;
        if live.is_null() {
            // Fields the server would set on create are noise here.
            if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
                for f in ["uid", "creationTimestamp"] {
                    m.remove(f);
                }
            }
        }
        let (a, b) = (diffable(&live), diffable(&merged));
        if a != b {
            changed = true;
            let label = format!("{}/{}", it.kind.qualified_singular(), name);
            write!(
                out,
                "{}",
                print::unified_diff(&a, &b, &format!("live/{label}"), &format!("merged/{label}"))
            )?;
        }
    }
    Ok(i32::from(changed))
}

/// Times in tables: to the second, as kubectl shows them.
fn short_time(v: &Value) -> String {
    let t = v.as_str().unwrap_or("");
    match berth_api::timefmt::parse_rfc3339(t) {
        Ok(n) => berth_api::timefmt::rfc3339_from_nanos(n),
        Err(_) => t.to_string(),
    }
}

fn print_document(v: &Value, output: Option<Output>, out: &mut dyn Write) -> anyhow::Result<bool> {
    match output {
        Some(Output::Json) => write!(out, "{}", print::to_json(v))?,
        Some(Output::Yaml) => write!(out, "{}", print::to_yaml(v))?,
        _ => return Ok(false),
    }
    Ok(true)
}

async fn history(
    ctx: &Ctx,
    target: Vec<String>,
    show_diff: bool,
    show_status: bool,
    limit: u64,
    output: Option<Output>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (kind, name) = match target.as_slice() {
        [] => {
            let revs = ctx.client.revisions(&format!("limit={limit}")).await?;
            if print_document(&revs, output, out)? {
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = revs["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    vec![
                        r["revision"].to_string(),
                        short_time(&r["time"]),
                        r["user"].as_str().unwrap_or("").into(),
                        r["verb"].as_str().unwrap_or("").into(),
                        r["changes"].to_string(),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                print::table(&["REVISION", "TIME", "USER", "VERB", "CHANGES"], &rows)
            )?;
            return Ok(0);
        }
        [one] => {
            let (k, n) = one
                .split_once('/')
                .context("give KIND/NAME or KIND NAME, e.g. berth history deploy/web")?;
            (resolve_kind(k)?, n.to_string())
        }
        [k, n] => (resolve_kind(k)?, n.clone()),
        _ => bail!("give one object: KIND/NAME or KIND NAME"),
    };
    let mut q = format!(
        "resource={}&name={}",
        kind.qualified_plural(),
        encode_query(&name)
    );
    if kind.namespaced {
        q.push_str(&format!("&namespace={}", ctx.namespace));
    }
    let mut h = ctx.client.history(&q).await?;
    let items: Vec<Value> = h["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| show_status || i["verb"] != "update-status")
        .collect();
    h["items"] = Value::Array(items.clone());
    if print_document(&h, output, out)? {
        return Ok(0);
    }
    if !show_diff {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                let mut change = match (i["type"].as_str(), i["verb"].as_str()) {
                    (Some("Delete"), _) => "deleted".to_string(),
                    (_, Some(v)) => v.to_string(),
                    _ => String::new(),
                };
                if let Some(d) = data_changes(i) {
                    change.push_str(&format!(" ({d})"));
                }
                vec![
                    i["revision"].to_string(),
                    short_time(&i["time"]),
                    i["user"].as_str().unwrap_or("").into(),
                    change,
                ]
            })
            .collect();
        write!(
            out,
            "{}",
            print::table(&["REVISION", "TIME", "USER", "CHANGE"], &rows)
        )?;
        return Ok(0);
    }
    let mut prev = String::new();
    for i in items {
        writeln!(
            out,
            "revision {}  {}  by {}  ({})",
            i["revision"],
            short_time(&i["time"]),
            i["user"].as_str().unwrap_or(""),
            i["verb"].as_str().unwrap_or("")
        )?;
        if let Some(d) = data_changes(&i) {
            writeln!(out, "  {d}")?;
        }
        let cur = if i["type"] == "Delete" {
            String::new()
        } else {
            diffable(&i["object"])
        };
        let d = print::unified_diff(&prev, &cur, "before", "after");
        if d.is_empty() {
            writeln!(out, "  (no change to the object)")?;
        }
        for l in d.lines() {
            writeln!(out, "  {l}")?;
        }
        prev = cur;
    }
    Ok(0)
}

/// A Secret revision's `dataChanges` as words: `data: password changed, token added` (the
/// server never sends the values).
fn data_changes(item: &Value) -> Option<String> {
    let changes = item["dataChanges"].as_array().filter(|c| !c.is_empty())?;
    let words: Vec<String> = changes
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["key"].as_str().unwrap_or("?"),
                c["change"].as_str().unwrap_or("changed")
            )
        })
        .collect();
    Some(format!("data: {}", words.join(", ")))
}

/// Waits until an object deleted is gone (or replaced by a new one of the same name): a pod
/// stops within its grace period, a namespace once empty.
async fn wait_deleted(
    client: &Client,
    kind: &ResourceKind,
    ns: Option<&str>,
    name: &str,
    deleted: &serde_json::Value,
) -> anyhow::Result<()> {
    let uid = deleted["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let grace = deleted["metadata"]["deletionGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(grace + 60);
    loop {
        match client.get(kind, ns, name).await {
            Err(e) if e.code() == Some(404) => return Ok(()),
            Ok(o) if o["metadata"]["uid"].as_str() != Some(uid.as_str()) => return Ok(()),
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{}/{name} is still being deleted after {} s; `berth get {} {name} -o yaml` shows what holds it",
                kind.qualified_singular(),
                grace + 60,
                kind.plural
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
