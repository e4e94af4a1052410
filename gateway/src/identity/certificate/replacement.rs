//! A rule's replacement, as Kafka and Java together read it. Whatever Java would throw only
//! when the rule applies is found here, when the rules are read, so that a bad rule is a
//! configuration error rather than a refused client.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Text(String),
    Group(usize),
}

/// The replacement as Java's `Matcher.appendReplacement` reads it, after Kafka's own step:
/// Kafka escapes a `$n` whose group does not exist (after dropping trailing digits, as Java
/// does) so that it stays literal. That step is reproduced to the letter, including that it
/// inserts its backslashes at positions computed on the unescaped text, so a second escape
/// lands one character early per earlier one. Whatever Java would throw when the rule applies
/// is an error here, when the rules are read.
pub(super) fn compile_replacement(
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{refused, rules};
    use super::super::RuleError;

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
}
