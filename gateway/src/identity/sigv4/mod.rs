//! Amazon MSK IAM authentication, verified the way an MSK broker does: AWS Signature Version 4
//! over a presigned `GET https://<host>/?Action=kafka-cluster%3AConnect&X-Amz-...` request, so
//! that clients using Amazon's own libraries connect with access keys that Tollgate issued (and
//! whose secrets it knows).
//!
//! Two wire formats carry the same presigned request:
//!
//! - **OAUTHBEARER tokens** ([`parse_signer_token`]) from `aws-msk-iam-sasl-signer-python`,
//!   `-js` and `-go`, and from aws-msk-iam-auth's `IAMOAuthBearerLoginCallbackHandler` (Java):
//!   the presigned URL `https://kafka.<region>.amazonaws.com/?...`, base64url without padding.
//!   The query holds `Action`, `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`,
//!   `X-Amz-Expires`, `X-Amz-SignedHeaders` (`host`), `X-Amz-Security-Token` when the
//!   credentials have one (all signed), `X-Amz-Signature`, and a `User-Agent` that every library
//!   appends *after* signing (so it is never part of the canonical request). The parameters come
//!   in any order (Python keeps botocore's order, JS sorts them, Go re-encodes the whole query
//!   with `url.Values.Encode`, which writes a space as `+`); they are decoded and re-encoded
//!   here, as the broker must.
//! - **The `AWS_MSK_IAM` SASL mechanism** ([`parse_msk_iam_payload`]) of aws-msk-iam-auth (Java)
//!   and `@jm18457/kafkajs-msk-iam-authentication-mechanism`: one JSON object of strings whose
//!   keys are the query parameters in lower case with their values *not* URI-encoded, plus
//!   `version` (`2020_10_22`), `user-agent` (not signed) and `host` (the broker's host name as
//!   the client dialled it: the signed `host` header). The server answers a success with
//!   [`msk_iam_response`].
//!
//! Either way the canonical request is
//! `GET\n/\n<sorted, URI-encoded query without X-Amz-Signature>\nhost:<host>\n\nhost\n<SHA-256 of
//! the empty string>`: all of these libraries hash the empty payload (botocore's
//! `SigV4QueryAuth`, the AWS SDK for Java v2's `Aws4Signer`, smithy's `SignatureV4` and the Go
//! SDK's `PresignHTTP` with `sha256("")`), not S3's `UNSIGNED-PAYLOAD`. The string to sign is
//! `AWS4-HMAC-SHA256\n<X-Amz-Date>\n<yyyymmdd>/<region>/kafka-cluster/aws4_request\n<hex SHA-256
//! of the canonical request>`, signed with the key chain `AWS4`+secret → date → region →
//! service → `aws4_request`.
//!
//! Everything here is pure: no I/O, no clock (the caller passes `now`), bounded input
//! ([`MAX_INPUT_BYTES`]), and no panics on any input.

use std::fmt;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ring::{digest, hmac};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// The SASL mechanism name of aws-msk-iam-auth's own protocol.
pub const MECHANISM_AWS_MSK_IAM: &str = "AWS_MSK_IAM";
/// The only signing algorithm the libraries use (and the only one accepted).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The signing name (credential scope service) of MSK's data plane.
pub const SERVICE: &str = "kafka-cluster";
/// The action every MSK IAM authentication signs.
pub const ACTION_CONNECT: &str = "kafka-cluster:Connect";
/// The `version` of the `AWS_MSK_IAM` payload and of the server's answer.
pub const MSK_IAM_VERSION: &str = "2020_10_22";
/// Tokens and payloads larger than this are refused before any parsing. A presigned URL with a
/// long STS session token is about 3 KiB in base64; 8 KiB leaves room while keeping the cost of
/// hostile input small.
pub const MAX_INPUT_BYTES: usize = 8 * 1024;
/// The longest validity (`X-Amz-Expires`) accepted, in seconds.
///
/// SigV4 presigned URLs may be valid for up to 604,800 s (7 days), but every Amazon MSK client
/// library signs for 900 s (15 minutes): the Python and Go signers always, the JS signer at most
/// (less when the credentials expire sooner), aws-msk-iam-auth for "now + 15 minutes" (899 or
/// 900), and the kafkajs plugin by default. Both token formats are bearer credentials that can
/// be replayed until they expire, and the expiry becomes the session's lifetime, so a longer
/// window would only widen replay and keep sessions beyond re-authentication for no client that
/// needs it. Larger values are refused with [`SigV4Error::ValidityTooLong`], which names this
/// limit.
pub const MAX_EXPIRES_SECONDS: u32 = 900;

