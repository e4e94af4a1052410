//! SASL authentication: OAUTHBEARER (RFC 7628) and PLAIN (RFC 4616), both carrying the JWT, and
//! SCRAM-SHA-256 / SCRAM-SHA-512 for a cluster's SCRAM users.
//!
//! OAUTHBEARER is the mechanism for token-based auth; PLAIN is for clients that cannot do it,
//! with the token as the password and the user name ignored (the token names the principal).
//! The session lifetime answered in SaslAuthenticate (KIP-368) is the time left on the token,
//! so clients re-authenticate before it runs out and connections do not outlive their token.
//!
//! Amazon MSK IAM: OAUTHBEARER also takes the tokens of Amazon's `aws-msk-iam-sasl-signer`
//! libraries, and `AWS_MSK_IAM` the JSON of aws-msk-iam-auth; both are SigV4-presigned
//! `kafka-cluster:Connect` requests, verified with the cluster's access key they name
//! ([`sigv4`]); the session lasts until the signature expires (15 minutes at most).
//!
//! SCRAM takes two client messages; the first names the user as `<user>@<cluster id>`, since
//! one listener serves every cluster and a user name alone is only unique within its cluster.
//! Its sessions last [`SCRAM_SESSION_MS`].

use std::sync::Arc;

use super::authz::{Action, Identity, Session};
use super::credentials::Used;
use super::scram;
use super::sigv4::{self, Presigned, SigV4Error};
use crate::state::Gateway;
use crate::tenancy::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    OAuthBearer,
    Plain,
    Scram(scram::Mechanism),
    AwsMskIam,
}

pub const MECHANISMS: &[&str] = &[
    "OAUTHBEARER",
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    sigv4::MECHANISM_AWS_MSK_IAM,
];

/// How far in the future a SigV4 signature's date may be, for clients whose clock runs ahead.
/// AWS allows 15 minutes for requests; a presigned request lives 15 minutes at most here, so a
/// third of that.
pub const SIGV4_MAX_SKEW_SECONDS: i64 = 300;

/// How long a SCRAM session lasts before the client must authenticate again (KIP-368), so that
/// a changed password or policy reaches open connections: as long as a token's default life.
pub const SCRAM_SESSION_MS: i64 = 3600 * 1000;

