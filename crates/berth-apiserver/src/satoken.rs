//! ServiceAccount tokens, as Kubernetes issues them: JSON Web Tokens signed by the control
//! plane (ES256, a P-256 key kept 0600 in `DATA_DIR/pki/sa.key`, made at first start), bound
//! to an audience and a lifetime, naming `system:serviceaccount:NAMESPACE:NAME` and the
//! account's uid.
//!
//! - `serviceaccounts/NAME/token` (TokenRequest, `kubectl create token`) issues one: audiences
//!   as asked (the API's own by default), 10 minutes to 48 hours (1 hour by default).
//! - A bearer token of that shape authenticates as its account, in the groups
//!   `system:serviceaccounts` and `system:serviceaccounts:NAMESPACE`, while it is unexpired,
//!   names the API's audience, and its account still exists with the same uid: deleting the
//!   ServiceAccount revokes every token issued for it.
//!
//! Invariant: a token is believed only when its signature verifies with the server's key;
//! nothing in a token is read before that.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::registry::Registry;

/// The issuer, and the audience the API accepts, as a default Kubernetes cluster names them.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The shortest and longest a token may live, and the default.
pub const MIN_SECONDS: u64 = 600;
pub const MAX_SECONDS: u64 = 48 * 3600;
pub const DEFAULT_SECONDS: u64 = 3600;

use berth_api::base64::{decode_url as unb64, encode_url as b64};

/// The key tokens are signed with.
pub struct Signer {
    key: EcdsaKeyPair,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Signer {
    /// Loads the key in `dir/sa.key` (PKCS#8, DER), making it first when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Signer, String> {
        let path = dir.join("sa.key");
        let der = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let pkcs8 =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(|_| "cannot make the ServiceAccount signing key".to_string())?;
                let der = pkcs8.as_ref().to_vec();
                berth_tls::write_private(&path, &der)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                der
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Signer::from_pkcs8(&der).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_pkcs8(der: &[u8]) -> Result<Signer, String> {
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|e| format!("not a P-256 key: {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let key_id = b64(&digest.as_ref()[..16]);
        Ok(Signer { key, key_id })
    }

    /// A token for the ServiceAccount `namespace/name` (uid `uid`), for `audiences`, valid
    /// from `now` for `seconds`.
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        now: u64,
        seconds: u64,
    ) -> Result<String, String> {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.key_id});
        let claims = json!({
            "iss": ISSUER,
            "sub": berth_api::rbac::service_account_user(namespace, name),
            "aud": audiences,
            "iat": now, "nbf": now, "exp": now + seconds,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "cannot sign the token".to_string())?;
        Ok(format!("{signing_input}.{}", b64(sig.as_ref())))
    }

    /// The claims of `token` when its signature is this key's; nothing else is checked here.
    fn verified_claims(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{c}").as_bytes(), &unb64(s)?)
            .ok()?;
        let header: Value = serde_json::from_slice(&unb64(h)?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        serde_json::from_slice(&unb64(c)?).ok()
    }

    /// The account `token` authenticates, if it is one of this server's, unexpired, for the
    /// API's audience, and its account still exists with the uid it was issued for.
    pub fn authenticate(&self, registry: &Registry, token: &str, now: u64) -> Option<UserInfo> {
        let claims = self.verified_claims(token)?;
        let number = |k: &str| claims[k].as_u64();
        if claims["iss"] != ISSUER || number("exp")? <= now || number("nbf").unwrap_or(0) > now {
            return None;
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a == ISSUER,
            Value::Array(a) => a.iter().any(|x| x == ISSUER),
            _ => false,
        };
        if !aud_ok {
            return None;
        }
        let k8s = &claims["kubernetes.io"];
        let ns = k8s["namespace"].as_str()?;
        let name = k8s["serviceaccount"]["name"].as_str()?;
        let uid = k8s["serviceaccount"]["uid"].as_str()?;
        let kind = berth_api::kinds::resolve("serviceaccounts")?;
        let sa = registry.get(kind, Some(ns), name).ok()?;
        if sa.uid() != uid {
            return None;
        }
        Some(UserInfo {
            name: berth_api::rbac::service_account_user(ns, name),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ],
        })
    }
}

/// Whether a bearer token has a JSON Web Token's shape (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_key_and_only_as_issued() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::load_or_create(dir.path()).unwrap();
        let again = Signer::load_or_create(dir.path()).unwrap();
        assert_eq!(s.key_id, again.key_id, "the key is kept");
        let t = s
            .issue("shop", "ci", "u1", &[ISSUER.to_string()], 1000, 600)
            .unwrap();
        assert!(looks_like_jwt(&t));
        let claims = again.verified_claims(&t).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:shop:ci");
        assert_eq!(claims["exp"], 1600);
        // Another key, or any change to the token, is no token.
        let other = Signer::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.verified_claims(&t).is_none());
        let (head, rest) = t.split_once('.').unwrap();
        let (claims_part, sig) = rest.split_once('.').unwrap();
        let forged = b64(String::from_utf8(unb64(claims_part).unwrap())
            .unwrap()
            .replace("\"ci\"", "\"admin\"")
            .as_bytes());
        assert!(
            s.verified_claims(&format!("{head}.{forged}.{sig}"))
                .is_none()
        );
        assert!(s.verified_claims("eyJ.x.y").is_none());
        assert!(s.verified_claims("").is_none());
        let mode = std::fs::metadata(dir.path().join("sa.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn only_live_tokens_for_the_api_of_accounts_that_still_exist_authenticate() {
        let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store =
            berth_store::Store::open(data.path(), berth_store::StoreOptions::default()).unwrap();
        let reg = Registry::new(store);
        reg.ensure_default_namespaces().await.unwrap();
        let kind = berth_api::kinds::resolve("serviceaccounts").unwrap();
        let sa =
            berth_api::Object::from_value(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "ci", "namespace": "default"}}))
            .unwrap();
        let uid = reg
            .create(kind, Some("default"), sa, "t", false)
            .await
            .unwrap()
            .uid()
            .to_string();
        let s = Signer::load_or_create(dir.path()).unwrap();
        let api = [ISSUER.to_string()];
        let good = s.issue("default", "ci", &uid, &api, 1000, 600).unwrap();
        let user = s.authenticate(&reg, &good, 1300).unwrap();
        assert_eq!(user.name, "system:serviceaccount:default:ci");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:default"]
        );
        // Expired, not yet valid, for another audience, for another uid, for no account.
        assert!(s.authenticate(&reg, &good, 1600).is_none());
        assert!(s.authenticate(&reg, &good, 999).is_none());
        let other_aud = s
            .issue("default", "ci", &uid, &["vault".to_string()], 1000, 600)
            .unwrap();
        assert!(s.authenticate(&reg, &other_aud, 1300).is_none());
        let old_uid = s
            .issue("default", "ci", "an-older-uid", &api, 1000, 600)
            .unwrap();
        assert!(s.authenticate(&reg, &old_uid, 1300).is_none());
        let nobody = s.issue("default", "ghost", "u", &api, 1000, 600).unwrap();
        assert!(s.authenticate(&reg, &nobody, 1300).is_none());
    }
}
