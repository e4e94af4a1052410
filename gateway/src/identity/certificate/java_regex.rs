//! Java regular expressions, translated for the regex crate. Kafka's rules are written for
//! `java.util.regex`; a pattern is run here only if the regex crate gives it the same meaning,
//! and refused with the reason otherwise.

/// A Java pattern rewritten for the regex crate.
pub(super) struct Translated {
    pub(super) rust: String,
    /// Capturing groups, numbered as Java numbers them.
    pub(super) groups: usize,
    /// Named groups: (name, number).
    pub(super) names: Vec<(String, usize)>,
    pub(super) java_dollar: bool,
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
///   line terminator (rules using them refuse such DNs, see
///   [`PrincipalRules::principal`](super::PrincipalRules::principal)).
///
/// Refused, because the regex crate lacks them or runs them differently: backreferences,
/// lookahead and lookbehind, atomic groups, possessive quantifiers, `\b` `\B` `\G` `\R` `\X`
/// `\h` `\v`, `\p{..}` classes, class intersections and nested classes, and the flags `m`,
/// `d`, `u`, `x`, `U`.
pub(super) fn translate_java_regex(pattern: &str) -> Result<Translated, String> {
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
    use super::super::test_support::{refused, rules};
    use super::super::RuleError;

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
}
