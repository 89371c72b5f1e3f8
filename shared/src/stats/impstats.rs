//! One impstats object and its JSON text, byte for byte as rsyslog writes it.
//!
//! rsyslog (`statsobj.c`, format `json`) builds each object with libfastjson and prints it
//! with `fjson_object_to_json_string`, whose default is the *spaced* style:
//!
//! ```text
//! { "name": "input-fw(514)", "origin": "imtcp", "submitted": 12 }
//! ```
//!
//! `{`, then for each member a space, the quoted key, `": "`, the value, members separated by
//! `,`; then `" }"`. Keys and string values are escaped as libfastjson does: `"` `\` and `/`
//! get a backslash (`\/`: an object name like `input-x(*/514/IPv4)` is written
//! `input-x(*\/514\/IPv4)`), `\b \f \n \r \t` their short escapes, other bytes below 0x20
//! `\u00xx` (lower-case hex); everything else, UTF-8 included, is copied. Members keep their
//! insertion order (`name`, `origin`, then the counters in the order they were added).

use std::fmt::Write;

/// One named set of counters, as rsyslog's impstats reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsObject {
    pub name: String,
    pub origin: &'static str,
    /// Counters in output order.
    pub fields: Vec<(&'static str, u64)>,
}

impl StatsObject {
    pub fn new(name: impl Into<String>, origin: &'static str) -> Self {
        Self {
            name: name.into(),
            origin,
            fields: Vec::new(),
        }
    }

    /// Adds a counter (builder style).
    pub fn with(mut self, field: &'static str, value: u64) -> Self {
        self.fields.push((field, value));
        self
    }

    /// The counter `field`, if the object has it.
    pub fn get(&self, field: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|&(_, v)| v)
    }

    /// The object as rsyslog's `json` format prints it (no newline).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 24 * self.fields.len());
        out.push('{');
        member(&mut out, "name", |o| quoted(o, &self.name));
        out.push(',');
        member(&mut out, "origin", |o| quoted(o, self.origin));
        for (field, value) in &self.fields {
            out.push(',');
            // Writing into a String cannot fail.
            member(&mut out, field, |o| {
                let _ = write!(o, "{value}");
            });
        }
        out.push_str(" }");
        out
    }
}

fn member(out: &mut String, key: &str, value: impl FnOnce(&mut String)) {
    out.push(' ');
    quoted(out, key);
    out.push_str(": ");
    value(out);
}

/// A JSON string with libfastjson's escapes.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u00{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_libfastjson_spaced_style() {
        let o = StatsObject::new("input-fw(514)", "imtcp").with("submitted", 12);
        assert_eq!(
            o.to_json(),
            r#"{ "name": "input-fw(514)", "origin": "imtcp", "submitted": 12 }"#
        );
        let q = StatsObject::new("ruleset-fw", "core.queue")
            .with("size", 0)
            .with("discarded.full", 3);
        assert_eq!(
            q.to_json(),
            r#"{ "name": "ruleset-fw", "origin": "core.queue", "size": 0, "discarded.full": 3 }"#
        );
    }

    #[test]
    fn escapes_slashes_quotes_and_control_bytes_as_libfastjson() {
        let o = StatsObject::new("input-a\"b\\(*/514/IPv4)\t\u{1}é", "imudp");
        assert_eq!(
            o.to_json(),
            "{ \"name\": \"input-a\\\"b\\\\(*\\/514\\/IPv4)\\t\\u0001é\", \"origin\": \"imudp\" }"
        );
    }

    #[test]
    fn output_is_valid_json_with_the_same_members() {
        let o = StatsObject::new("x/y", "o").with("a.b", u64::MAX);
        let v: serde_json::Value = serde_json::from_str(&o.to_json()).unwrap();
        assert_eq!(v["name"], "x/y");
        assert_eq!(v["a.b"], u64::MAX);
    }
}
