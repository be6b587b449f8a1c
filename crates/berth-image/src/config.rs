//! The runtime part of an OCI image config (`config` in the config blob), and how it combines
//! with a container's command and arguments as Docker and Kubernetes combine them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an image says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ImageConfig {
    /// Reads the `config` object of an OCI/Docker image config blob.
    pub fn from_blob(blob: &[u8]) -> Result<ImageConfig, crate::ImageError> {
        let v: serde_json::Value =
            serde_json::from_slice(blob).map_err(|e| crate::ImageError::Invalid {
                what: "image config".into(),
                why: e.to_string(),
            })?;
        match v.get("config") {
            None | Some(serde_json::Value::Null) => Ok(ImageConfig::default()),
            Some(c) => serde_json::from_value(c.clone()).map_err(|e| crate::ImageError::Invalid {
                what: "image config".into(),
                why: e.to_string(),
            }),
        }
    }

    /// The process to run, as Kubernetes decides it: `command` replaces the Entrypoint (and
    /// drops the image's Cmd), `args` replace the Cmd.
    pub fn argv(&self, command: &[String], args: &[String]) -> Vec<String> {
        let entry: Vec<String> = if command.is_empty() {
            self.entrypoint.clone().unwrap_or_default()
        } else {
            command.to_vec()
        };
        let rest: Vec<String> = if !args.is_empty() {
            args.to_vec()
        } else if command.is_empty() {
            self.cmd.clone().unwrap_or_default()
        } else {
            Vec::new()
        };
        entry.into_iter().chain(rest).collect()
    }

    /// The environment: the image's, then the container's (which wins on the same name).
    pub fn env_with(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        for (k, v) in extra {
            match out.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = v.clone(),
                None => out.push((k.clone(), v.clone())),
            }
        }
        if !out.iter().any(|(k, _)| k == "PATH") {
            out.insert(
                0,
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_combine_as_kubernetes_does() {
        let c = ImageConfig {
            entrypoint: Some(v(&["/entry"])),
            cmd: Some(v(&["--default"])),
            ..Default::default()
        };
        assert_eq!(c.argv(&[], &[]), v(&["/entry", "--default"]));
        assert_eq!(c.argv(&[], &v(&["x"])), v(&["/entry", "x"]));
        assert_eq!(c.argv(&v(&["/bin/sh"]), &[]), v(&["/bin/sh"]));
        assert_eq!(
            c.argv(&v(&["/bin/sh"]), &v(&["-c", "true"])),
            v(&["/bin/sh", "-c", "true"])
        );
    }

    #[test]
    fn env_merges_and_has_a_path() {
        let c = ImageConfig {
            env: v(&["A=1", "B=2"]),
            ..Default::default()
        };
        let e = c.env_with(&[("B".into(), "3".into())]);
        assert_eq!(e[0].0, "PATH");
        assert!(e.contains(&("A".into(), "1".into())) && e.contains(&("B".into(), "3".into())));
        let parsed = ImageConfig::from_blob(br#"{"architecture":"amd64","config":{"Entrypoint":["/e"],"Env":["X=y"],"WorkingDir":"/w","User":"1000:1000","ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT"}}"#).unwrap();
        assert_eq!(parsed.working_dir, "/w");
        assert_eq!(parsed.stop_signal, "SIGQUIT");
        assert!(parsed.exposed_ports.contains_key("80/tcp"));
    }
}
