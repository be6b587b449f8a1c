//! Liveness, readiness and startup probes, as the kubelet runs them: `exec` (a command in the
//! container, exit 0), `httpGet` (a status from 200 to 399) and `tcpSocket` (a connection),
//! each with its initial delay, period, timeout and success/failure thresholds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pods::Options;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Startup => "startupProbe",
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
        }
    }
    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// One probe's running state for one container run.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    spec: Value,
    started: Instant,
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    /// The probe's verdict so far: None until the first result that crosses a threshold.
    pub(crate) ok: Option<bool>,
    pub(crate) last_message: String,
}

/// A probe's number of seconds (held to int32's range, whatever the pod says).
fn num(v: &Value, f: &str, default: u64) -> u64 {
    berth_api::validate::seconds_of(v.get(f), default)
}

/// A probe's threshold, 1 or more.
fn threshold(v: &Value, f: &str, default: u64) -> u32 {
    u32::try_from(num(v, f, default).max(1)).unwrap_or(u32::MAX)
}

impl Probe {
    fn new(spec: Value, started: Instant) -> Probe {
        Probe {
            spec,
            started,
            last_run: None,
            successes: 0,
            failures: 0,
            ok: None,
            last_message: String::new(),
        }
    }

    fn due(&self, now: Instant) -> bool {
        let delay = Duration::from_secs(num(&self.spec, "initialDelaySeconds", 0));
        let period = Duration::from_secs(num(&self.spec, "periodSeconds", 10).max(1));
        // Past what the clock holds is never.
        let after = |t: Instant, d: Duration| t.checked_add(d).is_some_and(|at| now >= at);
        after(self.started, delay) && self.last_run.is_none_or(|t| after(t, period))
    }

    /// Counts one result; returns true when the verdict changed.
    fn record(&mut self, success: bool, message: String, kind: Kind) -> bool {
        self.last_message = message;
        let before = self.ok;
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            // Liveness and startup probes need one success, as Kubernetes requires.
            let need = if kind == Kind::Readiness {
                threshold(&self.spec, "successThreshold", 1)
            } else {
                1
            };
            if self.successes >= need {
                self.ok = Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= threshold(&self.spec, "failureThreshold", 3) {
                self.ok = Some(false);
            }
        }
        before != self.ok
    }
}

/// The probes of one container run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probes {
    /// The container run (its start time) these belong to.
    run: Option<u64>,
    probes: HashMap<Kind, Probe>,
}

/// What a pass of probes concluded.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) ready: bool,
    /// The container must be killed (liveness or startup failed), with the message.
    pub(crate) kill: Option<String>,
    /// Events to record: (reason, message).
    pub(crate) events: Vec<(String, String)>,
}

fn port_of(c: &Value, p: &Value) -> Option<u16> {
    match p {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => c
            .get("ports")?
            .as_array()?
            .iter()
            .find(|x| x.get("name").and_then(Value::as_str) == Some(name))?
            .get("containerPort")?
            .as_u64()
            .and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
}

/// Runs one probe once: (success, message).
async fn run_once(
    cfg: &Options,
    pod_uid: &str,
    pod_ip: &str,
    c: &Value,
    spec: &Value,
) -> (bool, String) {
    let timeout = Duration::from_secs(num(spec, "timeoutSeconds", 1).max(1));
    run_handler(cfg, pod_uid, pod_ip, c, spec, timeout).await
}

/// Runs a handler (a probe's, or a lifecycle hook's: `exec`, `httpGet`, `tcpSocket`, or
/// `sleep`) once, within `timeout`: (success, message).
pub(crate) async fn run_handler(
    cfg: &Options,
    pod_uid: &str,
    pod_ip: &str,
    c: &Value,
    spec: &Value,
    timeout: Duration,
) -> (bool, String) {
    if let Some(secs) = spec.pointer("/sleep/seconds").and_then(Value::as_u64) {
        let wait = Duration::from_secs(secs);
        if wait > timeout {
            tokio::time::sleep(timeout).await;
            return (
                false,
                format!("sleep {secs}s outlasted the {}s allowed", timeout.as_secs()),
            );
        }
        tokio::time::sleep(wait).await;
        return (true, String::new());
    }
    if let Some(exec) = spec.get("exec") {
        let argv: Vec<String> = exec
            .get("command")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let cmd = cfg.runtime.exec_process(
            pod_uid,
            c.get("name").and_then(Value::as_str).unwrap_or(""),
            &argv,
            &cfg.exec_command,
        );
        let Ok(cmd) = cmd else {
            return (false, "cannot exec".into());
        };
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let Ok(child) = cmd.spawn() else {
            return (false, "cannot start the probe".into());
        };
        return match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(o)) if o.status.success() => (true, String::new()),
            Ok(Ok(o)) => (
                false,
                format!(
                    "command {argv:?} exited with {}: {}",
                    o.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            ),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (
                false,
                format!("command timed out after {}s", timeout.as_secs()),
            ),
        };
    }
    let (port, http) = if let Some(h) = spec.get("httpGet") {
        (h.get("port").and_then(|p| port_of(c, p)), Some(h))
    } else if let Some(t) = spec.get("tcpSocket") {
        (t.get("port").and_then(|p| port_of(c, p)), None)
    } else {
        return (
            false,
            "no handler named (exec, httpGet, tcpSocket or sleep)".into(),
        );
    };
    let Some(port) = port else {
        return (
            false,
            "the probe's port is not a number or a named container port".into(),
        );
    };
    let host = http
        .and_then(|h| h.get("host").and_then(Value::as_str))
        .unwrap_or(pod_ip)
        .to_string();
    let addr = format!("{host}:{port}");
    let attempt = async {
        let Some(h) = http else {
            return tokio::net::TcpStream::connect(&addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"));
        };
        let path = h.get("path").and_then(Value::as_str).unwrap_or("/");
        let headers: Vec<(String, String)> = h
            .get("httpHeaders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|hd| {
                Some((
                    hd.get("name")?.as_str()?.to_string(),
                    hd.get("value")?.as_str()?.to_string(),
                ))
            })
            .collect();
        let code = berth_client::probe::http_status(&addr, path, &headers).await?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => (true, String::new()),
        Ok(Err(e)) => (false, e),
        Err(_) => (
            false,
            format!("{addr}: timed out after {}s", timeout.as_secs()),
        ),
    }
}

