//! Mutual TLS: the Kafka principal of a client certificate.
//!
//! rustls has already verified the client's chain against the cluster's CA, so nothing here is
//! about trust. What remains is naming the client the way Apache Kafka names it with
//! `security.protocol=SSL`, because ACLs and quotas written for Kafka must keep meaning the same
//! clients:
//!
//! 1. [`parse_certificate`] reads the certificate (a small, strict DER reader; no X.509 crate)
//!    and formats its subject as Java's `X500Principal.getName()` does (RFC 2253 as OpenJDK
//!    writes it, quirks included), which is the string Kafka's rules see. It also reads
//!    `notAfter`, so that a session can end when its certificate does.
//! 2. [`PrincipalRules`] is Kafka's `ssl.principal.mapping.rules`, parsed and applied as
//!    Kafka's `SslPrincipalMapper` does. Patterns are Java regular expressions; they are
//!    translated to the `regex` crate's syntax, and whatever that engine would run differently
//!    (backreferences, lookaround, ...) is refused when the rules are parsed, never guessed at.
//!
//! Everything is pure: no I/O, no clock.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// What the gateway needs of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject as Kafka sees it: Java's `X500Principal.getName()` (RFC 2253), e.g.
    /// `CN=alice,OU=eng,O=Acme\, Inc.,C=US`. Input to [`PrincipalRules::principal`].
    pub subject: String,
    /// The end of the validity period (`notAfter`), in seconds since the Unix epoch.
    pub not_after_unix: i64,
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
    tbs.expect(INTEGER, "serialNumber (an INTEGER)")?;
    tbs.expect(SEQUENCE, "signature (an AlgorithmIdentifier SEQUENCE)")?;
    tbs.expect(SEQUENCE, "issuer (a Name SEQUENCE)")?;
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
    })
}

const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OBJECT_IDENTIFIER: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const GENERAL_STRING: u8 = 0x1b;
const BMP_STRING: u8 = 0x1e;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed

fn der_error(offset: usize, problem: &'static str) -> CertificateError {
    CertificateError::Der { offset, problem }
}

/// A window `[pos, end)` on the certificate; offsets stay absolute so errors can point at bytes.
#[derive(Clone, Copy)]
struct Reader<'a> {
    der: &'a [u8],
    pos: usize,
    end: usize,
}

/// One DER element: its tag, where it starts, where its contents start, and where it ends.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    der: &'a [u8],
    tag: u8,
    start: usize,
    body: usize,
    end: usize,
}

impl<'a> Tlv<'a> {
    /// The whole encoding: tag, length and contents.
    fn raw(&self) -> &'a [u8] {
        self.der.get(self.start..self.end).unwrap_or_default()
    }

    fn contents(&self) -> &'a [u8] {
        self.der.get(self.body..self.end).unwrap_or_default()
    }

    /// The elements inside a constructed element.
    fn reader(&self) -> Reader<'a> {
        Reader {
            der: self.der,
            pos: self.body,
            end: self.end,
        }
    }
}

impl<'a> Reader<'a> {
    fn new(der: &'a [u8]) -> Self {
        Reader {
            der,
            pos: 0,
            end: der.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn byte(&self, at: usize) -> Option<u8> {
        if at < self.end {
            self.der.get(at).copied()
        } else {
            None
        }
    }

    fn peek_tag(&self) -> Option<u8> {
        self.byte(self.pos)
    }

    /// The next element, whatever its tag.
    fn read(&mut self) -> Result<Tlv<'a>, CertificateError> {
        let start = self.pos;
        let tag = self
            .byte(start)
            .ok_or(der_error(start, "an element is missing"))?;
        if tag & 0x1f == 0x1f {
            // Tag numbers above 30 never occur in certificates; Java cannot read them either.
            return Err(der_error(start, "multi-byte tag numbers are not supported"));
        }
        let first = self
            .byte(start + 1)
            .ok_or(der_error(start, "the element is cut off before its length"))?;
        let (length, body) = match first {
            0..=0x7f => (usize::from(first), start + 2),
            0x80 => {
                return Err(der_error(
                    start + 1,
                    "indefinite length (BER); DER lengths are definite",
                ))
            }
            _ => {
                let count = usize::from(first & 0x7f);
                if count > 4 {
                    return Err(der_error(start + 1, "a length of more than four bytes"));
                }
                let mut length = 0usize;
                for i in 0..count {
                    let b = self
                        .byte(start + 2 + i)
                        .ok_or(der_error(start + 1, "the length is cut off"))?;
                    length = (length << 8) | usize::from(b);
                }
                // DER: the shortest form, so no leading zero byte and no long form under 128.
                if length < 0x80 || length >> (8 * (count - 1)) == 0 {
                    return Err(der_error(start + 1, "a length not in its shortest form"));
                }
                (length, start + 2 + count)
            }
        };
        let end = body
            .checked_add(length)
            .filter(|&end| end <= self.end)
            .ok_or(der_error(
                start,
                "the element's length runs past the end of what contains it",
            ))?;
        self.pos = end;
        Ok(Tlv {
            der: self.der,
            tag,
            start,
            body,
            end,
        })
    }

    /// The next element, which must have `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, CertificateError> {
        if self.peek_tag() != Some(tag) {
            return Err(CertificateError::Structure {
                offset: self.pos,
                expected: what,
            });
        }
        self.read()
    }

    fn finish(&self, what: &'static str) -> Result<(), CertificateError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(CertificateError::Structure {
                offset: self.pos,
                expected: what,
            })
        }
    }
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

