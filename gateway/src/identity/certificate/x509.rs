//! The X.509 certificate itself: walked down to the two fields the gateway needs, the subject
//! (formatted in `subject`) and `notAfter` (read here), with everything else still checked to
//! be well-formed DER.

use super::der::{Reader, BIT_STRING, GENERALIZED_TIME, INTEGER, SEQUENCE, UTC_TIME, VERSION};
use super::subject::rfc2253_name;

/// What the gateway needs of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject as Kafka sees it: Java's `X500Principal.getName()` (RFC 2253), e.g.
    /// `CN=alice,OU=eng,O=Acme\, Inc.,C=US`. Input to
    /// [`PrincipalRules::principal`](super::PrincipalRules::principal).
    pub subject: String,
    /// The end of the validity period (`notAfter`), in seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// The serial number's INTEGER contents and the issuer Name's SEQUENCE contents: what a
    /// revocation list names a certificate by.
    pub serial: Vec<u8>,
    pub issuer: Vec<u8>,
}

/// Why a client certificate could not be read. rustls accepted it, so these mean a certificate
/// that a CA signed but that is not DER X.509 as RFC 5280 requires: the certificate's owner (or
/// its CA) must issue a well-formed one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Not well-formed DER.
    #[error(
        "client certificate is not well-formed DER (at byte {offset}: {problem}); \
         it must be one DER-encoded X.509 certificate"
    )]
    Der {
        /// Where in the certificate.
        offset: usize,
        /// What is wrong there.
        problem: &'static str,
    },
    /// Well-formed DER, but not shaped like an X.509 certificate.
    #[error(
        "client certificate is not an X.509 certificate (at byte {offset}: expected {expected})"
    )]
    Structure {
        /// Where in the certificate.
        offset: usize,
        /// What RFC 5280 puts there.
        expected: &'static str,
    },
    /// A field that is in its place but cannot be read.
    #[error("client certificate has an unreadable {field} (at byte {offset}): {problem}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Where in the certificate.
        offset: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Reads a DER X.509 certificate: its subject as Kafka names it and its `notAfter`.
///
/// Strict DER: definite lengths in their shortest form, no bytes after the certificate,
/// `UTCTime`/`GeneralizedTime` exactly as RFC 5280 writes them. Bounded and panic-free on any
/// input: nothing recurses on the input's nesting, every length is checked against its
/// enclosing element.
pub fn parse_certificate(der: &[u8]) -> Result<ClientCertificate, CertificateError> {
    let mut input = Reader::new(der);
    let certificate = input.expect(SEQUENCE, "Certificate (a SEQUENCE)")?;
    input.finish("nothing after the certificate")?;

    let mut certificate = certificate.reader();
    let tbs = certificate.expect(SEQUENCE, "tbsCertificate (a SEQUENCE)")?;
    certificate.expect(SEQUENCE, "signatureAlgorithm (a SEQUENCE)")?;
    certificate.expect(BIT_STRING, "signatureValue (a BIT STRING)")?;
    certificate.finish("the end of Certificate after signatureValue")?;

    let mut tbs = tbs.reader();
    if tbs.peek_tag() == Some(VERSION) {
        let mut version = tbs.read()?.reader();
        version.expect(INTEGER, "version (an INTEGER)")?;
        version.finish("the end of the version field")?;
    }
    let serial = tbs
        .expect(INTEGER, "serialNumber (an INTEGER)")?
        .contents()
        .to_vec();
    tbs.expect(SEQUENCE, "signature (an AlgorithmIdentifier SEQUENCE)")?;
    let issuer = tbs
        .expect(SEQUENCE, "issuer (a Name SEQUENCE)")?
        .contents()
        .to_vec();
    let mut validity = tbs.expect(SEQUENCE, "validity (a SEQUENCE)")?.reader();
    let subject = tbs.expect(SEQUENCE, "subject (a Name SEQUENCE)")?;
    // The rest (key, unique ids, extensions) is not needed, but must still be well-formed.
    while !tbs.is_empty() {
        tbs.read()?;
    }

    read_time(&mut validity, "notBefore")?;
    let not_after_unix = read_time(&mut validity, "notAfter")?;
    validity.finish("the end of validity after notAfter")?;

    Ok(ClientCertificate {
        subject: rfc2253_name(subject)?,
        not_after_unix,
        serial,
        issuer,
    })
}