impl Probes {
    /// Runs the probes that are due for a running container (started at `started_at`, unix
    /// nanoseconds) and gives the verdict.
    pub(crate) async fn check(
        &mut self,
        cfg: &Options,
        pod_uid: &str,
        pod_ip: &str,
        c: &Value,
        started_at: u64,
    ) -> Verdict {
        let now = Instant::now();
        if self.run != Some(started_at) {
            // A new run of the container: probes start over.
            self.run = Some(started_at);
            self.probes.clear();
            for k in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
                if let Some(spec) = c.get(k.field()).filter(|s| s.is_object()) {
                    self.probes.insert(k, Probe::new(spec.clone(), now));
                }
            }
        }
        let mut v = Verdict::default();
        let started = match self.probes.get(&Kind::Startup) {
            Some(p) => p.ok == Some(true),
            None => true,
        };
        for k in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
            // Until the startup probe succeeds, it alone runs.
            if k != Kind::Startup && !started {
                continue;
            }
            if k == Kind::Startup && started {
                continue;
            }
            let Some(p) = self.probes.get_mut(&k) else {
                continue;
            };
            if !p.due(now) {
                continue;
            }
            p.last_run = Some(now);
            let spec = p.spec.clone();
            let (ok, msg) = run_once(cfg, pod_uid, pod_ip, c, &spec).await;
            if !ok {
                v.events.push((
                    "Unhealthy".into(),
                    format!("{} probe failed: {msg}", k.word()),
                ));
            }
            p.record(ok, msg.clone(), k);
            if matches!(k, Kind::Liveness | Kind::Startup) && p.ok == Some(false) {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                v.kill = Some(format!(
                    "Container {name} failed {} probe, will be restarted",
                    k.word().to_lowercase()
                ));
            }
        }
        v.ready = started
            && match self.probes.get(&Kind::Readiness) {
                Some(p) => p.ok == Some(true),
                None => true,
            };
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_past_the_clock_never_panic() {
        let now = Instant::now();
        for n in [json!(i64::MAX), json!(u64::MAX), json!(-1), json!(1e300)] {
            let spec = json!({"initialDelaySeconds": n, "periodSeconds": n,
                "successThreshold": n, "failureThreshold": n});
            let mut p = Probe::new(spec, now);
            // Whatever the delay, asking is safe; an unreadable one counts as its default.
            p.due(now + Duration::from_secs(1));
            p.last_run = Some(now);
            assert!(
                !p.due(now + Duration::from_secs(1)),
                "{n}: due again within a second"
            );
            for _ in 0..3 {
                p.record(false, "down".into(), Kind::Readiness);
            }
            p.failures = u32::MAX;
            p.record(false, "down".into(), Kind::Readiness);
            assert_eq!(p.failures, u32::MAX, "{n}: the count saturates");
        }
        // A huge delay is 68 years, not never-checked arithmetic.
        let p = Probe::new(json!({"initialDelaySeconds": i64::MAX}), now);
        assert!(!p.due(now + Duration::from_secs(3600)));
        let p = Probe::new(json!({"initialDelaySeconds": 2}), now);
        assert!(p.due(now + Duration::from_secs(2)));
    }
}
