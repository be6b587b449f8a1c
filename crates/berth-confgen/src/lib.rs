//! Config generation: a file rendered from the cluster's state with a minijinja template,
//! checked, swapped in atomically, reloaded and probed. The same engine runs ConfigTemplates on
//! their node's agent and `berth gen` on hosts outside the cluster.
//!
//! API boundary: [`Sources`] (what templates render from, followed through berth-client's
//! informer, or shared by all the templates of a node with [`Sources::sharing`] over the
//! [`Objects`] that [`follow_objects`] keeps), [`run`] (the engine until a stop signal),
//! [`apply_once`] and [`synced`] (one round, for `berth gen --once`), [`forget_metrics`] (a
//! template that went), and [`Reporter`], which the caller implements to say where outcomes
//! go. How sources are followed (`sources`) and rendered (`context`) is internal. The
//! crate knows nothing of nodes or pods' runtime: which templates run where is the caller's
//! business (the node agent's `templates` module), so it builds without the container runtime.
//!
//! Each round, after the sources change (debounced: once `min` passes without another change,
//! and at most `max` after the first):
//! 1. render; a template error, or output past 16 MiB (`MAX_OUTPUT`, stopped as it gets
//!    there), leaves everything as it is;
//! 2. if the result is what the file holds, stop here (nothing is written or reloaded);
//! 3. write it beside the destination as a candidate and run the check on it (`{candidate}`
//!    and `{destination}` in the command are replaced by the paths); a failed check removes
//!    the candidate;
//! 4. keep the current file (a hard link), and rename the candidate over the destination:
//!    readers see the old file or the new, never a part;
//! 5. reload, then probe; if either fails, the kept file is renamed back and reloaded again.
//!
//! Every round's outcome goes to a [`Reporter`] (the object's status and an Event on a node;
//! the terminal for `berth gen`) and to the metrics. A failure is tried again with a back-off
//! from 1 s doubling to 1 min, and on every change; the engine never gives up.

mod context;
mod sources;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::configtemplate::{Command, ConfigTemplateSpec, Probe, ProbeAction};
use tokio::sync::watch;

pub use sources::{Objects, Sources, follow_objects};

/// Where a round failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The destination is not one the caller lets templates write (the node agent's
    /// `--config-template-dir`); the engine itself never reports it.
    Destination,
    Render,
    Write,
    Check,
    Reload,
    Probe,
}

impl Stage {
    /// The reason an Event and a condition give.
    pub fn reason(self) -> &'static str {
        match self {
            Stage::Destination => "DestinationNotAllowed",
            Stage::Render => "RenderFailed",
            Stage::Write => "WriteFailed",
            Stage::Check => "CheckFailed",
            Stage::Reload => "ReloadFailed",
            Stage::Probe => "ProbeFailed",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stage::Destination => "destination",
            Stage::Render => "render",
            Stage::Write => "write",
            Stage::Check => "check",
            Stage::Reload => "reload",
            Stage::Probe => "probe",
        }
    }
}

/// What a round did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new file is in place (and was reloaded, when there is a reload).
    Applied { revision: u64, bytes: usize },
    /// The file already held what the template renders.
    Unchanged { revision: u64 },
    /// Nothing changed on disk: the file that was there is there (put back when `restored`).
    Failed {
        stage: Stage,
        message: String,
        revision: u64,
        restored: bool,
    },
}

/// Where outcomes go.
pub trait Reporter: Send {
    fn report(&mut self, outcome: &Outcome) -> impl std::future::Future<Output = ()> + Send;
}

/// The first wait before a failed round is tried again; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How much of a failing command's output a report keeps.
const OUTPUT_TAIL: usize = 2048;

fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{suffix}"))
}

fn substitute(argv: &[String], candidate: &Path, dest: &Path) -> Vec<String> {
    argv.iter()
        .map(|a| {
            a.replace("{candidate}", &candidate.to_string_lossy())
                .replace("{destination}", &dest.to_string_lossy())
        })
        .collect()
}

