//! `berth gen`: the config generation engine of ConfigTemplates, on a host outside the
//! cluster (what docker-gen and confd do, with a check before the swap and the previous file
//! put back when the reload or probe fails).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_confgen::{self as confgen, Outcome, Sources};
use clap::Args;
use serde_json::{Value, json};

/// Render a config file from the cluster's state and keep it current
///
/// Either run a ConfigTemplate manifest here (`-f nginx-template.yaml`; its nodeName is
/// ignored), or give the template and the steps as flags. The file is rendered once every
/// source has been read, then again after every change (debounced). A new file is checked
/// (`--check`, with {candidate} replaced by its path), swapped in atomically, reloaded
/// (`--reload`) and probed (`--probe-url`); if the reload or probe fails the previous file is
/// put back and reloaded. Failures are retried with a back-off; it never gives up.
#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// A ConfigTemplate manifest (YAML or JSON) whose spec to run
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The template (minijinja; see docs/config-generation.md for what it sees)
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    pub template: Option<PathBuf>,
    /// Where the rendered file goes
    #[arg(long, value_name = "PATH", conflicts_with = "file")]
    pub dest: Option<String>,
    /// A shell command that must accept the new file before it is swapped in
    /// (e.g. "nginx -t -c {candidate}")
    #[arg(long, value_name = "COMMAND", conflicts_with = "file")]
    pub check: Option<String>,
    /// A shell command that makes the service read the new file (e.g. "nginx -s reload")
    #[arg(long, value_name = "COMMAND", conflicts_with = "file")]
    pub reload: Option<String>,
    /// A URL that must answer 2xx or 3xx after the reload
    #[arg(long, value_name = "URL", conflicts_with = "file")]
    pub probe_url: Option<String>,
    /// Render after this long without another change
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "100ms",
        conflicts_with = "file"
    )]
    pub min_wait: String,
    /// ... but at most this long after the first change
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        conflicts_with = "file"
    )]
    pub max_wait: String,
    /// Only objects of this namespace (repeatable; default: all)
    #[arg(long = "source-namespace", value_name = "NS", conflicts_with = "file")]
    pub source_namespaces: Vec<String>,
    /// A key/value prefix the template reads (repeatable)
    #[arg(long, value_name = "PREFIX", conflicts_with = "file")]
    pub kv: Vec<String>,
    /// The file's mode (octal)
    #[arg(
        long,
        value_name = "MODE",
        default_value = "0644",
        conflicts_with = "file"
    )]
    pub mode: String,
    /// Render once, apply, and exit (0 when the file is in place, 1 when a step failed)
    #[arg(long)]
    pub once: bool,
    /// Serve the engine's metrics on http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// The flag a spec field came from, for errors.
fn flag_of(field: &str) -> &str {
    match field {
        "spec.template" => "--template",
        "spec.destination" => "--dest",
        "spec.check.command" => "--check",
        "spec.reload.command" => "--reload",
        "spec.probe.httpGet.url" => "--probe-url",
        "spec.debounce.min" => "--min-wait",
        "spec.debounce.max" => "--max-wait",
        "spec.mode" => "--mode",
        f if f.starts_with("spec.kv") => "--kv",
        f => f,
    }
}

fn shell(cmd: &str) -> Value {
    json!({"command": ["/bin/sh", "-c", cmd]})
}

/// The spec the arguments describe.
fn spec_of(args: &GenArgs) -> anyhow::Result<Value> {
    if let Some(f) = &args.file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let docs = berth_api::manifest::parse(&f.display().to_string(), &text)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let doc = docs
            .into_iter()
            .find(|d| d.object.kind() == "ConfigTemplate")
            .with_context(|| format!("{} holds no ConfigTemplate", f.display()))?;
        return Ok(doc.object.get("spec").cloned().unwrap_or(Value::Null));
    }
    let template = match &args.template {
        Some(t) => std::fs::read_to_string(t)
            .with_context(|| format!("--template {}: cannot read it", t.display()))?,
        None => anyhow::bail!("give --template FILE and --dest PATH, or -f CONFIGTEMPLATE.yaml"),
    };
    let mut spec = json!({
        "template": template,
        "destination": args.dest.clone().unwrap_or_default(),
        "debounce": {"min": args.min_wait, "max": args.max_wait},
        "namespaces": args.source_namespaces, "kv": args.kv, "mode": args.mode,
    });
    if let Some(c) = &args.check {
        spec["check"] = shell(c);
    }
    if let Some(c) = &args.reload {
        spec["reload"] = shell(c);
    }
    if let Some(u) = &args.probe_url {
        spec["probe"] = json!({"httpGet": {"url": u}});
    }
    Ok(spec)
}

/// Says on the terminal what each round did.
struct Terminal {
    dest: String,
    last: Option<Outcome>,
}

impl confgen::Reporter for Terminal {
    async fn report(&mut self, outcome: &Outcome) {
        if self.last.as_ref() == Some(outcome) {
            return;
        }
        match outcome {
            Outcome::Applied { revision, bytes } => eprintln!(
                "{}: applied ({bytes} bytes, cluster revision {revision})",
                self.dest
            ),
            Outcome::Unchanged { revision } => {
                eprintln!("{}: up to date (cluster revision {revision})", self.dest)
            }
            Outcome::Failed { stage, message, .. } => {
                eprintln!("{}: {}: {message}", self.dest, stage.reason())
            }
        }
        self.last = Some(outcome.clone());
    }
}

pub async fn run(conn: &berth_cli::Conn, args: GenArgs) -> anyhow::Result<i32> {
    let raw = spec_of(&args)?;
    let spec = berth_api::configtemplate::parse(Some(&raw), false).map_err(|errs| {
        let lines: Vec<String> = errs
            .iter()
            .map(|e| {
                let flag = flag_of(&e.field);
                if args.file.is_some() || flag == e.field {
                    e.message.clone()
                } else {
                    format!("{flag}: {}", e.message)
                }
            })
            .collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })?;
    let (client, _) = berth_cli::client(conn)?;
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async { berth_metrics::render() }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    let sources = Sources::start(client, &spec.kv, stop.clone());
    let mut reporter = Terminal {
        dest: spec.destination.clone(),
        last: None,
    };
    if args.once {
        if !confgen::synced(&sources, &mut stop).await {
            return Ok(1);
        }
        let outcome = confgen::apply_once(&spec, &sources, &node).await;
        confgen::Reporter::report(&mut reporter, &outcome).await;
        return Ok(i32::from(matches!(outcome, Outcome::Failed { .. })));
    }
    confgen::run(
        spec.destination.clone(),
        spec,
        node,
        sources,
        reporter,
        stop,
    )
    .await;
    Ok(0)
}