/// Hex SHA-256 of the empty payload: what presigned MSK requests sign as their payload hash.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// At most this many query parameters (the libraries send eight or nine).
const MAX_PARAMS: usize = 16;
/// Client-supplied text quoted in an error message is cut to this many characters.
const MAX_SHOWN_CHARS: usize = 64;

/// Why a presented MSK IAM credential was refused. The messages tell the key's owner what to fix
/// and reveal nothing beyond what the client itself sent: scope, action, validity and clock
/// errors are only reported once the signature has been checked, so whoever lacks the secret
/// learns no more than "the signature does not match".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("malformed MSK IAM authentication: {0}")]
    Malformed(String),
    #[error("MSK IAM authentication of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("unsupported signing algorithm {0:?}: only AWS4-HMAC-SHA256 is accepted")]
    UnsupportedAlgorithm(String),
    #[error("the signed action is {0:?}, not kafka-cluster:Connect")]
    WrongAction(String),
    #[error("the credential scope names region {found:?}, but this cluster is in {expected:?}")]
    WrongRegion { found: String, expected: String },
    #[error("the credential scope names service {0:?}, not kafka-cluster")]
    WrongService(String),
    #[error("the signature is valid for {seconds} s (X-Amz-Expires); at most {max} s is accepted")]
    ValidityTooLong { seconds: u32, max: u32 },
    #[error("the signature expired at {expired_at} (signed at {signed_at}); sign a new one")]
    Expired {
        expired_at: String,
        signed_at: String,
    },
    #[error(
        "the signature is dated {signed_at}, more than {max_skew_seconds} s after the server's \
         clock ({now}): check the client's clock"
    )]
    NotYetValid {
        signed_at: String,
        now: String,
        max_skew_seconds: i64,
    },
    #[error("the signature does not match: wrong secret or tampered request")]
    SignatureMismatch,
}

fn malformed(what: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(what.into())
}

/// Which wire format a [`Presigned`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OAUTHBEARER token: the base64url presigned URL of the MSK IAM SASL signer libraries.
    SignerToken,
    /// The JSON payload of the `AWS_MSK_IAM` SASL mechanism.
    MskIamPayload,
}

/// What a client presented, parsed but not yet verified: every accessor reports the client's
/// claim until [`Presigned::verify`] succeeds. The fields are private so that what is checked is
/// always what was signed.
#[derive(Clone, PartialEq, Eq)]
pub struct Presigned {
    format: Format,
    access_key_id: String,
    /// `yyyymmdd` of the credential scope (equal to the first eight characters of `amz_date`).
    scope_date: String,
    region: String,
    service: String,
    action: String,
    host: String,
    /// `X-Amz-Date` as sent (`yyyymmddThhmmssZ`), signed verbatim.
    amz_date: String,
    date: OffsetDateTime,
    expires_seconds: u32,
    session_token: Option<String>,
    user_agent: Option<String>,
    /// Every signed query parameter (all but `X-Amz-Signature` and `User-Agent`), decoded, with
    /// its canonical name.
    signed_params: Vec<(String, String)>,
    signature: [u8; 32],
}

