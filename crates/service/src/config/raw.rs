//! Raw settings, by upper-case name, from the TOML file and then the environment.

use std::collections::BTreeMap;
use std::path::Path;

use super::declare;
use super::spec::{Kind, Spec};

#[derive(Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<String, String>,
}

/// The declared setting of this (upper-case) name.
pub fn find(name: &str) -> Option<&'static Spec> {
    declare::ALL.iter().copied().find(|spec| spec.name == name)
}

impl RawSettings {
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut raw = Self::default();
        for (k, v) in pairs {
            raw.set(k, v);
        }
        raw
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values
            .insert(key.into().to_ascii_uppercase(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Every value, by name (e.g. to pass them on as a child process's environment).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The optional TOML file, then the process environment on top; every problem at once.
    pub fn load(config_file: Option<&Path>) -> Result<Self, Vec<String>> {
        let mut raw = Self::default();
        let mut problems = Vec::new();
        if let Some(path) = config_file
            && let Err(file_problems) = raw.merge_toml_file(path)
        {
            problems.extend(file_problems);
        }
        for spec in declare::ALL {
            match std::env::var(spec.name) {
                Ok(value) => raw.set(spec.name, value),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    problems.push(spec.problem("not valid UTF-8"));
                }
            }
        }
        if problems.is_empty() {
            Ok(raw)
        } else {
            Err(problems)
        }
    }

    pub(super) fn merge_toml_file(&mut self, path: &Path) -> Result<(), Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![format!(
                "--config {}: cannot read the file: {e}",
                path.display()
            )]
        })?;
        self.merge_toml(&text, &path.display().to_string())
    }

    /// The settings of a `--config` file's text; `origin` names the file in problems.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), Vec<String>> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| vec![format!("--config {origin}: not valid TOML: {e}")])?;
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for (key, value) in table {
            let name = key.to_ascii_uppercase();
            let Some(spec) = find(&name) else {
                problems.push(format!("{name}: unknown setting in {origin}"));
                continue;
            };
            if seen.contains(&name) {
                problems.push(spec.problem(format!("set twice in {origin}")));
                continue;
            }
            seen.push(name.clone());
            match toml_text(spec, value) {
                Ok(text) => self.set(name, text),
                Err(problem) => problems.push(spec.problem(problem)),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// A TOML value as the text the environment would hold: scalars as written, an array (lists
/// only) joined with commas. The text is then checked like any other value.
fn toml_text(spec: &Spec, value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Array(items) if spec.kind == Kind::List => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) if s.contains(',') => {
                    Err(format!("the entry {s:?} contains a comma"))
                }
                toml::Value::String(s) => Ok(s),
                toml::Value::Integer(i) => Ok(i.to_string()),
                other => Err(format!("unsupported list entry {other}")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|entries| entries.join(",")),
        toml::Value::Array(_) => Err("takes one value, not an array".into()),
        other => Err(format!("unsupported TOML value {other}")),
    }
}

/// Names only for secrets: `RawSettings` holds them in the clear.
impl std::fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.values {
            match find(name) {
                Some(spec) if matches!(spec.kind, Kind::Secret | Kind::SecretUrl) => {
                    map.entry(name, &"[REDACTED]")
                }
                _ => map.entry(name, value),
            };
        }
        map.finish()
    }
}
