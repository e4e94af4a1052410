//! SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka speaks them.
//!
//! Only what the server needs is kept: a random salt, the iteration count, `StoredKey` and
//! `ServerKey`. The password itself is never stored, and neither is `SaltedPassword` or
//! `ClientKey`, so a leaked record cannot be replayed as a proof.
//!
//! Kafka's SCRAM differs from the RFC in two ways that clients depend on: no SASLprep (the
//! password's UTF-8 bytes are used as they are), and no channel binding (a `p=` GS2 header is
//! refused). Kafka also allows extensions after the nonce (`tokenauth=true` for delegation
//! tokens); delegation tokens are not Tollgate credentials, so that one is refused and others
//! are ignored, as Kafka ignores extensions it does not know.
//!
//! An unknown user gets a server-first message like a known one, with a salt derived from the
//! user name under a per-process key, and fails at the proof with the same message a wrong
//! password gets, so that the exchange does not tell which user names exist.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};

/// The fewest iterations a credential may have; RFC 7677 and Kafka both say 4096.
pub const MIN_ITERATIONS: u32 = 4096;
/// The most a credential may have: Kafka's own limit. A login costs the server this many HMACs
/// only when the credential is made; each login costs a few.
pub const MAX_ITERATIONS: u32 = 16384;
const SALT_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// Client nonces and user names beyond this are not a client's but an attacker's.
const MAX_MESSAGE_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn output_len(self) -> usize {
        self.digest().output_len()
    }
}

/// What the server keeps of a SCRAM password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub iterations: u32,
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Salts and stretches `password` with a fresh random salt.
    pub fn new(mechanism: Mechanism, password: &str, iterations: u32) -> Credential {
        let mut salt = vec![0; SALT_BYTES];
        super::fill_random(&mut salt);
        Credential::with_salt(mechanism, password.as_bytes(), salt, iterations)
    }

    fn with_salt(mechanism: Mechanism, password: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let keys = Keys::derive(mechanism, password, &salt, iterations);
        Credential {
            mechanism,
            iterations,
            salt,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }
}

