//! `exp apply NAME`: write an experiment's settings into pipeline.toml with `toml_edit`, so that it becomes
//! the default run. Only the keys whose value in the file (over the defaults) differs from the experiment's
//! are written; comments, blank lines, key order and a changed value's trailing comment are kept. A section
//! the file lacks is added at its end.

use std::path::Path;

use toml_edit::{DocumentMut, Item, Table, Value};

use super::record::Record;
use crate::error::{Error, Result};
use crate::settings::{self, Sources};

/// One key written: its value in the file before (or the default), and after.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub before: String,
    pub after: String,
}

fn text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn edit_value(v: &toml::Value) -> Result<Value> {
    Ok(match v {
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        other => return Err(Error::internal(format!("exp apply: unsupported value {other}"))),
    })
}

/// The value of a dotted key in a resolved settings tree.
fn lookup<'a>(tree: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(tree, |v, part| v.get(part))
}

/// The keys of `record` to write into the config text `before` (parsed as `file`): every setting whose
/// resolved value (defaults < file) differs from the experiment's.
fn changes(file: &Path, record: &Record) -> Result<Vec<(String, toml::Value, String)>> {
    let resolved = settings::resolve(&Sources { config: Some(file.to_path_buf()), env: vec![], sets: vec![] })?;
    let tree = toml::Value::try_from(&resolved.settings).map_err(Error::internal)?;
    let mut out = Vec::new();
    for (key, cell) in record.settings() {
        let Some(current) = lookup(&tree, key) else {
            tracing::warn!("exp apply: {key} is not a setting of this coltrast version; skipped");
            continue;
        };
        let raw = cell.to_string();
        let want = settings::typed_value(key, &raw)?;
        if text(current) != text(&want) {
            out.push((key.to_string(), want, text(current)));
        }
    }
    Ok(out)
}

/// Set `key` (dotted) in the document, keeping the old value's comments and layout.
pub fn set_key(doc: &mut DocumentMut, key: &str, value: &toml::Value) -> Result<()> {
    let mut new = edit_value(value)?;
    let parts: Vec<&str> = key.split('.').collect();
    let (last, sections) = parts.split_last().ok_or_else(|| Error::internal("empty key"))?;
    let mut table: &mut Table = doc.as_table_mut();
    for s in sections {
        if !table.contains_key(s) {
            let mut t = Table::new();
            t.set_implicit(false);
            table.insert(s, Item::Table(t));
        }
        table = table[*s]
            .as_table_mut()
            .ok_or_else(|| Error::config("pipeline.toml", key, format!("[{s}] is not a table")))?;
    }
    match table.get_mut(last).and_then(|i| i.as_value_mut()) {
        Some(old) => {
            *new.decor_mut() = old.decor().clone();
            *old = new;
        }
        None => {
            table.insert(last, Item::Value(new));
        }
    }
    Ok(())
}

/// Write the experiment's differing settings into `file` (created when missing), atomically; then check that
/// the file now resolves to the experiment's settings. Returns what changed.
pub fn apply(file: &Path, record: &Record) -> Result<Vec<Change>> {
    let before = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(file, e)),
    };
    let mut doc: DocumentMut = before
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::config(file.display().to_string(), "", e.message().to_string()))?;
    if !file.exists() {
        crate::fsutil::write_atomic(file, b"")?;
    }
    let todo = changes(file, record)?;
    let mut done = Vec::new();
    for (key, value, was) in &todo {
        set_key(&mut doc, key, value)?;
        done.push(Change { key: key.clone(), before: was.clone(), after: text(value) });
    }
    if !todo.is_empty() {
        crate::fsutil::write_atomic(file, doc.to_string().as_bytes())?;
    }
    // The file must now give the experiment's settings.
    let after = settings::resolve(&Sources { config: Some(file.to_path_buf()), env: vec![], sets: vec![] })?;
    let tree = toml::Value::try_from(&after.settings).map_err(Error::internal)?;
    for (key, cell) in record.settings() {
        if let Some(now) = lookup(&tree, key) {
            let want = settings::typed_value(key, &cell.to_string())?;
            if text(now) != text(&want) {
                return Err(Error::internal(format!(
                    "{}: {key} is {} after apply, expected {}",
                    file.display(),
                    text(now),
                    text(&want)
                )));
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exp::record::Cell;

    const FILE: &str = "# My pipeline.\n\n[chunk]\n# How documents are cut.\nstrategy = \"sections\"  # the default\nsimilarity_threshold = 0.7\n\n[train]\n# CPU only here.\ndevice = \"cpu\"\n";

    fn record(pairs: &[(&str, Cell)]) -> Record {
        let defaults = toml::Value::try_from(settings::Settings::default()).unwrap();
        let mut r = Record::default();
        fn walk(prefix: &str, v: &toml::Value, r: &mut Record) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        walk(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, r)
                    }
                }
                other => r.set(format!("settings.{prefix}"), Cell::from_toml(other)),
            }
        }
        walk("", &defaults, &mut r);
        r.set("settings.train.device", Cell::Str("cpu".into()));
        for (k, v) in pairs {
            r.set(format!("settings.{k}"), v.clone());
        }
        r
    }

    #[test]
    fn apply_writes_only_differences_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pipeline.toml");
        std::fs::write(&file, FILE).unwrap();
        let r = record(&[
            ("chunk.strategy", Cell::Str("semantic".into())),
            ("chunk.similarity_threshold", Cell::Float(0.5)),
            ("mine.num_negatives", Cell::Int(1)),
        ]);
        let changes = apply(&file, &r).unwrap();
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["chunk.similarity_threshold", "chunk.strategy", "mine.num_negatives"]);
        assert_eq!(
            changes[0],
            Change { key: "chunk.similarity_threshold".into(), before: "0.7".into(), after: "0.5".into() }
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            "# My pipeline.\n\n[chunk]\n# How documents are cut.\nstrategy = \"semantic\"  # the default\nsimilarity_threshold = 0.5\n\n[train]\n# CPU only here.\ndevice = \"cpu\"\n\n[mine]\nnum_negatives = 1\n"
        );
        // applying again changes nothing
        assert!(apply(&file, &r).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }

    #[test]
    fn apply_creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pipeline.toml");
        let r = record(&[("mine.num_negatives", Cell::Int(5))]);
        let changes = apply(&file, &r).unwrap();
        // train.device = "cpu" differs from the default "auto" too
        assert_eq!(changes.len(), 2);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("[mine]\nnum_negatives = 5\n"), "{text}");
    }
}
