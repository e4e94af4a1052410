//! IAM-style access tokens: JWTs that name a tenant's cluster, a principal and a policy.
//!
//! The gateway signs the tokens it hands out through the admin API (HS256 with a key kept in
//! the data dir, or an asymmetric PEM key) and verifies every token a Kafka client presents:
//! signature, issuer, expiry (no leeway by default, since the gateway is also the issuer) and a
//! policy that parses and validates. Whether the named cluster still exists is the caller's
//! check, because only the registry knows.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::policy::Policy;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The principal: the service or person the token was made for.
    pub sub: String,
    pub tenant: String,
    pub cluster: Uuid,
    /// Seconds since the Unix epoch.
    pub iat: i64,
    /// Seconds since the Unix epoch.
    pub exp: i64,
    /// A unique id, so two tokens minted in the same second differ.
    pub jti: Uuid,
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token was not issued by {0:?}")]
    WrongIssuer(String),
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token policy is invalid: {0}")]
    Policy(#[from] crate::identity::policy::PolicyError),
    #[error("signing key: {0}")]
    Key(String),
}

/// Signs and verifies tokens. Cheap to share behind an `Arc`.
pub struct Tokens {
    issuer: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    leeway_seconds: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// HMAC-SHA256 with a shared secret: the default, with the secret kept in the data dir.
    pub fn hs256(issuer: impl Into<String>, secret: &[u8]) -> Self {
        Tokens {
            issuer: issuer.into(),
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            leeway_seconds: 0,
        }
    }

    /// An asymmetric key pair in PEM (RS256 or ES256), for deployments where other services
    /// verify tokens with the public key only.
    pub fn from_pem(
        issuer: impl Into<String>,
        algorithm: Algorithm,
        private_pem: &[u8],
        public_pem: &[u8],
    ) -> Result<Self, TokenError> {
        let key_err = |e: jsonwebtoken::errors::Error| TokenError::Key(e.to_string());
        let (encoding, decoding) = match algorithm {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => (
                EncodingKey::from_rsa_pem(private_pem).map_err(key_err)?,
                DecodingKey::from_rsa_pem(public_pem).map_err(key_err)?,
            ),
            Algorithm::ES256 | Algorithm::ES384 => (
                EncodingKey::from_ec_pem(private_pem).map_err(key_err)?,
                DecodingKey::from_ec_pem(public_pem).map_err(key_err)?,
            ),
            other => return Err(TokenError::Key(format!("{other:?} is not supported"))),
        };
        Ok(Tokens {
            issuer: issuer.into(),
            algorithm,
            encoding,
            decoding,
            leeway_seconds: 0,
        })
    }

    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway_seconds = seconds;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Mints a token. The caller has validated the policy and the cluster.
    pub fn issue(
        &self,
        tenant: &str,
        cluster: Uuid,
        principal: &str,
        policy: Policy,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<(String, Claims), TokenError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.to_owned(),
            tenant: tenant.to_owned(),
            cluster,
            iat: now,
            exp: now + ttl_seconds,
            jti: Uuid::new_v4(),
            policy,
        };
        let jwt = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok((jwt, claims))
    }

    /// Verifies a presented token and returns its claims.
    pub fn verify(&self, jwt: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = self.leeway_seconds;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer(self.issuer.clone()),
                ErrorKind::InvalidAlgorithm => {
                    TokenError::Malformed("unexpected signing algorithm".into())
                }
                // Fixed words, never the library's text: its base64 and JSON errors quote
                // bytes of the token (of a PLAIN password with two dots, say), and this
                // message reaches the client, the log and the audit events.
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Malformed(format!("the {claim:?} claim is missing"))
                }
                ErrorKind::ImmatureSignature => TokenError::Malformed("not valid yet".into()),
                ErrorKind::Base64(_) => TokenError::Malformed("a part is not base64url".into()),
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => TokenError::Malformed(
                    "its header or claims are not the JSON a Tollgate token carries".into(),
                ),
                _ => TokenError::Malformed("not a JWT of three base64url parts".into()),
            },
        )?;
        data.claims.policy.validate()?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        serde_json::from_str(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#,
        )
        .unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn round_trip() {
        let t = Tokens::hs256("tollgate", b"0123456789abcdef0123456789abcdef");
        let cluster = Uuid::new_v4();
        let (jwt, claims) = t
            .issue("acme", cluster, "svc", policy(), now(), 60)
            .unwrap();
        let back = t.verify(&jwt).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.cluster, cluster);
    }

    #[test]
    fn expired_forged_and_foreign_tokens_fail() {
        let t = Tokens::hs256("tollgate", b"0123456789abcdef0123456789abcdef");
        let (old, _) = t
            .issue("acme", Uuid::new_v4(), "svc", policy(), now() - 100, 10)
            .unwrap();
        assert!(matches!(t.verify(&old), Err(TokenError::Expired)));

        let forger = Tokens::hs256("tollgate", b"another key, same issuer.........");
        let (forged, _) = forger
            .issue("acme", Uuid::new_v4(), "svc", policy(), now(), 60)
            .unwrap();
        assert!(matches!(t.verify(&forged), Err(TokenError::BadSignature)));

        let other_issuer = Tokens::hs256("elsewhere", b"0123456789abcdef0123456789abcdef");
        let (foreign, _) = other_issuer
            .issue("acme", Uuid::new_v4(), "svc", policy(), now(), 60)
            .unwrap();
        assert!(matches!(
            t.verify(&foreign),
            Err(TokenError::WrongIssuer(_))
        ));

        assert!(matches!(
            t.verify("not.a.jwt"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(t.verify(""), Err(TokenError::Malformed(_))));
        // The library's messages quote the bytes it stumbled on; ours never do.
        for bad in [
            "a.b!c.d",
            "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBhc3N3b3Jk.sig",
            "x.y",
        ] {
            let e = t.verify(bad).unwrap_err().to_string();
            for part in bad.split('.') {
                assert!(part.len() < 6 || !e.contains(part), "{bad}: {e}");
            }
            assert!(
                !e.contains("secret") && !e.contains("Invalid symbol"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_token_with_an_invalid_policy_is_refused() {
        let t = Tokens::hs256("tollgate", b"0123456789abcdef0123456789abcdef");
        let bad: Policy = serde_json::from_str(
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
        )
        .unwrap();
        let (jwt, _) = t
            .issue("acme", Uuid::new_v4(), "svc", bad, now(), 60)
            .unwrap();
        assert!(matches!(t.verify(&jwt), Err(TokenError::Policy(_))));
    }
}
