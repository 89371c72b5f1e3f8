//! Reading scalar field values the way users' files were read by the reference (PyYAML,
//! YAML 1.1), on top of serde_yaml_ng (YAML 1.2 core schema).
//!
//! - Booleans: PyYAML's YAML 1.1 words `true True TRUE yes Yes YES on On ON` and
//!   `false False FALSE no No NO off Off OFF`. serde_yaml_ng turns only `true/false` forms
//!   into booleans and leaves `yes/on/...` as strings, and it cannot tell a quoted `"yes"`
//!   from a plain `yes`: in a boolean field both mean true. `y`/`n` are text, as in PyYAML.
//!   A null value (`debug:` with nothing after it) counts as absent.
//! - Whole numbers (port, queue_size) may be given as a number or as a string (`"20516"`);
//!   YAML 1.1 digit separators (`20_516`) are accepted. A leading zero (`020516`) is refused:
//!   PyYAML read it as octal, YAML 1.2 as decimal, so it is ambiguous.
//! - Text (name, protocol, file names) must be a string; a whole number is accepted for
//!   `name`. The intake key must be a string: a key written as a bare number may have been
//!   rewritten by the YAML reader (`0x...`, `1e5...`), so the user is asked to quote it.
//!
//! Each function returns `Err(what is wrong)`; the caller adds file, entry, field and fix.

use serde_yaml_ng::Value;

/// The value behind any `!tag`.
fn untagged(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => untagged(&tagged.value),
        other => other,
    }
}

/// `true`/`false` (or `None` for null) from a YAML 1.1 boolean.
pub(crate) fn boolean(value: &Value) -> Result<Option<bool>, String> {
    match untagged(value) {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) => match s.as_str() {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(Some(true)),
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
                Ok(Some(false))
            }
            _ => Err(format!("{} is not a boolean", describe(value))),
        },
        _ => Err(format!("{} is not a boolean", describe(value))),
    }
}

/// A whole number >= 0 from a number or a numeric string.
pub(crate) fn whole_number(value: &Value) -> Result<u64, String> {
    match untagged(value) {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else if n.as_i64().is_some() {
                Err(format!("{} is negative", describe(value)))
            } else {
                Err(format!("{} is not a whole number", describe(value)))
            }
        }
        Value::String(s) => parse_decimal(s.trim()).ok_or_else(|| match s.trim() {
            t if t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit()) => {
                format!(
                    "{} has a leading zero (the old loader read it as octal)",
                    describe(value)
                )
            }
            _ => format!("{} is not a whole number", describe(value)),
        }),
        _ => Err(format!("{} is not a whole number", describe(value))),
    }
}

/// YAML 1.1 decimal integer: `0` or `[1-9][0-9_]*`.
fn parse_decimal(text: &str) -> Option<u64> {
    let first = text.bytes().next()?;
    if text == "0" {
        return Some(0);
    }
    if !(b'1'..=b'9').contains(&first) || !text.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// A string field. Numbers are accepted only when `numbers_ok` (for names).
pub(crate) fn text(value: &Value, numbers_ok: bool) -> Result<String, String> {
    match untagged(value) {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if numbers_ok && (n.is_u64() || n.is_i64()) => Ok(n.to_string()),
        Value::Number(_) => Err(format!(
            "{} was read as a number, not as text",
            describe(value)
        )),
        Value::Bool(_) => Err(format!(
            "{} was read as a boolean, not as text",
            describe(value)
        )),
        Value::Null => Err("the value is empty".to_string()),
        _ => Err(format!("{} is not text", describe(value))),
    }
}

/// Short rendering of a value for messages: scalars as written, collections by kind.
pub(crate) fn describe(value: &Value) -> String {
    match untagged(value) {
        Value::Null => "an empty value".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let short: String = s.chars().take(60).collect();
            let more = if short.len() < s.len() { "..." } else { "" };
            format!("\"{short}{more}\"")
        }
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(_) => "a tagged value".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => panic!("test YAML {text:?} does not parse: {e}"),
        }
    }

    #[test]
    fn yaml11_true_words_read_as_true_like_pyyaml() {
        for word in [
            "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON",
        ] {
            assert_eq!(boolean(&yaml(word)), Ok(Some(true)), "{word}");
            assert_eq!(
                boolean(&yaml(&format!("\"{word}\""))),
                Ok(Some(true)),
                "quoted {word}"
            );
        }
    }

    #[test]
    fn yaml11_false_words_read_as_false_like_pyyaml() {
        for word in [
            "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF",
        ] {
            assert_eq!(boolean(&yaml(word)), Ok(Some(false)), "{word}");
        }
    }

    #[test]
    fn words_pyyaml_does_not_read_as_booleans_are_refused() {
        for word in ["y", "n", "tRuE", "1", "0", "enabled", "[true]"] {
            assert!(boolean(&yaml(word)).is_err(), "{word}");
        }
    }

    #[test]
    fn null_boolean_counts_as_absent() {
        assert_eq!(boolean(&yaml("~")), Ok(None));
        assert_eq!(boolean(&Value::Null), Ok(None));
    }

    #[test]
    fn whole_number_accepts_numbers_strings_and_separators() {
        assert_eq!(whole_number(&yaml("20516")), Ok(20516));
        assert_eq!(whole_number(&yaml("\"20516\"")), Ok(20516));
        assert_eq!(whole_number(&yaml("\" 20516 \"")), Ok(20516));
        assert_eq!(whole_number(&yaml("20_516")), Ok(20516));
        assert_eq!(whole_number(&yaml("0")), Ok(0));
    }

    #[test]
    fn whole_number_refuses_fractions_negatives_octal_lookalikes_and_words() {
        assert!(whole_number(&yaml("20516.5"))
            .unwrap_err()
            .contains("not a whole number"));
        assert!(whole_number(&yaml("-1")).unwrap_err().contains("negative"));
        assert!(whole_number(&yaml("020516"))
            .unwrap_err()
            .contains("leading zero"));
        assert!(whole_number(&yaml("abc")).is_err());
        assert!(whole_number(&yaml("\"\"")).is_err());
        assert!(whole_number(&yaml("true")).is_err());
        assert!(whole_number(&yaml("_1")).is_err());
    }

    #[test]
    fn text_accepts_numbers_only_where_allowed() {
        assert_eq!(text(&yaml("Techno1"), false), Ok("Techno1".to_string()));
        assert_eq!(text(&yaml("2024"), true), Ok("2024".to_string()));
        assert!(text(&yaml("2024"), false).unwrap_err().contains("number"));
        assert!(text(&yaml("1.5"), true).is_err());
        assert!(text(&yaml("True"), true).unwrap_err().contains("boolean"));
        assert!(text(&yaml("~"), true).unwrap_err().contains("empty"));
    }

    #[test]
    fn tagged_values_are_read_through_their_tag() {
        assert_eq!(
            text(&yaml("!custom Techno1"), false),
            Ok("Techno1".to_string())
        );
    }

    #[test]
    fn describe_shortens_long_strings() {
        let long = "x".repeat(100);
        let shown = describe(&Value::String(long));
        assert!(shown.ends_with("...\"") && shown.len() < 70);
    }
}