/// A Name as Java's `X500Name.getRFC2253Name()` writes it: RDNs last to first, joined with
/// `,`; the attributes of a multi-valued RDN in their DER order (Java does not sort them here),
/// joined with `+`. An empty RDN (which DER forbids but Java reads) is an empty string.
fn rfc2253_name(name: Tlv<'_>) -> Result<String, CertificateError> {
    let mut rdns = Vec::new();
    let mut names = name.reader();
    while !names.is_empty() {
        let mut set = names
            .expect(SET, "a RelativeDistinguishedName (a SET)")?
            .reader();
        let mut avas = Vec::new();
        while !set.is_empty() {
            let ava = set.expect(SEQUENCE, "an AttributeTypeAndValue (a SEQUENCE)")?;
            avas.push(rfc2253_attribute(ava)?);
        }
        rdns.push(avas.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// The attribute types Java gives an RFC 2253 keyword (OpenJDK's `AVAKeyword` entries marked
/// RFC 2253-compliant). Every other type, emailAddress included, is written as its dotted OID.
fn rfc2253_keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// One `type=value`, as OpenJDK's `AVA.toRFC2253String()` writes it.
fn rfc2253_attribute(ava: Tlv<'_>) -> Result<String, CertificateError> {
    let mut fields = ava.reader();
    let oid = fields.expect(
        OBJECT_IDENTIFIER,
        "an attribute type (an OBJECT IDENTIFIER)",
    )?;
    let value = fields.read()?;
    fields.finish("the end of the attribute after its value")?;

    let oid = dotted_oid(oid)?;
    // Java writes a value as text only for a keyword type whose value has one of these tags;
    // UniversalString, VisibleString, NumericString and non-strings become `#` + hex.
    let text_tag = matches!(
        value.tag,
        PRINTABLE_STRING | T61_STRING | IA5_STRING | GENERAL_STRING | BMP_STRING | UTF8_STRING
    );
    match rfc2253_keyword(&oid) {
        Some(keyword) if text_tag => Ok(format!(
            "{keyword}={}",
            escape_rfc2253(&java_utf8_lossy(value.contents()))
        )),
        keyword => {
            // The whole DER encoding, lowercase hex: tag, length and contents.
            let mut out = format!("{}=#", keyword.unwrap_or(&oid));
            for b in value.raw() {
                let _ = write!(out, "{b:02x}");
            }
            Ok(out)
        }
    }
}

/// An OBJECT IDENTIFIER in dotted form. Arcs beyond 128 bits are refused (Java would print
/// them; no certificate has them).
fn dotted_oid(oid: Tlv<'_>) -> Result<String, CertificateError> {
    let bad = |problem| CertificateError::Field {
        field: "attribute type (OBJECT IDENTIFIER)",
        offset: oid.start,
        problem,
    };
    let bytes = oid.contents();
    if bytes.last().is_none_or(|last| last & 0x80 != 0) {
        return Err(bad("empty, or its last arc is cut off"));
    }
    let mut arcs: Vec<u128> = Vec::new();
    let mut arc: u128 = 0;
    let mut arc_start = true;
    for &b in bytes {
        if arc_start && b == 0x80 {
            return Err(bad("an arc with a leading zero group (not DER)"));
        }
        arc_start = false;
        if arc >> 121 != 0 {
            return Err(bad("an arc larger than 128 bits"));
        }
        arc = (arc << 7) | u128::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
            arc_start = true;
        }
    }
    let Some((&head, rest)) = arcs.split_first() else {
        return Err(bad("empty"));
    };
    // The first encoded arc holds the first two: 40 * first + second, first at most 2.
    let (first, second) = match head {
        n @ 0..=39 => (0, n),
        n @ 40..=79 => (1, n - 40),
        n => (2, n - 80),
    };
    let mut out = format!("{first}.{second}");
    for arc in rest {
        let _ = write!(out, ".{arc}");
    }
    Ok(out)
}

/// Bytes as Java's `new String(bytes, UTF_8)` reads them. OpenJDK's RFC 2253 writer decodes
/// every string value's contents as UTF-8, whatever its tag: a BMPString's UTF-16 or a
/// T61String's Latin-1 turn into NULs and U+FFFD, and Kafka sees exactly that.
///
/// Invalid sequences become U+FFFD like `String::from_utf8_lossy` (one per maximal invalid
/// subpart), except that Java reads a three-byte encoded surrogate (`ED A0..BF ..`) as one
/// sequence: one U+FFFD for the whole, or for its truncated start.
fn java_utf8_lossy(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let continuation =
            |at: usize, lo: u8, hi: u8| bytes.get(at).is_some_and(|&c| (lo..=hi).contains(&c));
        // How many bytes a valid sequence starting with `b` has, and the range of its second
        // byte (which rules out overlong forms and code points past U+10FFFF).
        let (len, lo, hi) = match b {
            0x00..=0x7f => {
                out.push(char::from(b));
                i += 1;
                continue;
            }
            0xc2..=0xdf => (2, 0x80, 0xbf),
            0xe0 => (3, 0xa0, 0xbf),
            // ED included: Java accepts the surrogate range here and rejects it after decoding.
            0xe1..=0xef => (3, 0x80, 0xbf),
            0xf0 => (4, 0x90, 0xbf),
            0xf1..=0xf3 => (4, 0x80, 0xbf),
            0xf4 => (4, 0x80, 0x8f),
            _ => {
                out.push(char::REPLACEMENT_CHARACTER);
                i += 1;
                continue;
            }
        };
        // The longest valid prefix of the sequence.
        let mut valid = 1;
        if continuation(i + 1, lo, hi) {
            valid = 2;
            while valid < len && continuation(i + valid, 0x80, 0xbf) {
                valid += 1;
            }
        }
        if valid < len {
            out.push(char::REPLACEMENT_CHARACTER);
            i += valid;
            continue;
        }
        let mut code = u32::from(b) & (0x7f >> len);
        for &c in &bytes[i + 1..i + len] {
            code = (code << 6) | u32::from(c & 0x3f);
        }
        // Surrogates (from ED A0..BF) fail here and become one U+FFFD.
        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
        i += len;
    }
    out
}

/// A value's text escaped as OpenJDK's `AVA.toRFC2253String()` does, which is not quite RFC
/// 2253: `,` `=` `+` `<` `>` `#` `;` `"` `\` get a backslash wherever they are (not only a
/// leading `#`), NUL becomes `\00`, other characters (non-ASCII, controls) stay as they are,
/// and every leading or trailing space or carriage return gets a backslash.
fn escape_rfc2253(value: &str) -> String {
    let mut escaped: Vec<char> = Vec::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\0' => escaped.extend(['\\', '0', '0']),
            c => escaped.push(c),
        }
    }
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| blank(c)).count();
    let trail = escaped.len() - escaped.iter().rev().take_while(|c| blank(c)).count();
    let mut out = String::with_capacity(escaped.len() + 4);
    for (i, c) in escaped.into_iter().enumerate() {
        if i < lead || i >= trail {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Principal mapping rules
// ---------------------------------------------------------------------------------------------

/// Kafka's `ssl.principal.mapping.rules`: how a subject DN becomes a principal name.
///
/// A comma-separated list of `DEFAULT` (the DN as it is) and `RULE:pattern/replacement/`, the
/// latter optionally followed by `L` or `U` (lower or upper case the result). `pattern` is a
/// Java regular expression that must match the whole DN; `replacement` may use `$1` for its
/// groups. `\/` writes a slash inside either. The first rule that applies wins.
///
/// Parsed as Kafka parses it, with these refusals where Kafka would go on silently:
/// - text that Kafka's rule splitter skips (rules separated by a newline but no comma: Kafka
///   drops all but the last) is refused;
/// - an empty list (Kafka: every client refused) is refused;
/// - a replacement that Java would reject when the rule applies (`$2` with one group, a lone
///   `$` or `\`) is refused up front instead of failing that client's authentication;
/// - a pattern that the `regex` crate would not run exactly as `java.util.regex` does is
///   refused (see [`RuleError::Pattern`]).
#[derive(Debug, Clone)]
pub struct PrincipalRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Map(Box<MapRule>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug, Clone)]
struct MapRule {
    /// As written, for messages.
    pattern: String,
    replacement: String,
    case: Case,
    /// Java's `Matcher.matches()`: the pattern over the whole DN.
    whole: Regex,
    /// The unanchored pattern, for Java's `String.replaceAll` that follows a match.
    find: Regex,
    /// The replacement after Kafka's treatment of `$n`, in Java's replacement syntax.
    parts: Vec<Part>,
    /// The pattern has `$` or `\Z`, which Java also matches before a final line terminator.
    java_dollar: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Group(usize),
}

/// Why a set of principal mapping rules was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Nothing but separators.
    #[error(
        "ssl.principal.mapping.rules is empty, so every client certificate would be refused; \
         use DEFAULT to keep the subject DN as the principal"
    )]
    Empty,
    /// Text Kafka's parser would skip without a word.
    #[error(
        "ssl.principal.mapping.rules: {text:?} is not part of any rule (Kafka would silently \
         ignore it); separate rules with commas"
    )]
    Ignored {
        /// The skipped text.
        text: String,
    },
    /// Not `DEFAULT` or `RULE:pattern/replacement/[LU]` (Kafka: "Invalid rule").
    #[error("invalid principal mapping rule `{rule}`: {problem}")]
    Invalid {
        /// The rule as split from the list.
        rule: String,
        /// Which part is wrong.
        problem: String,
    },
    /// A pattern Java would refuse, or one that would not run exactly as in Java.
    #[error("principal mapping rule `{rule}`: the pattern `{pattern}` {problem}")]
    Pattern {
        /// The rule.
        rule: String,
        /// Its pattern.
        pattern: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A replacement Java would reject when the rule applies.
    #[error("principal mapping rule `{rule}`: the replacement `{replacement}` {problem}")]
    Replacement {
        /// The rule.
        rule: String,
        /// Its replacement.
        replacement: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// No rule gave the subject a name (Kafka: "No rules apply to ..."); the client is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("No rules apply to {subject}, rules [{rules}]{}", suffix(.detail))]
pub struct NoRuleApplies {
    /// The subject DN.
    pub subject: String,
    /// The rules, as [`PrincipalRules`] displays them.
    pub rules: String,
    /// Set when a rule could not be evaluated exactly as Java would, which refuses the client
    /// rather than guess: a pattern with `$` against a DN that ends with a line terminator, or
    /// a `replaceAll` that Java would run through the middle of a character outside the BMP.
    pub detail: Option<String>,
}

fn suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl Default for PrincipalRules {
    /// `DEFAULT`: the subject DN is the principal.
    fn default() -> Self {
        PrincipalRules {
            rules: vec![Rule::Default],
        }
    }
}

impl fmt::Display for PrincipalRules {
    /// The rules in their own syntax, comma-separated (parses back to the same rules).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt::Display::fmt(rule, f)?;
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Default => f.write_str("DEFAULT"),
            Rule::Map(rule) => {
                let case = match rule.case {
                    Case::Keep => "",
                    Case::Lower => "L",
                    Case::Upper => "U",
                };
                write!(f, "RULE:{}/{}/{case}", rule.pattern, rule.replacement)
            }
        }
    }
}

impl PrincipalRules {
    /// The principal for a subject DN (as [`ClientCertificate::subject`] writes it): the result
    /// of the first rule that applies.
    pub fn principal(&self, subject: &str) -> Result<String, NoRuleApplies> {
        for rule in &self.rules {
            let rule = match rule {
                Rule::Default => return Ok(subject.to_owned()),
                Rule::Map(rule) => rule,
            };
            if rule.java_dollar && subject.ends_with(is_java_line_terminator) {
                return Err(NoRuleApplies {
                    subject: subject.to_owned(),
                    rules: self.to_string(),
                    detail: Some(format!(
                        "the subject ends with a line break, where `$` in rule `RULE:{}/...` \
                         does not behave as in Java; the client is refused rather than mapped \
                         differently from Kafka",
                        rule.pattern
                    )),
                });
            }
            match rule.apply(subject) {
                Ok(Some(name)) => return Ok(name),
                Ok(None) => {}
                Err(detail) => {
                    return Err(NoRuleApplies {
                        subject: subject.to_owned(),
                        rules: self.to_string(),
                        detail: Some(format!("rule `{}`: {detail}", Rule::Map(rule.clone()))),
                    })
                }
            }
        }
        Err(NoRuleApplies {
            subject: subject.to_owned(),
            rules: self.to_string(),
            detail: None,
        })
    }
}

fn is_java_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

impl MapRule {
    /// Kafka: when the pattern matches the whole DN, the DN with every match of the pattern
    /// (Java's `replaceAll`, so possibly more than one) replaced, then case-folded. An error
    /// when Java's result cannot be reproduced.
    fn apply(&self, subject: &str) -> Result<Option<String>, &'static str> {
        if !self.whole.is_match(subject) {
            return Ok(None);
        }
        let mut out = String::with_capacity(subject.len());
        let mut copied = 0;
        let mut from = 0;
        // Java's `Matcher.find()` loop: after an empty match the next search starts one
        // character later; after a non-empty one, at its end (an empty match right there
        // counts, unlike the regex crate's own iterators).
        while from <= subject.len() {
            let Some(caps) = self.find.captures_at(subject, from) else {
                break;
            };
            let Some(m) = caps.get(0) else { break };
            out.push_str(&subject[copied..m.start()]);
            for part in &self.parts {
                match part {
                    Part::Text(text) => out.push_str(text),
                    Part::Group(g) => {
                        if let Some(group) = caps.get(*g) {
                            out.push_str(group.as_str());
                        }
                    }
                }
            }
            copied = m.end();
            from = match (m.is_empty(), subject[m.end()..].chars().next()) {
                (false, _) => m.end(),
                (true, None) => m.end() + 1,
                // Java steps one UTF-16 unit, into the middle of this character, and may match
                // there: a principal with half a character, which a Rust string cannot hold.
                (true, Some(c)) if c.len_utf16() == 2 => {
                    return Err(
                        "Java would split a character outside the BMP (an empty match \
                                right before it); the client is refused rather than mapped \
                                differently from Kafka",
                    )
                }
                (true, Some(c)) => m.end() + c.len_utf8(),
            };
        }
        out.push_str(&subject[copied..]);
        // Java's toLowerCase/toUpperCase(Locale.ENGLISH): Unicode's default full mappings
        // (ß → SS, final sigma), which is what Rust's are.
        Ok(Some(match self.case {
            Case::Keep => out,
            Case::Lower => out.to_lowercase(),
            Case::Upper => out.to_uppercase(),
        }))
    }
}

