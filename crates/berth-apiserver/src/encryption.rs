//! Encryption at rest, as kube-apiserver does it: an `EncryptionConfiguration` file
//! (`apiserver.config.k8s.io/v1`) names, per resource, providers (`aesgcm`, `secretbox`,
//! `identity`) with their keys. The first provider's first key encrypts every write of those
//! resources; a read picks the provider and key by the prefix Kubernetes puts on the value
//! (`k8s:enc:aesgcm:v1:NAME:`, `k8s:enc:secretbox:v1:NAME:`), and a value without one is
//! plaintext written before encryption was on. The bytes after the prefix are laid out as
//! Kubernetes lays them: AES-GCM's 12-byte nonce then ciphertext and tag, with the store key
//! as authenticated data (a value copied under another object's key does not open);
//! secretbox's 24-byte nonce then NaCl's box (tag first).
//!
//! The `Registry` owns one `Transformer`, and every object value it writes or reads (gets,
//! lists, history, watches, the controllers' informer) goes through it, so the store, its
//! write-ahead log and its history hold only ciphertext for the configured resources.
//!
//! Invariants: a nonce is fresh from the OS's randomness for every write, and a write without
//! it fails rather than reuse one. A value that does not open (a key no longer in the file, a
//! wrong key, tampered bytes) is an error naming the object and the key, never plaintext
//! garbage. Reads say whether the value was written with anything other than the current
//! write key (`stale`), so an update that changes nothing still rewrites it: that is how
//! `berth secrets rotate` (and `kubectl replace`) moves objects to a new key.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, Payload};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::{AesGcm, Nonce};
use crypto_secretbox::XSalsa20Poly1305;
use serde_json::Value;

/// The file `berth server` reads (and writes at first start) under its data directory.
pub const DEFAULT_FILE: &str = "encryption.yaml";

/// What every encrypted value starts with.
const PREFIX: &[u8] = b"k8s:enc:";
const GCM_NONCE: usize = 12;
const SECRETBOX_NONCE: usize = 24;

/// One key of a provider, ready to seal and open.
enum Cipher {
    Gcm128(Box<AesGcm<Aes128, U12>>),
    Gcm192(Box<AesGcm<Aes192, U12>>),
    Gcm256(Box<AesGcm<Aes256, U12>>),
    Secretbox(Box<XSalsa20Poly1305>),
}

struct Key {
    name: String,
    /// `k8s:enc:PROVIDER:v1:NAME:`
    prefix: Vec<u8>,
    cipher: Cipher,
}

enum Provider {
    Identity,
    /// `aesgcm` or `secretbox`, with its keys in the file's order.
    Keys(&'static str, Vec<Key>),
}

/// One entry of `resources`: which resources, and their providers in order.
struct Rule {
    resources: Vec<String>,
    providers: Vec<Provider>,
}

/// What encrypts and decrypts object values. `Transformer::default()` is identity for
/// everything (no file).
#[derive(Default)]
pub struct Transformer {
    rules: Vec<Rule>,
    /// The file it was read from, for error messages.
    source: Option<PathBuf>,
}

impl fmt::Debug for Transformer {
    // Keys never reach a log: only the shape is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transformer({})", self.describe())
    }
}

/// Why the configuration file cannot be used; the message names the file, and the line and
/// field where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A value that cannot be opened: names the object and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError(pub String);

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored value opened: its plaintext, and whether it was written with something other than
/// the current write key (a rewrite would move it there).
#[derive(Debug)]
pub struct Opened<'a> {
    pub value: Cow<'a, [u8]>,
    pub stale: bool,
}

/// Whether a stored value is encrypted (carries a provider's prefix).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(PREFIX)
}

/// `(group, plural)` of a store key `/registry/GROUP/PLURAL/...` (group `core` is "").
fn resource_of(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(b"/registry/")?;
    let rest = std::str::from_utf8(rest).ok()?;
    let mut parts = rest.splitn(3, '/');
    let group = parts.next()?;
    let plural = parts.next()?;
    Some((if group == "core" { "" } else { group }, plural))
}

