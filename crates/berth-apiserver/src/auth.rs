//! Authentication of bearer tokens and the checks on client certificates:
//! - a static token file, as kube-apiserver's `--token-auth-file` reads it:
//!   `token,user,uid,"group1,group2"` per line;
//! - bootstrap tokens (join tokens, `berth token create`): Secrets `bootstrap-token-ID`;
//! - user tokens (`berth user create --token`): Secrets `user-token-ID` of type
//!   `berth.dev/user-token` holding the user, groups, expiry and only a SHA-256 hash of the
//!   token's secret half, so a token dies with its Secret and reading Secrets reveals none;
//! - revoked client certificates (`berth user revoke`): the fingerprints in the ConfigMap
//!   `kube-system/berth-revoked-certificates`, refused although the TLS handshake verified them.
//!
//! A client certificate's user is read in `server.rs` (its CN and Os); which of these is tried
//! in which order is `dispatch`'s.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::Digest;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Vec<(Vec<u8>, UserInfo)>,
    /// The revoked certificates' fingerprints, as read at a store revision: read again only
    /// when the store has moved on, so a certificate request usually costs no read.
    revoked: Arc<Mutex<Option<Revoked>>>,
}

/// The revoked certificates' fingerprints, and the store revision they were read at.
type Revoked = (u64, HashSet<String>);

/// The ConfigMap in `kube-system` whose keys are revoked client certificates' fingerprints
/// (`berth_tls::fingerprint`), each valued with the user and when the certificate expires.
pub const REVOKED_CERTIFICATES: &str = "berth-revoked-certificates";

/// The type of the Secrets that hold user tokens.
pub const USER_TOKEN_TYPE: &str = "berth.dev/user-token";

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut a = Authenticator::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = split_csv(line);
            if f.len() < 2 || f[0].len() < 8 || f[1].is_empty() {
                return Err(AuthError::Syntax {
                    path: path.display().to_string(),
                    line: i + 1,
                    message: "expected token,user[,uid[,\"group,...\"]] with a token of at least 8 characters".into(),
                });
            }
            a.add(
                &f[0],
                UserInfo {
                    name: f[1].clone(),
                    uid: f.get(2).cloned().unwrap_or_default(),
                    groups: f
                        .get(3)
                        .map(|g| {
                            g.split(',')
                                .map(str::to_string)
                                .filter(|s| !s.is_empty())
                                .collect()
                        })
                        .unwrap_or_default(),
                },
            );
        }
        Ok(a)
    }

    pub fn add(&mut self, token: &str, user: UserInfo) {
        self.tokens.push((token.as_bytes().to_vec(), user));
    }

    /// The user behind an `Authorization: Bearer ...` header.
    pub fn authenticate(&self, header: Option<&str>) -> Option<UserInfo> {
        let token = header?.strip_prefix("Bearer ")?.trim().as_bytes();
        let mut found = None;
        for (t, u) in &self.tokens {
            if same(t, token) {
                found = Some(u.clone());
            }
        }
        found
    }
}

impl Authenticator {
    /// Whether the client certificate `der` was revoked (`berth user revoke`). Read through
    /// the registry (so also where the ConfigMaps are encrypted), again whenever the store's
    /// revision has changed since the last read; a revocation is in force from the next request.
    pub(crate) fn revoked(&self, registry: &crate::registry::Registry, der: &[u8]) -> bool {
        let revision = registry.revision();
        let mut cache = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if cache.as_ref().is_none_or(|(r, _)| *r != revision) {
            let fingerprints = berth_api::kinds::resolve("configmaps")
                .and_then(|kind| {
                    registry
                        .get(kind, Some("kube-system"), REVOKED_CERTIFICATES)
                        .ok()
                })
                .and_then(|cm| {
                    cm.get("data")
                        .and_then(|d| d.as_object())
                        .map(|d| d.keys().cloned().collect())
                })
                .unwrap_or_default();
            *cache = Some((revision, fingerprints));
        }
        cache
            .as_ref()
            .is_some_and(|(_, set)| !set.is_empty() && set.contains(&berth_tls::fingerprint(der)))
    }
}

