//! A small, strict DER reader: just what reading an X.509 certificate takes, and no X.509
//! crate. The input comes from a client, so this is where every bound is kept: lengths are
//! checked against what contains them, and nothing recurses on the input's nesting.

use super::x509::CertificateError;

pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const OBJECT_IDENTIFIER: u8 = 0x06;
pub(super) const UTF8_STRING: u8 = 0x0c;
pub(super) const PRINTABLE_STRING: u8 = 0x13;
pub(super) const T61_STRING: u8 = 0x14;
pub(super) const IA5_STRING: u8 = 0x16;
pub(super) const UTC_TIME: u8 = 0x17;
pub(super) const GENERALIZED_TIME: u8 = 0x18;
pub(super) const GENERAL_STRING: u8 = 0x1b;
pub(super) const BMP_STRING: u8 = 0x1e;
pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const SET: u8 = 0x31;
pub(super) const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed

fn der_error(offset: usize, problem: &'static str) -> CertificateError {
    CertificateError::Der { offset, problem }
}

/// A window `[pos, end)` on the certificate; offsets stay absolute so errors can point at bytes.
#[derive(Clone, Copy)]
pub(super) struct Reader<'a> {
    der: &'a [u8],
    pub(super) pos: usize,
    end: usize,
}

/// One DER element: its tag, where it starts, where its contents start, and where it ends.
#[derive(Clone, Copy)]
pub(super) struct Tlv<'a> {
    der: &'a [u8],
    pub(super) tag: u8,
    pub(super) start: usize,
    body: usize,
    end: usize,
}

impl<'a> Tlv<'a> {
    /// The whole encoding: tag, length and contents.
    pub(super) fn raw(&self) -> &'a [u8] {
        self.der.get(self.start..self.end).unwrap_or_default()
    }

    pub(super) fn contents(&self) -> &'a [u8] {
        self.der.get(self.body..self.end).unwrap_or_default()
    }

    /// The elements inside a constructed element.
    pub(super) fn reader(&self) -> Reader<'a> {
        Reader {
            der: self.der,
            pos: self.body,
            end: self.end,
        }
    }
}

impl<'a> Reader<'a> {
    pub(super) fn new(der: &'a [u8]) -> Self {
        Reader {
            der,
            pos: 0,
            end: der.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn byte(&self, at: usize) -> Option<u8> {
        if at < self.end {
            self.der.get(at).copied()
        } else {
            None
        }
    }

    pub(super) fn peek_tag(&self) -> Option<u8> {
        self.byte(self.pos)
    }

    /// The next element, whatever its tag.
    pub(super) fn read(&mut self) -> Result<Tlv<'a>, CertificateError> {
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
    pub(super) fn expect(
        &mut self,
        tag: u8,
        what: &'static str,
    ) -> Result<Tlv<'a>, CertificateError> {
        if self.peek_tag() != Some(tag) {
            return Err(CertificateError::Structure {
                offset: self.pos,
                expected: what,
            });
        }
        self.read()
    }

    pub(super) fn finish(&self, what: &'static str) -> Result<(), CertificateError> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{self, base64, der_problem, GENERALIZED, PLAIN};
    use super::*;

    // -----------------------------------------------------------------------------------------
    // Malformed DER (through parse_certificate, the only way in)
    // -----------------------------------------------------------------------------------------

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
        let subject = test_support::name(&der).unwrap();
        assert!(subject.starts_with("CN=#3082"), "{}", &subject[..20]);
        assert_eq!(subject.len(), "CN=#".len() + 2 * value.len());
    }

    /// `content` in one element with `tag`.
    fn nested_in(tag: u8, content: &[u8]) -> Vec<u8> {
        [header(tag, content.len()), content.to_vec()].concat()
    }
}