impl FromStr for PrincipalRules {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, RuleError> {
        let (splitter, parser) = &*RULE_GRAMMAR;
        // Kafka trims with Java's `String.trim()`: every character up to U+0020.
        let text = text.trim_matches(|c| c <= ' ');
        let mut rules = Vec::new();
        let mut covered = 0;
        let mut from = 0;
        while from <= text.len() {
            let Some(caps) = splitter.captures_at(text, from) else {
                break;
            };
            let (Some(whole), Some(rule)) = (caps.get(0), caps.get(1)) else {
                break;
            };
            skipped(&text[covered..whole.start()])?;
            covered = covered.max(whole.end());
            if let Some(rule) = parse_rule(rule.as_str(), parser)? {
                rules.push(rule);
            }
            from = if whole.is_empty() {
                whole.end() + text[whole.end()..].chars().next().map_or(1, char::len_utf8)
            } else {
                whole.end()
            };
        }
        skipped(&text[covered..])?;
        if rules.is_empty() {
            return Err(RuleError::Empty);
        }
        Ok(PrincipalRules { rules })
    }
}

/// Text between the splitter's matches, which Kafka skips without a word: refused unless it
/// is only whitespace (Unicode line separators, which Java's `\s` leaves out).
fn skipped(text: &str) -> Result<(), RuleError> {
    if text.chars().all(char::is_whitespace) {
        return Ok(());
    }
    Err(RuleError::Ignored {
        text: text.trim().to_owned(),
    })
}

/// Kafka's rule grammar as regular expressions, with Java's meanings spelled out for the regex
/// crate: `.` excludes Java's line terminators, `\s` is ASCII, and `$` also matches before a
/// final line terminator (after trimming, only U+0085, U+2028 or U+2029 can be one).
///
/// One rule: `DEFAULT`, or `RULE:` pattern `/` replacement `/` optional `L`/`U` followed by
/// anything up to the separator (which the parser then reports as unmatched), or anything at
/// all (an empty rule, or an invalid one). The splitter finds each rule with its separator.
static RULE_GRAMMAR: LazyLock<(Regex, Regex)> = LazyLock::new(|| {
    const DOT: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";
    const SPACE: &str = r"[ \t\n\x0B\x0C\r]";
    let body = format!(r"(?:\\{DOT}|[^\\/])*");
    let rule = format!(r"(DEFAULT)|RULE:({body})/({body})/([LU]?){DOT}*?|({DOT}*?)");
    let end = r"[\x{85}\x{2028}\x{2029}]?\z";
    let splitter = format!(r"{SPACE}*({rule}){SPACE}*(?:,{SPACE}*|{end})");
    let parser = format!(r"\A(?:{rule})");
    // Fixed patterns, compiled by every test: failing here is a bug in this file.
    let compile = |source: &str| Regex::new(source).expect("the rule grammar compiles");
    (compile(&splitter), compile(&parser))
});

/// One rule as split from the list; `None` for an empty one (Kafka ignores those).
fn parse_rule(rule: &str, parser: &Regex) -> Result<Option<Rule>, RuleError> {
    let invalid = |problem: String| RuleError::Invalid {
        rule: rule.to_owned(),
        problem,
    };
    let Some(caps) = parser.captures(rule) else {
        return Err(invalid("not DEFAULT or RULE:pattern/replacement/".into()));
    };
    let end = caps.get(0).map_or(0, |m| m.end());
    if end != rule.len() {
        let unmatched = &rule[end..];
        let problem = if end > 0 {
            format!(
                "`{unmatched}` follows the rule; only L or U may follow its last `/` \
                 (and rules are separated by commas)"
            )
        } else if rule.starts_with("RULE:") {
            "the rule is incomplete: RULE:pattern/replacement/ needs three `/` (write `\\/` for \
             a slash inside the pattern or replacement), and an incomplete rule ends at the \
             first comma"
                .to_owned()
        } else if rule.to_ascii_uppercase().starts_with("RULE:")
            || rule.eq_ignore_ascii_case("DEFAULT")
        {
            "RULE and DEFAULT must be written in upper case".to_owned()
        } else {
            "a rule is DEFAULT or RULE:pattern/replacement/ optionally followed by L or U"
                .to_owned()
        };
        return Err(invalid(problem));
    }
    if caps.get(1).is_some() {
        return Ok(Some(Rule::Default));
    }
    let (Some(pattern), Some(replacement)) = (caps.get(2), caps.get(3)) else {
        return Ok(None); // empty
    };
    let case = match caps.get(4).map(|m| m.as_str()) {
        Some("L") => Case::Lower,
        Some("U") => Case::Upper,
        _ => Case::Keep,
    };
    let (pattern, replacement) = (pattern.as_str(), replacement.as_str());
    let pattern_error = |problem: String| RuleError::Pattern {
        rule: rule.to_owned(),
        pattern: pattern.to_owned(),
        problem,
    };
    let translated = translate_java_regex(pattern).map_err(pattern_error)?;
    let compile = |source: &str| {
        RegexBuilder::new(source)
            .build()
            .map_err(|e| pattern_error(format!("cannot be compiled by the regex crate: {e}")))
    };
    let whole = compile(&format!(r"\A(?:{})\z", translated.rust))?;
    let find = compile(&translated.rust)?;
    let parts = compile_replacement(replacement, translated.groups, &translated.names).map_err(
        |problem| RuleError::Replacement {
            rule: rule.to_owned(),
            replacement: replacement.to_owned(),
            problem,
        },
    )?;
    Ok(Some(Rule::Map(Box::new(MapRule {
        pattern: pattern.to_owned(),
        replacement: replacement.to_owned(),
        case,
        whole,
        find,
        parts,
        java_dollar: translated.java_dollar,
    }))))
}

/// The replacement as Java's `Matcher.appendReplacement` reads it, after Kafka's own step:
/// Kafka escapes a `$n` whose group does not exist (after dropping trailing digits, as Java
/// does) so that it stays literal. That step is reproduced to the letter, including that it
/// inserts its backslashes at positions computed on the unescaped text, so a second escape
/// lands one character early per earlier one. Whatever Java would throw when the rule applies
/// is an error here, when the rules are read.
fn compile_replacement(
    replacement: &str,
    groups: usize,
    names: &[(String, usize)],
) -> Result<Vec<Part>, String> {
    let original: Vec<u16> = replacement.encode_utf16().collect();
    let mut value = original.clone();
    if groups > 0 {
        let digit = |c: u16| (u16::from(b'0')..=u16::from(b'9')).contains(&c);
        let mut i = 0;
        while i < original.len() {
            if original[i] != u16::from(b'$') || !original.get(i + 1).is_some_and(|&c| digit(c)) {
                i += 1;
                continue;
            }
            let start = i + 1;
            let mut end = start;
            while end < original.len() && digit(original[end]) {
                end += 1;
            }
            i = end;
            if original[start] == u16::from(b'0') {
                continue;
            }
            let mut index: u64 = 0;
            for &d in &original[start..end] {
                index = index * 10 + u64::from(d - u16::from(b'0'));
                if index > i32::MAX as u64 {
                    // Kafka's Integer.parseInt throws when the rule applies.
                    return Err("has a group number too large to be read".into());
                }
            }
            while index > groups as u64 && index >= 10 {
                index /= 10;
            }
            if index > groups as u64 {
                let at = start - 1;
                if at > value.len() {
                    return Err("cannot be escaped the way Kafka does".into());
                }
                value.insert(at, u16::from(b'\\'));
            }
        }
    }

    let mut parts = Vec::new();
    let mut text: Vec<u16> = Vec::new();
    let flush = |text: &mut Vec<u16>, parts: &mut Vec<Part>| -> Result<(), String> {
        if !text.is_empty() {
            let s = String::from_utf16(text)
                .map_err(|_| "would split a character as Kafka escapes it".to_owned())?;
            parts.push(Part::Text(s));
            text.clear();
        }
        Ok(())
    };
    let mut i = 0;
    while i < value.len() {
        let c = value[i];
        i += 1;
        if c == u16::from(b'\\') {
            let Some(&next) = value.get(i) else {
                return Err("ends with a lone `\\` (write `\\\\` for a backslash)".into());
            };
            text.push(next);
            i += 1;
        } else if c == u16::from(b'$') {
            let Some(&next) = value.get(i) else {
                return Err(
                    "ends with a lone `$` (a group is `$1`; write `\\$` for a dollar sign)".into(),
                );
            };
            let group = if next == u16::from(b'{') {
                i += 1;
                let start = i;
                while value
                    .get(i)
                    .is_some_and(|&c| c < 0x80 && (c as u8).is_ascii_alphanumeric())
                {
                    i += 1;
                }
                let name = String::from_utf16_lossy(&value[start..i]);
                if name.is_empty() {
                    return Err("has `${` without a group name".into());
                }
                if value.get(i) != Some(&u16::from(b'}')) {
                    return Err(format!("has `${{{name}` without its closing `}}`"));
                }
                i += 1;
                match names.iter().find(|(n, _)| *n == name) {
                    Some((_, number)) => *number,
                    None => {
                        return Err(format!(
                            "refers to a group named `{name}` that the pattern does not have"
                        ))
                    }
                }
            } else {
                let Some(first) = (next as u32)
                    .checked_sub(u32::from(b'0'))
                    .filter(|d| *d <= 9)
                else {
                    return Err(
                        "has a `$` not followed by a group number (write `\\$` for a dollar sign)"
                            .into(),
                    );
                };
                i += 1;
                // Java takes more digits only while the number stays a group of the pattern.
                let mut index = first as usize;
                while let Some(d) = value
                    .get(i)
                    .and_then(|&c| (c as u32).checked_sub(u32::from(b'0')))
                    .filter(|d| *d <= 9)
                {
                    let longer = index * 10 + d as usize;
                    if longer > groups {
                        break;
                    }
                    index = longer;
                    i += 1;
                }
                if index > groups {
                    return Err(format!(
                        "refers to group ${index}, but the pattern has {groups} group{} \
                         (write `\\$` for a dollar sign)",
                        if groups == 1 { "" } else { "s" }
                    ));
                }
                index
            };
            flush(&mut text, &mut parts)?;
            parts.push(Part::Group(group));
        } else {
            text.push(c);
        }
    }
    flush(&mut text, &mut parts)?;
    Ok(parts)
}

// ---------------------------------------------------------------------------------------------
// Java regular expressions, translated
// ---------------------------------------------------------------------------------------------

/// A Java pattern rewritten for the regex crate.
struct Translated {
    rust: String,
    /// Capturing groups, numbered as Java numbers them.
    groups: usize,
    /// Named groups: (name, number).
    names: Vec<(String, usize)>,
    java_dollar: bool,
}