/// How errors name an object: `secrets "shop/db"`.
fn object_of(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    match resource_of(key) {
        Some((group, plural)) => {
            let prefix = format!(
                "/registry/{}/{plural}/",
                if group.is_empty() { "core" } else { group }
            );
            let name = text.strip_prefix(&prefix).unwrap_or(&text);
            let resource = if group.is_empty() {
                plural.to_string()
            } else {
                format!("{plural}.{group}")
            };
            format!("{resource} \"{name}\"")
        }
        None => format!("{text:?}"),
    }
}

/// Whether a rule's resource entry (`secrets`, `deployments.apps`, `*.apps`, `*.`, `*.*`)
/// covers `group`/`plural`.
fn covers(entry: &str, group: &str, plural: &str) -> bool {
    match entry.split_once('.') {
        None => group.is_empty() && entry == plural,
        Some(("*", "*")) => true,
        Some(("*", g)) => g == group,
        Some((p, g)) => p == plural && g == group,
    }
}

fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    getrandom::fill(buf).map_err(|e| format!("the OS gave no randomness for a nonce: {e}"))
}

/// AES-GCM with a fresh nonce: nonce, then ciphertext and tag.
fn gcm_seal<A: Aead + AeadCore<NonceSize = U12>>(
    c: &A,
    out: &mut Vec<u8>,
    aad: &[u8],
    msg: &[u8],
) -> Result<(), String> {
    let mut nonce = [0u8; GCM_NONCE];
    fill_random(&mut nonce)?;
    let sealed = c
        .encrypt(Nonce::<U12>::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| "the cipher refused the value".to_string())?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(())
}

fn gcm_open<A: Aead + AeadCore<NonceSize = U12>>(
    c: &A,
    aad: &[u8],
    data: &[u8],
) -> Option<Vec<u8>> {
    if data.len() < GCM_NONCE {
        return None;
    }
    let (nonce, msg) = data.split_at(GCM_NONCE);
    c.decrypt(Nonce::<U12>::from_slice(nonce), Payload { msg, aad })
        .ok()
}

impl Key {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = self.prefix.clone();
        match &self.cipher {
            Cipher::Gcm128(c) => gcm_seal(c.as_ref(), &mut out, aad, plaintext)?,
            Cipher::Gcm192(c) => gcm_seal(c.as_ref(), &mut out, aad, plaintext)?,
            Cipher::Gcm256(c) => gcm_seal(c.as_ref(), &mut out, aad, plaintext)?,
            Cipher::Secretbox(c) => {
                let mut nonce = [0u8; SECRETBOX_NONCE];
                fill_random(&mut nonce)?;
                let sealed = c
                    .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plaintext)
                    .map_err(|_| "the cipher refused the value".to_string())?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
        }
        Ok(out)
    }

    /// Opens what follows the prefix; `None` when it does not authenticate.
    fn open(&self, aad: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        match &self.cipher {
            Cipher::Gcm128(c) => gcm_open(c.as_ref(), aad, data),
            Cipher::Gcm192(c) => gcm_open(c.as_ref(), aad, data),
            Cipher::Gcm256(c) => gcm_open(c.as_ref(), aad, data),
            Cipher::Secretbox(c) => {
                if data.len() < SECRETBOX_NONCE {
                    return None;
                }
                let (nonce, sealed) = data.split_at(SECRETBOX_NONCE);
                c.decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
                    .ok()
            }
        }
    }
}

impl Transformer {
    /// The rule whose resources cover the object at `key`.
    fn rule_for(&self, key: &[u8]) -> Option<&Rule> {
        let (group, plural) = resource_of(key)?;
        self.rules
            .iter()
            .find(|r| r.resources.iter().any(|e| covers(e, group, plural)))
    }

