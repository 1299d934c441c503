//! Verification keys for `jwt`: configured ones (HMAC secrets, PEM public
//! keys) and those read from a JWKS document. Every key carries the
//! algorithms it may verify, so a token cannot choose a weaker one
//! (`alg: none`, or an RSA public key used as an HMAC secret).

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// Its `kid`, when it has one.
    pub kid: Option<String>,
    /// The algorithms it may verify.
    pub algorithms: Vec<Algorithm>,
    /// The key itself.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A configured key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDoc {
    /// Matches the token header's `kid` (optional).
    #[serde(default)]
    pub kid: Option<String>,
    /// The one algorithm this key verifies, like `RS256` or `HS256`.
    pub algorithm: String,
    /// HMAC secret (at least 32 bytes; use `${ENV}`).
    #[serde(default)]
    pub secret: Option<String>,
    /// HMAC secret, base64-encoded.
    #[serde(default)]
    pub secret_base64: Option<String>,
    /// PEM public key (RSA, EC or Ed25519), inline.
    #[serde(default)]
    pub public_key: Option<String>,
    /// PEM public key file, relative to the configuration file.
    #[serde(default)]
    pub public_key_file: Option<String>,
}

/// The RSA algorithms (one RSA key may verify any of them).
pub const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Every public-key algorithm: what JWKS keys may verify by default.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Parses an algorithm name; `none` and unknown names are refused.
pub fn algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse::<Algorithm>().map_err(|_| {
        format!(
            "`{name}` is not a supported algorithm; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"
        )
    })
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Builds a configured key; errors name the field.
pub fn from_doc(doc: &KeyDoc, base: &Path) -> Result<Key, (String, String)> {
    let alg = algorithm(&doc.algorithm).map_err(|m| ("algorithm".to_string(), m))?;
    let given = [
        doc.secret.is_some(),
        doc.secret_base64.is_some(),
        doc.public_key.is_some(),
        doc.public_key_file.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err((
            String::new(),
            "give exactly one of `secret`, `secret_base64`, `public_key` or `public_key_file`"
                .into(),
        ));
    }
    let key = if is_hmac(alg) {
        let secret = match (&doc.secret, &doc.secret_base64) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (_, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| ("secret_base64".to_string(), format!("not base64: {e}")))?,
            _ => {
                return Err((
                    "algorithm".into(),
                    format!("{alg:?} needs a `secret`; a public key cannot be an HMAC secret"),
                ))
            }
        };
        if secret.len() < 32 {
            return Err((
                "secret".into(),
                "HMAC secrets must be at least 32 bytes (RFC 7518 §3.2); use a long random value"
                    .into(),
            ));
        }
        DecodingKey::from_secret(&secret)
    } else {
        let pem = match (&doc.public_key, &doc.public_key_file) {
            (Some(p), _) => p.clone().into_bytes(),
            (_, Some(f)) => std::fs::read(base.join(f)).map_err(|e| {
                (
                    "public_key_file".to_string(),
                    format!("cannot read `{f}`: {e}"),
                )
            })?,
            _ => {
                return Err((
                    "algorithm".into(),
                    format!("{alg:?} needs a `public_key` or `public_key_file`, not a secret"),
                ))
            }
        };
        let field = if doc.public_key.is_some() {
            "public_key"
        } else {
            "public_key_file"
        };
        let parsed = match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            _ => DecodingKey::from_rsa_pem(&pem),
        };
        parsed.map_err(|e| {
            (
                field.to_string(),
                format!("not a PEM public key for {alg:?}: {e}"),
            )
        })?
    };
    Ok(Key {
        kid: doc.kid.clone(),
        algorithms: vec![alg],
        key,
    })
}

/// Reads the usable keys of a JWKS document; others are skipped with a
/// warning. Symmetric (`oct`) keys are never taken from a JWKS: a published
/// shared secret is no secret. `allowed` limits what a key without its own
/// `alg` may verify.
pub fn from_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the key set is not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("the key set has no `keys` array")?;
    let mut out = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(target: "portcullis::jwt", index = i, error = %e, "skipping a key the JWKS describes in a way this gateway cannot use");
                continue;
            }
        };
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA.to_vec(),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            _ => continue,
        };
        let own = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let algorithms: Vec<Algorithm> = family
            .into_iter()
            .filter(|a| own.is_none_or(|o| o == *a) && allowed.contains(a))
            .collect();
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            tracing::warn!(target: "portcullis::jwt", index = i, "skipping a JWKS key that does not parse");
            continue;
        };
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    Ok(out)
}
