//! kubeconfig files: the standard format kubectl reads (clusters, users, contexts).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error(
        "no kubeconfig found (looked at {looked}); start a cluster with `berth up` or pass --kubeconfig"
    )]
    NotFound { looked: String },
    #[error("cannot read kubeconfig {path}: {message}")]
    Read { path: String, message: String },
    #[error("kubeconfig {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The current context resolved to what a client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub server: String,
    pub token: String,
    pub namespace: String,
    /// The CA that signs the server's certificate, PEM.
    pub ca_pem: Option<String>,
    /// The user's client certificate and its key, PEM (`client-certificate[-data]`,
    /// `client-key[-data]`): the identity `berth user create` hands out.
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub path: PathBuf,
    pub doc: Value,
}

impl KubeConfig {
    pub fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| KubeconfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let doc: Value = serde_saphyr::from_str(&text).map_err(|e| KubeconfigError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(KubeConfig {
            path: path.to_path_buf(),
            doc,
        })
    }

    /// kubectl's order: the flag, then `$KUBECONFIG` (first existing entry), then the file
    /// `berth up` writes, then `~/.kube/config`.
    pub fn discover(flag: Option<&Path>, default_berth: &Path) -> Result<Self, KubeconfigError> {
        if let Some(p) = flag {
            return Self::load(p);
        }
        let mut looked = Vec::new();
        if let Ok(env) = std::env::var("KUBECONFIG") {
            for p in env.split(':').filter(|p| !p.is_empty()) {
                let p = PathBuf::from(p);
                if p.exists() {
                    return Self::load(&p);
                }
                looked.push(p.display().to_string());
            }
        }
        let mut candidates = vec![default_berth.to_path_buf()];
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".kube/config"));
        }
        for p in candidates {
            if p.exists() {
                return Self::load(&p);
            }
            looked.push(p.display().to_string());
        }
        Err(KubeconfigError::NotFound {
            looked: looked.join(", "),
        })
    }

    fn invalid(&self, message: impl Into<String>) -> KubeconfigError {
        KubeconfigError::Invalid {
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }

    fn named<'a>(&'a self, list: &str, name: &str) -> Option<&'a Value> {
        self.doc
            .get(list)?
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
    }

    pub fn current(&self) -> Result<Context, KubeconfigError> {
        let ctx_name = self.doc["current-context"]
            .as_str()
            .ok_or_else(|| self.invalid("current-context is not set"))?;
        let ctx = self
            .named("contexts", ctx_name)
            .ok_or_else(|| self.invalid(format!("context {ctx_name:?} is not defined")))?;
        let ctx = &ctx["context"];
        let cluster_name = ctx["cluster"].as_str().unwrap_or("");
        let cluster = self
            .named("clusters", cluster_name)
            .ok_or_else(|| self.invalid(format!("cluster {cluster_name:?} is not defined")))?;
        let server = cluster["cluster"]["server"]
            .as_str()
            .ok_or_else(|| self.invalid(format!("cluster {cluster_name:?} has no server")))?;
        let user_name = ctx["user"].as_str().unwrap_or("");
        let user = self
            .named("users", user_name)
            .map(|u| &u["user"])
            .unwrap_or(&Value::Null);
        let token = user["token"].as_str().unwrap_or("");
        let c = &cluster["cluster"];
        let what = format!("cluster {cluster_name:?}");
        let ca_pem = self.pem(c, "certificate-authority", &what)?;
        let what = format!("user {user_name:?}");
        let client_cert_pem = self.pem(user, "client-certificate", &what)?;
        let client_key_pem = self.pem(user, "client-key", &what)?;
        if client_cert_pem.is_some() != client_key_pem.is_some() {
            return Err(self.invalid(format!(
                "{what} has a client certificate or key without the other"
            )));
        }
        Ok(Context {
            server: server.to_string(),
            token: token.to_string(),
            namespace: ctx["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string(),
            ca_pem,
            client_cert_pem,
            client_key_pem,
        })
    }

    /// A PEM field as kubectl reads it: `FIELD-data` (base64) in the file, else `FIELD`, a
    /// file named relative to the kubeconfig's directory.
    fn pem(&self, v: &Value, field: &str, what: &str) -> Result<Option<String>, KubeconfigError> {
        if let Some(data) = v[format!("{field}-data")].as_str() {
            let bytes = berth_api::base64::decode(data.trim())
                .ok_or_else(|| self.invalid(format!("{what}: {field}-data is not base64")))?;
            return String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.invalid(format!("{what}: {field}-data is not PEM text")));
        }
        let Some(file) = v[field].as_str() else {
            return Ok(None);
        };
        let path = self.path.parent().unwrap_or(Path::new(".")).join(file);
        std::fs::read_to_string(&path).map(Some).map_err(|e| {
            self.invalid(format!(
                "{what}: cannot read {field} {}: {e}",
                path.display()
            ))
        })
    }
}

