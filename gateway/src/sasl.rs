//! SASL authentication: OAUTHBEARER (RFC 7628) and PLAIN (RFC 4616), both carrying the JWT.
//!
//! OAUTHBEARER is the mechanism for token-based auth; PLAIN is for clients that cannot do it,
//! with the token as the password and the user name ignored (the token names the principal).
//! The session lifetime answered in SaslAuthenticate (KIP-368) is the time left on the token,
//! so clients re-authenticate before it runs out and connections do not outlive their token.

use std::sync::Arc;

use crate::authz::{Action, Session};
use crate::state::Gateway;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    OAuthBearer,
    Plain,
}

pub const MECHANISMS: &[&str] = &["OAUTHBEARER", "PLAIN"];

impl Mechanism {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "OAUTHBEARER" => Some(Mechanism::OAuthBearer),
            "PLAIN" => Some(Mechanism::Plain),
            _ => None,
        }
    }
}

/// Why authentication failed. The message goes back to the client, so it must help the owner
/// of the token and tell nothing about anyone else.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed {0} message: {1}")]
    Malformed(&'static str, &'static str),
    #[error("{0}")]
    Token(String),
    #[error("the token's cluster does not exist")]
    UnknownCluster,
    #[error("the token's policy does not allow kafka-cluster:Connect on its cluster")]
    ConnectDenied,
    #[error("re-authentication must use a token for the same cluster and principal")]
    ReauthMismatch,
    #[error("the cluster does not accept connections from {0} (its allowed_cidrs)")]
    SourceNotAllowed(String),
}

/// Extracts the bearer token from an OAUTHBEARER client first message:
/// `gs2-header \x01 *(key=value \x01) \x01`, where the gs2 header is `n,` or `y,` (no channel
/// binding) followed by an optional `a=authzid` and a `,`.
pub fn oauthbearer_token(msg: &[u8]) -> Result<&str, AuthError> {
    const M: &str = "OAUTHBEARER";
    let msg = std::str::from_utf8(msg).map_err(|_| AuthError::Malformed(M, "not UTF-8"))?;
    let mut parts = msg.split('\x01');
    let gs2 = parts.next().unwrap_or_default();
    if !(gs2.starts_with("n,") || gs2.starts_with("y,")) || !gs2.ends_with(',') {
        return Err(AuthError::Malformed(M, "bad GS2 header"));
    }
    for kv in parts {
        if let Some(value) = kv.strip_prefix("auth=") {
            let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed(
                M,
                "auth value is not 'Bearer <token>'",
            ))?;
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                return Err(AuthError::Malformed(
                    M,
                    "auth value is not 'Bearer <token>'",
                ));
            }
            return Ok(token.trim());
        }
    }
    Err(AuthError::Malformed(M, "no auth key"))
}

/// Extracts the password (the token) from a PLAIN message: `authzid \0 authcid \0 passwd`.
pub fn plain_token(msg: &[u8]) -> Result<&str, AuthError> {
    const M: &str = "PLAIN";
    let msg = std::str::from_utf8(msg).map_err(|_| AuthError::Malformed(M, "not UTF-8"))?;
    let mut parts = msg.split('\0');
    let (Some(_authzid), Some(_user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            M,
            "expected authzid NUL user NUL password",
        ));
    };
    if password.is_empty() {
        return Err(AuthError::Malformed(M, "empty password"));
    }
    Ok(password)
}

/// Verifies the token in an authenticate message and makes the session it grants.
/// `previous` is the session being re-authenticated, if any; `source` the client's address,
/// which the cluster's allowlist must admit (unknown only for connections that are not TCP,
/// in tests).
pub fn authenticate(
    gw: &Gateway,
    mechanism: Mechanism,
    msg: &[u8],
    previous: Option<&Session>,
    source: Option<std::net::IpAddr>,
) -> Result<Session, AuthError> {
    let jwt = match mechanism {
        Mechanism::OAuthBearer => oauthbearer_token(msg)?,
        Mechanism::Plain => plain_token(msg)?,
    };
    let claims = gw
        .tokens()
        .verify(jwt)
        .map_err(|e| AuthError::Token(e.to_string()))?;
    let cluster = gw
        .registry()
        .get(&claims.cluster)
        .filter(|c| c.tenant == claims.tenant)
        .ok_or(AuthError::UnknownCluster)?;
    // The earliest point the cluster is known: checked before anything else is granted, and
    // at every re-authentication, so a narrowed list reaches open connections then.
    // A source that cannot be told is refused wherever a list is set (fail closed).
    if let Some(allowed) = &cluster.allowed_cidrs {
        if !source.is_some_and(|ip| crate::allowlist::allows(Some(allowed), ip)) {
            return Err(AuthError::SourceNotAllowed(source.map_or_else(
                || "an unknown address".to_owned(),
                |ip| ip.to_string(),
            )));
        }
    }
    if let Some(prev) = previous {
        if prev.cluster.id != cluster.id || prev.principal != claims.sub {
            return Err(AuthError::ReauthMismatch);
        }
    }
    let counters = gw.metering().counters(cluster.id, &claims.sub);
    let session = Session::new(claims, cluster, Arc::clone(&gw.config().region), counters);
    if !session.may_cluster(Action::Connect) {
        return Err(AuthError::ConnectDenied);
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauthbearer_messages() {
        assert_eq!(
            oauthbearer_token(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01"),
            Ok("abc.def.ghi")
        );
        assert_eq!(
            oauthbearer_token(b"n,a=user,\x01host=x\x01auth=bearer tok\x01\x01"),
            Ok("tok")
        );
        assert!(oauthbearer_token(b"p=tls-unique,,\x01auth=Bearer t\x01\x01").is_err());
        assert!(oauthbearer_token(b"n,,\x01auth=Basic t\x01\x01").is_err());
        assert!(oauthbearer_token(b"n,,\x01\x01").is_err());
        assert!(oauthbearer_token(b"\xff\xfe").is_err());
        assert!(oauthbearer_token(b"").is_err());
        assert!(oauthbearer_token(b"n,,\x01auth=Bearer \x01\x01").is_err());
    }

    #[test]
    fn plain_messages() {
        assert_eq!(plain_token(b"\0user\0secret"), Ok("secret"));
        assert_eq!(plain_token(b"az\0user\0secret"), Ok("secret"));
        assert!(plain_token(b"user\0secret").is_err());
        assert!(plain_token(b"\0user\0").is_err());
        assert!(plain_token(b"\0a\0b\0c").is_err());
    }
}
