//! One configuration problem (or warning) and the list of them that stops the start.
//!
//! A [`Problem`] says where (file, entry, field), what is wrong and how to fix it, and
//! displays on exactly one line:
//! `/intakes.yaml: intake "Techno1": field "port": 70000 is out of range; use a port between 1 and 65535`.
//!
//! How `entry` is shown: empty = the whole file; `#3` = the third entry of its file (it has no
//! usable name) shown as `intake #3`; otherwise an intake name shown as `intake "NAME"`. A
//! problem with an empty `file` is about a setting (flag or environment variable) and `entry`
//! names the setting, shown as `setting --region / REGION`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub file: PathBuf,
    pub entry: String,
    pub field: Option<String>,
    pub what: String,
    pub fix: String,
}

impl Problem {
    /// A problem with a whole file (missing, syntax error, no intakes).
    pub fn in_file(file: &Path, what: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem {
            file: file.to_path_buf(),
            entry: String::new(),
            field: None,
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// A problem with one entry (`entry` = its name, or `#N`), optionally one of its fields.
    pub fn in_entry(
        file: &Path,
        entry: &str,
        field: Option<&str>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        Problem {
            file: file.to_path_buf(),
            entry: entry.to_string(),
            field: field.map(str::to_string),
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// A problem with a setting, e.g. `setting = "--region / REGION"`.
    pub fn setting(setting: &str, what: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem {
            file: PathBuf::new(),
            entry: setting.to_string(),
            field: None,
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::with_capacity(4);
        if self.file.as_os_str().is_empty() {
            if !self.entry.is_empty() {
                parts.push(format!("setting {}", self.entry));
            }
        } else {
            parts.push(self.file.display().to_string());
            if self.entry.starts_with('#') {
                parts.push(format!("intake {}", self.entry));
            } else if !self.entry.is_empty() {
                parts.push(format!("intake \"{}\"", self.entry));
            }
        }
        if let Some(field) = &self.field {
            parts.push(format!("field \"{field}\""));
        }
        if self.fix.is_empty() {
            parts.push(self.what.clone());
        } else {
            parts.push(format!("{}; {}", self.what, self.fix));
        }
        // One line, whatever the parts contain (YAML errors, names with newlines).
        let line = parts.join(": ").replace(['\n', '\r'], " ");
        f.write_str(&line)
    }
}

/// Every problem that stops the start. Display: a header with the count, then one problem
/// per line (no trailing newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        let plural = if n == 1 { "" } else { "s" };
        write!(f, "{n} configuration problem{plural}:")?;
        for problem in &self.0 {
            write!(f, "\n{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_problem_displays_file_intake_field_what_and_fix_on_one_line() {
        let p = Problem::in_entry(
            Path::new("/intakes.yaml"),
            "Techno1",
            Some("port"),
            "70000 is out of range",
            "use a port between 1 and 65535",
        );
        assert_eq!(
            p.to_string(),
            "/intakes.yaml: intake \"Techno1\": field \"port\": 70000 is out of range; use a port between 1 and 65535"
        );
    }

    #[test]
    fn nameless_entry_is_shown_by_its_index() {
        let p = Problem::in_entry(
            Path::new("/i.yaml"),
            "#2",
            Some("name"),
            "missing",
            "add it",
        );
        assert_eq!(
            p.to_string(),
            "/i.yaml: intake #2: field \"name\": missing; add it"
        );
    }

    #[test]
    fn setting_problem_names_flag_and_variable() {
        let p = Problem::setting("--region / REGION", "\"X\" is unknown", "use FRA1");
        assert_eq!(
            p.to_string(),
            "setting --region / REGION: \"X\" is unknown; use FRA1"
        );
    }

    #[test]
    fn problem_display_never_spans_lines() {
        let p = Problem::in_file(Path::new("/i.yaml"), "bad\nthing", "fix\r\nit");
        assert!(!p.to_string().contains('\n'));
    }

    #[test]
    fn config_errors_lists_count_then_one_problem_per_line() {
        let errors = ConfigErrors(vec![
            Problem::in_file(Path::new("/a.yaml"), "one", "fix one"),
            Problem::in_file(Path::new("/a.yaml"), "two", "fix two"),
        ]);
        assert_eq!(
            errors.to_string(),
            "2 configuration problems:\n/a.yaml: one; fix one\n/a.yaml: two; fix two"
        );
        let one = ConfigErrors(vec![Problem::in_file(Path::new("/a.yaml"), "x", "")]);
        assert_eq!(one.to_string(), "1 configuration problem:\n/a.yaml: x");
    }
}