/// The kubeconfig `berth up` writes: one cluster (with its CA), one user, one context.
pub fn render(server: &str, ca_pem: &str, token: &str, user: &str) -> String {
    render_user(server, ca_pem, user, json!({"token": token}), "default")
}

/// A kubeconfig for `user` who authenticates with a client certificate (PEM, with its key),
/// as `berth user create` writes it.
pub fn render_client_cert(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
    namespace: &str,
) -> String {
    let creds = json!({
        "client-certificate-data": berth_api::base64::encode(cert_pem.as_bytes()),
        "client-key-data": berth_api::base64::encode(key_pem.as_bytes()),
    });
    render_user(server, ca_pem, user, creds, namespace)
}

/// A kubeconfig for `user` who authenticates with a bearer token, in `namespace`.
pub fn render_token(
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
    namespace: &str,
) -> String {
    render_user(server, ca_pem, user, json!({"token": token}), namespace)
}

fn render_user(server: &str, ca_pem: &str, user: &str, creds: Value, namespace: &str) -> String {
    let mut cluster = json!({"server": server});
    if !ca_pem.is_empty() {
        cluster["certificate-authority-data"] = json!(berth_api::base64::encode(ca_pem.as_bytes()));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "berth", "cluster": cluster}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "berth", "context": {"cluster": "berth", "user": user, "namespace": namespace}}],
        "current-context": "berth",
        "preferences": {},
    });
    serde_saphyr::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile_dir();
        let p = dir.join("kubeconfig.yaml");
        let ca = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
        std::fs::write(&p, render("https://127.0.0.1:6443", ca, "abc", "admin")).unwrap();
        let c = KubeConfig::load(&p).unwrap().current().unwrap();
        assert_eq!(
            c,
            Context {
                server: "https://127.0.0.1:6443".into(),
                token: "abc".into(),
                namespace: "default".into(),
                ca_pem: Some(ca.into()),
                client_cert_pem: None,
                client_key_pem: None,
            }
        );
        let cert = "-----BEGIN CERTIFICATE-----\nuser\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n";
        std::fs::write(
            &p,
            render_client_cert("https://127.0.0.1:6443", ca, "alice", cert, key, "shop"),
        )
        .unwrap();
        let c = KubeConfig::load(&p).unwrap().current().unwrap();
        assert_eq!(c.token, "");
        assert_eq!(c.namespace, "shop");
        assert_eq!(c.client_cert_pem.as_deref(), Some(cert));
        assert_eq!(c.client_key_pem.as_deref(), Some(key));
        // The file forms, relative to the kubeconfig.
        std::fs::write(dir.join("alice.crt"), cert).unwrap();
        std::fs::write(dir.join("alice.key"), key).unwrap();
        let mut doc = KubeConfig::load(&p).unwrap().doc;
        doc["users"][0]["user"] =
            json!({"client-certificate": "alice.crt", "client-key": "alice.key"});
        std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
        let c = KubeConfig::load(&p).unwrap().current().unwrap();
        assert_eq!(c.client_cert_pem.as_deref(), Some(cert));
        assert_eq!(c.client_key_pem.as_deref(), Some(key));
        doc["users"][0]["user"] = json!({"client-certificate": "alice.crt"});
        std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
        assert!(KubeConfig::load(&p).unwrap().current().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-kc-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
