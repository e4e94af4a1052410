//! The subject Name as Kafka's rules see it: Java's `X500Principal.getName()`, which is RFC 2253
//! as OpenJDK writes it, quirks included. Any difference here would make a Kafka ACL name a
//! different client, so each quirk is reproduced, not corrected.

use std::fmt::Write as _;

use super::der::{
    Tlv, BMP_STRING, GENERAL_STRING, IA5_STRING, OBJECT_IDENTIFIER, PRINTABLE_STRING, SEQUENCE,
    SET, T61_STRING, UTF8_STRING,
};
use super::x509::CertificateError;

/// A Name as Java's `X500Name.getRFC2253Name()` writes it: RDNs last to first, joined with
/// `,`; the attributes of a multi-valued RDN in their DER order (Java does not sort them here),
/// joined with `+`. An empty RDN (which DER forbids but Java reads) is an empty string.
pub(super) fn rfc2253_name(name: Tlv<'_>) -> Result<String, CertificateError> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        cert, name, BMP, DC_UID, EMAIL, ESCAPES, GENERALIZED, MULTI, PLAIN, UTF8,
    };
    use super::*;

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
}