    /// Whether a rule of the config names the resource of `key` (or of a kind's key prefix).
    pub fn covers(&self, key: &[u8]) -> bool {
        self.rule_for(key).is_some()
    }

    /// Whether writes of the object at `key` are encrypted.
    pub fn encrypts(&self, key: &[u8]) -> bool {
        self.rule_for(key)
            .and_then(|r| r.providers.first())
            .is_some_and(|p| matches!(p, Provider::Keys(..)))
    }

    /// The value to store for `plaintext` at `key`: sealed with the first provider's first
    /// key of the resource's rule, or the plaintext itself under `identity` or no rule.
    pub fn seal(&self, key: &[u8], plaintext: Vec<u8>) -> Result<Vec<u8>, String> {
        match self.rule_for(key).and_then(|r| r.providers.first()) {
            Some(Provider::Keys(_, keys)) => match keys.first() {
                Some(k) => k.seal(key, &plaintext).map_err(|e| {
                    format!(
                        "cannot encrypt {} with key {:?}: {e}",
                        object_of(key),
                        k.name
                    )
                }),
                None => Err(format!("no key to encrypt {}", object_of(key))),
            },
            _ => Ok(plaintext),
        }
    }

    /// The prefix of the value the current write key makes (empty for identity).
    fn write_prefix(&self, key: &[u8]) -> &[u8] {
        match self.rule_for(key).and_then(|r| r.providers.first()) {
            Some(Provider::Keys(_, keys)) => keys.first().map_or(&[][..], |k| &k.prefix[..]),
            _ => &[],
        }
    }

    /// Whether the stored `value` at `key` was written with anything but the current write
    /// key; only its prefix is looked at.
    pub fn is_stale(&self, key: &[u8], value: &[u8]) -> bool {
        let want = self.write_prefix(key);
        if want.is_empty() {
            value.starts_with(PREFIX)
        } else {
            !value.starts_with(want)
        }
    }