/// RFC 5802's keys of a password: `ClientKey` (which only a client holds), `StoredKey` and
/// `ServerKey`, from one PBKDF2 run.
struct Keys {
    client_key: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Keys {
    fn derive(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let mut salted = vec![0; mechanism.output_len()];
        let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1");
        pbkdf2::derive(mechanism.pbkdf2(), rounds, salt, password, &mut salted);
        let key = hmac::Key::new(mechanism.hmac(), &salted);
        let client_key = hmac::sign(&key, b"Client Key").as_ref().to_vec();
        let stored_key = digest::digest(mechanism.digest(), &client_key)
            .as_ref()
            .to_vec();
        let server_key = hmac::sign(&key, b"Server Key").as_ref().to_vec();
        Keys {
            client_key,
            stored_key,
            server_key,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("delegation tokens are not accepted")]
    DelegationToken,
    /// The one answer to every wrong credential: unknown user, wrong password, other mechanism.
    #[error("authentication failed: unknown user or wrong password")]
    Failed,
    /// A server's `e=` answer, when the gateway is the client.
    #[error("the server refused: {0}")]
    Server(String),
}

/// The client's first message, `gs2-header client-first-message-bare`.
#[derive(Debug)]
pub struct ClientFirst {
    gs2_header: String,
    /// The user name as the client sent it, `=2C` and `=3D` decoded.
    pub username: String,
    nonce: String,
    bare: String,
}

impl ClientFirst {
    pub fn parse(msg: &[u8]) -> Result<ClientFirst, ScramError> {
        if msg.len() > MAX_MESSAGE_BYTES {
            return Err(ScramError::Malformed("client-first message too long"));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (cbind, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad GS2 header")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let mut attrs = bare.split(',');
        let username = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(ScramError::Malformed("no user name (n=)"))?;
        let username = decode_name(username)?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or(ScramError::Malformed("no client nonce (r=)"))?;
        for extension in attrs {
            if extension.starts_with("tokenauth=") {
                return Err(ScramError::DelegationToken);
            }
        }
        // Kafka accepts an authorization id only when it names the user itself.
        if !authzid.is_empty() {
            let id = authzid
                .strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authorization id"))?;
            if decode_name(id)? != username {
                return Err(ScramError::Malformed(
                    "an authorization id other than the user name",
                ));
            }
        }
        Ok(ClientFirst {
            gs2_header: format!("{cbind},{authzid},"),
            username,
            nonce: nonce.to_owned(),
            bare: bare.to_owned(),
        })
    }
}

/// `=2C` is `,` and `=3D` is `=`; any other `=` is malformed (RFC 5802, 5.1).
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

/// The server's side between its first message and the client's final one.
pub struct ServerFirst {
    mechanism: Mechanism,
    /// `None` for an unknown user: the exchange goes on and fails at the proof.
    credential: Option<Credential>,
    gs2_header: String,
    nonce: String,
    auth_message_start: String,
}

impl ServerFirst {
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Answers `first` for `credential`; `None` (an unknown user, or one of the other
    /// mechanism) answers with a salt derived from the user name, so both look the same.
    pub fn new(
        mechanism: Mechanism,
        first: &ClientFirst,
        credential: Option<&Credential>,
        decoy: &DecoySalts,
    ) -> (ServerFirst, String) {
        let credential = credential.filter(|c| c.mechanism == mechanism).cloned();
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (decoy.salt(mechanism, &first.username), MIN_ITERATIONS),
        };
        let mut server_nonce = [0; NONCE_BYTES];
        super::fill_random(&mut server_nonce);
        let nonce = format!(
            "{}{}",
            first.nonce,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(server_nonce)
        );
        let message = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let state = ServerFirst {
            mechanism,
            credential,
            gs2_header: first.gs2_header.clone(),
            nonce,
            auth_message_start: format!("{},{message}", first.bare),
        };
        (state, message)
    }

    /// Checks the client's proof; on success, the server-final message (`v=` signature).
    pub fn finish(self, msg: &[u8]) -> Result<String, ScramError> {
        if msg.len() > MAX_MESSAGE_BYTES {
            return Err(ScramError::Malformed("client-final message too long"));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof (p=)"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding (c=)"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed(
                "channel binding does not repeat the GS2 header",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce (r=)"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!("{},{without_proof}", self.auth_message_start);
        let Some(credential) = self.credential else {
            // The same work as a real check, so the answer comes as late.
            let decoy = Credential::with_salt(self.mechanism, b"", vec![0; SALT_BYTES], 1);
            let _ = verify_proof(&decoy, &auth_message, &proof);
            return Err(ScramError::Failed);
        };
        verify_proof(&credential, &auth_message, &proof)?;
        let server_key = hmac::Key::new(self.mechanism.hmac(), &credential.server_key);
        let signature = hmac::sign(&server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(signature.as_ref())))
    }
}

/// The client's side of an exchange, for the gateway's own login to a pool that asks for SCRAM
/// (`--pool-sasl-mechanism`).
pub struct Client {
    mechanism: Mechanism,
    password: String,
    nonce: String,
    first_bare: String,
}

/// A client that sent its proof, waiting for the server's signature.
pub struct ClientProven {
    server_signature: Vec<u8>,
}

impl Client {
    /// The client and its first message.
    pub fn start(mechanism: Mechanism, username: &str, password: &str) -> (Client, String) {
        let mut nonce = [0; NONCE_BYTES];
        super::fill_random(&mut nonce);
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
        let name = username.replace('=', "=3D").replace(',', "=2C");
        let first_bare = format!("n={name},r={nonce}");
        let message = format!("n,,{first_bare}");
        let client = Client {
            mechanism,
            password: password.to_owned(),
            nonce,
            first_bare,
        };
        (client, message)
    }

    /// The final message answering `server_first`, whose nonce must extend ours and whose
    /// iteration count must be one Kafka allows (a server asking for millions would make us
    /// spend seconds).
    pub fn prove(self, server_first: &[u8]) -> Result<(ClientProven, String), ScramError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("server-first message is not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = B64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let nonce = nonce
            .filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len())
            .ok_or(ScramError::Malformed("server nonce does not extend ours"))?;
        let salt = salt.ok_or(ScramError::Malformed("no salt (s=) from the server"))?;
        let iterations = iterations
            .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramError::Malformed(
                "iteration count missing or out of range",
            ))?;
        let keys = Keys::derive(self.mechanism, self.password.as_bytes(), &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let stored = hmac::Key::new(self.mechanism.hmac(), &keys.stored_key);
        let signature = hmac::sign(&stored, auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::Key::new(self.mechanism.hmac(), &keys.server_key);
        let server_signature = hmac::sign(&server_key, auth_message.as_bytes())
            .as_ref()
            .to_vec();
        Ok((
            ClientProven { server_signature },
            format!("{without_proof},p={}", B64.encode(proof)),
        ))
    }
}

impl ClientProven {
    /// Checks the server's final message: a server that cannot sign knows no password.
    pub fn verify(self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final message is not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::Server(error.chars().take(200).collect()));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("no server signature (v=)"))?;
        if constant_time_eq(&signature, &self.server_signature) {
            Ok(())
        } else {
            Err(ScramError::Malformed("the server's signature is wrong"))
        }
    }
}

/// `ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)`; the proof holds when
/// `H(ClientKey) == StoredKey`.
fn verify_proof(
    credential: &Credential,
    auth_message: &str,
    proof: &[u8],
) -> Result<(), ScramError> {
    let mechanism = credential.mechanism;
    if proof.len() != mechanism.output_len() {
        return Err(ScramError::Failed);
    }
    let stored = hmac::Key::new(mechanism.hmac(), &credential.stored_key);
    let signature = hmac::sign(&stored, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(signature.as_ref())
        .map(|(p, s)| p ^ s)
        .collect();
    let computed = digest::digest(mechanism.digest(), &client_key);
    if constant_time_eq(computed.as_ref(), &credential.stored_key) {
        Ok(())
    } else {
        Err(ScramError::Failed)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Salts for user names that do not exist, stable for the life of the process: a client that
/// asks twice sees the same salt, as it would for a real user.
pub struct DecoySalts {
    key: hmac::Key,
}

impl Default for DecoySalts {
    fn default() -> Self {
        let mut secret = [0; 32];
        super::fill_random(&mut secret);
        DecoySalts {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }
}

impl DecoySalts {
    fn salt(&self, mechanism: Mechanism, username: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(mechanism.name().as_bytes());
        ctx.update(b"\0");
        ctx.update(username.as_bytes());
        ctx.sign().as_ref()[..SALT_BYTES].to_vec()
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of the exchange, written from RFC 5802 independently of the server's.
    fn client_final(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        gs2: &str,
    ) -> (String, Vec<u8>) {
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for attr in server_first.split(',') {
            match attr.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = B64.decode(v).unwrap(),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let c = Credential::with_salt(mechanism, password.as_bytes(), salt, iterations);
        let without_proof = format!("c={},r={nonce}", B64.encode(gs2));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let mut salted = vec![0; mechanism.output_len()];
        pbkdf2::derive(
            mechanism.pbkdf2(),
            std::num::NonZeroU32::new(iterations).unwrap(),
            &c.salt,
            password.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(mechanism.hmac(), &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(mechanism.digest(), client_key.as_ref());
        let signature = hmac::sign(
            &hmac::Key::new(mechanism.hmac(), stored.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&key, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(mechanism.hmac(), server_key.as_ref()),
            auth_message.as_bytes(),
        );
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            server_signature.as_ref().to_vec(),
        )
    }

    fn login(stored: &Credential, mechanism: Mechanism, password: &str) -> Result<(), ScramError> {
        let decoy = DecoySalts::default();
        let bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL";
        let first = ClientFirst::parse(format!("n,,{bare}").as_bytes())?;
        let (state, server_first) = ServerFirst::new(mechanism, &first, Some(stored), &decoy);
        let (final_msg, expected_v) = client_final(mechanism, password, bare, &server_first, "n,,");
        let v = state.finish(final_msg.as_bytes())?;
        assert_eq!(v, format!("v={}", B64.encode(expected_v)));
        Ok(())
    }

    #[test]
    fn rfc_7677_test_vector_keys() {
        // RFC 7677, section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==,
        // 4096 iterations; its messages are checked below against the server's proof check.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let c = Credential::with_salt(Mechanism::Sha256, b"pencil", salt, 4096);
        let first =
            ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("client-first parses");
        let state = ServerFirst {
            mechanism: Mechanism::Sha256,
            credential: Some(c),
            gs2_header: first.gs2_header.clone(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            auth_message_start: format!(
                "{},r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                first.bare
            ),
        };
        let final_msg = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            state.finish(final_msg.as_bytes()),
            Ok("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_owned())
        );
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_others() {
        for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
            let stored = Credential::new(mechanism, "pencil", MIN_ITERATIONS);
            assert_eq!(login(&stored, mechanism, "pencil"), Ok(()));
            assert_eq!(login(&stored, mechanism, "Pencil"), Err(ScramError::Failed));
            assert_eq!(login(&stored, mechanism, ""), Err(ScramError::Failed));
        }
        // A SHA-256 credential does not log in over SCRAM-SHA-512.
        let stored = Credential::new(Mechanism::Sha256, "pencil", MIN_ITERATIONS);
        assert_eq!(
            login(&stored, Mechanism::Sha512, "pencil"),
            Err(ScramError::Failed)
        );
    }

    #[test]
    fn an_unknown_user_sees_a_stable_salt_and_fails_like_a_wrong_password() {
        let decoy = DecoySalts::default();
        let first = ClientFirst::parse(b"n,,n=ghost,r=abc").unwrap();
        let (_, a) = ServerFirst::new(Mechanism::Sha512, &first, None, &decoy);
        let (state, b) = ServerFirst::new(Mechanism::Sha512, &first, None, &decoy);
        let salt = |m: &str| m.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&a), salt(&b));
        assert!(b.ends_with(&format!(",i={MIN_ITERATIONS}")));
        let (final_msg, _) = client_final(Mechanism::Sha512, "x", "n=ghost,r=abc", &b, "n,,");
        assert_eq!(state.finish(final_msg.as_bytes()), Err(ScramError::Failed));
    }

    #[test]
    fn the_client_logs_in_to_the_server_and_checks_its_signature() {
        for mechanism in [Mechanism::Sha256, Mechanism::Sha512] {
            let stored = Credential::new(mechanism, "pencil", MIN_ITERATIONS);
            let decoy = DecoySalts::default();
            let (client, first) = Client::start(mechanism, "us,er=1", "pencil");
            let parsed = ClientFirst::parse(first.as_bytes()).unwrap();
            assert_eq!(parsed.username, "us,er=1");
            let (server, server_first) =
                ServerFirst::new(mechanism, &parsed, Some(&stored), &decoy);
            let (proven, last) = client.prove(server_first.as_bytes()).unwrap();
            let server_final = server.finish(last.as_bytes()).unwrap();
            assert_eq!(proven.verify(server_final.as_bytes()), Ok(()));

            // A server that does not know the password cannot sign for it.
            let (client, first) = Client::start(mechanism, "user", "pencil");
            let parsed = ClientFirst::parse(first.as_bytes()).unwrap();
            let impostor = Credential::new(mechanism, "other", MIN_ITERATIONS);
            let (server, server_first) =
                ServerFirst::new(mechanism, &parsed, Some(&impostor), &decoy);
            let (proven, last) = client.prove(server_first.as_bytes()).unwrap();
            assert_eq!(server.finish(last.as_bytes()), Err(ScramError::Failed));
            let forged = format!("v={}", B64.encode([0u8; 32]));
            assert!(proven.verify(forged.as_bytes()).is_err());
        }
        // Server-first messages the client must refuse.
        for bad in ["r=other,s=AAAA,i=4096", "s=AAAA,i=4096", "i=4096", ""] {
            let (client, _) = Client::start(Mechanism::Sha256, "u", "p");
            assert!(client.prove(bad.as_bytes()).is_err(), "{bad}");
        }
        let (client, first) = Client::start(Mechanism::Sha256, "u", "p");
        let nonce = first.rsplit_once("r=").unwrap().1;
        let greedy = format!("r={nonce}x,s=AAAA,i=100000000");
        assert!(client.prove(greedy.as_bytes()).is_err());
        let (client, first) = Client::start(Mechanism::Sha256, "u", "p");
        let nonce = first.rsplit_once("r=").unwrap().1;
        let (proven, _) = client
            .prove(format!("r={nonce}x,s=AAAA,i=4096").as_bytes())
            .unwrap();
        assert_eq!(
            proven.verify(b"e=invalid-proof"),
            Err(ScramError::Server("invalid-proof".into()))
        );
    }

    #[test]
    fn salts_differ_and_the_password_is_not_kept() {
        let a = Credential::new(Mechanism::Sha512, "pencil", MIN_ITERATIONS);
        let b = Credential::new(Mechanism::Sha512, "pencil", MIN_ITERATIONS);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("pencil"));
        let back: Credential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert!(!format!("{a:?}").contains(&B64.encode(&a.stored_key)));
    }

    #[test]
    fn client_first_messages() {
        let f = ClientFirst::parse(b"n,,n=a=2Cb=3Dc,r=xyz").unwrap();
        assert_eq!(f.username, "a,b=c");
        assert_eq!(f.gs2_header, "n,,");
        let f = ClientFirst::parse(b"y,a=bob,n=bob,r=x,ext=1").unwrap();
        assert_eq!(f.username, "bob");
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=a,r=x").unwrap_err(),
            ScramError::ChannelBinding
        );
        assert_eq!(
            ClientFirst::parse(b"n,,n=a,r=x,tokenauth=true").unwrap_err(),
            ScramError::DelegationToken
        );
        for bad in [
            &b"n,,n=,r=x"[..],
            b"n,,n=a=2,r=x",
            b"n,,n=a",
            b"n,,r=x,n=a",
            b"n,a=eve,n=bob,r=x",
            b"x,,n=a,r=x",
            b"n,,n=a,r=",
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                matches!(ClientFirst::parse(bad), Err(ScramError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(ClientFirst::parse(&vec![b'n'; MAX_MESSAGE_BYTES + 1]).is_err());
    }

    #[test]
    fn a_final_message_must_carry_the_nonce_and_binding_it_was_given() {
        let decoy = DecoySalts::default();
        let stored = Credential::new(Mechanism::Sha256, "pw", MIN_ITERATIONS);
        let bare = "n=user,r=abc";
        let first = ClientFirst::parse(format!("n,,{bare}").as_bytes()).unwrap();
        let fresh = || ServerFirst::new(Mechanism::Sha256, &first, Some(&stored), &decoy);
        let (state, server_first) = fresh();
        let (good, _) = client_final(Mechanism::Sha256, "pw", bare, &server_first, "n,,");
        let wrong_nonce = good.replace(",r=abc", ",r=abd");
        assert!(matches!(
            state.finish(wrong_nonce.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let (state, server_first) = fresh();
        let (good, _) = client_final(Mechanism::Sha256, "pw", bare, &server_first, "y,,");
        assert!(matches!(
            state.finish(good.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let (state, _) = fresh();
        assert!(matches!(
            state.finish(b"c=biws,r=abc"),
            Err(ScramError::Malformed(_))
        ));
        let (state, server_first) = fresh();
        let (good, _) = client_final(Mechanism::Sha256, "pw", bare, &server_first, "n,,");
        let short_proof = format!("{},p=AAAA", good.rsplit_once(",p=").unwrap().0);
        assert_eq!(
            state.finish(short_proof.as_bytes()),
            Err(ScramError::Failed)
        );
    }
}