impl fmt::Debug for Presigned {
    /// The session token and the signature are credentials: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presigned")
            .field("format", &self.format)
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("action", &self.action)
            .field("host", &self.host)
            .field("amz_date", &self.amz_date)
            .field("expires_seconds", &self.expires_seconds)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

/// Parses an OAUTHBEARER token made by the MSK IAM SASL signer libraries: base64url (padding
/// optional) of `https://<host>/?<query>`.
pub fn parse_signer_token(token: &str) -> Result<Presigned, SigV4Error> {
    check_size(token.len())?;
    let engine = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(token.trim_end_matches('='))
        .map_err(|_| malformed("the token is not base64url"))?;
    let url = String::from_utf8(bytes).map_err(|_| malformed("the token is not a UTF-8 URL"))?;
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| malformed("the token is not an https:// URL"))?;
    if rest.contains('#') {
        return Err(malformed("the URL has a fragment"));
    }
    let (before_query, query) = rest
        .split_once('?')
        .ok_or_else(|| malformed("the URL has no query string"))?;
    let (host, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    if !path.is_empty() && path != "/" {
        return Err(malformed("the URL's path is not /"));
    }
    if host.contains('@') {
        return Err(malformed("the URL names a user"));
    }
    let mut params = parse_query(query)?;
    let user_agent = params
        .iter()
        .position(|(name, _)| name == "User-Agent")
        .map(|i| params.remove(i).1);
    Presigned::from_params(Format::SignerToken, host, params, user_agent)
}

/// The `AWS_MSK_IAM` client message. Keys not listed are ignored (they cannot be signed: the
/// payload lower-cases the names of query parameters, so their canonical spelling is lost).
#[derive(serde::Deserialize)]
struct MskIamPayload {
    version: Option<String>,
    host: Option<String>,
    #[serde(rename = "user-agent")]
    user_agent: Option<String>,
    action: Option<String>,
    #[serde(rename = "x-amz-algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "x-amz-credential")]
    credential: Option<String>,
    #[serde(rename = "x-amz-date")]
    date: Option<String>,
    #[serde(rename = "x-amz-expires")]
    expires: Option<String>,
    #[serde(rename = "x-amz-security-token")]
    security_token: Option<String>,
    #[serde(rename = "x-amz-signedheaders")]
    signed_headers: Option<String>,
    #[serde(rename = "x-amz-signature")]
    signature: Option<String>,
}

/// Parses the client's message of the `AWS_MSK_IAM` SASL mechanism (the SASL auth bytes: one
/// JSON object, no length prefix).
pub fn parse_msk_iam_payload(payload: &[u8]) -> Result<Presigned, SigV4Error> {
    check_size(payload.len())?;
    let p: MskIamPayload = serde_json::from_slice(payload).map_err(|e| {
        // Position only: serde's own message may quote the client's bytes.
        malformed(format!(
            "the payload is not a JSON object of strings (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match p.version.as_deref() {
        Some(MSK_IAM_VERSION) => {}
        Some(other) => {
            return Err(malformed(format!(
                "unsupported payload version {}; expected {MSK_IAM_VERSION}",
                shown(other)
            )))
        }
        None => return Err(malformed("the payload has no version")),
    }
    let host = p.host.ok_or_else(|| malformed("the payload has no host"))?;
    let mut params = Vec::with_capacity(8);
    for (name, value) in [
        ("Action", p.action),
        ("X-Amz-Algorithm", p.algorithm),
        ("X-Amz-Credential", p.credential),
        ("X-Amz-Date", p.date),
        ("X-Amz-Expires", p.expires),
        ("X-Amz-Security-Token", p.security_token),
        ("X-Amz-SignedHeaders", p.signed_headers),
        ("X-Amz-Signature", p.signature),
    ] {
        if let Some(value) = value {
            params.push((name.to_owned(), value));
        }
    }
    Presigned::from_params(Format::MskIamPayload, &host, params, p.user_agent)
}

/// The JSON body that an `AWS_MSK_IAM` server sends back on success (aws-msk-iam-auth requires
/// `version` to be `2020_10_22` and a `request-id`; the kafkajs plugin requires a `version`).
pub fn msk_iam_response(request_id: &str) -> Vec<u8> {
    let id = serde_json::Value::String(request_id.to_owned());
    format!("{{\"version\":\"{MSK_IAM_VERSION}\",\"request-id\":{id}}}").into_bytes()
}

impl Presigned {
    /// Builds and validates the claim from decoded parameters with their canonical names
    /// (`X-Amz-Signature` included, `User-Agent` already taken out).
    fn from_params(
        format: Format,
        host: &str,
        mut params: Vec<(String, String)>,
        user_agent: Option<String>,
    ) -> Result<Self, SigV4Error> {
        check_host(host)?;
        let signature = match params
            .iter()
            .position(|(name, _)| name == "X-Amz-Signature")
        {
            Some(i) => parse_signature(&params.remove(i).1)?,
            None => return Err(malformed("X-Amz-Signature is missing")),
        };
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let need =
            |name: &'static str| get(name).ok_or_else(|| malformed(format!("{name} is missing")));

        let algorithm = need("X-Amz-Algorithm")?;
        if algorithm != ALGORITHM {
            return Err(SigV4Error::UnsupportedAlgorithm(shown(algorithm)));
        }
        if need("X-Amz-SignedHeaders")? != "host" {
            return Err(malformed("X-Amz-SignedHeaders is not host"));
        }
        let action = need("Action")?.to_owned();
        let amz_date = need("X-Amz-Date")?.to_owned();
        let date = parse_amz_date(&amz_date)?;
        let expires_seconds = parse_expires(need("X-Amz-Expires")?)?;
        let (access_key_id, scope_date, region, service) =
            parse_credential(need("X-Amz-Credential")?)?;
        if !amz_date.starts_with(scope_date.as_str()) {
            return Err(malformed(
                "the credential scope's date is not the day of X-Amz-Date",
            ));
        }
        let session_token = get("X-Amz-Security-Token").map(str::to_owned);
        if session_token.as_deref() == Some("") {
            return Err(malformed("X-Amz-Security-Token is empty"));
        }
        Ok(Self {
            format,
            access_key_id,
            scope_date,
            region,
            service,
            action,
            host: host.to_owned(),
            amz_date,
            date,
            expires_seconds,
            session_token,
            user_agent,
            signed_params: params,
            signature,
        })
    }

    /// Checks, in this order: the signature with `secret_access_key` over what the client
    /// presented (in constant time), then the credential scope (service `kafka-cluster`, region
    /// `expected_region`), the action (`kafka-cluster:Connect`), the validity
    /// (`X-Amz-Expires` ≤ [`MAX_EXPIRES_SECONDS`]), a date at most `max_skew_seconds` after
    /// `now_unix`, and that `now_unix` is before [`Presigned::expires_at_unix`].
    ///
    /// The host is not checked: it is signed, so it cannot have been changed, and what it should
    /// be (`kafka.<region>.amazonaws.com` for tokens, the broker's name as the client dialled it
    /// for `AWS_MSK_IAM`) is the caller's to decide ([`Presigned::host`]).
    pub fn verify(
        &self,
        secret_access_key: &str,
        expected_region: &str,
        now_unix: i64,
        max_skew_seconds: i64,
    ) -> Result<(), SigV4Error> {
        let string_to_sign =
            string_to_sign(&self.amz_date, &self.scope(), &self.canonical_request());
        let key = signing_key(
            secret_access_key,
            &self.scope_date,
            &self.region,
            &self.service,
        );
        hmac::verify(&key, string_to_sign.as_bytes(), &self.signature)
            .map_err(|_| SigV4Error::SignatureMismatch)?;

        if self.service != SERVICE {
            return Err(SigV4Error::WrongService(shown(&self.service)));
        }
        if self.region != expected_region {
            return Err(SigV4Error::WrongRegion {
                found: shown(&self.region),
                expected: shown(expected_region),
            });
        }
        if self.action != ACTION_CONNECT {
            return Err(SigV4Error::WrongAction(shown(&self.action)));
        }
        if self.expires_seconds > MAX_EXPIRES_SECONDS {
            return Err(SigV4Error::ValidityTooLong {
                seconds: self.expires_seconds,
                max: MAX_EXPIRES_SECONDS,
            });
        }
        let signed_at = self.date.unix_timestamp();
        if signed_at > now_unix.saturating_add(max_skew_seconds) {
            return Err(SigV4Error::NotYetValid {
                signed_at: show_unix(signed_at),
                now: show_unix(now_unix),
                max_skew_seconds,
            });
        }
        if now_unix >= self.expires_at_unix() {
            return Err(SigV4Error::Expired {
                expired_at: show_unix(self.expires_at_unix()),
                signed_at: show_unix(signed_at),
            });
        }
        Ok(())
    }

    /// Seconds since the Unix epoch at which the signature stops being valid: `X-Amz-Date` plus
    /// `X-Amz-Expires` (a fractional `X-Amz-Expires`, which the JS signer sends for credentials
    /// that expire sooner than 15 minutes, is rounded down).
    pub fn expires_at_unix(&self) -> i64 {
        self.date.unix_timestamp() + i64::from(self.expires_seconds)
    }

    pub fn format(&self) -> Format {
        self.format
    }
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
    pub fn region(&self) -> &str {
        &self.region
    }
    pub fn service(&self) -> &str {
        &self.service
    }
    pub fn action(&self) -> &str {
        &self.action
    }
    /// The signed `host` header.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// `X-Amz-Date`.
    pub fn date(&self) -> OffsetDateTime {
        self.date
    }
    /// `X-Amz-Expires`, rounded down to whole seconds.
    pub fn expires_seconds(&self) -> u32 {
        self.expires_seconds
    }
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }
    /// The client's unsigned, free-form `User-Agent` (for logs only).
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }

    fn canonical_request(&self) -> String {
        let params: Vec<(&str, &str)> = self
            .signed_params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        canonical_request(
            "GET",
            "/",
            &canonical_query_string(&params),
            &self.host,
            EMPTY_PAYLOAD_SHA256,
        )
    }
}

fn check_size(len: usize) -> Result<(), SigV4Error> {
    if len > MAX_INPUT_BYTES {
        return Err(SigV4Error::TooLarge {
            len,
            max: MAX_INPUT_BYTES,
        });
    }
    if len == 0 {
        return Err(malformed("empty"));
    }
    Ok(())
}

/// Client text for an error message: escaped by `{:?}` where it is shown, and cut short.
fn shown(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn show_unix(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{t} s after the Unix epoch"))
}

/// A host name, optionally with a port: no whitespace or controls (it becomes a line of the
/// canonical request) and no characters outside a URL authority.
fn check_host(host: &str) -> Result<(), SigV4Error> {
    if host.is_empty() || host.len() > 255 {
        return Err(malformed("the host is empty or longer than 255 bytes"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']'))
    {
        return Err(malformed("the host has characters a host name cannot have"));
    }
    Ok(())
}

fn parse_signature(hex: &str) -> Result<[u8; 32], SigV4Error> {
    let bad = || malformed("X-Amz-Signature is not 64 hexadecimal digits");
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or_else(bad)?;
        let lo = hex_value(pair[1]).ok_or_else(bad)?;
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `yyyymmddThhmmssZ`, UTC.
fn parse_amz_date(s: &str) -> Result<OffsetDateTime, SigV4Error> {
    let bad = || malformed("X-Amz-Date is not a UTC time of the form yyyymmddThhmmssZ");
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let digits = |range: std::ops::Range<usize>| -> Result<u32, SigV4Error> {
        let part = &b[range];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let date = Date::from_calendar_date(year as i32, month, day as u8).map_err(|_| bad())?;
    let time = Time::from_hms(hour as u8, minute as u8, second as u8).map_err(|_| bad())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Whole seconds, or decimal seconds as the JS signer writes them (`600.113`), rounded down.
fn parse_expires(s: &str) -> Result<u32, SigV4Error> {
    let bad = || malformed("X-Amz-Expires is not a number of seconds");
    let (whole, fraction) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if whole.is_empty() || whole.len() > 9 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if let Some(f) = fraction {
        if f.is_empty() || f.len() > 20 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    whole.parse().map_err(|_| bad())
}

/// `<access key id>/<yyyymmdd>/<region>/<service>/aws4_request`.
fn parse_credential(s: &str) -> Result<(String, String, String, String), SigV4Error> {
    let bad = |what: &str| malformed(format!("X-Amz-Credential {what}"));
    let parts: Vec<&str> = s.split('/').collect();
    let [key, date, region, service, terminator] = parts.as_slice() else {
        return Err(bad(
            "is not <access key id>/<date>/<region>/<service>/aws4_request",
        ));
    };
    if key.is_empty()
        || key.len() > 128
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad("has no valid access key id"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("has no valid date"));
    }
    let name_ok = |n: &str| {
        !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !name_ok(region) {
        return Err(bad("has no valid region"));
    }
    if !name_ok(service) {
        return Err(bad("has no valid service"));
    }
    if *terminator != "aws4_request" {
        return Err(bad("does not end in aws4_request"));
    }
    Ok((
        (*key).to_owned(),
        (*date).to_owned(),
        (*region).to_owned(),
        (*service).to_owned(),
    ))
}

/// Splits and percent-decodes a query string (`+` is a space, as Go's `url.Values.Encode`
/// writes it; the SigV4 encoders write `%2B` for a plus). Duplicates, empty names and bad
/// escapes are refused.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, SigV4Error> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&') {
        if params.len() == MAX_PARAMS {
            return Err(malformed(format!(
                "more than {MAX_PARAMS} query parameters"
            )));
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let value = percent_decode(value)?;
        if name.is_empty() {
            return Err(malformed("a query parameter has no name"));
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(malformed(format!(
                "query parameter {:?} is repeated",
                shown(&name)
            )));
        }
        params.push((name, value));
    }
    Ok(params)
}

fn percent_decode(s: &str) -> Result<String, SigV4Error> {
    let bad = || malformed("the query has an invalid percent-encoding");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_value).ok_or_else(bad)?;
                let lo = b.get(i + 2).copied().and_then(hex_value).ok_or_else(bad)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| malformed("the query is not UTF-8 once decoded"))
}

/// SigV4's `UriEncode`: every byte but the unreserved `A-Z a-z 0-9 - _ . ~` as `%XX` with
/// upper-case hex (so `/` is `%2F` and a space `%20`). Shared with the audit log's S3 client
/// ([`crate::telemetry::audit`]), which signs what this module verifies.
pub(crate) fn uri_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Encoded `name=value` pairs sorted by encoded name, then encoded value, joined by `&`.
fn canonical_query_string(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| (uri_encode(n), uri_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request of a presigned request whose only signed header is `host`.
fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    host: &str,
    payload_hash: &str,
) -> String {
    signed_request(method, uri, query, &[("host", host)], payload_hash)
}

/// The canonical request of a request signing `headers` (lower-case names, values as sent):
/// `method`, the encoded path, the canonical query, `name:value` lines sorted by name, the
/// names joined by `;`, and the payload's hash.
pub(crate) fn signed_request(
    method: &str,
    uri: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let mut headers = headers.to_vec();
    headers.sort_unstable();
    let lines: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{}\n", value.trim()))
        .collect();
    format!(
        "{method}\n{uri}\n{query}\n{lines}\n{}\n{payload_hash}",
        signed_headers(&headers)
    )
}

/// The `SignedHeaders` list of `headers`: their names, sorted, joined by `;`.
pub(crate) fn signed_headers(headers: &[(&str, &str)]) -> String {
    let mut names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    names.join(";")
}

pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = digest::digest(&digest::SHA256, canonical_request.as_bytes());
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(hash.as_ref()))
}

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut key = Vec::with_capacity(4 + secret.len());
    key.extend_from_slice(b"AWS4");
    key.extend_from_slice(secret.as_bytes());
    let mut tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()),
            part.as_bytes(),
        );
    }
    hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests;