/// The SHA-256 of a user token's secret half, lowercase hex: all its Secret keeps of it.
pub fn user_token_hash(secret: &str) -> String {
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` is `n` characters of `[a-z0-9]`: the shape of token ids and secrets.
fn token_part(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The user behind a user token (`ID.SECRET`, 8 and 32 characters of `[a-z0-9]`, made by
/// `berth user create --token`): the Secret `kube-system/user-token-ID` of type
/// `berth.dev/user-token`, whose `token-hash` is the SHA-256 of SECRET (compared in constant
/// time), unexpired. Deleting the Secret revokes the token from the next request on.
pub(crate) fn user_token(
    registry: &crate::registry::Registry,
    header: Option<&str>,
) -> Option<UserInfo> {
    let token = header?.strip_prefix("Bearer ")?.trim();
    let (id, secret) = token.split_once('.')?;
    if !token_part(id, 8) || !token_part(secret, 32) {
        return None;
    }
    let kind = berth_api::kinds::resolve("secrets")?;
    let obj = registry
        .get(kind, Some("kube-system"), &format!("user-token-{id}"))
        .ok()?;
    if obj.get("type").and_then(|t| t.as_str()) != Some(USER_TOKEN_TYPE) {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        let v = obj.get("data")?.get(k)?.as_str()?;
        String::from_utf8(berth_api::base64::decode(v)?).ok()
    };
    if !same(
        field("token-hash")?.as_bytes(),
        user_token_hash(secret).as_bytes(),
    ) {
        return None;
    }
    if let Some(exp) = field("expiration") {
        let exp = berth_api::timefmt::parse_rfc3339(&exp).ok()?;
        if berth_api::timefmt::now_nanos() >= exp {
            return None;
        }
    }
    let name = field("user").filter(|u| !u.is_empty())?;
    let groups = field("groups")
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .filter(|g| !g.is_empty())
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// The user behind a bootstrap token (`abcdef.0123456789abcdef`), as Kubernetes' bootstrap
/// authenticator reads it: the Secret `kube-system/bootstrap-token-<id>` of type
/// `bootstrap.kubernetes.io/token`, its `token-secret`, unexpired, usable for authentication.
/// Nodes join with these instead of the admin token (`berth token create`).
pub(crate) fn bootstrap_token(
    registry: &crate::registry::Registry,
    header: Option<&str>,
) -> Option<UserInfo> {
    let token = header?.strip_prefix("Bearer ")?.trim();
    let (id, secret) = token.split_once('.')?;
    if !token_part(id, 6) || !token_part(secret, 16) {
        return None;
    }
    let kind = berth_api::kinds::resolve("secrets")?;
    let obj = registry
        .get(kind, Some("kube-system"), &format!("bootstrap-token-{id}"))
        .ok()?;
    if obj.get("type").and_then(|t| t.as_str()) != Some("bootstrap.kubernetes.io/token") {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        let v = obj.get("data")?.get(k)?.as_str()?;
        String::from_utf8(berth_api::base64::decode(v)?).ok()
    };
    if !same(field("token-secret")?.as_bytes(), secret.as_bytes())
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(exp) = field("expiration") {
        let exp = berth_api::timefmt::parse_rfc3339(&exp).ok()?;
        let now = berth_api::timefmt::now_nanos();
        if now >= exp {
            return None;
        }
    }
    // A bootstrapper may ask for a node identity and nothing more (`system:node-bootstrapper`):
    // a node works as `system:node:NAME` with the certificate it gets.
    let mut groups = vec!["system:bootstrappers".to_string()];
    if let Some(extra) = field("auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(str::to_string)
                .filter(|g| !g.is_empty()),
        );
    }
    Some(UserInfo {
        name: format!("system:bootstrap:{id}"),
        uid: String::new(),
        groups,
    })
}

/// A new random token: 32 bytes, hex. When the OS gives no randomness this is an error, never
/// a token: the zeros left in the buffer would make one anybody could guess.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (generate_token().unwrap(), generate_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_ne!(a, "0".repeat(64));
    }

    #[test]
    fn user_token_hashes_are_sha256() {
        assert_eq!(
            user_token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reads_kube_token_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(
            &p,
            "# comment\nsecret-admin-token,admin,1,\"system:masters,dev\"\nbob-token-123,bob\n",
        )
        .unwrap();
        let a = Authenticator::from_file(&p).unwrap();
        let u = a.authenticate(Some("Bearer secret-admin-token")).unwrap();
        assert_eq!(u.name, "admin");
        assert_eq!(u.groups, vec!["system:masters", "dev"]);
        assert_eq!(
            a.authenticate(Some("Bearer bob-token-123")).unwrap().name,
            "bob"
        );
        assert!(a.authenticate(Some("Bearer nope")).is_none());
        assert!(a.authenticate(None).is_none());
        std::fs::write(&p, "short,x\n").unwrap();
        assert!(
            Authenticator::from_file(&p)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
    }
}
