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
//!
//! One module per step, so that each can be read against the Java or Kafka code it mirrors:
//!
//! - `x509`: [`parse_certificate`], [`ClientCertificate`] and [`CertificateError`]; walks the
//!   certificate to its validity and subject, and reads `notAfter`.
//! - `der`: the strict DER reader underneath, kept apart because every bound on untrusted
//!   input lives there.
//! - `subject`: the subject Name as OpenJDK's RFC 2253 writer formats it.
//! - `rules`: [`PrincipalRules`], [`RuleError`] and [`NoRuleApplies`]; Kafka's rule list, split,
//!   parsed and applied.
//! - `replacement`: a rule's replacement, read as Kafka escapes it and Java's
//!   `Matcher.appendReplacement` reads it.
//! - `java_regex`: a rule's pattern translated from `java.util.regex` to the regex crate, or
//!   refused.

mod der;
mod java_regex;
mod replacement;
mod rules;
mod subject;
mod x509;

/// The test certificates and helpers that the modules' tests share.
#[cfg(test)]
mod test_support;

pub use rules::{NoRuleApplies, PrincipalRules, RuleError};
pub use x509::{parse_certificate, CertificateError, ClientCertificate};
