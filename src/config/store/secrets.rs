//! Secrets at rest in the cluster store: certificate keys, API keys,
//! passwords and plugin secrets are written to etcd as
//! `enc:v1:<base64(nonce ‖ AES-256-GCM ciphertext)>` when the cluster has an
//! encryption key, and decrypted by every node that has the same key.
//! Anyone who can read etcd then sees no secret in clear.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

const PREFIX: &str = "enc:v1:";

/// Field names whose string values (or lists of strings) are secrets
/// anywhere in the document. `key` is one only inside `certificates` (a
/// private key); elsewhere it names a rate-limit or hashing key.
const SECRET_FIELDS: [&str; 6] = [
    "api_keys",
    "password",
    "secret",
    "client_secret",
    "token",
    "private_key",
];

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The configured key is not 32 bytes of base64.
    #[error(
        "the encryption key must be the base64 of 32 bytes (`head -c32 /dev/urandom | base64`)"
    )]
    BadKey,
    /// The store holds encrypted values and this node has no key.
    #[error("the stored document has encrypted secrets (at `{0}`) but this node has no `cluster.encryption_key`; give it the same key as the other nodes")]
    NoKey(String),
    /// A value does not decrypt with this node's key.
    #[error("the secret at `{0}` does not decrypt with this node's `cluster.encryption_key`; every node needs the same key")]
    WrongKey(String),
}

/// A parsed encryption key.
pub struct SecretKey(LessSafeKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Parses the base64 text of a 32-byte key.
pub fn parse_key(text: &str) -> Result<SecretKey, SecretError> {
    let bytes = B64.decode(text.trim()).map_err(|_| SecretError::BadKey)?;
    if bytes.len() != 32 {
        return Err(SecretError::BadKey);
    }
    let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SecretError::BadKey)?;
    Ok(SecretKey(LessSafeKey::new(key)))
}

impl SecretKey {
    fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        // The system random source failing leaves no safe way to encrypt;
        // fall back to writing the value unchanged would leak it, so panic.
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .expect("AES-GCM sealing of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", B64.encode(out))
    }

    fn open(&self, sealed: &str) -> Option<String> {
        let raw = B64.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self.0.open_in_place(nonce, Aad::empty(), &mut data).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// Encrypts every secret field of `doc` in place (values already sealed
/// are left as they are).
pub fn seal(doc: &mut Value, key: &SecretKey) {
    let mut f = |s: &mut String| {
        if !s.starts_with(PREFIX) {
            *s = key.seal(s);
        }
    };
    if let Some(Value::Array(certs)) = doc.get_mut("certificates") {
        for c in certs.iter_mut() {
            if let Some(k) = c.get_mut("key") {
                walk(k, true, &mut f);
            }
        }
    }
    walk(doc, false, &mut f);
}

/// Decrypts every sealed value of `doc` in place.
pub fn open(doc: &mut Value, key: Option<&SecretKey>) -> Result<(), SecretError> {
    open_at(doc, "", key)
}

fn open_at(v: &mut Value, path: &str, key: Option<&SecretKey>) -> Result<(), SecretError> {
    match v {
        Value::String(s) if s.starts_with(PREFIX) => {
            let key = key.ok_or_else(|| SecretError::NoKey(path.to_string()))?;
            *s = key
                .open(s)
                .ok_or_else(|| SecretError::WrongKey(path.to_string()))?;
        }
        Value::Array(items) => {
            for (i, it) in items.iter_mut().enumerate() {
                open_at(it, &format!("{path}[{i}]"), key)?;
            }
        }
        Value::Object(map) => {
            for (k, it) in map.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                open_at(it, &child, key)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn walk(v: &mut Value, secret: bool, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) if secret && !s.is_empty() => f(s),
        Value::Array(items) => items.iter_mut().for_each(|it| walk(it, secret, f)),
        Value::Object(map) => {
            for (k, it) in map.iter_mut() {
                walk(it, SECRET_FIELDS.contains(&k.as_str()), f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> SecretKey {
        parse_key(&B64.encode([7u8; 32])).expect("valid key")
    }

    #[test]
    fn secrets_are_sealed_and_opened() {
        let plain = json!({
            "certificates": [{"name": "site", "cert": "-----BEGIN CERTIFICATE-----", "key": "-----BEGIN PRIVATE KEY-----x"}],
            "consumers": [{"name": "a", "credentials": {"api_keys": ["k1-secret-value"], "basic": [{"username": "u", "password": "$2b$hash"}]}}],
            "routes": [{"name": "r", "plugins": [{"oauth2_introspection": {"client_secret": "s3cret"}}, {"rate_limit": {"key": "ip"}}]}],
        });
        let mut doc = plain.clone();
        seal(&mut doc, &key());
        let text = doc.to_string();
        for secret in ["PRIVATE KEY", "k1-secret-value", "$2b$hash", "s3cret"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(
            text.contains("BEGIN CERTIFICATE"),
            "certificates are public"
        );
        assert!(
            text.contains("\"key\":\"ip\""),
            "a rate-limit key is no secret: {text}"
        );
        let mut again = doc.clone();
        seal(&mut again, &key());
        assert_eq!(again, doc, "sealing twice changes nothing");
        open(&mut doc, Some(&key())).expect("opens");
        assert_eq!(doc, plain);
    }

    #[test]
    fn missing_or_wrong_keys_are_reported_with_the_path() {
        let mut doc = json!({"consumers": [{"credentials": {"api_keys": ["abcdefgh"]}}]});
        seal(&mut doc, &key());
        let e = open(&mut doc.clone(), None).expect_err("no key");
        assert!(
            e.to_string()
                .contains("consumers[0].credentials.api_keys[0]"),
            "{e}"
        );
        let other = parse_key(&B64.encode([9u8; 32])).expect("valid key");
        assert!(matches!(
            open(&mut doc, Some(&other)),
            Err(SecretError::WrongKey(_))
        ));
        assert!(parse_key("short").is_err());
    }
}
