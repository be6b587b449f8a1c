//! `ConfigTemplate` (`berth.dev/v1`): a config file rendered on a node from the cluster's
//! state, checked, swapped in atomically and reloaded, and put back when any step fails. One
//! definition of its spec serves the API's validation, the agent that runs it and
//! `berth gen`.
//!
//! ```yaml
//! spec:
//!   nodeName: node-a                     # whose agent renders it
//!   destination: /etc/nginx/nginx.conf   # absolute path on that node
//!   template: |                          # minijinja
//!     {% for host, pods in virtual_hosts|items %} ... {% endfor %}
//!   mode: "0644"
//!   namespaces: [default]                # sources' namespaces (default: all)
//!   kv: [/config/nginx]                  # key/value prefixes to read
//!   debounce: {min: 100ms, max: 1s}
//!   check:  {command: [nginx, -t, -c, "{candidate}"], timeoutSeconds: 10}
//!   reload: {command: [nginx, -s, reload], timeoutSeconds: 10}
//!   probe:  {httpGet: {url: "http://127.0.0.1/healthz"}, timeoutSeconds: 5}
//! ```

use std::time::Duration;

use serde_json::Value;

use crate::status::FieldError;

/// A command run by the engine: its argv, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// How a reload is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// A 2xx or 3xx answer to GET of this URL.
    HttpGet(String),
    /// A TCP connection to `host:port`.
    TcpSocket(String),
    /// A command that exits 0.
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: ProbeAction,
    /// How long it is retried before the reload counts as failed.
    pub timeout: Duration,
}

/// A parsed, valid spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTemplateSpec {
    pub node_name: Option<String>,
    pub template: String,
    pub destination: String,
    pub mode: u32,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub kv: Vec<String>,
    pub min_wait: Duration,
    pub max_wait: Duration,
    pub check: Option<Command>,
    pub reload: Option<Command>,
    pub probe: Option<Probe>,
}

/// The most a template may render (16 MiB): a render that would write more fails, stopped
/// as it reaches the limit, and the file in place is kept.
pub const MAX_OUTPUT: usize = 16 << 20;

/// The default debounce: changes are rendered once 100 ms pass without another, and at most
/// 1 s after the first.
pub const DEFAULT_MIN_WAIT: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);

/// Checks a template's syntax; the error says where (line) and what.
pub fn check_template(source: &str) -> Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(source).map(drop).map_err(|e| {
        let mut msg = e.detail().unwrap_or("syntax error").to_string();
        if let Some(line) = e.line() {
            msg = format!("line {line}: {msg}");
        }
        msg
    })
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn strings(errs: &mut Vec<FieldError>, path: &str, v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.as_str() {
                Some(s) => Some(s.to_string()),
                None => {
                    errs.push(FieldError::invalid(
                        format!("{path}[{i}]"),
                        describe(s),
                        "must be a string",
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errs.push(FieldError::invalid(
                path,
                describe(other),
                "must be a list of strings",
            ));
            Vec::new()
        }
    }
}

fn seconds(errs: &mut Vec<FieldError>, path: &str, v: Option<&Value>, default: u64) -> Duration {
    match v {
        None | Some(Value::Null) => Duration::from_secs(default),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=3600).contains(&n)) => {
            Duration::from_secs(n.as_u64().unwrap_or(default))
        }
        Some(other) => {
            errs.push(FieldError::invalid(
                path,
                describe(other),
                "must be a whole number of seconds from 1 to 3600",
            ));
            Duration::from_secs(default)
        }
    }
}

fn command(errs: &mut Vec<FieldError>, path: &str, v: Option<&Value>) -> Option<Command> {
    let v = v.filter(|v| !v.is_null())?;
    let Some(m) = v.as_object() else {
        errs.push(FieldError::invalid(
            path,
            describe(v),
            "must be an object with a command",
        ));
        return None;
    };
    let argv = strings(errs, &format!("{path}.command"), m.get("command"));
    if argv.is_empty() {
        errs.push(FieldError::required(format!("{path}.command")));
        return None;
    }
    Some(Command {
        argv,
        timeout: seconds(
            errs,
            &format!("{path}.timeoutSeconds"),
            m.get("timeoutSeconds"),
            10,
        ),
    })
}

fn duration(
    errs: &mut Vec<FieldError>,
    path: &str,
    v: Option<&Value>,
    default: Duration,
) -> Duration {
    match v {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) => crate::duration::parse(s).unwrap_or_else(|_| {
            errs.push(FieldError::invalid(
                path,
                describe(&Value::String(s.clone())),
                "must be a duration such as 100ms, 2s or 1m",
            ));
            default
        }),
        Some(other) => {
            errs.push(FieldError::invalid(
                path,
                describe(other),
                "must be a duration string such as 100ms, 2s or 1m",
            ));
            default
        }
    }
}