/// Rewrites a `java.util.regex` pattern into the regex crate's syntax with the same meaning,
/// or says why it cannot. Both engines pick the same match (leftmost, then by the priority of
/// alternatives and greedy/lazy repetition, as a backtracking engine would), so what has to be
/// translated is the meaning of each construct:
/// - `.` does not match Java's line terminators (`\n` `\r` U+0085 U+2028 U+2029), unless `(?s)`;
/// - `\d` `\s` `\w` (and negations) are ASCII, as in Java by default;
/// - `(?i)` folds ASCII letters only, as in Java without `(?u)` (the regex crate would fold
///   Unicode, so that `k` matched the Kelvin sign);
/// - `^` is the start of input; `$` and `\Z` are the end, where Java also matches before a final
///   line terminator (rules using them refuse such DNs, see [`PrincipalRules::principal`]).
///
/// Refused, because the regex crate lacks them or runs them differently: backreferences,
/// lookahead and lookbehind, atomic groups, possessive quantifiers, `\b` `\B` `\G` `\R` `\X`
/// `\h` `\v`, `\p{..}` classes, class intersections and nested classes, and the flags `m`,
/// `d`, `u`, `x`, `U`.
fn translate_java_regex(pattern: &str) -> Result<Translated, String> {
    let mut t = Translator {
        chars: pattern.chars().collect(),
        i: 0,
        out: String::with_capacity(pattern.len() * 2),
        groups: 0,
        names: Vec::new(),
        java_dollar: false,
    };
    t.alternation(Flags::default(), 0)?;
    if t.i < t.chars.len() {
        return Err(format!(
            "has an unmatched `)` at position {} (write `\\)` for a parenthesis)",
            t.i
        ));
    }
    Ok(Translated {
        rust: t.out,
        groups: t.groups,
        names: t.names,
        java_dollar: t.java_dollar,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    /// `(?i)`: ASCII case-insensitive.
    fold: bool,
    /// `(?s)`: `.` matches line terminators too.
    dotall: bool,
}

/// How deep groups may nest (Java's limit is the stack; this keeps ours bounded).
const MAX_NESTING: usize = 64;

/// What an item of a sequence was: whether a quantifier may follow it, and whether it can
/// match the empty string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Item {
    /// Can be repeated: a character, class, `.` or group.
    Atom { nullable: bool },
    /// Cannot: an anchor, a flag group, `\Q..\E`, or something already repeated.
    Fixed { nullable: bool },
}

struct Translator {
    chars: Vec<char>,
    i: usize,
    out: String,
    groups: usize,
    names: Vec<(String, usize)>,
    java_dollar: bool,
}

fn unsupported(what: &str) -> String {
    format!(
        "uses {what}, which the regex crate (used instead of java.util.regex) does not support \
         or runs differently; rewrite the pattern without it"
    )
}

/// A character as the regex crate reads it literally.
fn rust_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:X}}}", c as u32)
    }
}

/// The ASCII letter of the other case, if `c` is an ASCII letter.
fn other_case(c: char) -> Option<char> {
    if c.is_ascii_lowercase() {
        Some(c.to_ascii_uppercase())
    } else if c.is_ascii_uppercase() {
        Some(c.to_ascii_lowercase())
    } else {
        None
    }
}

/// `\d` `\s` `\w` as Java defines them by default (ASCII), as class items.
fn predefined_items(c: char) -> &'static str {
    match c.to_ascii_lowercase() {
        'd' => "0-9",
        's' => r"\t\n\x0B\x0C\r\x20",
        _ => "0-9A-Za-z_",
    }
}

/// What an escape inside or outside a class stands for.
enum Escape {
    Char(char),
    /// `\d` `\D` `\s` `\S` `\w` `\W`.
    Class(char),
}

impl Translator {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// Alternatives up to an unmatched `)` or the end; whether they can match the empty
    /// string. Inline flags (`(?i)`) apply from where they are to the end of the enclosing
    /// group, across `|`, as in Java.
    fn alternation(&mut self, mut flags: Flags, depth: usize) -> Result<bool, String> {
        let mut nullable = false; // some finished alternative can match empty
        let mut sequence = true; // the current alternative so far can match empty
        let mut last: Option<Item> = None;
        while let Some(c) = self.peek() {
            if matches!(c, '*' | '+' | '?' | '{') {
                let Some(Item::Atom { nullable: repeated }) = last else {
                    return Err(format!(
                        "has `{c}` at position {} with nothing it can repeat (write `\\{c}` \
                         for the character itself)",
                        self.i
                    ));
                };
                let at = self.i;
                let (min, max) = self.quantifier()?;
                // Java stops a loop at an iteration that matched nothing, the regex crate does
                // not, and the captures (even the match) then differ: refuse `(a*)*`, `(a|)+`.
                if repeated && max != Some(1) && max != Some(0) {
                    return Err(format!(
                        "repeats something that can match the empty string at position {at} \
                         (like `(a*)*` or `(a|)+`), where java.util.regex and the regex crate \
                         capture differently; make the repeated part match at least one \
                         character"
                    ));
                }
                last = Some(Item::Fixed {
                    nullable: repeated || min == 0,
                });
                continue;
            }
            // The previous item is complete.
            if let Some(Item::Atom { nullable } | Item::Fixed { nullable }) = last.take() {
                sequence &= nullable;
            }
            if c == ')' {
                break;
            }
            self.i += 1;
            last = Some(match c {
                '|' => {
                    self.out.push('|');
                    nullable |= sequence;
                    sequence = true;
                    continue;
                }
                '(' => self.group(&mut flags, depth)?,
                '[' => {
                    let class = self.class(flags)?;
                    self.out.push_str(&class);
                    Item::Atom { nullable: false }
                }
                '.' => {
                    self.out.push_str(if flags.dotall {
                        "(?s:.)"
                    } else {
                        r"[^\n\r\x{85}\x{2028}\x{2029}]"
                    });
                    Item::Atom { nullable: false }
                }
                '^' => {
                    self.out.push_str(r"\A");
                    Item::Fixed { nullable: true }
                }
                '$' => {
                    self.out.push_str(r"\z");
                    self.java_dollar = true;
                    Item::Fixed { nullable: true }
                }
                '\\' => self.escape(flags)?,
                c => {
                    self.literal(c, flags);
                    Item::Atom { nullable: false }
                }
            });
        }
        if let Some(Item::Atom { nullable } | Item::Fixed { nullable }) = last {
            sequence &= nullable;
        }
        Ok(nullable || sequence)
    }

    fn literal(&mut self, c: char, flags: Flags) {
        match other_case(c).filter(|_| flags.fold) {
            Some(other) => {
                self.out.push('[');
                self.out.push(c);
                self.out.push(other);
                self.out.push(']');
            }
            None => self.out.push_str(&rust_char(c)),
        }
    }

    /// After `(`. `flags` are the enclosing group's, which a bare `(?i)` changes.
    fn group(&mut self, flags: &mut Flags, depth: usize) -> Result<Item, String> {
        if depth >= MAX_NESTING {
            return Err(format!("nests groups more than {MAX_NESTING} deep"));
        }
        let start = self.i - 1;
        let mut inner = *flags;
        if self.peek() == Some('?') {
            self.i += 1;
            match self.bump() {
                Some(':') => self.out.push_str("(?:"),
                Some('=') | Some('!') => return Err(unsupported("lookahead `(?=` / `(?!`")),
                Some('>') => return Err(unsupported("an atomic group `(?>`")),
                Some('<') if matches!(self.peek(), Some('=') | Some('!')) => {
                    return Err(unsupported("lookbehind `(?<=` / `(?<!`"))
                }
                Some('<') => {
                    let mut name = String::new();
                    while let Some(c) = self.bump() {
                        if c == '>' {
                            break;
                        }
                        name.push(c);
                    }
                    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                        && name.chars().all(|c| c.is_ascii_alphanumeric());
                    if !valid || self.chars.get(self.i - 1) != Some(&'>') {
                        return Err(format!(
                            "has an invalid group name at position {start} (Java names are a \
                             letter followed by letters and digits)"
                        ));
                    }
                    if self.names.iter().any(|(n, _)| *n == name) {
                        return Err(format!("names two groups `{name}`"));
                    }
                    self.groups += 1;
                    self.names.push((name.clone(), self.groups));
                    self.out.push_str(&format!("(?P<{name}>"));
                }
                Some(c) if "idmsuxUc-".contains(c) => {
                    self.i -= 1;
                    let mut on = true;
                    loop {
                        match self.bump() {
                            Some('-') => on = false,
                            Some('i') => inner.fold = on,
                            Some('s') => inner.dotall = on,
                            Some(c @ ('d' | 'm' | 'u' | 'x' | 'U' | 'c')) => {
                                let what = match c {
                                    'c' => "the flag `c` (CANON_EQ)",
                                    'd' => "the flag `d` (UNIX_LINES)",
                                    'm' => "the flag `m` (MULTILINE)",
                                    'u' => "the flag `u` (UNICODE_CASE)",
                                    'x' => "the flag `x` (COMMENTS)",
                                    _ => "the flag `U` (UNICODE_CHARACTER_CLASS)",
                                };
                                return Err(unsupported(what));
                            }
                            Some(')') => {
                                // A bare flag group: the rest of the enclosing group.
                                *flags = inner;
                                return Ok(Item::Fixed { nullable: true });
                            }
                            Some(':') => break,
                            _ => {
                                return Err(format!(
                                    "has an unknown group or flag at position {start}"
                                ))
                            }
                        }
                    }
                    self.out.push_str("(?:");
                }
                _ => return Err(format!("has an unknown group type at position {start}")),
            }
        } else {
            self.groups += 1;
            self.out.push('(');
        }
        let nullable = self.alternation(inner, depth + 1)?;
        if self.bump() != Some(')') {
            return Err(format!(
                "has a `(` at position {start} that is never closed (write `\\(` for a \
                 parenthesis)"
            ));
        }
        self.out.push(')');
        Ok(Item::Atom { nullable })
    }

