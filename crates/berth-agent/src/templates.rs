//! The ConfigTemplates of this node: each one whose `spec.nodeName` is this node runs in the
//! config generation engine, restarted when its spec changes and stopped when it goes (or
//! moves to another node). Outcomes go to its status, to Events and to the metrics.
//!
//! A template writes only beneath the node's template directories (`--config-template-dir`):
//! one whose destination is elsewhere is not rendered, and its status says so (condition
//! `Applied` False, reason `DestinationNotAllowed`, naming the destination and the
//! directories). The check is lexical (normalized absolute paths, no `..`) and then on disk:
//! the destination's directory (its deepest part that exists) is opened beneath the allowed
//! directory with `RESOLVE_BENEATH`, so a symbolic link leading out of it is refused too. It
//! is made each time a template starts (its spec changes, the agent starts).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::configtemplate::parse;
use berth_client::Client;
use serde_json::{Value, json};
use tokio::sync::watch;

use berth_client::informer::{self, key_of as key};
use berth_confgen::{self as confgen, Outcome, Sources};

struct Running {
    spec: Value,
    stop: watch::Sender<bool>,
}

/// Reports a template's rounds in its status and Events.
struct StatusReporter {
    client: Client,
    object: Value,
    node: String,
    failures: u64,
    last: Option<String>,
}

impl confgen::Reporter for StatusReporter {
    async fn report(&mut self, outcome: &Outcome) {
        let now = berth_api::timefmt::now_rfc3339();
        let (ns, name) = (
            self.object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            self.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        let mut status = json!({
            "observedGeneration": self.object["metadata"]["generation"],
            "node": self.node,
        });
        let (ok, reason, message) = match outcome {
            Outcome::Applied { revision, bytes } => {
                self.failures = 0;
                status["renderedRevision"] = json!(revision.to_string());
                status["lastRenderTime"] = json!(now);
                status["lastReloadTime"] = json!(now);
                status["lastError"] = Value::Null;
                (
                    true,
                    "Applied",
                    format!("wrote {bytes} bytes rendered at revision {revision}"),
                )
            }
            Outcome::Unchanged { revision } => {
                self.failures = 0;
                status["renderedRevision"] = json!(revision.to_string());
                status["lastError"] = Value::Null;
                (
                    true,
                    "Unchanged",
                    format!("the file holds what revision {revision} renders"),
                )
            }
            Outcome::Failed { stage, message, .. } => {
                self.failures += 1;
                status["lastError"] = json!(message);
                status["lastErrorTime"] = json!(now);
                (false, stage.reason(), message.clone())
            }
        };
        status["consecutiveFailures"] = json!(self.failures);
        // An unchanged round after an unchanged round says nothing new.
        let key = format!("{ok}{reason}{}", status["renderedRevision"]);
        if matches!(outcome, Outcome::Unchanged { .. }) && self.last.as_deref() == Some(&key) {
            return;
        }
        self.last = Some(key);
        status["conditions"] = json!([{
            "type": "Applied", "status": if ok { "True" } else { "False" },
            "reason": reason, "message": message, "lastTransitionTime": now,
        }]);
        let Some(kind) = berth_api::kinds::resolve("configtemplates") else {
            return;
        };
        if let Err(e) = crate::patch_status(
            &self.client,
            kind,
            Some(&ns),
            &name,
            &json!({"status": status}),
        )
        .await
        {
            tracing::debug!(error = %e, template = %name, "cannot report a ConfigTemplate's status");
        }
        match outcome {
            Outcome::Failed { stage, message, .. } => {
                tracing::warn!(template = %format!("{ns}/{name}"), reason = stage.reason(), "{message}");
                crate::event(
                    &self.client,
                    &self.object,
                    "Warning",
                    stage.reason(),
                    message,
                )
                .await;
            }
            Outcome::Applied { .. } => {
                crate::event(&self.client, &self.object, "Normal", "Applied", &message).await;
            }
            Outcome::Unchanged { .. } => {}
        }
    }
}

/// Why `destination` may not be written by a template of this node, if it may not: it is not
/// beneath one of `dirs` (normalized absolute paths compared component by component), or a
/// symbolic link in its directory leads out of the one it is beneath.
pub(crate) fn confine(destination: &str, dirs: &[PathBuf]) -> Result<(), String> {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let refused = |why: &str| {
        format!(
            "the destination {destination} is not allowed: {why}; this node renders templates only beneath {} (--config-template-dir)",
            if names.is_empty() {
                "no directory".to_string()
            } else {
                names.join(", ")
            }
        )
    };
    let Some(dir) = berth_api::configtemplate::allowed_dir(destination, &names) else {
        return Err(refused("it is outside those directories"));
    };
    let normal = |p: &str| -> Vec<PathBuf> {
        Path::new(p)
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(PathBuf::from(n)),
                _ => None,
            })
            .collect()
    };
    let inside = normal(destination).split_off(normal(dir).len());
    let root_path = Path::new(dir);
    if let Err(e) = std::fs::create_dir_all(root_path) {
        return Err(refused(&format!("cannot make {dir}: {e}")));
    }
    let root = berth_fs::open_root(root_path).map_err(|e| refused(&e.to_string()))?;
    // The destination's directory, or its deepest part that exists (the engine makes the
    // rest, fresh directories that hold no link).
    let parent = &inside[..inside.len().saturating_sub(1)];
    for depth in (0..=parent.len()).rev() {
        let rel: PathBuf = parent[..depth].iter().collect();
        match berth_fs::open_beneath(
            std::os::fd::AsFd::as_fd(&root),
            &rel,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        ) {
            Ok(_) => return Ok(()),
            Err(berth_fs::FsError::Escapes { .. }) => {
                return Err(refused(&format!(
                    "a symbolic link in {dir}/{} leads out of {dir}",
                    rel.display()
                )));
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {}
            Err(e) => return Err(refused(&e.to_string())),
        }
    }
    Ok(())
}