/// `UTCTime` (`YYMMDDHHMMSSZ`, 1950–2049) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`) as RFC 5280
/// requires them, as Unix seconds.
fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<i64, CertificateError> {
    let offset = r.pos;
    let bad = |problem| CertificateError::Field {
        field,
        offset,
        problem,
    };
    let time = match r.peek_tag() {
        Some(UTC_TIME | GENERALIZED_TIME) => r.read()?,
        _ => {
            return Err(CertificateError::Structure {
                offset,
                expected: "a time (UTCTime or GeneralizedTime)",
            })
        }
    };
    let text = time.contents();
    let (digits, century) = match (time.tag, text.split_last()) {
        (UTC_TIME, Some((b'Z', digits))) if digits.len() == 12 => (digits, None),
        (GENERALIZED_TIME, Some((b'Z', digits))) if digits.len() == 14 => (digits, Some(())),
        _ => {
            return Err(bad(
                "not YYMMDDHHMMSSZ (UTCTime) or YYYYMMDDHHMMSSZ (GeneralizedTime)",
            ))
        }
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("a time with a non-digit"));
    }
    let number = |i: usize| i64::from(digits[i] - b'0') * 10 + i64::from(digits[i + 1] - b'0');
    let (year, rest) = match century {
        None => {
            // RFC 5280: two-digit years 50–99 are 19xx, 00–49 are 20xx.
            let yy = number(0);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        Some(()) => (number(0) * 100 + number(2), 4),
    };
    let (month, day) = (number(rest), number(rest + 2));
    let (hour, minute, second) = (number(rest + 4), number(rest + 6), number(rest + 8));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad("a month outside 1-12")),
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return Err(bad("a day or time of day that does not exist"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        base64, cert, der_problem, name, BMP, DC_UID, EMAIL, ESCAPES, GENERALIZED, MULTI, PLAIN,
        THIRTY_DAYS, UTF8,
    };
    use super::*;

    #[test]
    fn not_after() {
        for b64 in [PLAIN, ESCAPES, MULTI, EMAIL, DC_UID, UTF8, BMP] {
            assert_eq!(cert(b64).not_after_unix, THIRTY_DAYS);
        }
        // 2054-04-22T01:44:59Z, a GeneralizedTime.
        assert_eq!(cert(GENERALIZED).not_after_unix, 2_660_435_099);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1950, 1, 1), -7_305);
    }

    #[test]
    fn bad_fields_are_refused() {
        // notAfter (the second UTCTime) with month 13.
        let der = base64(PLAIN);
        let at = der
            .windows(4)
            .position(|w| w == b"2701")
            .expect("notAfter in PLAIN");
        let mut bad_month = der.clone();
        bad_month[at + 2..at + 4].copy_from_slice(b"13");
        assert!(matches!(
            der_problem(&bad_month),
            CertificateError::Field {
                field: "notAfter",
                ..
            }
        ));
        let mut bad_digit = der.clone();
        bad_digit[at] = b'x';
        der_problem(&bad_digit);
        // An OID arc with a leading 0x80 group.
        assert!(name("300d310b30090604805504030c0161").is_err());
        // An attribute with a third element.
        assert!(name("300f310d300b06035504030c01610500").is_err());
        // An RDN that is not a SET.
        assert!(name("300b3009060355040313027573").is_err());
    }

    /// xorshift64*, for reproducible mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn mutated_certificates_never_panic() {
        let mut rng = Rng(0x7011_6a7e);
        let seeds: Vec<Vec<u8>> = [PLAIN, ESCAPES, MULTI, EMAIL, DC_UID, UTF8, BMP, GENERALIZED]
            .iter()
            .map(|b64| base64(b64))
            .collect();
        let mut parsed = 0;
        for round in 0..40_000 {
            let mut der = seeds[round % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(6) {
                    0 | 1 => {
                        let i = rng.below(der.len());
                        der[i] = rng.next() as u8;
                    }
                    2 => {
                        let i = rng.below(der.len());
                        der[i] ^= 1 << rng.below(8);
                    }
                    3 => der.truncate(rng.below(der.len() + 1)),
                    4 => {
                        let i = rng.below(der.len() + 1);
                        der.insert(i, rng.next() as u8);
                    }
                    _ if !der.is_empty() => {
                        der.remove(rng.below(der.len()));
                    }
                    _ => {}
                }
                if der.is_empty() {
                    der.push(0x30);
                }
            }
            if parse_certificate(&der).is_ok() {
                parsed += 1;
            }
        }
        // Mutations inside values (names, keys, signatures) still parse.
        assert!(parsed > 1_000, "{parsed}");
    }
}