    /// Opens a stored value. Plaintext (no `k8s:enc:` prefix) is read as written.
    pub fn open<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<Opened<'a>, OpenError> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(Opened {
                value: Cow::Borrowed(value),
                stale: self.encrypts(key),
            });
        };
        let object = || object_of(key);
        let file = || {
            self.source.as_ref().map_or_else(
                || "the encryption config".to_string(),
                |p| p.display().to_string(),
            )
        };
        // PROVIDER:v1:NAME:DATA, names without ':' (the file's rule).
        let mut parts = rest.splitn(4, |b| *b == b':');
        let (Some(provider), Some(version), Some(name), Some(data)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError(format!(
                "cannot decrypt {}: its stored value has a malformed encryption prefix",
                object()
            )));
        };
        let provider = String::from_utf8_lossy(provider);
        let name = String::from_utf8_lossy(name);
        if version != b"v1" {
            return Err(OpenError(format!(
                "cannot decrypt {}: it was written by {provider} {} with key {name:?}, which berth does not read",
                object(),
                String::from_utf8_lossy(version)
            )));
        }
        let Some(rule) = self.rule_for(key) else {
            return Err(OpenError(format!(
                "cannot decrypt {}: it was written with {provider} key {name:?}, but {} names no providers for its resource",
                object(),
                file()
            )));
        };
        let found = rule
            .providers
            .iter()
            .enumerate()
            .find_map(|(pi, p)| match p {
                Provider::Keys(kind, keys) if *kind == provider => keys
                    .iter()
                    .enumerate()
                    .find(|(_, k)| k.name == name)
                    .map(|(ki, k)| (pi == 0 && ki == 0, k)),
                _ => None,
            });
        let Some((current, k)) = found else {
            return Err(OpenError(format!(
                "cannot decrypt {}: it was written with {provider} key {name:?}, which {} no longer has (put the key back, or delete and recreate the object)",
                object(),
                file()
            )));
        };
        match k.open(key, data) {
            Some(plain) => Ok(Opened {
                value: Cow::Owned(plain),
                stale: !current,
            }),
            None => Err(OpenError(format!(
                "cannot decrypt {} with {provider} key {name:?}: the value does not authenticate (the key in {} is not the one it was written with, or the stored bytes were changed)",
                object(),
                file()
            ))),
        }
    }

    /// A one-line summary for the log: which resources, which providers and key names.
    pub fn describe(&self) -> String {
        if self.rules.is_empty() {
            return "no encryption at rest".into();
        }
        self.rules
            .iter()
            .map(|r| {
                let providers: Vec<String> = r
                    .providers
                    .iter()
                    .map(|p| match p {
                        Provider::Identity => "identity".to_string(),
                        Provider::Keys(kind, keys) => format!(
                            "{kind} [{}]",
                            keys.iter()
                                .map(|k| k.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                    .collect();
                format!("{}: {}", r.resources.join(", "), providers.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Reads the file: it must be readable by its owner alone (it holds the keys to every
    /// Secret) and well formed.
    pub fn load(path: &Path) -> Result<Transformer, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the encryption config {}: {e}",
                path.display()
            ))
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError(format!(
                "{} is open to group or others (mode {mode:04o}); it holds the keys to every Secret: chmod 600 {}",
                path.display(),
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the encryption config {}: {e}",
                path.display()
            ))
        })?;
        let mut t = Transformer::parse(&text)
            .map_err(|e| ConfigError(format!("{}:{}", path.display(), e.0)))?;
        t.source = Some(path.to_path_buf());
        Ok(t)
    }

    /// Reads the file at `path`; when it is absent and `create` (the default file), first
    /// writes one (0600) with a fresh 32-byte AES-GCM key for Secrets. Says whether it wrote.
    pub fn load_or_create(path: &Path, create: bool) -> Result<(Transformer, bool), ConfigError> {
        let created = if create && !path.exists() {
            let text = new_config()?;
            crate::files::write_private(path, &text)
                .map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))?;
            true
        } else {
            false
        };
        Ok((Transformer::load(path)?, created))
    }

    /// Parses an `EncryptionConfiguration`. Errors start with `LINE: ` (the file name is
    /// put before by `load`) and name the field.
    pub fn parse(text: &str) -> Result<Transformer, ConfigError> {
        let doc: Value = serde_saphyr::from_str(text).map_err(|e| {
            let line = e.location().map_or(1, |l| l.line() as usize);
            let message = e.to_string();
            let message = message.lines().next().unwrap_or_default().to_string();
            ConfigError(format!("{line}: not YAML: {message}"))
        })?;
        let err = |needle: &str, field: &str, msg: String| {
            ConfigError(format!("{}: {field}: {msg}", line_of(text, needle)))
        };
        let Value::Object(top) = &doc else {
            return Err(err(
                "",
                "(top)",
                "must be an EncryptionConfiguration object".into(),
            ));
        };
        let api_version = top.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if api_version != "apiserver.config.k8s.io/v1" {
            return Err(err(
                "apiVersion",
                "apiVersion",
                format!("{api_version:?}: must be \"apiserver.config.k8s.io/v1\""),
            ));
        }
        let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "EncryptionConfiguration" {
            return Err(err(
                "kind",
                "kind",
                format!("{kind:?}: must be \"EncryptionConfiguration\""),
            ));
        }
        for k in top.keys() {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "resources") {
                return Err(err(k, k, "unknown field".into()));
            }
        }
        let Some(Value::Array(entries)) = top.get("resources") else {
            return Err(err("resources", "resources", "must be a list".into()));
        };
        let mut rules = Vec::new();
        let mut seen_resources: Vec<String> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("resources[{i}]");
            let Value::Object(entry) = entry else {
                return Err(err("resources", &field, "must be an object".into()));
            };
            for k in entry.keys() {
                if !matches!(k.as_str(), "resources" | "providers") {
                    return Err(err(k, &format!("{field}.{k}"), "unknown field".into()));
                }
            }
            let Some(Value::Array(names)) = entry.get("resources") else {
                return Err(err(
                    "resources",
                    &format!("{field}.resources"),
                    "must be a list of resources (e.g. [secrets])".into(),
                ));
            };
            let mut resources = Vec::new();
            for (j, n) in names.iter().enumerate() {
                let f = format!("{field}.resources[{j}]");
                let Some(n) = n.as_str().filter(|n| !n.is_empty()) else {
                    return Err(err("resources", &f, "must be a resource name".into()));
                };
                let valid = n.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '*')
                }) && (!n.contains('*') || n.starts_with("*."));
                if !valid {
                    return Err(err(
                        n,
                        &f,
                        format!("{n:?} is not a resource (secrets, deployments.apps, *.apps, *.*)"),
                    ));
                }
                if seen_resources.iter().any(|s| s == n) {
                    return Err(err(n, &f, format!("{n:?} is named by two entries")));
                }
                seen_resources.push(n.to_string());
                resources.push(n.to_string());
            }
            if resources.is_empty() {
                return Err(err(
                    "resources",
                    &format!("{field}.resources"),
                    "is empty".into(),
                ));
            }
            let Some(Value::Array(providers)) = entry.get("providers") else {
                return Err(err(
                    "providers",
                    &format!("{field}.providers"),
                    "must be a list of providers".into(),
                ));
            };
            if providers.is_empty() {
                return Err(err(
                    "providers",
                    &format!("{field}.providers"),
                    "is empty".into(),
                ));
            }
            let mut parsed = Vec::new();
            for (j, p) in providers.iter().enumerate() {
                let f = format!("{field}.providers[{j}]");
                parsed.push(parse_provider(text, p, &f)?);
            }
            rules.push(Rule {
                resources,
                providers: parsed,
            });
        }
        Ok(Transformer {
            rules,
            source: None,
        })
    }
}

