//! Reading the intake files into loose entries: the main `intakes.yaml`, then
//! `EXTENDED_CONF_DIR/*.yaml` sorted by file name. Nothing is interpreted here beyond the
//! document's shape (`intakes:` holding a list); `validate` reads the fields.
//!
//! Problems found here: file missing or unreadable, YAML syntax error (with line and
//! column), a document that is not `intakes: [...]`. Warnings: unknown top-level keys,
//! `*.conf` files (rsyslog syntax, which we do not execute), `*.yml` files (not read).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::config::problem::Problem;
use crate::config::yaml11::describe;

/// One entry of an `intakes:` list, not yet validated.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub file: PathBuf,
    /// 1-based position in its file, shown as `#N` when the entry has no usable name.
    pub position: usize,
    pub value: Value,
}

/// Entries of every file read so far, with what went wrong reading them.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub entries: Vec<RawEntry>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// The main file was read and parsed (so "no intakes" is a meaningful complaint).
    pub main_readable: bool,
}

impl Loaded {
    pub fn append(&mut self, mut other: Loaded) {
        self.entries.append(&mut other.entries);
        self.problems.append(&mut other.problems);
        self.warnings.append(&mut other.warnings);
    }
}

/// Read the main intake file.
pub(crate) fn read_main(path: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            loaded.main_readable = parse_document(path, &text, &mut loaded);
        }
        Err(e) => loaded.problems.push(Problem::in_file(
            path,
            format!("cannot be read: {e}"),
            "check the path given by --config / SEKOIA_CONFIG and the file's permissions",
        )),
    }
    loaded
}

/// Read every `*.yaml` of the extended directory (sorted by name); warn about `*.conf` and
/// `*.yml` files. Other files and hidden files are ignored, and so is `main` when the
/// extended directory is the one holding the main file (it is read once, as the main file).
pub(crate) fn read_extended(dir: &Path, main: &Path) -> Loaded {
    let main = std::fs::canonicalize(main).ok();
    let mut loaded = Loaded::default();
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        // The missing directory itself is reported by `load` as a settings problem.
        Err(_) => return loaded,
    };
    let mut files: Vec<PathBuf> = listing
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .filter(|p| main.is_none() || std::fs::canonicalize(p).ok() != main)
        .collect();
    files.sort();
    for file in files {
        match file.extension().and_then(|e| e.to_str()) {
            Some("yaml") => match std::fs::read_to_string(&file) {
                Ok(text) => {
                    parse_document(&file, &text, &mut loaded);
                }
                Err(e) => loaded.problems.push(Problem::in_file(
                    &file,
                    format!("cannot be read: {e}"),
                    "fix its permissions or remove it from the extended directory",
                )),
            },
            Some("conf") => loaded.warnings.push(Problem::in_file(
                &file,
                "rsyslog syntax is not executed by sekoia-forwarder; this file is ignored",
                "describe these intakes in a *.yaml file with the intakes.yaml schema",
            )),
            Some("yml") => loaded.warnings.push(Problem::in_file(
                &file,
                "only *.yaml files are read from the extended directory; this file is ignored",
                "rename it with the .yaml extension",
            )),
            _ => {}
        }
    }
    loaded
}