/// Parses and checks a spec; every error names its field. `berth gen` runs one without
/// `nodeName` (`require_node` false).
pub fn parse(
    spec: Option<&Value>,
    require_node: bool,
) -> Result<ConfigTemplateSpec, Vec<FieldError>> {
    let mut errs = Vec::new();
    let Some(m) = spec.and_then(Value::as_object) else {
        return Err(vec![FieldError::required("spec")]);
    };
    let text = |errs: &mut Vec<FieldError>, f: &str| -> Option<String> {
        match m.get(f) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                errs.push(FieldError::invalid(
                    format!("spec.{f}"),
                    describe(other),
                    "must be a string",
                ));
                None
            }
        }
    };
    let node_name = text(&mut errs, "nodeName").filter(|n| !n.is_empty());
    if require_node && node_name.is_none() {
        errs.push(FieldError::required("spec.nodeName"));
    }
    let template = text(&mut errs, "template").unwrap_or_default();
    if template.is_empty() {
        errs.push(FieldError::required("spec.template"));
    } else if let Err(e) = check_template(&template) {
        errs.push(FieldError::invalid(
            "spec.template",
            "(the template)",
            &format!("is not a valid template: {e}"),
        ));
    }
    let destination = text(&mut errs, "destination").unwrap_or_default();
    if destination.is_empty() {
        errs.push(FieldError::required("spec.destination"));
    } else if !destination.starts_with('/')
        || destination.ends_with('/')
        || destination.split('/').any(|s| s == "..")
    {
        errs.push(FieldError::invalid(
            "spec.destination",
            describe(&Value::String(destination.clone())),
            "must be an absolute path of a file, without ..",
        ));
    }
    let mode = match m.get("mode") {
        None | Some(Value::Null) => 0o644,
        Some(Value::String(s)) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .unwrap_or_else(|| {
                errs.push(FieldError::invalid(
                    "spec.mode",
                    describe(&Value::String(s.clone())),
                    "must be an octal file mode such as \"0644\"",
                ));
                0o644
            }),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 0o7777) => {
            n.as_u64().unwrap_or(0o644) as u32
        }
        Some(other) => {
            errs.push(FieldError::invalid(
                "spec.mode",
                describe(other),
                "must be an octal file mode such as \"0644\"",
            ));
            0o644
        }
    };
    let namespaces = strings(&mut errs, "spec.namespaces", m.get("namespaces"));
    let kv = strings(&mut errs, "spec.kv", m.get("kv"));
    for (i, k) in kv.iter().enumerate() {
        if !k.starts_with('/') {
            errs.push(FieldError::invalid(
                format!("spec.kv[{i}]"),
                describe(&Value::String(k.clone())),
                "must be a key prefix starting with /",
            ));
        }
    }
    let debounce = m.get("debounce").and_then(Value::as_object);
    let min_wait = duration(
        &mut errs,
        "spec.debounce.min",
        debounce.and_then(|d| d.get("min")),
        DEFAULT_MIN_WAIT,
    );
    let max_wait = duration(
        &mut errs,
        "spec.debounce.max",
        debounce.and_then(|d| d.get("max")),
        DEFAULT_MAX_WAIT.max(min_wait),
    );
    if max_wait < min_wait {
        errs.push(FieldError::invalid(
            "spec.debounce.max",
            format!("{max_wait:?}"),
            "must not be shorter than spec.debounce.min",
        ));
    }
    let check = command(&mut errs, "spec.check", m.get("check"));
    let reload = command(&mut errs, "spec.reload", m.get("reload"));
    let probe = m.get("probe").filter(|p| !p.is_null()).and_then(|p| {
        let pm = p.as_object()?;
        let timeout = seconds(
            &mut errs,
            "spec.probe.timeoutSeconds",
            pm.get("timeoutSeconds"),
            5,
        );
        let action = if let Some(h) = pm.get("httpGet") {
            match h.get("url").and_then(Value::as_str) {
                Some(u) if u.starts_with("http://") => Some(ProbeAction::HttpGet(u.to_string())),
                _ => {
                    errs.push(FieldError::invalid(
                        "spec.probe.httpGet.url",
                        describe(h.get("url").unwrap_or(&Value::Null)),
                        "must be an http:// URL",
                    ));
                    None
                }
            }
        } else if let Some(t) = pm.get("tcpSocket") {
            match t.get("address").and_then(Value::as_str) {
                Some(a) if a.contains(':') => Some(ProbeAction::TcpSocket(a.to_string())),
                _ => {
                    errs.push(FieldError::invalid(
                        "spec.probe.tcpSocket.address",
                        describe(t.get("address").unwrap_or(&Value::Null)),
                        "must be host:port",
                    ));
                    None
                }
            }
        } else if let Some(e) = pm.get("exec") {
            let argv = strings(&mut errs, "spec.probe.exec.command", e.get("command"));
            if argv.is_empty() {
                errs.push(FieldError::required("spec.probe.exec.command"));
                None
            } else {
                Some(ProbeAction::Exec(argv))
            }
        } else {
            errs.push(FieldError::required("spec.probe.httpGet"));
            None
        };
        Some(Probe {
            action: action?,
            timeout,
        })
    });
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ConfigTemplateSpec {
        node_name,
        template,
        destination,
        mode,
        namespaces,
        kv,
        min_wait,
        max_wait,
        check,
        reload,
        probe,
    })
}

