//! What the modules' tests share: the test certificates and the helpers that read them, and
//! helpers that parse rules.

use super::der::{Reader, SEQUENCE};
use super::subject::rfc2253_name;
use super::{parse_certificate, CertificateError, ClientCertificate, PrincipalRules, RuleError};

// -----------------------------------------------------------------------------------------
// Test certificates
//
// Made with OpenSSL 3.0 (`openssl req -new` with the subject, then `openssl x509 -req`,
// signed by a throwaway Ed25519 CA `CN=ca`, so they stay short):
//   string_mask = utf8only unless noted; `-multivalue-rdn` for MULTI; `-utf8` for UTF8;
//   BMP with string_mask = default, which picks a BMPString for O=Ωmega and a T61String
//   for CN=Zoë; GENERALIZED with `-days 10000` and a basicConstraints extension (v3).
// The expected subjects and notAfter values are what OpenJDK 17 prints for them
// (`CertificateFactory` then `getSubjectX500Principal().getName()` and `getNotAfter()`),
// run on these exact bytes.
// -----------------------------------------------------------------------------------------

/// /C=US/ST=CA/O=Acme, Inc./OU=eng/CN=alice
pub(super) const PLAIN: &str = "MIIBATCBtAIBBzAFBgMrZXAwDTELMAkGA1UEAwwCY2EwHhcNMjYxMjA1MDE0NDU5WhcNMjcwMTA0MDE0NDU5WjBNMQswCQYDVQQGEwJVUzELMAkGA1UECAwCQ0ExEzARBgNVBAoMCkFjbWUsIEluYy4xDDAKBgNVBAsMA2VuZzEOMAwGA1UEAwwFYWxpY2UwKjAFBgMrZXADIQAUKgr3TWSGq3nstgQxKyAz6u+u6dM+sosySDX/Stfb/jAFBgMrZXADQQAwIWm1NoDu9S/jImn9jYg5J5ssDX3GgR97peUElGncZZssk2mypI6NKfOyK5itXcVnfmLyZn08m52CQHBp5w8O";
/// /O=#hash/OU= lead and trail /CN=a+b,c"d\e<f>g;h=i
pub(super) const ESCAPES: &str = "MIH7MIGuAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMEcxDjAMBgNVBAoMBSNoYXNoMRkwFwYDVQQLDBAgbGVhZCBhbmQgdHJhaWwgMRowGAYDVQQDDBFhK2IsYyJkXGU8Zj5nO2g9aTAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBAHDqvMJHwpFBfiikNas4kdYuZF0kaCMwrcKz/rVMLHf7/kMvGy8CfbAOcvoAH1PnCv84js50bmmYVM1KFHax3wc=";
/// /O=Acme/CN=bob+UID=b123+OU=ops (DER sorts the SET: CN, OU, UID)
pub(super) const MULTI: &str = "MIHxMIGkAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMD0xDTALBgNVBAoMBEFjbWUxLDAKBgNVBAMMA2JvYjAKBgNVBAsMA29wczASBgoJkiaJk/IsZAEBDARiMTIzMCowBQYDK2VwAyEAFCoK901khqt57LYEMSsgM+rvrunTPrKLMkg1/0rX2/4wBQYDK2VwA0EA+F9IeHVNj8yoGR6FxDI8grNTeOxKwm8jBh2kGKa021dkQcyndFr0dqllKBAJ+isaGGhltLaKOGsk+qW7aLhsCA==";
/// /CN=carol/emailAddress=carol@example.com
pub(super) const EMAIL: &str = "MIHmMIGZAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMDIxDjAMBgNVBAMMBWNhcm9sMSAwHgYJKoZIhvcNAQkBFhFjYXJvbEBleGFtcGxlLmNvbTAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBANzv35RNwvO2PR4tVsGj2IX7KpW0l2iXbukHt8cStNZtUttx2jRupuPB/JKTabWUjQffvSwM9P4RNsRilvE6PQU=";
/// /DC=com/DC=example/UID=dave/CN=dave
pub(super) const DC_UID: &str = "MIIBBzCBugIBBzAFBgMrZXAwDTELMAkGA1UEAwwCY2EwHhcNMjYxMjA1MDE0NDU5WhcNMjcwMTA0MDE0NDU5WjBTMRMwEQYKCZImiZPyLGQBGRYDY29tMRcwFQYKCZImiZPyLGQBGRYHZXhhbXBsZTEUMBIGCgmSJomT8ixkAQEMBGRhdmUxDTALBgNVBAMMBGRhdmUwKjAFBgMrZXADIQAUKgr3TWSGq3nstgQxKyAz6u+u6dM+sosySDX/Stfb/jAFBgMrZXADQQBXedA9Z1T0oc1lwrJKbUGqXxNz1DsOB9tgXeRODAHG09ck5MOfbqNFF6sBOJ5gDQbWmAYq7VbM3uvFfDvn79YL";
/// /O=Ünïcødé/CN=Jürgen 日本 (UTF8String)
pub(super) const UTF8: &str = "MIHjMIGWAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMC8xFDASBgNVBAoMC8OcbsOvY8O4ZMOpMRcwFQYDVQQDDA5Kw7xyZ2VuIOaXpeacrDAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBADYatW+54511YCe4SfZ8sD0eivvTk2d5504A91tfMAJkaK7biVeyRrUGYv2g073bn1qbSeo0ek6wIOZY+Xtorgw=";
/// /O=Ωmega (BMPString)/CN=Zoë (T61String)
pub(super) const BMP: &str = "MIHXMIGKAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMCMxEzARBgNVBAoeCgOpAG0AZQBnAGExDDAKBgNVBAMUA1pv6zAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBANkXbl7V2VpPn3RkvqNfvKisjKOmNxbTImlHyYXF6Y2h3Q6L04ZId6brpsGOOj5LcN945rXo50O9/XarRPipCQM=";
/// /CN=longlived, v3, notAfter 2054-04-22 as GeneralizedTime
pub(super) const GENERALIZED: &str = "MIIBMTCB5KADAgECAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAgFw0yNjEyMDUwMTQ0NTlaGA8yMDU0MDQyMjAxNDQ1OVowFDESMBAGA1UEAwwJbG9uZ2xpdmVkMCowBQYDK2VwAyEAFCoK901khqt57LYEMSsgM+rvrunTPrKLMkg1/0rX2/6jYDBeMAkGA1UdEwQCMAAwHQYDVR0OBBYEFMu3M3IJLEZzaDkrrdQ+o6oLZo2ZMDIGA1UdIwQrMCmhEaQPMA0xCzAJBgNVBAMMAmNhghQWZUAa1UtMLFE7Ygp/g2dL/dITVTAFBgMrZXADQQC3rCk0nqncyJfQEwo9CZ6OTGqLyTdEbekWYwmo/svpwXI/q3NbPF2mJiApFe0960XGKa+3yI5R197HYfJpSpIB";
/// 2027-01-04T01:44:59Z, the notAfter of all but GENERALIZED.
pub(super) const THIRTY_DAYS: i64 = 1_799_027_099;

pub(super) fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    let mut bits = 0u32;
    let mut count = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | u32::from(value(c));
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

pub(super) fn cert(b64: &str) -> ClientCertificate {
    parse_certificate(&base64(b64)).unwrap()
}

/// A Name on its own, formatted.
pub(super) fn name(der_hex: &str) -> Result<String, CertificateError> {
    let der = hex(der_hex);
    let mut r = Reader::new(&der);
    let name = r.expect(SEQUENCE, "Name")?;
    r.finish("end")?;
    rfc2253_name(name)
}

pub(super) fn der_problem(der: &[u8]) -> CertificateError {
    parse_certificate(der).expect_err("malformed DER was accepted")
}

pub(super) fn rules(text: &str) -> PrincipalRules {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} was refused: {e}"))
}

pub(super) fn refused(text: &str) -> RuleError {
    match text.parse::<PrincipalRules>() {
        Ok(rules) => panic!("{text:?} was accepted as {rules}"),
        Err(e) => e,
    }
}