/// The line (1-based) of the first line of `text` containing `needle`, or 1.
fn line_of(text: &str, needle: &str) -> usize {
    if needle.is_empty() {
        return 1;
    }
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

/// The line of the first `then` at or after the first line containing `first` (a key's
/// `secret:` after its `name:`), or the line of `first`.
fn line_after(text: &str, first: &str, then: &str) -> usize {
    let start = line_of(text, first);
    text.lines()
        .enumerate()
        .skip(start - 1)
        .find(|(_, l)| l.contains(then))
        .map_or(start, |(i, _)| i + 1)
}

fn parse_provider(text: &str, p: &Value, field: &str) -> Result<Provider, ConfigError> {
    let err = |needle: &str, field: &str, msg: String| {
        ConfigError(format!("{}: {field}: {msg}", line_of(text, needle)))
    };
    let Some(obj) = p.as_object().filter(|o| o.len() == 1) else {
        return Err(err(
            "providers",
            field,
            "must name exactly one provider (aesgcm, secretbox or identity)".into(),
        ));
    };
    let (kind, body) = obj
        .iter()
        .next()
        .map(|(k, v)| (k.as_str(), v))
        .unwrap_or(("", p));
    let kind: &'static str = match kind {
        "identity" => return Ok(Provider::Identity),
        "aesgcm" => "aesgcm",
        "secretbox" => "secretbox",
        "aescbc" | "kms" => {
            return Err(err(
                kind,
                &format!("{field}.{kind}"),
                "berth does not implement this provider (aesgcm, secretbox and identity are)"
                    .into(),
            ));
        }
        other => {
            return Err(err(
                other,
                &format!("{field}.{other}"),
                "unknown provider (aesgcm, secretbox, identity)".into(),
            ));
        }
    };
    let Some(Value::Array(keys)) = body.get("keys") else {
        return Err(err(
            kind,
            &format!("{field}.{kind}.keys"),
            "must be a list of keys".into(),
        ));
    };
    if keys.is_empty() {
        return Err(err(
            kind,
            &format!("{field}.{kind}.keys"),
            "is empty".into(),
        ));
    }
    let mut out: Vec<Key> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let f = format!("{field}.{kind}.keys[{i}]");
        let name = k.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() || name.contains(':') {
            return Err(err(
                kind,
                &format!("{f}.name"),
                "must be a non-empty name without ':'".into(),
            ));
        }
        let at = format!("name: {name}");
        if out.iter().any(|o| o.name == name) {
            return Err(err(
                &at,
                &format!("{f}.name"),
                format!("{name:?} is used twice"),
            ));
        }
        let secret = k.get("secret").and_then(Value::as_str).unwrap_or("");
        let secret_err = |msg: String| {
            ConfigError(format!(
                "{}: {f}.secret: {msg}",
                line_after(text, &at, "secret")
            ))
        };
        let Some(bytes) = berth_api::base64::decode(secret.trim()).filter(|b| !b.is_empty()) else {
            return Err(secret_err("must be the key in standard base64".into()));
        };
        let bad_len = |want: &str| {
            secret_err(format!(
                "the key is {} bytes; {kind} takes {want}",
                bytes.len()
            ))
        };
        let cipher =
            match (kind, bytes.len()) {
                ("aesgcm", 16) => AesGcm::<Aes128, U12>::new_from_slice(&bytes)
                    .map(|c| Cipher::Gcm128(Box::new(c))),
                ("aesgcm", 24) => AesGcm::<Aes192, U12>::new_from_slice(&bytes)
                    .map(|c| Cipher::Gcm192(Box::new(c))),
                ("aesgcm", 32) => AesGcm::<Aes256, U12>::new_from_slice(&bytes)
                    .map(|c| Cipher::Gcm256(Box::new(c))),
                ("aesgcm", _) => return Err(bad_len("16, 24 or 32")),
                (_, 32) => {
                    XSalsa20Poly1305::new_from_slice(&bytes).map(|c| Cipher::Secretbox(Box::new(c)))
                }
                _ => return Err(bad_len("32")),
            }
            .map_err(|_| bad_len("another length"))?;
        out.push(Key {
            name: name.to_string(),
            prefix: format!("k8s:enc:{kind}:v1:{name}:").into_bytes(),
            cipher,
        });
    }
    Ok(Provider::Keys(kind, out))
}