impl ConfigTemplateSpec {
    /// Whether the template runs anything on its node: a check, a reload or a probe that
    /// execs (each runs as root there).
    pub fn has_commands(&self) -> bool {
        self.check.is_some()
            || self.reload.is_some()
            || self
                .probe
                .as_ref()
                .is_some_and(|p| matches!(p.action, ProbeAction::Exec(_)))
    }
}

/// `path` as its normal components (an absolute path, `.` and repeated `/` dropped); `None`
/// when it is relative or climbs with `..`, which nothing allowed may do.
fn components(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The directory of `dirs` that `destination` lies beneath (strictly: a file inside it, at
/// any depth), compared as normalized absolute paths, component by component (`/etc/nginx`
/// holds `/etc/nginx/nginx.conf`, not `/etc/nginx2/x`). Lexical only: the agent also opens
/// the destination's directory beneath the one found, so no symbolic link leads out.
pub fn allowed_dir<'a, S: AsRef<str>>(destination: &str, dirs: &'a [S]) -> Option<&'a str> {
    let dest = components(destination)?;
    dirs.iter()
        .map(AsRef::as_ref)
        .find(|d| components(d).is_some_and(|dir| dest.len() > dir.len() && dest.starts_with(&dir)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_and_their_errors() {
        let ok = parse(
            Some(&json!({"nodeName": "n", "destination": "/etc/x.conf", "template": "{{ 1 }}",
                "debounce": {"min": "50ms", "max": "2s"}, "mode": "0600",
                "check": {"command": ["true", "{candidate}"]}, "probe": {"httpGet": {"url": "http://127.0.0.1/"}}})),
            true,
        )
        .unwrap();
        assert_eq!(ok.min_wait, Duration::from_millis(50));
        assert_eq!(ok.mode, 0o600);
        assert_eq!(ok.check.unwrap().timeout, Duration::from_secs(10));
        let errs = parse(
            Some(&json!({"destination": "etc/x", "template": "{% for %}", "debounce": {"min": "2s", "max": "1s"},
                "kv": ["nope"], "check": {"command": []}, "probe": {"httpGet": {"url": "ftp://x"}}})),
            true,
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "spec.nodeName",
            "spec.template",
            "spec.destination",
            "spec.debounce.max",
            "spec.kv[0]",
            "spec.check.command",
            "spec.probe.httpGet.url",
        ] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        let t = errs.iter().find(|e| e.field == "spec.template").unwrap();
        assert!(t.message.contains("line 1"), "{}", t.message);
    }

    #[test]
    fn destinations_are_beneath_a_directory_by_whole_components() {
        let dirs = ["/var/lib/berth/templates", "/etc/nginx/"];
        assert_eq!(
            allowed_dir("/etc/nginx/nginx.conf", &dirs),
            Some("/etc/nginx/")
        );
        assert_eq!(
            allowed_dir("/var/lib/berth/templates/a/b.conf", &dirs),
            Some("/var/lib/berth/templates")
        );
        assert_eq!(allowed_dir("//etc/./nginx//x", &dirs), Some("/etc/nginx/"));
        for outside in [
            "/etc/nginx2/x",
            "/etc/nginx",
            "/etc/nginx/../shadow",
            "/etc/passwd",
            "etc/nginx/x",
        ] {
            assert_eq!(allowed_dir(outside, &dirs), None, "{outside}");
        }
        assert_eq!(allowed_dir::<&str>("/etc/x", &[]), None);
        // A directory given with `..` allows nothing rather than something unexpected.
        assert_eq!(allowed_dir("/etc/x", &["/tmp/../etc"]), None);
    }

    #[test]
    fn commands_are_checks_reloads_and_exec_probes() {
        let spec = |extra: serde_json::Value| {
            let mut v = json!({"nodeName": "n", "destination": "/x/y", "template": "a"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            parse(Some(&v), true).unwrap()
        };
        assert!(!spec(json!({})).has_commands());
        assert!(!spec(json!({"probe": {"httpGet": {"url": "http://127.0.0.1/"}}})).has_commands());
        assert!(spec(json!({"check": {"command": ["true"]}})).has_commands());
        assert!(spec(json!({"reload": {"command": ["true"]}})).has_commands());
        assert!(spec(json!({"probe": {"exec": {"command": ["true"]}}})).has_commands());
    }
}
