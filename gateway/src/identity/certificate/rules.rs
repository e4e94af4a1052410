//! Kafka's `ssl.principal.mapping.rules`, split, parsed and applied as Kafka's
//! `SslPrincipalMapper` does, except where Kafka would silently do something else than the
//! rules say: there this refuses. Patterns and replacements are Java's; `java_regex` and
//! `replacement` translate them.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

use super::java_regex::translate_java_regex;
use super::replacement::{compile_replacement, Part};

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
    /// The principal for a subject DN (as
    /// [`ClientCertificate::subject`](super::ClientCertificate::subject) writes it): the result
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{cert, refused, rules, EMAIL, MULTI, PLAIN};
    use super::*;

    // -----------------------------------------------------------------------------------------
    // Principal mapping rules: the cases of Kafka's SslPrincipalMapperTest
    // -----------------------------------------------------------------------------------------

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