/// Runs this node's ConfigTemplates until `stop`; they write only beneath `dirs`.
pub(crate) async fn run(
    client: Client,
    informers: informer::Informers,
    node: String,
    dirs: Arc<[PathBuf]>,
    stop: watch::Receiver<bool>,
) {
    let running: Mutex<HashMap<String, Running>> = Mutex::new(HashMap::new());
    // The objects templates render from, followed once for all of them (from the first),
    // in the node's shared informer caches.
    let objects: std::sync::OnceLock<Arc<confgen::Objects>> = Default::default();
    let update = |o: &Value, gone: bool| {
        let k = key(o);
        let mine = !gone && o["spec"]["nodeName"].as_str() == Some(node.as_str());
        let mut r = running.lock().unwrap_or_else(|e| e.into_inner());
        if !mine {
            if let Some(old) = r.remove(&k) {
                let _ = old.stop.send(true);
                confgen::forget_metrics(&k);
            }
            return;
        }
        if r.get(&k).is_some_and(|run| run.spec == o["spec"]) {
            return;
        }
        if let Some(old) = r.remove(&k) {
            let _ = old.stop.send(true);
        }
        let (tx, rx) = watch::channel(false);
        r.insert(
            k.clone(),
            Running {
                spec: o["spec"].clone(),
                stop: tx,
            },
        );
        let objects = objects
            .get_or_init(|| confgen::follow_objects(&informers, &stop))
            .clone();
        let (client, node, dirs, mut object) =
            (client.clone(), node.clone(), dirs.clone(), o.clone());
        object["apiVersion"] = json!("berth.dev/v1");
        object["kind"] = json!("ConfigTemplate");
        tokio::spawn(async move {
            let mut reporter = StatusReporter {
                client: client.clone(),
                object: object.clone(),
                node: node.clone(),
                failures: 0,
                last: None,
            };
            let spec = match parse(object.get("spec"), true) {
                Ok(s) => s,
                Err(errs) => {
                    let message = errs
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ");
                    let outcome = Outcome::Failed {
                        stage: confgen::Stage::Render,
                        message: format!("the spec is not valid: {message}"),
                        revision: 0,
                        restored: false,
                    };
                    confgen::Reporter::report(&mut reporter, &outcome).await;
                    return;
                }
            };
            if let Err(message) = confine(&spec.destination, &dirs) {
                let outcome = Outcome::Failed {
                    stage: confgen::Stage::Destination,
                    message,
                    revision: 0,
                    restored: false,
                };
                confgen::Reporter::report(&mut reporter, &outcome).await;
                return;
            }
            tracing::info!(template = %k, destination = %spec.destination, "rendering a ConfigTemplate");
            let sources = Sources::sharing(objects, client, &spec.kv, rx.clone());
            confgen::run(k, spec, node, sources, reporter, rx).await;
        });
    };
    let Some(kind) = berth_api::kinds::resolve("configtemplates") else {
        return;
    };
    let events = informers.store(kind).events();
    informer::each(events, stop.clone(), |ev| match ev {
        informer::Event::Listed(items) => {
            let present: Vec<String> = items.iter().map(key).collect();
            let gone: Vec<String> = running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .filter(|k| !present.contains(k))
                .cloned()
                .collect();
            for k in gone {
                let (ns, name) = k.split_once('/').unwrap_or(("", &k));
                update(&json!({"metadata": {"namespace": ns, "name": name}}), true);
            }
            for o in items {
                update(o, false);
            }
        }
        informer::Event::Applied(o) => update(o, false),
        informer::Event::Deleted(o) => update(o, true),
    })
    .await;
    for (_, r) in running.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        let _ = r.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_outside_the_directories_or_through_links_out_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = tmp.path().join("templates");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let dirs = vec![allowed.clone()];
        let at = |rel: &str| format!("{}/{rel}", allowed.display());
        // Inside, at any depth, whether the directories exist yet or not.
        confine(&at("app.conf"), &dirs).unwrap();
        confine(&at("a/b/c.conf"), &dirs).unwrap();
        assert!(allowed.is_dir(), "the allowed directory is made");
        // Outside, lexically: the message names the destination and the directories.
        let e = confine("/etc/passwd", &dirs).unwrap_err();
        assert!(e.contains("/etc/passwd"), "{e}");
        assert!(e.contains(&allowed.display().to_string()), "{e}");
        assert!(confine(&at("../outside/x"), &dirs).is_err());
        assert!(confine(&format!("{}x/y", allowed.display()), &dirs).is_err());
        assert!(confine(&allowed.display().to_string(), &dirs).is_err());
        assert!(confine("/etc/x", &[]).is_err());
        // A link out of the directory is refused, one that stays inside is followed.
        std::os::unix::fs::symlink(&outside, allowed.join("out")).unwrap();
        let e = confine(&at("out/x.conf"), &dirs).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(confine(&at("out/deeper/x.conf"), &dirs).is_err());
        std::fs::create_dir_all(allowed.join("real")).unwrap();
        std::os::unix::fs::symlink("real", allowed.join("in")).unwrap();
        confine(&at("in/x.conf"), &dirs).unwrap();
    }
}