/// The file written at first start: a fresh 32-byte AES-GCM key for Secrets, identity after
/// it so Secrets stored before encryption was on still read.
fn new_config() -> Result<String, ConfigError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| {
        ConfigError(format!(
            "cannot make an encryption key: the OS gave no randomness: {e}"
        ))
    })?;
    Ok(format!(
        "# Encryption at rest (Kubernetes' EncryptionConfiguration). The first provider's first\n\
         # key encrypts writes; every key listed decrypts. Keep this file 0600, and a copy of it\n\
         # apart from the data directory: without it the Secrets in the store cannot be read.\n\
         # Rotation: docs/security.md.\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n  \
           - resources:\n      \
               - secrets\n    \
             providers:\n      \
               - aesgcm:\n          \
                   keys:\n            \
                     - name: key1\n              \
                       secret: {}\n      \
               - identity: {{}}\n",
        berth_api::base64::encode(&key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"/registry/core/secrets/default/db";

    fn b64(n: usize, fill: u8) -> String {
        berth_api::base64::encode(&vec![fill; n])
    }

    fn config(providers: &str) -> Transformer {
        Transformer::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, \"*.apps\"]\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    fn aesgcm(name: &str, n: usize, fill: u8) -> String {
        format!(
            "  - aesgcm:\n      keys:\n      - name: {name}\n        secret: {}\n",
            b64(n, fill)
        )
    }

    fn secretbox(name: &str, fill: u8) -> String {
        format!(
            "  - secretbox:\n      keys:\n      - name: {name}\n        secret: {}\n",
            b64(32, fill)
        )
    }

    #[test]
    fn every_provider_round_trips_with_kubernetes_prefix() {
        for (providers, prefix) in [
            (aesgcm("k16", 16, 1), "k8s:enc:aesgcm:v1:k16:"),
            (aesgcm("k24", 24, 2), "k8s:enc:aesgcm:v1:k24:"),
            (aesgcm("k32", 32, 3), "k8s:enc:aesgcm:v1:k32:"),
            (secretbox("sb", 4), "k8s:enc:secretbox:v1:sb:"),
        ] {
            let t = config(&providers);
            let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#.to_vec();
            let sealed = t.seal(KEY, plain.clone()).unwrap();
            assert!(sealed.starts_with(prefix.as_bytes()), "{providers}");
            assert!(!sealed.windows(8).any(|w| w == b"password"));
            let opened = t.open(KEY, &sealed).unwrap();
            assert_eq!(opened.value.as_ref(), plain.as_slice());
            assert!(!opened.stale);
            // Fresh nonces: the same plaintext never seals to the same bytes.
            assert_ne!(t.seal(KEY, plain.clone()).unwrap(), sealed);
        }
    }

    #[test]
    fn other_resources_and_plaintext_pass_through() {
        let t = config(&aesgcm("k", 32, 1));
        let cm = b"/registry/core/configmaps/default/c";
        assert_eq!(t.seal(cm, b"{}".to_vec()).unwrap(), b"{}");
        assert!(t.encrypts(b"/registry/apps/deployments/default/d"));
        assert!(!t.encrypts(cm));
        // Written before encryption was on: read as it is, and stale.
        let old = t.open(KEY, b"{\"a\":1}").unwrap();
        assert_eq!(old.value.as_ref(), b"{\"a\":1}");
        assert!(old.stale);
        assert!(!t.open(cm, b"{}").unwrap().stale);
    }

    #[test]
    fn tampering_and_moving_values_are_detected() {
        for providers in [aesgcm("k", 32, 1), secretbox("k", 2)] {
            let t = config(&providers);
            let sealed = t.seal(KEY, b"{\"x\":\"y\"}".to_vec()).unwrap();
            for i in [sealed.len() - 1, sealed.len() / 2 + 10, 30] {
                let mut bad = sealed.clone();
                bad[i] ^= 1;
                let e = t.open(KEY, &bad).unwrap_err();
                assert!(e.0.contains("secrets \"default/db\""), "{e}");
            }
            let truncated = &sealed[..sealed.len() - 20];
            assert!(t.open(KEY, truncated).is_err());
        }
        // AES-GCM binds the value to its key: copied to another Secret, it does not open.
        let t = config(&aesgcm("k", 32, 1));
        let sealed = t.seal(KEY, b"{}".to_vec()).unwrap();
        let e = t
            .open(b"/registry/core/secrets/default/other", &sealed)
            .unwrap_err();
        assert!(e.0.contains("does not authenticate"), "{e}");
    }

    #[test]
    fn wrong_or_missing_keys_are_named() {
        let old = config(&aesgcm("old", 32, 1));
        let sealed = old.seal(KEY, b"{}".to_vec()).unwrap();
        // Same name, other key bytes.
        let e = config(&aesgcm("old", 32, 9))
            .open(KEY, &sealed)
            .unwrap_err();
        assert!(
            e.0.contains("\"old\"") && e.0.contains("does not authenticate"),
            "{e}"
        );
        // The key removed.
        let e = config(&aesgcm("new", 32, 2))
            .open(KEY, &sealed)
            .unwrap_err();
        assert!(
            e.0.contains("secrets \"default/db\"") && e.0.contains("\"old\""),
            "{e}"
        );
        assert!(e.0.contains("no longer has"), "{e}");
        // Both: reads with the old, writes with the new, and calls the old stale.
        let both = config(&(aesgcm("new", 32, 2) + &aesgcm("old", 32, 1)));
        let o = both.open(KEY, &sealed).unwrap();
        assert!(o.stale);
        assert!(both.is_stale(KEY, &sealed));
        let fresh = both.seal(KEY, b"{}".to_vec()).unwrap();
        assert!(!both.is_stale(KEY, &fresh));
        assert!(fresh.starts_with(b"k8s:enc:aesgcm:v1:new:"));
        // No rule for the resource at all.
        let none = Transformer::default();
        assert!(
            none.open(KEY, &sealed)
                .unwrap_err()
                .0
                .contains("names no providers")
        );
    }

    #[test]
    fn identity_first_writes_plaintext_and_reads_the_rest() {
        let t = config(&(String::from("  - identity: {}\n") + &aesgcm("k", 32, 1)));
        assert_eq!(t.seal(KEY, b"{}".to_vec()).unwrap(), b"{}");
        let enc = config(&aesgcm("k", 32, 1))
            .seal(KEY, b"{}".to_vec())
            .unwrap();
        let o = t.open(KEY, &enc).unwrap();
        assert_eq!(o.value.as_ref(), b"{}");
        assert!(o.stale);
    }

    #[test]
    fn malformed_configs_name_line_and_field() {
        let cases = [
            ("kind: Foo\n", "apiVersion"),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n",
                "9: resources[0].providers[0].aesgcm.keys[0].secret: the key is 5 bytes; aesgcm takes 16, 24 or 32",
            ),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: []\n",
                "6: resources[0].providers[0].aescbc: berth does not implement",
            ),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - name: k\n        secret: not base64!\n",
                "secretbox.keys[0].secret: must be the key in standard base64",
            ),
            ("resources: [\n", "not YAML"),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: []\n",
                "resources[0].providers: is empty",
            ),
        ];
        for (text, want) in cases {
            let e = Transformer::parse(text).unwrap_err();
            assert!(e.0.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_written_default_parses_and_encrypts_secrets() {
        let text = new_config().unwrap();
        let t = Transformer::parse(&text).unwrap();
        assert!(t.encrypts(KEY));
        assert!(
            t.seal(KEY, b"{}".to_vec())
                .unwrap()
                .starts_with(b"k8s:enc:aesgcm:v1:key1:")
        );
    }

    #[test]
    fn a_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_FILE);
        let (_, created) = Transformer::load_or_create(&path, true).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Transformer::load(&path).unwrap_err();
        assert!(
            e.0.contains("mode 0644") && e.0.contains(DEFAULT_FILE),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn no_stored_value_panics_the_reader(
            value in proptest::collection::vec(any::<u8>(), 0..200),
            tail in proptest::collection::vec(any::<u8>(), 0..80),
            which in 0usize..4,
        ) {
            let t = config(&(aesgcm("a", 32, 1) + &secretbox("s", 2)));
            let prefix: &[u8] = match which {
                0 => b"k8s:enc:aesgcm:v1:a:",
                1 => b"k8s:enc:secretbox:v1:s:",
                2 => b"k8s:enc:",
                _ => b"",
            };
            let mut v = prefix.to_vec();
            v.extend_from_slice(&value);
            let _ = t.open(KEY, &v);
            let _ = t.open(&tail, &v);
            let _ = t.is_stale(&tail, &v);
        }

        #[test]
        fn no_config_text_panics_the_parser(text in "\\PC{0,300}") {
            let _ = Transformer::parse(&text);
        }

        #[test]
        fn no_config_shape_panics_the_parser(
            name in "[a-z:]{0,5}",
            secret in "[A-Za-z0-9+/=]{0,60}",
            provider in "(aesgcm|secretbox|identity|aescbc|x)",
            resource in "[a-z*.]{0,10}",
        ) {
            let text = format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [\"{resource}\"]\n  providers:\n  - {provider}:\n      keys:\n      - name: \"{name}\"\n        secret: \"{secret}\"\n"
            );
            let _ = Transformer::parse(&text);
        }
    }
}