    /// `*` `+` `?` `{n}` `{n,}` `{n,m}`, then `?` (lazy) or `+` (possessive, refused).
    fn quantifier(&mut self) -> Result<(u32, Option<u32>), String> {
        let start = self.i;
        let bounds = match self.bump() {
            Some('*') => {
                self.out.push('*');
                (0, None)
            }
            Some('+') => {
                self.out.push('+');
                (1, None)
            }
            Some('?') => {
                self.out.push('?');
                (0, Some(1))
            }
            _ => {
                let number = |t: &mut Self| {
                    let from = t.i;
                    while t.peek().is_some_and(|c| c.is_ascii_digit()) {
                        t.i += 1;
                    }
                    let digits: String = t.chars[from..t.i].iter().collect();
                    digits.parse::<u32>().ok()
                };
                let invalid = || {
                    format!(
                        "has an invalid repetition at position {start} (`{{n}}`, `{{n,}}` or \
                         `{{n,m}}`; write `\\{{` for a brace)"
                    )
                };
                let min = number(self).ok_or_else(invalid)?;
                let max = if self.peek() == Some(',') {
                    self.i += 1;
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(number(self).ok_or_else(invalid)?)
                    }
                } else {
                    Some(min)
                };
                if self.bump() != Some('}') || max.is_some_and(|max| max < min) {
                    return Err(invalid());
                }
                match max {
                    Some(max) if max == min => self.out.push_str(&format!("{{{min}}}")),
                    Some(max) => self.out.push_str(&format!("{{{min},{max}}}")),
                    None => self.out.push_str(&format!("{{{min},}}")),
                }
                (min, max)
            }
        };
        match self.peek() {
            Some('?') => {
                self.i += 1;
                self.out.push('?');
            }
            Some('+') => return Err(unsupported("a possessive quantifier (`*+`, `++`, ...)")),
            _ => {}
        }
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return Err(format!(
                "repeats a repetition at position {} (group it first: `(?:a*)*`)",
                self.i
            ));
        }
        Ok(bounds)
    }

    /// After `\` outside a class.
    fn escape(&mut self, flags: Flags) -> Result<Item, String> {
        match self.peek() {
            Some('A') => {
                self.i += 1;
                self.out.push_str(r"\A");
                Ok(Item::Fixed { nullable: true })
            }
            Some('z') => {
                self.i += 1;
                self.out.push_str(r"\z");
                Ok(Item::Fixed { nullable: true })
            }
            Some('Z') => {
                self.i += 1;
                self.out.push_str(r"\z");
                self.java_dollar = true;
                Ok(Item::Fixed { nullable: true })
            }
            Some('Q') => {
                // Quoted: literal up to `\E` or the end.
                self.i += 1;
                let mut empty = true;
                while let Some(c) = self.bump() {
                    if c == '\\' && self.peek() == Some('E') {
                        self.i += 1;
                        break;
                    }
                    self.literal(c, flags);
                    empty = false;
                }
                Ok(Item::Fixed { nullable: empty })
            }
            _ => match self.escaped_char()? {
                Escape::Char(c) => {
                    self.literal(c, flags);
                    Ok(Item::Atom { nullable: false })
                }
                Escape::Class(c) => {
                    let negate = if c.is_ascii_uppercase() { "^" } else { "" };
                    self.out
                        .push_str(&format!("[{negate}{}]", predefined_items(c)));
                    Ok(Item::Atom { nullable: false })
                }
            },
        }
    }

    /// After `\`: an escape that stands for a character or a predefined class, the same inside
    /// and outside classes.
    fn escaped_char(&mut self) -> Result<Escape, String> {
        let at = self.i - 1;
        let Some(c) = self.bump() else {
            return Err("ends with a lone `\\`".into());
        };
        let hex = |t: &mut Self, count: usize| -> Option<u32> {
            let digits: String = t.chars.get(t.i..t.i + count)?.iter().collect();
            let value = u32::from_str_radix(&digits, 16).ok()?;
            t.i += count;
            Some(value)
        };
        let bad_escape = || format!("has an invalid escape at position {at}");
        let code = match c {
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => return Ok(Escape::Class(c)),
            't' => 0x09,
            'n' => 0x0a,
            'r' => 0x0d,
            'f' => 0x0c,
            'a' => 0x07,
            'e' => 0x1b,
            'x' if self.peek() == Some('{') => {
                self.i += 1;
                let from = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                    self.i += 1;
                }
                let digits: String = self.chars[from..self.i].iter().collect();
                if self.bump() != Some('}') || digits.is_empty() || digits.len() > 8 {
                    return Err(bad_escape());
                }
                u32::from_str_radix(&digits, 16).map_err(|_| bad_escape())?
            }
            'x' => hex(self, 2).ok_or_else(bad_escape)?,
            'u' => hex(self, 4).ok_or_else(bad_escape)?,
            'c' => {
                let Some(x) = self.bump() else {
                    return Err(bad_escape());
                };
                x as u32 ^ 0x40
            }
            '0' => {
                // Octal: \0n, \0nn, \0mnn with m at most 3.
                let mut value = 0u32;
                let mut count = 0;
                while let Some(d) = self.peek().and_then(|c| c.to_digit(8)) {
                    if count == 3 || (count == 2 && value > 0o37) {
                        break;
                    }
                    value = value * 8 + d;
                    count += 1;
                    self.i += 1;
                }
                if count == 0 {
                    return Err(bad_escape());
                }
                value
            }
            '1'..='9' | 'k' => return Err(unsupported("a backreference (`\\1`, `\\k<name>`)")),
            'b' | 'B' => return Err(unsupported("a word boundary `\\b` / `\\B`")),
            'p' | 'P' => return Err(unsupported("a character property `\\p{..}` / `\\P{..}`")),
            'G' => return Err(unsupported("`\\G`")),
            'R' | 'X' | 'h' | 'H' | 'v' | 'V' | 'N' => {
                return Err(unsupported(&format!("`\\{c}`")))
            }
            'Q' | 'E' | 'A' | 'z' | 'Z' => {
                return Err(format!(
                    "has `\\{c}` at position {at}, where it is not supported (inside a \
                     class, or `\\E` without `\\Q`)"
                ))
            }
            c if c.is_ascii_alphanumeric() => {
                return Err(format!(
                    "has the unknown escape `\\{c}` at position {at} (Java refuses it too)"
                ))
            }
            // Any other escaped character is itself: `\.`, `\/`, `\\`, `\é`.
            c => c as u32,
        };
        match char::from_u32(code) {
            Some(c) => Ok(Escape::Char(c)),
            None => Err(format!(
                "has an escape at position {at} that is not a Unicode scalar value (a lone \
                 surrogate?)"
            )),
        }
    }

    /// After `[`: a class of characters, ranges and `\d`-style escapes, optionally negated.
    /// Java's nested classes and `&&` intersections are refused, as are the `]` and `-`
    /// placements whose Java meaning is easy to misread.
    fn class(&mut self, flags: Flags) -> Result<String, String> {
        let start = self.i - 1;
        let mut out = String::from("[");
        if self.peek() == Some('^') {
            self.i += 1;
            out.push('^');
        }
        let unclosed = || format!("has a `[` at position {start} that is never closed");
        let mut first = true;
        loop {
            let c = self.bump().ok_or_else(unclosed)?;
            let low = match c {
                ']' if first => {
                    return Err(format!(
                        "has an empty class or a `]` first in a class at position {start} \
                         (write `\\]` for a bracket)"
                    ))
                }
                ']' => break,
                '[' => return Err(unsupported("a nested character class `[a[b]]`")),
                '&' if self.peek() == Some('&') => {
                    return Err(unsupported("a character class intersection `&&`"))
                }
                '-' if first || self.peek() == Some(']') => {
                    first = false;
                    out.push_str(&rust_char('-'));
                    continue;
                }
                '-' => {
                    return Err(format!(
                        "has a `-` at position {} that is neither a range nor first or last \
                         in its class (write `\\-`)",
                        self.i - 1
                    ))
                }
                '\\' => match self.escaped_char()? {
                    Escape::Char(c) => c,
                    Escape::Class(c) => {
                        if c.is_ascii_uppercase() {
                            out.push_str(&format!("[^{}]", predefined_items(c)));
                        } else {
                            out.push_str(predefined_items(c));
                        }
                        first = false;
                        continue;
                    }
                },
                c => c,
            };
            first = false;
            let high = if self.peek() == Some('-') && !matches!(self.peek_at(1), Some(']') | None) {
                self.i += 1;
                let high = match self.bump() {
                    Some('\\') => match self.escaped_char()? {
                        Escape::Char(c) => c,
                        Escape::Class(_) => {
                            return Err(format!(
                                "has a range ending in a class like `\\d` at position {}",
                                self.i
                            ))
                        }
                    },
                    Some('[') => return Err(unsupported("a nested character class `[a[b]]`")),
                    Some(c) => c,
                    None => return Err(unclosed()),
                };
                if high < low {
                    return Err(format!(
                        "has the range `{low}-{high}` whose end is before its start"
                    ));
                }
                high
            } else {
                low
            };
            if low == high {
                out.push_str(&rust_char(low));
            } else {
                out.push_str(&format!("{}-{}", rust_char(low), rust_char(high)));
            }
            if flags.fold {
                // Java without UNICODE_CASE: a character matches if it, or its ASCII upper or
                // lower case, is in the range.
                for letter in ('A'..='Z').chain('a'..='z') {
                    if (low..=high).contains(&letter) {
                        if let Some(other) = other_case(letter) {
                            out.push(other);
                        }
                    }
                }
            }
        }
        out.push(']');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    const PLAIN: &str = "MIIBATCBtAIBBzAFBgMrZXAwDTELMAkGA1UEAwwCY2EwHhcNMjYxMjA1MDE0NDU5WhcNMjcwMTA0MDE0NDU5WjBNMQswCQYDVQQGEwJVUzELMAkGA1UECAwCQ0ExEzARBgNVBAoMCkFjbWUsIEluYy4xDDAKBgNVBAsMA2VuZzEOMAwGA1UEAwwFYWxpY2UwKjAFBgMrZXADIQAUKgr3TWSGq3nstgQxKyAz6u+u6dM+sosySDX/Stfb/jAFBgMrZXADQQAwIWm1NoDu9S/jImn9jYg5J5ssDX3GgR97peUElGncZZssk2mypI6NKfOyK5itXcVnfmLyZn08m52CQHBp5w8O";
    /// /O=#hash/OU= lead and trail /CN=a+b,c"d\e<f>g;h=i
    const ESCAPES: &str = "MIH7MIGuAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMEcxDjAMBgNVBAoMBSNoYXNoMRkwFwYDVQQLDBAgbGVhZCBhbmQgdHJhaWwgMRowGAYDVQQDDBFhK2IsYyJkXGU8Zj5nO2g9aTAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBAHDqvMJHwpFBfiikNas4kdYuZF0kaCMwrcKz/rVMLHf7/kMvGy8CfbAOcvoAH1PnCv84js50bmmYVM1KFHax3wc=";
    /// /O=Acme/CN=bob+UID=b123+OU=ops (DER sorts the SET: CN, OU, UID)
    const MULTI: &str = "MIHxMIGkAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMD0xDTALBgNVBAoMBEFjbWUxLDAKBgNVBAMMA2JvYjAKBgNVBAsMA29wczASBgoJkiaJk/IsZAEBDARiMTIzMCowBQYDK2VwAyEAFCoK901khqt57LYEMSsgM+rvrunTPrKLMkg1/0rX2/4wBQYDK2VwA0EA+F9IeHVNj8yoGR6FxDI8grNTeOxKwm8jBh2kGKa021dkQcyndFr0dqllKBAJ+isaGGhltLaKOGsk+qW7aLhsCA==";
    /// /CN=carol/emailAddress=carol@example.com
    const EMAIL: &str = "MIHmMIGZAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMDIxDjAMBgNVBAMMBWNhcm9sMSAwHgYJKoZIhvcNAQkBFhFjYXJvbEBleGFtcGxlLmNvbTAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBANzv35RNwvO2PR4tVsGj2IX7KpW0l2iXbukHt8cStNZtUttx2jRupuPB/JKTabWUjQffvSwM9P4RNsRilvE6PQU=";
    /// /DC=com/DC=example/UID=dave/CN=dave
    const DC_UID: &str = "MIIBBzCBugIBBzAFBgMrZXAwDTELMAkGA1UEAwwCY2EwHhcNMjYxMjA1MDE0NDU5WhcNMjcwMTA0MDE0NDU5WjBTMRMwEQYKCZImiZPyLGQBGRYDY29tMRcwFQYKCZImiZPyLGQBGRYHZXhhbXBsZTEUMBIGCgmSJomT8ixkAQEMBGRhdmUxDTALBgNVBAMMBGRhdmUwKjAFBgMrZXADIQAUKgr3TWSGq3nstgQxKyAz6u+u6dM+sosySDX/Stfb/jAFBgMrZXADQQBXedA9Z1T0oc1lwrJKbUGqXxNz1DsOB9tgXeRODAHG09ck5MOfbqNFF6sBOJ5gDQbWmAYq7VbM3uvFfDvn79YL";
    /// /O=Ünïcødé/CN=Jürgen 日本 (UTF8String)
    const UTF8: &str = "MIHjMIGWAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMC8xFDASBgNVBAoMC8OcbsOvY8O4ZMOpMRcwFQYDVQQDDA5Kw7xyZ2VuIOaXpeacrDAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBADYatW+54511YCe4SfZ8sD0eivvTk2d5504A91tfMAJkaK7biVeyRrUGYv2g073bn1qbSeo0ek6wIOZY+Xtorgw=";
    /// /O=Ωmega (BMPString)/CN=Zoë (T61String)
    const BMP: &str = "MIHXMIGKAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAeFw0yNjEyMDUwMTQ0NTlaFw0yNzAxMDQwMTQ0NTlaMCMxEzARBgNVBAoeCgOpAG0AZQBnAGExDDAKBgNVBAMUA1pv6zAqMAUGAytlcAMhABQqCvdNZIareey2BDErIDPq767p0z6yizJINf9K19v+MAUGAytlcANBANkXbl7V2VpPn3RkvqNfvKisjKOmNxbTImlHyYXF6Y2h3Q6L04ZId6brpsGOOj5LcN945rXo50O9/XarRPipCQM=";
    /// /CN=longlived, v3, notAfter 2054-04-22 as GeneralizedTime
    const GENERALIZED: &str = "MIIBMTCB5KADAgECAgEHMAUGAytlcDANMQswCQYDVQQDDAJjYTAgFw0yNjEyMDUwMTQ0NTlaGA8yMDU0MDQyMjAxNDQ1OVowFDESMBAGA1UEAwwJbG9uZ2xpdmVkMCowBQYDK2VwAyEAFCoK901khqt57LYEMSsgM+rvrunTPrKLMkg1/0rX2/6jYDBeMAkGA1UdEwQCMAAwHQYDVR0OBBYEFMu3M3IJLEZzaDkrrdQ+o6oLZo2ZMDIGA1UdIwQrMCmhEaQPMA0xCzAJBgNVBAMMAmNhghQWZUAa1UtMLFE7Ygp/g2dL/dITVTAFBgMrZXADQQC3rCk0nqncyJfQEwo9CZ6OTGqLyTdEbekWYwmo/svpwXI/q3NbPF2mJiApFe0960XGKa+3yI5R197HYfJpSpIB";

    /// 2027-01-04T01:44:59Z, the notAfter of all but GENERALIZED.
    const THIRTY_DAYS: i64 = 1_799_027_099;

    fn base64(text: &str) -> Vec<u8> {
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

    fn cert(b64: &str) -> ClientCertificate {
        parse_certificate(&base64(b64)).unwrap()
    }

    #[test]
    fn subjects_as_java_writes_them() {
        let cases = [
            (PLAIN, r"CN=alice,OU=eng,O=Acme\, Inc.,ST=CA,C=US"),
            // Java also escapes `=` and a `#` anywhere, beyond what RFC 2253 asks.
            (
                ESCAPES,
                r#"CN=a\+b\,c\"d\\e\<f\>g\;h\=i,OU=\ lead and trail\ ,O=\#hash"#,
            ),
            // Multi-valued: DER order, not reversed, not re-sorted.
            (MULTI, "CN=bob+OU=ops+UID=b123,O=Acme"),
            // emailAddress has no RFC 2253 keyword in Java: OID and DER hex.
            (
                EMAIL,
                "1.2.840.113549.1.9.1=#16116361726f6c406578616d706c652e636f6d,CN=carol",
            ),
            (DC_UID, "CN=dave,UID=dave,DC=example,DC=com"),
            // Non-ASCII stays as it is.
            (
                UTF8,
                "CN=J\u{fc}rgen \u{65e5}\u{672c},O=\u{dc}n\u{ef}c\u{f8}d\u{e9}",
            ),
            // Java decodes every string type as UTF-8: BMPString 03 A9 00 6D ... and
            // T61String 5A 6F EB come out as Kafka sees them.
            (BMP, "CN=Zo\u{fffd},O=\u{3}\u{fffd}\\00m\\00e\\00g\\00a"),
            (GENERALIZED, "CN=longlived"),
        ];
        for (b64, subject) in cases {
            assert_eq!(cert(b64).subject, subject);
        }
    }

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

    /// A Name on its own, formatted.
    fn name(der_hex: &str) -> Result<String, CertificateError> {
        let der = hex(der_hex);
        let mut r = Reader::new(&der);
        let name = r.expect(SEQUENCE, "Name")?;
        r.finish("end")?;
        rfc2253_name(name)
    }

    #[test]
    fn names_as_java_writes_them() {
        // Each DER Name was given to OpenJDK 17's `new X500Principal(der).getName()`.
        let cases = [
            // A multi-valued RDN not in DER order stays in its order.
            ("301731153009060355040613025553300806035504030c017a", "C=US+CN=z"),
            // An empty RDN (not DER, but Java reads it) is an empty string.
            ("300e3100310a300806035504030c0161", "CN=a,"),
            ("3000", ""),
            // UniversalString, VisibleString, NumericString, INTEGER, SEQUENCE: hex.
            ("30133111300f06035504031c0800000068000000e9", "CN=#1c0800000068000000e9"),
            (
                "301c310c300a06035504031a03766973310c300a060355040a1203313233",
                "O=#1203313233,CN=#1a03766973",
            ),
            (
                "301a310a30080603550403020105310c300a060355040a30030c0178",
                "O=#30030c0178,CN=#020105",
            ),
            // NUL as \00; leading and trailing spaces and CRs each escaped.
            (
                "301e310c300a06035504030c03610062310e300c060355040a0c050d2078200d",
                "O=\\\r\\ x\\ \\\r,CN=a\\00b",
            ),
            ("3019310c300a06035504030c0320202031093007060355040a0c00", r"O=,CN=\ \ \ "),
            ("301c310e300c06035504030c056123623d63310a3008060355040a0c0123", r"O=\#,CN=a\#b\=c"),
            // title and serialNumber have no RFC 2253 keyword; GeneralString is text.
            (
                "302a310d300b060355040c0c04626f7373310b3009060355040513023432310c300a06035504031b0367656e",
                "CN=gen,2.5.4.5=#13023432,2.5.4.12=#0c04626f7373",
            ),
            (
                "30313112301006035504090c0931204d61696e205374310d300b06035504070c04546f776e310c300a06035504031603696135",
                "CN=ia5,L=Town,STREET=1 Main St",
            ),
            ("3010310e300c06035504030c05202c612c20", r"CN=\ \,a\,\ "),
            (
                "3026310f300d06088837a3f78fec894b0c017831133011060b2b0601040182373c02010313025553",
                "1.3.6.1.4.1.311.60.2.1.3=#13025553,2.999.1234567890123=#0c0178",
            ),
            // Control characters stay as they are.
            ("30133111300f06035504030c08610a6209637f6401", "CN=a\nb\tc\u{7f}d\u{1}"),
            ("300f310d300b06035504030c04f09f9880", "CN=\u{1f600}"),
        ];
        for (der, expected) in cases {
            assert_eq!(name(der).unwrap(), expected, "{der}");
        }
    }

    #[test]
    fn invalid_utf8_as_java_replaces_it() {
        // Java's `new String(bytes, UTF_8)` on each (OpenJDK 17).
        let cases: [(&[u8], &str); 14] = [
            (b"\xc0\x80", "\u{fffd}\u{fffd}"),
            (b"\xe0\x80\x80", "\u{fffd}\u{fffd}\u{fffd}"),
            // An encoded surrogate is one sequence for Java, three for from_utf8_lossy.
            (b"\xed\xa0\x80", "\u{fffd}"),
            (b"\xf0\x90\x80", "\u{fffd}"),
            (b"\xf4\x90\x80\x80", "\u{fffd}\u{fffd}\u{fffd}\u{fffd}"),
            (b"\x80", "\u{fffd}"),
            (b"\xff", "\u{fffd}"),
            (b"\xe1\x80\x41", "\u{fffd}A"),
            (b"\xf0\x80\x80\x80", "\u{fffd}\u{fffd}\u{fffd}\u{fffd}"),
            (b"\xc2", "\u{fffd}"),
            (b"\xe0\xa0", "\u{fffd}"),
            (
                b"\xf8\x88\x80\x80\x80",
                "\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}",
            ),
            (b"\xe1\x80\xe1\x80\x80", "\u{fffd}\u{1000}"),
            (b"a\xf1\x80\x80\xe1\x80\xc2b", "a\u{fffd}\u{fffd}\u{fffd}b"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(java_utf8_lossy(bytes), expected, "{bytes:02x?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Malformed DER
    // -----------------------------------------------------------------------------------------

    fn der_problem(der: &[u8]) -> CertificateError {
        parse_certificate(der).expect_err("malformed DER was accepted")
    }

    #[test]
    fn truncated_certificates_are_refused() {
        let der = base64(GENERALIZED);
        for len in 0..der.len() {
            der_problem(&der[..len]);
        }
    }

    #[test]
    fn malformed_der_is_refused() {
        let der = base64(PLAIN);
        // Trailing garbage.
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            der_problem(&trailing),
            CertificateError::Structure { offset, .. } if offset == der.len()
        ));
        // The outer length one too long, then one too short.
        let mut long = der.clone();
        long[3] += 1;
        assert!(matches!(der_problem(&long), CertificateError::Der { .. }));
        let mut short = der.clone();
        short[3] -= 1;
        der_problem(&short);
        // Indefinite length (BER).
        let mut indefinite = vec![0x30, 0x80];
        indefinite.extend_from_slice(&der[4..]);
        indefinite.extend_from_slice(&[0, 0]);
        assert!(matches!(
            der_problem(&indefinite),
            CertificateError::Der { offset: 1, problem } if problem.contains("indefinite")
        ));
        // A long-form length that fits the short form, and one with a leading zero byte.
        assert!(matches!(
            der_problem(&[0x30, 0x81, 0x03, 0x02, 0x01, 0x00]),
            CertificateError::Der { problem, .. } if problem.contains("shortest")
        ));
        let mut padded = vec![0x30, 0x83, 0x00];
        padded.extend_from_slice(&der[2..]);
        der_problem(&padded);
        // Five length bytes, and a huge length.
        assert!(matches!(
            der_problem(&[0x30, 0x85, 1, 0, 0, 0, 0]),
            CertificateError::Der { problem, .. } if problem.contains("four")
        ));
        assert!(matches!(
            der_problem(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30, 0x00]),
            CertificateError::Der { problem, .. } if problem.contains("runs past")
        ));
        // A multi-byte tag.
        der_problem(&[0x1f, 0x81, 0x00, 0x00]);
        // Not a certificate at all.
        der_problem(&[]);
        der_problem(&[0x30]);
        der_problem(&[0x30, 0x00]);
        der_problem(&[0x02, 0x01, 0x00]);
    }

    /// The header of an element with `tag` and `len` bytes of contents, length in its
    /// shortest form.
    fn header(tag: u8, len: usize) -> Vec<u8> {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        match len {
            0..=0x7f => vec![tag, len as u8],
            _ => [
                vec![tag, 0x80 | (bytes.len() - skip) as u8],
                bytes[skip..].to_vec(),
            ]
            .concat(),
        }
    }

    /// `depth` SEQUENCEs around a NULL.
    fn nested(depth: usize) -> Vec<u8> {
        let mut headers = Vec::with_capacity(depth);
        let mut len = 2;
        for _ in 0..depth {
            let header = header(0x30, len);
            len += header.len();
            headers.push(header);
        }
        let mut der: Vec<u8> = headers.into_iter().rev().flatten().collect();
        der.extend_from_slice(&[0x05, 0x00]);
        der
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // Valid DER 100,000 deep, but not a certificate: refused at the first wrong tag.
        der_problem(&nested(100_000));
        // An attribute value 10,000 deep is not descended into: Java prints it as hex too.
        let value = nested(10_000);
        let mut ava = vec![0x06, 0x03, 0x55, 0x04, 0x03];
        ava.extend_from_slice(&value);
        let name = nested_in(0x30, &nested_in(0x31, &nested_in(0x30, &ava)));
        let der = name.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let subject = super::tests::name(&der).unwrap();
        assert!(subject.starts_with("CN=#3082"), "{}", &subject[..20]);
        assert_eq!(subject.len(), "CN=#".len() + 2 * value.len());
    }

    /// `content` in one element with `tag`.
    fn nested_in(tag: u8, content: &[u8]) -> Vec<u8> {
        [header(tag, content.len()), content.to_vec()].concat()
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

    // -----------------------------------------------------------------------------------------
    // Principal mapping rules: the cases of Kafka's SslPrincipalMapperTest
    // -----------------------------------------------------------------------------------------

    fn rules(text: &str) -> PrincipalRules {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} was refused: {e}"))
    }

    #[test]
    fn kafka_valid_rules() {
        for text in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            rules(text);
        }
    }

    fn refused(text: &str) -> RuleError {
        match text.parse::<PrincipalRules>() {
            Ok(rules) => panic!("{text:?} was accepted as {rules}"),
            Err(e) => e,
        }
    }

    #[test]
    fn kafka_invalid_rules() {
        for text in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
        ] {
            assert!(matches!(refused(text), RuleError::Invalid { .. }), "{text}");
        }
        // Messages say which part is wrong.
        assert_eq!(
            refused("DEFAULT/L").to_string(),
            "invalid principal mapping rule `DEFAULT/L`: `/L` follows the rule; only L or U may \
             follow its last `/` (and rules are separated by commas)"
        );
        assert!(refused("rule:^CN=(.*)$/$1/")
            .to_string()
            .contains("upper case"));
        assert!(refused("RULE:^CN=(.*?),OU=ServiceUsers.*$/L")
            .to_string()
            .contains("RULE:pattern/replacement/ needs three `/`"));
    }

    #[test]
    fn kafka_mapping() {
        let mapper = rules(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, \
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, \
             RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, \
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, \
             DEFAULT",
        );
        let cases = [
            ("CN=Duke,OU=ServiceUsers,O=Org,C=US", "duke"),
            ("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US", "duke@sme"),
            ("cn=duke,ou=sme,dc=mycp,dc=com", "DUKE@SME"),
            ("cN=duke,OU=JavaSoft,O=Sun Microsystems", "DUKE"),
            (
                "OU=JavaSoft,O=Sun Microsystems,C=US",
                "OU=JavaSoft,O=Sun Microsystems,C=US",
            ),
        ];
        for (dn, principal) in cases {
            assert_eq!(mapper.principal(dn).unwrap(), principal, "{dn}");
        }
    }

    /// The rules as parsed, one per entry, in this module's syntax.
    fn split(text: &str) -> Vec<String> {
        rules(text).rules.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn kafka_rule_splitting() {
        // Kafka prints a rule without its last `/` when it has no L or U (`RULE:/.*` for
        // pattern "" and replacement ".*"); the expectations here keep it.
        let cases: [(&str, &[&str]); 17] = [
            ("DEFAULT", &["DEFAULT"]),
            ("RULE://", &["RULE://"]),
            ("RULE:/.*/", &["RULE:/.*/"]),
            ("RULE:/.*/L", &["RULE:/.*/L"]),
            ("RULE://,DEFAULT", &["RULE://", "DEFAULT"]),
            ("  RULE:// ,  DEFAULT  ", &["RULE://", "DEFAULT"]),
            ("  RULE:   /     / ,  DEFAULT  ", &["RULE:   /     /", "DEFAULT"]),
            ("  RULE:  /     /U   ,DEFAULT  ", &["RULE:  /     /U", "DEFAULT"]),
            (
                "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
                &["RULE:([A-Z]*)/$1/U", "RULE:([a-z]+)/$1/", "DEFAULT"],
            ),
            // Empty rules are ignored.
            (",,RULE://,,,DEFAULT,,", &["RULE://", "DEFAULT"]),
            (",  , RULE: /   /    ,,,   DEFAULT, ,   ", &["RULE: /   /", "DEFAULT"]),
            ("     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,", &["RULE:   /  /U", "DEFAULT"]),
            // Escapes stay in the pattern and replacement as written.
            (r"RULE:\/\\\(\)\n\t/\/\//", &[r"RULE:\/\\\(\)\n\t/\/\//"]),
            (
                r"RULE:\**\/+/*/L,RULE:\/*\**/**/",
                &[r"RULE:\**\/+/*/L", r"RULE:\/*\**/**/"],
            ),
            // Commas and keywords inside patterns and replacements.
            (
                r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
                &[
                    r"RULE:,RULE:,/,RULE:,\//U",
                    "RULE:,/RULE:,/",
                    "RULE:,RULE:,/L,RULE:,/L",
                    "RULE:, DEFAULT, /DEFAULT/",
                    "DEFAULT",
                ],
            ),
            // Newlines around commas (Kafka's documented layout).
            (
                "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\nRULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,\nDEFAULT",
                &[
                    "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
                    "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
                    "DEFAULT",
                ],
            ),
            ("\n\tRULE:a/b/\n  ,\n  DEFAULT\n", &["RULE:a/b/", "DEFAULT"]),
        ];
        for (text, expected) in cases {
            assert_eq!(split(text), expected, "{text:?}");
            // Display parses back to the same rules.
            let shown = rules(text).to_string();
            assert_eq!(split(&shown), expected, "{shown:?}");
        }
    }

    #[test]
    fn kafka_comma_with_whitespace() {
        let mapper = rules(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT");
        assert_eq!(
            mapper
                .principal(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz")
                .unwrap(),
            r"Tkac\, Adam"
        );
    }

    #[test]
    fn no_rule_applies() {
        let mapper = rules("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/");
        let error = mapper.principal("CN=x,OU=Other").unwrap_err();
        assert_eq!(
            error.to_string(),
            "No rules apply to CN=x,OU=Other, rules [RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/]"
        );
        assert_eq!(PrincipalRules::default().principal("CN=x").unwrap(), "CN=x");
        assert_eq!(PrincipalRules::default().to_string(), "DEFAULT");
    }

    // -----------------------------------------------------------------------------------------
    // Where this module departs from Kafka: refusing what Kafka would silently get wrong
    // -----------------------------------------------------------------------------------------

    #[test]
    fn silently_dropped_text_is_refused() {
        // Kafka keeps only DEFAULT here: a newline is not a separator, and its splitter skips
        // the first rule without a word.
        assert_eq!(
            refused("RULE:^CN=(.*)$/$1/\nDEFAULT"),
            RuleError::Ignored {
                text: "RULE:^CN=(.*)$/$1/".into()
            }
        );
        // Kafka: "Invalid rule" (a space is not a separator either).
        assert!(matches!(
            refused("RULE:^CN=(.*)$/$1/ DEFAULT"),
            RuleError::Invalid { .. }
        ));
        // Kafka: no rules at all, so every client is refused.
        assert_eq!(refused(""), RuleError::Empty);
        assert_eq!(refused(",   , , ,      , , ,   "), RuleError::Empty);
    }

    #[test]
    fn replacements_java_would_reject_are_refused() {
        for (text, problem) in [
            // No groups: Kafka leaves `$1` alone and Java throws "No group 1" on a match.
            (
                "RULE:^CN=x$/$1/",
                "refers to group $1, but the pattern has 0 groups",
            ),
            ("RULE:^CN=(x)$/a$/", "ends with a lone `$`"),
            ("RULE:^CN=(x)$/a$b/", "not followed by a group number"),
            ("RULE:^CN=(x)$/${nope}/", "group named `nope`"),
        ] {
            let error = refused(text).to_string();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn replacement_groups_as_kafka_and_java_read_them() {
        let map = |text: &str, dn: &str| rules(text).principal(dn).unwrap();
        // A group that does not exist stays literal (Kafka), `$12` with one group is `$1`
        // then `2` (Java), `\$` is a dollar, `$0` the whole match.
        assert_eq!(map("RULE:^CN=(.*)$/$1@$4/", "CN=x"), "x@$4");
        assert_eq!(map("RULE:^CN=(.*)$/$12/", "CN=x"), "x2");
        assert_eq!(map(r"RULE:^CN=(.*)$/\$1=$1/", "CN=x"), "$1=x");
        assert_eq!(map("RULE:^CN=(.*)$/[$0]/", "CN=x"), "[CN=x]");
        assert_eq!(map("RULE:^CN=(?<user>.*)$/${user}/U", "CN=x"), "X");
        // Kafka's escaping puts its second backslash one character early: `$4 $5` with
        // three groups becomes `\$4\ $5`, so `$5` is read as a group and Java throws.
        assert!(matches!(
            refused("RULE:^(a)(b)(c)$/$4 $5/"),
            RuleError::Replacement { .. }
        ));
        // With one unknown group, all is well.
        assert_eq!(map("RULE:^(a)(b)(c)$/$3$4/", "abc"), "c$4");
        // A group that did not take part is empty.
        assert_eq!(map("RULE:^(a)|(b)$/[$1|$2]/", "b"), "[|b]");
    }

    #[test]
    fn replace_all_replaces_every_match_like_java() {
        let map = |text: &str, dn: &str| rules(text).principal(dn).unwrap();
        // The pattern matches the whole DN, but replaceAll then finds every match from the
        // start: lazily, so several (Java: "XaXbX" for `(.*?)` and "XX" for `a?` on "a").
        assert_eq!(map("RULE:(.*?)/X/", "ab"), "XaXbX");
        assert_eq!(map("RULE:a?/X/", "a"), "XX");
        assert_eq!(map("RULE:[a-z]+|,/_/", "ab"), "_");
    }

    #[test]
    fn case_folding_is_java_english() {
        let map = |text: &str, dn: &str| rules(text).principal(dn).unwrap();
        assert_eq!(map("RULE:^CN=(.*)$/$1/U", "CN=stra\u{df}e"), "STRASSE");
        assert_eq!(map("RULE:^CN=(.*)$/$1/L", "CN=\u{130}I"), "i\u{307}i");
        assert_eq!(
            map("RULE:^CN=(.*)$/$1/L", "CN=\u{3a3}\u{391}\u{3a3}"),
            "\u{3c3}\u{3b1}\u{3c2}"
        );
    }

    #[test]
    fn java_regex_meanings() {
        let applies =
            |pattern: &str, dn: &str| rules(&format!("RULE:{pattern}/x/")).principal(dn).is_ok();
        // `.` stops at every Java line terminator, not only `\n`; `(?s)` lifts that.
        assert!(!applies("CN=.", "CN=\r"));
        assert!(!applies("CN=.", "CN=\u{2028}"));
        assert!(applies("(?s)CN=.", "CN=\r"));
        // ASCII classes.
        assert!(!applies(r"CN=\w", "CN=\u{e9}"));
        assert!(!applies(r"CN=\d", "CN=\u{663}"));
        assert!(!applies(r"CN=\s", "CN=\u{a0}"));
        assert!(applies(r"CN=\W", "CN=\u{e9}"));
        // (?i) folds ASCII only: not the Kelvin sign, not é/É.
        assert!(applies("(?i)cn=K", "CN=k"));
        assert!(!applies("(?i)CN=k", "CN=\u{212a}"));
        assert!(!applies("(?i)CN=\u{e9}", "CN=\u{c9}"));
        assert!(applies("(?i)CN=[Z-a]", "CN=z"));
        assert!(applies("(?i)CN=[Z-a]", "CN=A"));
        assert!(!applies("(?i)CN=[^a]", "CN=A"));
        // Inline flags last to the end of their group, across `|`.
        assert!(!applies("(a(?i)b)c", "aBC"));
        assert!(applies("(a(?i)b)c", "aBc"));
        assert!(applies("a(?i)b|c", "C"));
        assert!(applies("(?i:a)b", "Ab"));
        assert!(!applies("(?i:a)b", "AB"));
        // The pattern must match the whole DN.
        assert!(!applies("CN=a", "CN=ab"));
        // Escapes.
        assert!(applies(r"\QCN=a+b\E", "CN=a+b"));
        assert!(applies(r"CN=\x41\u0042\x{43}\0104\t", "CN=ABCD\t"));
        assert!(applies(r"CN=[\-a-c\]]+", "CN=-]b"));
        assert!(applies(r"\/", "/"));
    }

    #[test]
    fn java_constructs_the_regex_crate_lacks_are_refused() {
        for (pattern, what) in [
            (r"^CN=(.*)\1$", "backreference"),
            (r"^CN=(?<n>.*)\k<n>$", "backreference"),
            ("^CN=(?=a).*$", "lookahead"),
            ("^CN=(?!a).*$", "lookahead"),
            ("^CN=.*(?<=a)$", "lookbehind"),
            ("^CN=.*(?<!a)$", "lookbehind"),
            ("^CN=(?>a*)$", "atomic"),
            ("^CN=a*+$", "possessive"),
            ("^CN=a++$", "possessive"),
            (r"^CN=\bx$", "word boundary"),
            (r"^CN=\p{Lower}$", "property"),
            ("^CN=[a-z&&[^x]]$", "intersection"),
            ("^CN=[a[b]]$", "nested"),
            ("(?m)^CN=a$", "MULTILINE"),
            ("(?x)^CN=a$", "COMMENTS"),
            ("(?u)^CN=a$", "UNICODE_CASE"),
            ("(?U)^CN=a$", "UNICODE_CHARACTER_CLASS"),
            ("(?d)^CN=a$", "UNIX_LINES"),
            (r"^CN=\Ga$", r"\G"),
            (r"^CN=\R$", r"\R"),
        ] {
            let error = refused(&format!("RULE:{pattern}/$0/"));
            let RuleError::Pattern { problem, .. } = &error else {
                panic!("{pattern}: {error}");
            };
            assert!(problem.contains(what), "{pattern}: {error}");
            assert!(problem.contains("regex crate"), "{pattern}: {error}");
        }
        // And what Java refuses too.
        for pattern in [
            "^CN=(a$", "^CN=a)$", "*a", "a{2,1}", "a{", "x{,3}", r"\y", "[a", "[]a]", "a**",
            "[b-a]",
        ] {
            assert!(
                matches!(
                    refused(&format!("RULE:{pattern}/x/")),
                    RuleError::Pattern { .. }
                ),
                "{pattern}"
            );
        }
    }

    #[test]
    fn dollar_before_a_final_line_terminator_is_not_guessed() {
        // Java's `$` also matches before a final line terminator; for a DN ending in one, a
        // rule with `$` is not evaluated (the client is refused), rules without it are.
        let mapper = rules("RULE:^CN=([^,]*?)$/$1!/,DEFAULT");
        let error = mapper.principal("CN=a\n").unwrap_err();
        assert!(error.detail.is_some(), "{error}");
        assert!(error.to_string().contains("line break"));
        assert_eq!(mapper.principal("CN=a").unwrap(), "a!");
        assert_eq!(
            rules(r"RULE:^CN=(.*)\n/$1/").principal("CN=a\n").unwrap(),
            "a"
        );
    }

    #[test]
    fn empty_match_before_a_supplementary_character_is_not_guessed() {
        // Java steps into the middle of the emoji and inserts `X` between its halves.
        let error = rules("RULE:(.*?)/X/").principal("a\u{1f600}").unwrap_err();
        assert!(error.to_string().contains("outside the BMP"), "{error}");
        assert_eq!(rules("RULE:(.*)/X/").principal("a\u{1f600}").unwrap(), "XX");
    }

    #[test]
    fn subjects_through_rules() {
        let mapper = rules(
            r"RULE:^CN=([^,+]+)(\+.*)?,O=Acme$/$1/L, RULE:^1\.2\.840\.113549\.1\.9\.1=#[0-9a-f]+,CN=(.*)$/$1/, DEFAULT",
        );
        let principal = |b64| mapper.principal(&cert(b64).subject).unwrap();
        assert_eq!(principal(MULTI), "bob");
        assert_eq!(principal(EMAIL), "carol");
        assert_eq!(
            principal(PLAIN),
            r"CN=alice,OU=eng,O=Acme\, Inc.,ST=CA,C=US"
        );
    }
}
