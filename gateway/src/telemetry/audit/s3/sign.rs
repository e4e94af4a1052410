//! SigV4 for the object store's PUT: the same canonical request, string to sign and key chain
//! [`crate::identity::sigv4`] verifies MSK IAM logins with, here on the signing side, with the
//! payload hashed (`x-amz-content-sha256`) as S3 requires.

use ring::{digest, hmac};

use crate::identity::sigv4;

/// S3's signing name (the credential scope's service).
const SERVICE: &str = "s3";

/// The credentials requests are signed with, from the gateway's environment.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// The secret and the session token are credentials: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary credentials,
    /// `AWS_SESSION_TOKEN`, as every AWS SDK reads them.
    pub fn from_env() -> Option<Credentials> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Some(Credentials {
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }
}

/// The request path of `/bucket/key`, each segment URI-encoded once (S3 does not encode twice);
/// the same text is sent and signed.
pub fn object_path(bucket: &str, key: &str) -> String {
    let mut path = format!("/{}", sigv4::uri_encode(bucket));
    for segment in key.split('/') {
        path.push('/');
        path.push_str(&sigv4::uri_encode(segment));
    }
    path
}

/// The headers of a PUT of `payload` to `path` on `host`, signed at `amz_date`
/// (`yyyymmddThhmmssZ`) for `region`: the signed ones and `authorization`.
pub fn sign_put(
    credentials: &Credentials,
    region: &str,
    host: &str,
    path: &str,
    content_type: &str,
    payload: &[u8],
    amz_date: &str,
) -> Vec<(&'static str, String)> {
    let payload_hash = sigv4::hex(digest::digest(&digest::SHA256, payload).as_ref());
    let mut headers: Vec<(&'static str, String)> = vec![
        ("content-type", content_type.to_owned()),
        ("host", host.to_owned()),
        ("x-amz-content-sha256", payload_hash.clone()),
        ("x-amz-date", amz_date.to_owned()),
    ];
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token", token.clone()));
    }
    let signed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let canonical = sigv4::signed_request("PUT", path, "", &signed, &payload_hash);
    let date = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let string_to_sign = sigv4::string_to_sign(amz_date, &scope, &canonical);
    let key = sigv4::signing_key(&credentials.secret_access_key, date, region, SERVICE);
    let signature = sigv4::hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    let authorization = format!(
        "{} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        sigv4::ALGORITHM,
        credentials.access_key_id,
        sigv4::signed_headers(&signed),
    );
    headers.push(("authorization", authorization));
    headers
}

/// `yyyymmddThhmmssZ` of a time in milliseconds since the Unix epoch.
pub fn amz_date(time_ms: i64) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::from_unix_timestamp(time_ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "19700101T000000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors made by botocore 1.43's `S3SigV4Auth` (the signer of the AWS CLI and boto3) for
    /// the same request, its key in the URL as botocore's S3 serializer puts it
    /// (`quote(key, safe="/~")`), with and without a session token.
    #[test]
    fn signatures_are_botocores() {
        let path = object_path(
            "audit-bucket",
            "events/year=2024/month=05/day=01/hour=12/20240501T120000Z-gw-1-000001.json.gz",
        );
        assert_eq!(
            path,
            "/audit-bucket/events/year%3D2024/month%3D05/day%3D01/hour%3D12/\
             20240501T120000Z-gw-1-000001.json.gz"
        );
        let mut credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let sign = |c: &Credentials| {
            sign_put(
                c,
                "eu-west-1",
                "127.0.0.1:9000",
                &path,
                "application/gzip",
                b"hello audit\n",
                "20240501T120000Z",
            )
        };
        let header = |headers: &[(&str, String)], name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let headers = sign(&credentials);
        assert_eq!(
            header(&headers, "x-amz-content-sha256"),
            "bec643d1108ea13610b570e988b95dfb0fcbca41effc8e32d543505b330c8c87"
        );
        assert_eq!(
            header(&headers, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/eu-west-1/s3/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, \
             Signature=fd5d65f3f6c906425458e48946a944fb30bd1a61b4ec5c4fe3ace3ea2af39bcc"
        );
        credentials.session_token = Some("FQoGZXIvYXdzEXAMPLESESSIONTOKEN".into());
        let headers = sign(&credentials);
        assert_eq!(
            header(&headers, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/eu-west-1/s3/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
             Signature=5179020c8f974ff90afbaef1e38368aebe1c0b5b99645f8b0700b93b9d435f6f"
        );
        assert_eq!(
            header(&headers, "x-amz-security-token"),
            "FQoGZXIvYXdzEXAMPLESESSIONTOKEN"
        );
    }

    #[test]
    fn credentials_are_not_printed() {
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("session-secret".into()),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn amz_dates() {
        assert_eq!(amz_date(1_714_564_800_999), "20240501T120000Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
    }
}