/// Runs a command to its end (or its timeout); `Err` with its output when it fails.
async fn run_command(cmd: &Command, candidate: &Path, dest: &Path) -> Result<(), String> {
    let argv = substitute(&cmd.argv, candidate, dest);
    let mut c = tokio::process::Command::new(&argv[0]);
    c.args(&argv[1..])
        .env("BERTH_CANDIDATE", candidate)
        .env("BERTH_DESTINATION", dest)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(cmd.timeout, c.output()).await {
        Err(_) => {
            return Err(format!(
                "`{}` did not finish in {:?}",
                argv.join(" "),
                cmd.timeout
            ));
        }
        Ok(Err(e)) => return Err(format!("cannot run `{}`: {e}", argv[0])),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let text = text.trim();
    let tail = if text.len() > OUTPUT_TAIL {
        let mut cut = text.len() - OUTPUT_TAIL;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        &text[cut..]
    } else {
        text
    };
    Err(format!(
        "`{}` failed ({}): {tail}",
        argv.join(" "),
        out.status
    ))
}

/// One HTTP GET: whether it answered 2xx or 3xx.
async fn http_ok(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    match berth_client::probe::http_status(&addr, path, &[]).await {
        Ok(code) if (200..400).contains(&code) => Ok(()),
        Ok(code) => Err(format!("GET {url}: {code}")),
        Err(e) => Err(format!("GET {url}: {e}")),
    }
}

/// Retries the probe until it passes or its time is up.
async fn probe(p: &Probe, candidate: &Path, dest: &Path) -> Result<(), String> {
    let deadline = Instant::now() + p.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = match &p.action {
            ProbeAction::HttpGet(url) => tokio::time::timeout(left, http_ok(url))
                .await
                .unwrap_or_else(|_| Err(format!("GET {url}: no answer in time"))),
            ProbeAction::TcpSocket(addr) => {
                tokio::time::timeout(left, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| format!("connect {addr}: no answer in time"))
                    .and_then(|r| r.map(drop).map_err(|e| format!("connect {addr}: {e}")))
            }
            ProbeAction::Exec(argv) => {
                let c = Command {
                    argv: argv.clone(),
                    timeout: left.max(Duration::from_millis(100)),
                };
                run_command(&c, candidate, dest).await
            }
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("the probe failed for {:?}: {e}", p.timeout));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn write_candidate(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()?;
    // The mode asked for, whatever the umask took away.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// One round: render, compare, check, swap, reload, probe (and put back on failure).
pub async fn apply_once(spec: &ConfigTemplateSpec, sources: &Sources, node: &str) -> Outcome {
    let (rendered, revision) = {
        let reading = sources.read();
        let data = reading.view();
        let ctx = context::build(&data, &spec.namespaces, node);
        let env = context::environment(data.kv.clone());
        (context::render(&env, &spec.template, &ctx), data.revision)
    };
    let failed = |stage, message: String, restored| Outcome::Failed {
        stage,
        message,
        revision,
        restored,
    };
    let content = match rendered {
        Ok(c) => c,
        Err(e) => {
            return failed(
                Stage::Render,
                format!(
                    "the template for {} does not render: {e}; the file in place is kept",
                    spec.destination
                ),
                false,
            );
        }
    };
    let dest = PathBuf::from(&spec.destination);
    let current = std::fs::read(&dest).ok();
    if current.as_deref() == Some(content.as_bytes()) {
        return Outcome::Unchanged { revision };
    }
    let candidate = sibling(&dest, "berth-new");
    let kept = sibling(&dest, "berth-previous");
    if let Some(dir) = dest.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return failed(
            Stage::Write,
            format!("cannot make {}: {e}", dir.display()),
            false,
        );
    }
    if let Err(e) = write_candidate(&candidate, content.as_bytes(), spec.mode) {
        return failed(
            Stage::Write,
            format!("cannot write {}: {e}", candidate.display()),
            false,
        );
    }
    if let Some(check) = &spec.check
        && let Err(e) = run_command(check, &candidate, &dest).await
    {
        let _ = std::fs::remove_file(&candidate);
        return failed(
            Stage::Check,
            format!("the check rejected the new file: {e}"),
            false,
        );
    }
    // Keep the file being replaced, then swap in one rename.
    let _ = std::fs::remove_file(&kept);
    let had = current.is_some() && std::fs::hard_link(&dest, &kept).is_ok();
    if let Err(e) = std::fs::rename(&candidate, &dest) {
        let _ = std::fs::remove_file(&candidate);
        return failed(
            Stage::Write,
            format!("cannot move the new file into place: {e}"),
            false,
        );
    }
    let step = async {
        if let Some(reload) = &spec.reload {
            run_command(reload, &dest, &dest)
                .await
                .map_err(|e| (Stage::Reload, format!("the reload failed: {e}")))?;
        }
        if let Some(p) = &spec.probe {
            probe(p, &dest, &dest)
                .await
                .map_err(|e| (Stage::Probe, e))?;
        }
        Ok::<(), (Stage, String)>(())
    };
    match step.await {
        Ok(()) => {
            let _ = std::fs::remove_file(&kept);
            Outcome::Applied {
                revision,
                bytes: content.len(),
            }
        }
        Err((stage, mut message)) => {
            // Put the previous file back, and make the service read it again.
            let back = if had {
                std::fs::rename(&kept, &dest)
            } else {
                std::fs::remove_file(&dest)
            };
            let restored = had && back.is_ok();
            match back {
                Err(e) => {
                    message.push_str(&format!("; the previous file could not be put back: {e}"))
                }
                Ok(()) => {
                    message.push_str("; the previous file was put back");
                    if let Some(reload) = &spec.reload
                        && let Err(e) = run_command(reload, &dest, &dest).await
                    {
                        message.push_str(&format!(", but reloading it failed too: {e}"));
                    }
                }
            }
            failed(stage, message, restored)
        }
    }
}

/// Records an outcome in the metrics.
fn measure(name: &str, outcome: &Outcome) {
    let result = match outcome {
        Outcome::Applied { .. } => "applied",
        Outcome::Unchanged { .. } => "unchanged",
        Outcome::Failed { .. } => "failed",
    };
    berth_metrics::inc(
        "berth_configtemplate_rounds_total",
        "Rounds of config generation, by result",
        &[("template", name), ("result", result)],
    );
    let healthy = |v: f64| {
        berth_metrics::set(
            "berth_configtemplate_healthy",
            "1 when the last round of config generation succeeded",
            &[("template", name)],
            v,
        )
    };
    match outcome {
        Outcome::Failed { stage, .. } => {
            berth_metrics::inc(
                "berth_configtemplate_failures_total",
                "Failed rounds of config generation, by the step that failed",
                &[("template", name), ("stage", stage.label())],
            );
            healthy(0.0);
        }
        Outcome::Applied { revision, .. } | Outcome::Unchanged { revision } => {
            healthy(1.0);
            berth_metrics::set(
                "berth_configtemplate_rendered_revision",
                "The cluster revision the file in place was rendered from",
                &[("template", name)],
                *revision as f64,
            );
        }
    }
}

/// Drops every series [`run`] keeps of the template `name` (its rounds, failures, health
/// and rendered revision): for a template that is gone, so its series go with it.
pub fn forget_metrics(name: &str) {
    for series in [
        "berth_configtemplate_rounds_total",
        "berth_configtemplate_failures_total",
        "berth_configtemplate_healthy",
        "berth_configtemplate_rendered_revision",
    ] {
        berth_metrics::forget(series, ("template", name));
    }
}

/// Waits for the next round: a change, debounced (or, after a failure, the back-off's end,
/// whichever comes first). `false` when `stop` ends it.
async fn next_round(
    changed: &mut sources::Changes,
    stop: &mut watch::Receiver<bool>,
    min: Duration,
    max: Duration,
    retry_at: Option<tokio::time::Instant>,
) -> bool {
    let retry = async {
        match retry_at {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = changed.changed() => if r.is_err() { return false },
        _ = retry => return true,
        _ = stop.changed() => return false,
    }
    let first = tokio::time::Instant::now();
    loop {
        let quiet = tokio::time::Instant::now() + min;
        let until = quiet.min(first + max);
        tokio::select! {
            r = changed.changed() => {
                if r.is_err() {
                    return false;
                }
                if tokio::time::Instant::now() >= first + max {
                    return true;
                }
            }
            _ = tokio::time::sleep_until(until) => return true,
            _ = stop.changed() => return false,
        }
    }
}

/// Waits until every source has been read once; `false` if `stop` came first.
pub async fn synced(sources: &Sources, stop: &mut watch::Receiver<bool>) -> bool {
    let mut changed = sources.subscribe();
    while !sources.synced() {
        tokio::select! {
            r = changed.changed() => if r.is_err() { return false },
            _ = stop.changed() => return false,
        }
    }
    true
}

/// Runs the engine for `spec` until `stop`: a round as soon as every source has been read,
/// then one per (debounced) change, and failed rounds again after a back-off.
pub async fn run<R: Reporter>(
    name: String,
    spec: ConfigTemplateSpec,
    node: String,
    sources: Arc<Sources>,
    mut reporter: R,
    mut stop: watch::Receiver<bool>,
) {
    let mut changed = sources.subscribe();
    if !synced(&sources, &mut stop).await {
        return;
    }
    let mut backoff = Duration::ZERO;
    loop {
        changed.seen();
        let outcome = apply_once(&spec, &sources, &node).await;
        measure(&name, &outcome);
        reporter.report(&outcome).await;
        let retry_at = match outcome {
            Outcome::Failed { .. } => {
                backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                Some(tokio::time::Instant::now() + backoff)
            }
            _ => {
                backoff = Duration::ZERO;
                None
            }
        };
        if !next_round(
            &mut changed,
            &mut stop,
            spec.min_wait,
            spec.max_wait,
            retry_at,
        )
        .await
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::configtemplate::parse;
    use serde_json::json;

    fn spec(dir: &Path, extra: serde_json::Value) -> ConfigTemplateSpec {
        let mut s = json!({"destination": dir.join("app.conf").to_str().unwrap(),
            "template": "level={{ kv_get('/level') }}\n"});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        parse(Some(&s), false).unwrap()
    }

    fn sources(level: &str) -> Arc<Sources> {
        let mut d = sources::Data::default();
        d.kv.insert("/level".into(), level.into());
        d.revision = 7;
        Sources::fixed(d)
    }

    fn sh(script: &str) -> serde_json::Value {
        json!({"command": ["/bin/sh", "-c", script]})
    }

    #[tokio::test]
    async fn rounds_write_check_reload_and_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("reloads");
        let dest = dir.path().join("app.conf");
        let reload = sh(&format!(
            "echo \"$(cat {})\" >> {}",
            dest.display(),
            log.display()
        ));
        // The check refuses "level=bad"; the reload logs what it read.
        let s = spec(
            dir.path(),
            json!({"check": sh("! grep -q bad {candidate}"), "reload": reload, "mode": "0600"}),
        );
        let o = apply_once(&s, &sources("info"), "n").await;
        assert_eq!(
            o,
            Outcome::Applied {
                revision: 7,
                bytes: 11
            }
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "level=info\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Same render: nothing written, nothing reloaded.
        assert_eq!(
            apply_once(&s, &sources("info"), "n").await,
            Outcome::Unchanged { revision: 7 }
        );
        // Rejected by the check: the file stays, no candidate is left.
        let o = apply_once(&s, &sources("bad"), "n").await;
        assert!(
            matches!(
                &o,
                Outcome::Failed {
                    stage: Stage::Check,
                    restored: false,
                    ..
                }
            ),
            "{o:?}"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "level=info\n");
        assert!(!sibling(&dest, "berth-new").exists());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "level=info\n");

        // A reload that fails on the new file: the old one is put back and reloaded.
        let s = spec(
            dir.path(),
            json!({"reload": sh(&format!("grep -q info {} && echo ok >> {}", dest.display(), log.display()))}),
        );
        let o = apply_once(&s, &sources("debug"), "n").await;
        let Outcome::Failed {
            stage: Stage::Reload,
            restored: true,
            message,
            ..
        } = &o
        else {
            panic!("{o:?}")
        };
        assert!(message.contains("put back"), "{message}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "level=info\n");
        assert!(std::fs::read_to_string(&log).unwrap().ends_with("ok\n"));
        // A probe that never passes: put back too.
        let s = spec(
            dir.path(),
            json!({"probe": {"exec": {"command": ["/bin/false"]}, "timeoutSeconds": 1}}),
        );
        let o = apply_once(&s, &sources("warn"), "n").await;
        assert!(
            matches!(
                &o,
                Outcome::Failed {
                    stage: Stage::Probe,
                    restored: true,
                    ..
                }
            ),
            "{o:?}"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "level=info\n");
        // A template that does not render: nothing touched.
        let mut s = spec(dir.path(), json!({}));
        s.template = "{{ nope() }}".into();
        let o = apply_once(&s, &sources("x"), "n").await;
        assert!(
            matches!(
                &o,
                Outcome::Failed {
                    stage: Stage::Render,
                    ..
                }
            ),
            "{o:?}"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "level=info\n");
    }

    #[tokio::test]
    async fn a_render_past_the_output_limit_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("app.conf");
        let s = spec(dir.path(), json!({}));
        assert!(matches!(
            apply_once(&s, &sources("info"), "n").await,
            Outcome::Applied { .. }
        ));
        let before = std::fs::metadata(&dest).unwrap();
        // 100 MB asked for, in 10 kB pieces: stopped at 16 MiB.
        let mut s = spec(dir.path(), json!({}));
        s.template = "{% for i in range(10000) %}{{ 'z' * 10000 }}{% endfor %}".into();
        let o = apply_once(&s, &sources("x"), "n").await;
        let Outcome::Failed {
            stage: Stage::Render,
            message,
            restored: false,
            ..
        } = &o
        else {
            panic!("{o:?}")
        };
        assert!(message.contains(&s.destination), "{message}");
        assert!(message.contains("larger than 16777216 bytes"), "{message}");
        assert!(message.contains("the file in place is kept"), "{message}");
        // Untouched: same content, same inode, same time; no candidate left.
        use std::os::unix::fs::MetadataExt;
        let after = std::fs::metadata(&dest).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "level=info\n");
        assert_eq!(
            (after.ino(), after.mtime_nsec()),
            (before.ino(), before.mtime_nsec())
        );
        assert!(!sibling(&dest, "berth-new").exists());
    }

    #[test]
    fn a_forgotten_template_leaves_no_series() {
        let failed = Outcome::Failed {
            stage: Stage::Check,
            message: "refused".into(),
            revision: 3,
            restored: false,
        };
        // Every series a template can have: a failure, then a success.
        for name in ["ns/gone", "ns/kept"] {
            measure(name, &failed);
            measure(
                name,
                &Outcome::Applied {
                    revision: 4,
                    bytes: 1,
                },
            );
        }
        let text = berth_metrics::render();
        for series in [
            "berth_configtemplate_rounds_total",
            "berth_configtemplate_failures_total",
            "berth_configtemplate_healthy",
            "berth_configtemplate_rendered_revision",
        ] {
            assert!(
                text.contains(&format!("{series}{{template=\"ns/gone\"")),
                "{series}: {text}"
            );
        }
        forget_metrics("ns/gone");
        let text = berth_metrics::render();
        assert!(!text.contains("template=\"ns/gone\""), "{text}");
        // Only the template that went.
        assert_eq!(text.matches("template=\"ns/kept\"").count(), 5, "{text}");
    }
}