impl Mechanism {
    /// Its SASL name, as clients ask for it (the `mechanism` label of the metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
            Mechanism::AwsMskIam => sigv4::MECHANISM_AWS_MSK_IAM,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "OAUTHBEARER" => Some(Mechanism::OAuthBearer),
            "PLAIN" => Some(Mechanism::Plain),
            sigv4::MECHANISM_AWS_MSK_IAM => Some(Mechanism::AwsMskIam),
            other => scram::Mechanism::parse(other).map(Mechanism::Scram),
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
    #[error("the credential's policy does not allow kafka-cluster:Connect on its cluster")]
    ConnectDenied,
    #[error("re-authentication must use a credential of the same kind, cluster and principal")]
    ReauthMismatch,
    #[error("the cluster does not accept connections from {0} (its allowed_cidrs)")]
    SourceNotAllowed(String),
    #[error("{0}")]
    Scram(#[from] scram::ScramError),
    #[error("{0}")]
    SigV4(#[from] SigV4Error),
    #[error("no cluster has bound the certificate principal {0:?}")]
    CertificateUnbound(String),
    #[error("a SCRAM user name is <user>@<cluster id>, e.g. alice@{example}", example = uuid::Uuid::nil())]
    ScramUsername,
    /// A failure after the credential proved whose it is (revoked, from an address the
    /// cluster does not allow, without Connect): told as the inner error, and counted and
    /// audited for that cluster, so its tenant sees what its own credentials met.
    #[error("{1}")]
    OfCluster(uuid::Uuid, Box<AuthError>),
}

impl AuthError {
    fn of_cluster(self, cluster: uuid::Uuid) -> Self {
        AuthError::OfCluster(cluster, Box::new(self))
    }

    /// The cluster the credential was proven to be of, if it got that far.
    pub fn cluster(&self) -> Option<uuid::Uuid> {
        match self {
            AuthError::OfCluster(id, _) => Some(*id),
            _ => None,
        }
    }

    /// The failure itself, without the cluster it is told for.
    pub fn unwrapped(&self) -> &AuthError {
        match self {
            AuthError::OfCluster(_, inner) => inner.unwrapped(),
            other => other,
        }
    }
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

/// Where a SASL exchange stands between the client's messages.
pub enum Exchange {
    /// The handshake chose a mechanism; its first message is next.
    Start(Mechanism),
    /// A SCRAM server-first message was sent; the client's proof is next.
    ScramProof {
        server: Box<scram::ServerFirst>,
        /// `None` when the user name named no cluster: the proof fails.
        cluster: Option<uuid::Uuid>,
        username: String,
    },
}

impl Exchange {
    /// The mechanism's name, and the cluster the exchange is known to be for (a SCRAM user
    /// name's existing cluster; a token's is known only once it verifies).
    pub fn describe(&self) -> (&'static str, Option<uuid::Uuid>) {
        match self {
            Exchange::Start(m) => (m.name(), None),
            Exchange::ScramProof {
                server, cluster, ..
            } => (server.mechanism().name(), *cluster),
        }
    }
}

/// What a client message leads to.
pub enum Step {
    /// Send this challenge, then wait for the exchange's next message.
    Challenge(Vec<u8>, Exchange),
    /// Authenticated: the session, and the last bytes to send (empty when there are none).
    Done(Box<Session>, Vec<u8>),
}

/// Takes one client message of `exchange`. `previous` is the session being re-authenticated,
/// if any; `source` the client's address, which the cluster's allowlist must admit (unknown
/// only for connections that are not TCP, in tests).
pub fn step(
    gw: &Gateway,
    exchange: Exchange,
    msg: &[u8],
    previous: Option<&Session>,
    source: Option<std::net::IpAddr>,
) -> Result<Step, AuthError> {
    match exchange {
        Exchange::Start(Mechanism::OAuthBearer) => {
            let token = oauthbearer_token(msg)?;
            // A JWT has two dots; a signer token is base64url, which has none.
            if token.contains('.') {
                let session = token_session(gw, token, previous, source)?;
                Ok(Step::Done(Box::new(session), Vec::new()))
            } else {
                let presigned = sigv4::parse_signer_token(token)?;
                let session = access_key_session(gw, &presigned, previous, source)?;
                Ok(Step::Done(Box::new(session), Vec::new()))
            }
        }
        Exchange::Start(Mechanism::AwsMskIam) => {
            let presigned = sigv4::parse_msk_iam_payload(msg)?;
            let session = access_key_session(gw, &presigned, previous, source)?;
            let answer = sigv4::msk_iam_response(&uuid::Uuid::new_v4().to_string());
            Ok(Step::Done(Box::new(session), answer))
        }
        Exchange::Start(Mechanism::Plain) => {
            let session = token_session(gw, plain_token(msg)?, previous, source)?;
            Ok(Step::Done(Box::new(session), Vec::new()))
        }
        Exchange::Start(Mechanism::Scram(mechanism)) => {
            let first = scram::ClientFirst::parse(msg)?;
            let (username, cluster) = first
                .username
                .rsplit_once('@')
                .ok_or(AuthError::ScramUsername)?;
            let cluster = uuid::Uuid::parse_str(cluster).map_err(|_| AuthError::ScramUsername)?;
            // An unknown cluster, an unknown user and a user of the other mechanism all go on
            // with a decoy salt and fail at the proof, like a wrong password.
            let cluster = gw.registry().get(&cluster);
            let user = cluster
                .as_ref()
                .and_then(|c| c.credentials.scram_users.get(username));
            let (server, message) = scram::ServerFirst::new(
                mechanism,
                &first,
                user.map(|u| &u.credential),
                gw.decoy_salts(),
            );
            Ok(Step::Challenge(
                message.into_bytes(),
                Exchange::ScramProof {
                    server: Box::new(server),
                    username: username.to_owned(),
                    cluster: cluster.map(|c| c.id),
                },
            ))
        }
        Exchange::ScramProof {
            server,
            cluster,
            username,
        } => {
            let server_final = server.finish(msg)?;
            // The user as it is now: deleted or made again since the first message, it fails.
            let cluster = cluster
                .and_then(|id| gw.registry().get(&id))
                .ok_or(scram::ScramError::Failed)?;
            let user = cluster
                .credentials
                .scram_users
                .get(&username)
                .ok_or(scram::ScramError::Failed)?;
            let identity = Identity {
                principal: username.clone(),
                policy: user.policy.clone(),
                expires_at_ms: crate::identity::now_ms().saturating_add(SCRAM_SESSION_MS),
                used: Used::Scram {
                    username,
                    id: user.id,
                },
            };
            let session = admit(gw, identity, cluster, previous, source)?;
            Ok(Step::Done(Box::new(session), server_final.into_bytes()))
        }
    }
}

/// The session a bearer credential makes outside Kafka (the tenant's metrics endpoint): a
/// Tollgate JWT or an MSK IAM signer token, checked exactly as OAUTHBEARER checks it.
pub fn bearer_session(
    gw: &Gateway,
    token: &str,
    source: Option<std::net::IpAddr>,
) -> Result<Session, AuthError> {
    // A JWT has two dots; a signer token is base64url, which has none.
    if token.contains('.') {
        token_session(gw, token, None, source)
    } else {
        access_key_session(gw, &sigv4::parse_signer_token(token)?, None, source)
    }
}

fn token_session(
    gw: &Gateway,
    jwt: &str,
    previous: Option<&Session>,
    source: Option<std::net::IpAddr>,
) -> Result<Session, AuthError> {
    let claims = gw
        .tokens()
        .verify(jwt)
        .map_err(|e| AuthError::Token(e.to_string()))?;
    let cluster = gw
        .registry()
        .get(&claims.cluster)
        .filter(|c| c.tenant == claims.tenant)
        .ok_or(AuthError::UnknownCluster)?;
    let identity = Identity::of_token(claims);
    if !cluster.credentials.stands(&identity.used) {
        return Err(AuthError::Token("token has been revoked".into()).of_cluster(cluster.id));
    }
    admit(gw, identity, cluster, previous, source)
}

/// Verifies a SigV4-presigned `kafka-cluster:Connect` with the access key it names. An unknown
/// key is refused as a wrong signature is, after the same work, so that neither the answer nor
/// its timing tells which key ids exist.
fn access_key_session(
    gw: &Gateway,
    presigned: &Presigned,
    previous: Option<&Session>,
    source: Option<std::net::IpAddr>,
) -> Result<Session, AuthError> {
    let now = crate::identity::now_ms() / 1000;
    let region = &gw.config().region;
    let id = presigned.access_key_id();
    let found = gw
        .registry()
        .by_access_key(id)
        .and_then(|c| c.credentials.access_keys.get(id).cloned().map(|k| (c, k)));
    let Some((cluster, key)) = found else {
        let _ = presigned.verify("an access key that does not exist", region, now, 0);
        return Err(SigV4Error::SignatureMismatch.into());
    };
    presigned.verify(&key.secret, region, now, SIGV4_MAX_SKEW_SECONDS)?;
    let identity = Identity {
        principal: key.principal,
        policy: key.policy,
        expires_at_ms: presigned.expires_at_unix().saturating_mul(1000),
        used: Used::AccessKey { id: id.to_owned() },
    };
    admit(gw, identity, cluster, previous, source)
}

/// Makes the session a proven identity grants on `cluster`, if the cluster lets it in.
pub(super) fn admit(
    gw: &Gateway,
    identity: Identity,
    cluster: Arc<Cluster>,
    previous: Option<&Session>,
    source: Option<std::net::IpAddr>,
) -> Result<Session, AuthError> {
    // The earliest point the cluster is known for certain: checked before anything else is
    // granted, and at every re-authentication, so a narrowed list reaches open connections
    // then. A source that cannot be told is refused wherever a list is set (fail closed).
    if let Some(allowed) = &cluster.allowed_cidrs {
        if !source.is_some_and(|ip| super::allowlist::allows(Some(allowed), ip)) {
            return Err(AuthError::SourceNotAllowed(
                source.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string()),
            )
            .of_cluster(cluster.id));
        }
    }
    if let Some(prev) = previous {
        if prev.cluster.id != cluster.id
            || prev.principal != identity.principal
            || !prev.used.same_kind(&identity.used)
        {
            return Err(AuthError::ReauthMismatch.of_cluster(cluster.id));
        }
    }
    let counters = gw.metering().counters(cluster.id, &identity.principal);
    let mut session = Session::new(identity, cluster, Arc::clone(&gw.config().region), counters);
    session.metrics = gw.metrics().cluster(session.cluster.id);
    // Silent: a refused Connect is this authentication's failure, audited as that.
    if !session.allows_cluster(Action::Connect) {
        return Err(AuthError::ConnectDenied.of_cluster(session.cluster.id));
    }
    session.audit = crate::telemetry::audit::ConnectionAudit::new(gw.audit(), source);
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str =
        r#"{"Statement": [{"Effect": "Allow", "Action": "kafka-cluster:*", "Resource": "*"}]}"#;

    /// A SCRAM login of `user` through `step`, as the connection drives it.
    fn scram_login(
        gw: &Gateway,
        user: &str,
        password: &str,
        previous: Option<&Session>,
    ) -> Result<Session, AuthError> {
        let m = scram::Mechanism::Sha512;
        let (client, first) = scram::Client::start(m, user, password);
        let start = Exchange::Start(Mechanism::Scram(m));
        let Step::Challenge(server_first, next) =
            step(gw, start, first.as_bytes(), previous, None)?
        else {
            panic!("SCRAM's first message is answered with a challenge");
        };
        let (proven, last) = client
            .prove(&server_first)
            .expect("a well-formed challenge");
        let Step::Done(session, server_final) = step(gw, next, last.as_bytes(), previous, None)?
        else {
            panic!("SCRAM's second message ends the exchange");
        };
        proven
            .verify(&server_final)
            .expect("the server signs with the user's keys");
        Ok(*session)
    }

    #[test]
    fn scram_sessions_re_authenticate_as_token_sessions_do() {
        let ctx = crate::api::testing::ctx(FULL);
        let gw = &ctx.gw;
        let mut cluster = (*ctx.session.cluster).clone();
        let add = |cluster: &mut Cluster, name: &str| {
            cluster.credentials.scram_users.insert(
                name.into(),
                super::super::credentials::ScramUser {
                    id: uuid::Uuid::new_v4(),
                    credential: scram::Credential::new(
                        scram::Mechanism::Sha512,
                        "pencil-1",
                        scram::MIN_ITERATIONS,
                    ),
                    policy: serde_json::from_str(FULL).unwrap(),
                    created_at: 0,
                },
            );
        };
        add(&mut cluster, "alice");
        add(&mut cluster, "bob");
        gw.registry().upsert(cluster.clone());
        let alice = format!("alice@{}", cluster.id);

        let session = scram_login(gw, &alice, "pencil-1", None).unwrap();
        assert_eq!(session.principal, "alice");
        let lifetime = session.expires_at_ms - crate::identity::now_ms();
        assert!((SCRAM_SESSION_MS - 5_000..=SCRAM_SESSION_MS).contains(&lifetime));
        // Re-authenticating as the same user on the same connection keeps it going...
        let again = scram_login(gw, &alice, "pencil-1", Some(&session)).unwrap();
        assert_eq!(again.used, session.used);
        // ...as another user, or over a session another kind of credential made, does not.
        let bob = format!("bob@{}", cluster.id);
        let refused = scram_login(gw, &bob, "pencil-1", Some(&session)).unwrap_err();
        assert_eq!(refused.unwrapped(), &AuthError::ReauthMismatch);
        // Counted for the cluster whose credential it was.
        assert_eq!(refused.cluster(), Some(cluster.id));
        assert_eq!(
            scram_login(gw, &alice, "pencil-1", Some(&ctx.session))
                .unwrap_err()
                .unwrapped(),
            &AuthError::ReauthMismatch
        );
        // A wrong password at re-authentication fails like any wrong password.
        assert_eq!(
            scram_login(gw, &alice, "pencil-2", Some(&session)).unwrap_err(),
            AuthError::Scram(scram::ScramError::Failed)
        );
    }

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