/// Parse one document and append its entries. Returns false when the file could not be
/// understood at all (syntax error, wrong shape).
fn parse_document(path: &Path, text: &str, loaded: &mut Loaded) -> bool {
    let document: Value = match serde_yaml_ng::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            let message = e.to_string();
            let at = match e.location() {
                Some(l) if !message.contains(" line ") => {
                    format!(" at line {} column {}", l.line(), l.column())
                }
                _ => String::new(),
            };
            let (kind, fix) = if message.contains("invalid type") {
                ("YAML value error", "put quotes around that value")
            } else {
                (
                    "YAML syntax error",
                    "fix the YAML at that place (indentation, quotes, ':' after each field name)",
                )
            };
            loaded.problems.push(Problem::in_file(
                path,
                format!("{kind}{at}: {message}"),
                fix,
            ));
            return false;
        }
    };
    let mapping = match document {
        Value::Mapping(mapping) => mapping,
        Value::Null => {
            loaded.problems.push(Problem::in_file(
                path,
                "the file is empty",
                "add an `intakes:` list, or remove the file",
            ));
            return false;
        }
        other => {
            loaded.problems.push(Problem::in_file(
                path,
                format!("the document is {}, not a mapping", describe(&other)),
                "start the file with `intakes:` followed by a list of entries",
            ));
            return false;
        }
    };
    let mut found = false;
    for (key, value) in mapping {
        let key_text = key
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| describe(&key));
        if key_text != "intakes" {
            let hint = if strsim::jaro_winkler(&key_text.to_lowercase(), "intakes") >= 0.8 {
                "did you mean `intakes`?"
            } else {
                "remove it; only `intakes` is read at the top level"
            };
            loaded.warnings.push(Problem::in_file(
                path,
                format!("unknown top-level key `{key_text}` is ignored"),
                hint,
            ));
            continue;
        }
        found = true;
        match value {
            Value::Sequence(items) => {
                let file = path.to_path_buf();
                loaded
                    .entries
                    .extend(items.into_iter().enumerate().map(|(i, value)| RawEntry {
                        file: file.clone(),
                        position: i + 1,
                        value,
                    }));
            }
            Value::Null => {}
            other => loaded.problems.push(Problem::in_file(
                path,
                format!("`intakes` is {}, not a list", describe(&other)),
                "write each intake as a list item starting with `- name: ...`",
            )),
        }
    }
    if !found {
        loaded.problems.push(Problem::in_file(
            path,
            "there is no `intakes:` key",
            "start the file with `intakes:` followed by a list of entries",
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        parse_document(Path::new("/intakes.yaml"), text, &mut loaded);
        loaded
    }

    #[test]
    fn entries_keep_file_and_position() {
        let loaded = parse("intakes:\n- name: A\n- name: B\n");
        assert!(loaded.problems.is_empty());
        assert_eq!(loaded.entries.len(), 2);
        assert_eq!(loaded.entries[1].position, 2);
        assert_eq!(loaded.entries[1].file, PathBuf::from("/intakes.yaml"));
    }

    #[test]
    fn syntax_error_reports_line_and_column() {
        let loaded = parse("intakes:\n- name: A\n  port: [1\n");
        assert_eq!(loaded.problems.len(), 1);
        let shown = loaded.problems[0].to_string();
        assert!(shown.contains("YAML syntax error: "), "{shown}");
        assert!(shown.contains("at line 3"), "{shown}");
        assert!(shown.contains("column"), "{shown}");
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn duplicate_field_is_a_syntax_problem() {
        let loaded = parse("intakes:\n- name: A\n  name: B\n");
        assert_eq!(loaded.problems.len(), 1);
        assert!(
            loaded.problems[0].what.contains("duplicate"),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn empty_file_and_missing_intakes_key_are_problems() {
        assert!(parse("").problems[0].what.contains("empty"));
        assert!(parse("foo: 1\n").problems[0].what.contains("no `intakes:`"));
        assert!(parse("- name: A\n").problems[0]
            .what
            .contains("not a mapping"));
        assert!(parse("intakes: 3\n").problems[0]
            .what
            .contains("not a list"));
    }

    #[test]
    fn empty_intakes_list_yields_no_entry_and_no_problem_here() {
        let loaded = parse("intakes:\n");
        assert!(loaded.problems.is_empty() && loaded.entries.is_empty());
    }

    #[test]
    fn unknown_top_level_key_is_a_warning_with_suggestion() {
        let loaded = parse("intake:\n- name: A\nintakes: []\n");
        assert!(loaded.problems.is_empty());
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].fix.contains("did you mean `intakes`"));
    }

    #[test]
    fn missing_main_file_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = read_main(&dir.path().join("nope.yaml"));
        assert_eq!(loaded.problems.len(), 1);
        assert!(loaded.problems[0].what.contains("cannot be read"));
        assert!(!loaded.main_readable);
    }

    #[test]
    fn extended_dir_reads_yaml_sorted_and_warns_about_conf_and_yml() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        write("b.yaml", "intakes:\n- name: B\n").expect("write");
        write("a.yaml", "intakes:\n- name: A\n").expect("write");
        write("old.conf", "input(type=\"imtcp\")\n").expect("write");
        write("c.yml", "intakes: []\n").expect("write");
        write(".hidden.yaml", "not: [valid\n").expect("write");
        write("notes.txt", "hello\n").expect("write");
        let loaded = read_extended(dir.path(), Path::new("/nonexistent/intakes.yaml"));
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let names: Vec<_> = loaded.entries.iter().map(|e| e.file.clone()).collect();
        assert_eq!(
            names,
            vec![dir.path().join("a.yaml"), dir.path().join("b.yaml")]
        );
        assert_eq!(loaded.warnings.len(), 2);
        assert!(loaded
            .warnings
            .iter()
            .any(|w| w.file.ends_with("old.conf")
                && w.what.contains("rsyslog syntax is not executed")));
    }
}

#[cfg(test)]
mod main_file_in_extended_dir {
    use super::*;

    #[test]
    fn main_file_inside_the_extended_dir_is_not_read_twice() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("intakes.yaml");
        std::fs::write(
            &main,
            "intakes:\n- name: A\n  protocol: tcp\n  port: 1\n  intake_key: K\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("more.yaml"),
            "intakes:\n- name: B\n  protocol: tcp\n  port: 2\n  intake_key: K\n",
        )
        .unwrap();
        let loaded = read_extended(dir.path(), &main);
        assert_eq!(loaded.entries.len(), 1, "only more.yaml");
    }
}
