//! `berth token create|list|delete`: bootstrap tokens nodes join with (kubeadm's tokens):
//! Secrets `kube-system/bootstrap-token-<id>` the API server accepts as bearer tokens
//! `<id>.<secret>`, until they expire or are deleted.

use std::io::Write;

use anyhow::Context;
use berth_api::base64;
use berth_api::kinds;
use berth_client::Client;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand, Debug, Clone)]
pub enum TokenCmd {
    /// Make a token a node joins with (`berth agent --token ...`); prints it
    Create {
        /// How long it is valid, e.g. 24h, 30m; 0 for ever
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// What it is for
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (their ids; the secret halves are not shown)
    List,
    /// Revoke a token (by its id, or the whole token)
    Delete { token: String },
}

/// `n` random characters of `[a-z0-9]`. When the OS gives no randomness this is an error,
/// never a token: the zeros left in the buffer would make one anybody could guess.
fn random(n: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).context("cannot make a token: the OS gave no randomness")?;
    Ok(b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect())
}

fn seconds(s: &str) -> anyhow::Result<u64> {
    berth_api::duration::parse(s)
        .map(|d| d.as_secs())
        .map_err(anyhow::Error::msg)
}

fn field(secret: &Value, key: &str) -> String {
    secret["data"][key]
        .as_str()
        .and_then(base64::decode)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

pub async fn run(client: &Client, cmd: TokenCmd, out: &mut dyn Write) -> anyhow::Result<i32> {
    let secrets = kinds::resolve("secrets").context("secret kind")?;
    match cmd {
        TokenCmd::Create { ttl, description } => {
            let (id, secret) = (random(6)?, random(16)?);
            let mut data = serde_json::Map::new();
            let mut put = |k: &str, v: &str| {
                data.insert(k.into(), json!(base64::encode(v.as_bytes())));
            };
            put("token-id", &id);
            put("token-secret", &secret);
            put("usage-bootstrap-authentication", "true");
            put("usage-bootstrap-signing", "true");
            if !description.is_empty() {
                put("description", &description);
            }
            let ttl = seconds(&ttl)?;
            if ttl > 0 {
                let exp = std::time::SystemTime::now() + std::time::Duration::from_secs(ttl);
                let nanos = exp
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                put("expiration", &berth_api::timefmt::rfc3339_from_nanos(nanos));
            }
            let obj = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
                "type": "bootstrap.kubernetes.io/token",
                "data": data,
            });
            client
                .create(secrets, Some("kube-system"), &obj, "")
                .await?;
            writeln!(out, "{id}.{secret}")?;
            Ok(0)
        }
        TokenCmd::List => {
            let list = client.list(secrets, Some("kube-system"), "").await?;
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["type"] == "bootstrap.kubernetes.io/token")
                .map(|s| {
                    let exp = field(s, "expiration");
                    vec![
                        format!("{}.<secret>", field(s, "token-id")),
                        if exp.is_empty() {
                            "<forever>".into()
                        } else {
                            exp
                        },
                        field(s, "description"),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                crate::print::table(&["TOKEN", "EXPIRES", "DESCRIPTION"], &rows)
            )?;
            Ok(0)
        }
        TokenCmd::Delete { token } => {
            let id = token.split('.').next().unwrap_or("");
            client
                .delete(
                    secrets,
                    Some("kube-system"),
                    &format!("bootstrap-token-{id}"),
                    "",
                )
                .await?;
            writeln!(out, "bootstrap token \"{id}\" deleted")?;
            Ok(0)
        }
    }
}
