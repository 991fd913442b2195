//! Token extraction, hashing and verification.
//!
//! The gateway never mints session secrets; it recognises the backend's. Tokens come from
//! requests (read in `proxy::credentials` and `proxy::body`: the bearer header, configured
//! cookies, auth-route bodies) and from backend responses (JSON pointers, `Set-Cookie`, here). They are looked up only by their SHA-256.
//! Claims of a token taken from a *backend response* are trusted (the backend just issued it);
//! claims of a token presented by a *client* are trusted only after signature verification.

use crate::config::{JwtAlgorithm, JwtConfig};
use crate::store::TokenHash;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Short, non-reversible label for logs: the first 6 bytes of the token hash.
pub fn log_id(hash: &TokenHash) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Claims of a JWT *without* verification. Only for tokens taken from backend responses.
pub fn response_claims(token: &str) -> Option<Map<String, Value>> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token).ok()
}

pub fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn claim_exp(claims: &Map<String, Value>) -> Option<i64> {
    claims.get("exp")?.as_i64()
}

/// Looks like a JWT (three non-empty dot-separated parts).
pub fn is_jwt_shaped(token: &str) -> bool {
    let mut parts = token.split('.');
    matches!((parts.next(), parts.next(), parts.next(), parts.next()), (Some(a), Some(b), Some(c), None) if !a.is_empty() && !b.is_empty() && !c.is_empty())
}

/// Verifies client-presented JWTs with the backend's key.
pub struct Verifier {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl Verifier {
    pub fn new(cfg: &JwtConfig, key_material: &[u8]) -> Result<Verifier, String> {
        use jsonwebtoken::{Algorithm, DecodingKey};
        let (alg, key) = match cfg.algorithm {
            JwtAlgorithm::Hs256 => (Algorithm::HS256, DecodingKey::from_secret(key_material)),
            JwtAlgorithm::Hs384 => (Algorithm::HS384, DecodingKey::from_secret(key_material)),
            JwtAlgorithm::Hs512 => (Algorithm::HS512, DecodingKey::from_secret(key_material)),
            JwtAlgorithm::Rs256 => {
                (Algorithm::RS256, DecodingKey::from_rsa_pem(key_material).map_err(|e| format!("RS256 key: {e}"))?)
            }
            JwtAlgorithm::Es256 => {
                (Algorithm::ES256, DecodingKey::from_ec_pem(key_material).map_err(|e| format!("ES256 key: {e}"))?)
            }
        };
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.leeway = cfg.leeway.as_secs();
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        Ok(Verifier { key, validation })
    }

    /// The token's claims if its signature (and `exp`, when present) verify.
    pub fn verify(&self, token: &str) -> Option<Map<String, Value>> {
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation).ok().map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// RS256 and ES256 with keys made by openssl: genuine tokens verify, tokens signed by
    /// another key or with another algorithm do not.
    #[test]
    fn asymmetric_algorithms_verify_with_public_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gen = |name: &str, args: &[&str]| {
            let key = dir.path().join(format!("{name}.pem"));
            let public = dir.path().join(format!("{name}.pub.pem"));
            let ok = std::process::Command::new("openssl")
                .arg("genpkey")
                .args(args)
                .arg("-out")
                .arg(&key)
                .status()
                .expect("openssl");
            assert!(ok.success());
            let ok = std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public)
                .status()
                .expect("openssl");
            assert!(ok.success());
            (std::fs::read(key).expect("key"), std::fs::read(public).expect("pub"))
        };
        let claims = serde_json::json!({"sessionId": "s1", "exp": 4_000_000_000i64});
        let cases = [
            (
                JwtAlgorithm::Rs256,
                jsonwebtoken::Algorithm::RS256,
                vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
            (
                JwtAlgorithm::Es256,
                jsonwebtoken::Algorithm::ES256,
                vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
        ];
        for (i, (alg, jalg, args)) in cases.iter().enumerate() {
            let (private, public) = gen(&format!("k{i}"), args);
            let (other, _) = gen(&format!("o{i}"), args);
            let enc = |pem: &[u8]| match jalg {
                jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(pem).expect("rsa key"),
                _ => jsonwebtoken::EncodingKey::from_ec_pem(pem).expect("ec key"),
            };
            let good = jsonwebtoken::encode(&jsonwebtoken::Header::new(*jalg), &claims, &enc(&private)).expect("sign");
            let forged = jsonwebtoken::encode(&jsonwebtoken::Header::new(*jalg), &claims, &enc(&other)).expect("sign");
            let hs = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(&public),
            )
            .expect("sign");
            let cfg = JwtConfig {
                algorithm: *alg,
                key: crate::config::SecretSource::Env("X".into()),
                leeway: Duration::from_secs(0),
            };
            let v = Verifier::new(&cfg, &public).expect("verifier");
            assert!(v.verify(&good).is_some(), "{alg:?} genuine");
            assert!(v.verify(&forged).is_none(), "{alg:?} other key");
            assert!(v.verify(&hs).is_none(), "{alg:?}: an HS256 token keyed with the public key (algorithm confusion)");
        }
    }

    #[test]
    fn verifier_rejects_forged_and_accepts_genuine() {
        let secret = b"s3cret";
        let claims = serde_json::json!({"userId": "1", "sessionId": "abc", "type": "access", "exp": 4_000_000_000i64});
        let good = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .expect("encode");
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"other"),
        )
        .expect("encode");
        let cfg = JwtConfig {
            algorithm: JwtAlgorithm::Hs256,
            key: crate::config::SecretSource::Env("X".into()),
            leeway: Duration::from_secs(0),
        };
        let v = Verifier::new(&cfg, secret).expect("verifier");
        assert_eq!(v.verify(&good).and_then(|c| claim_str(&c, "sessionId")).as_deref(), Some("abc"));
        assert!(v.verify(&forged).is_none());
        assert!(v.verify("garbage").is_none());
        // Unverified decoding still reads the forged claims: that is why it is only for backend responses.
        assert_eq!(response_claims(&forged).and_then(|c| claim_str(&c, "userId")).as_deref(), Some("1"));
        assert!(is_jwt_shaped(&good) && !is_jwt_shaped("abc") && !is_jwt_shaped("a..c"));
    }
}
