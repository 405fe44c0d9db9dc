//! Typed reads of declared settings. Problems are collected, not returned: every bad value
//! is reported at once, one line naming the variable, and reads on as its default.

use std::str::FromStr;

use super::RawSettings;
use super::spec::{IfUnset, Spec, split_list};
use crate::secret::Secret;

pub(super) struct Reader<'a> {
    raw: &'a RawSettings,
    pub problems: Vec<String>,
}

/// A raw value after its check: normalized, or `Bad` once its problem is recorded.
enum Value {
    Unset,
    Bad,
    Good(String),
}

impl<'a> Reader<'a> {
    pub fn new(raw: &'a RawSettings) -> Self {
        Self {
            raw,
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, spec: &Spec, what: impl std::fmt::Display) {
        self.problems.push(spec.problem(what));
    }

    /// The raw value, trimmed; `None` when unset or empty.
    fn given(&self, spec: &Spec) -> Option<&'a str> {
        self.raw
            .get(spec.name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn read(&mut self, spec: &Spec) -> Value {
        let Some(text) = self.given(spec) else {
            return Value::Unset;
        };
        match spec.check(text) {
            Ok(value) => Value::Good(value),
            Err(problem) => {
                self.problem(spec, problem);
                Value::Bad
            }
        }
    }

    /// Given a value at all (good or bad).
    pub fn is_set(&self, spec: &Spec) -> bool {
        self.given(spec).is_some()
    }

    /// A setting with a default: its value, or the default when unset or bad.
    pub fn value(&mut self, spec: &Spec) -> String {
        let IfUnset::Default(default) = spec.if_unset else {
            unreachable!(
                "{} has no default: read it with optional or required",
                spec.name
            )
        };
        match self.read(spec) {
            Value::Good(value) => value,
            Value::Unset | Value::Bad => default.to_owned(),
        }
    }

    /// A setting without a default: `None` when unset (or bad, after its problem).
    pub fn optional(&mut self, spec: &Spec) -> Option<String> {
        match self.read(spec) {
            Value::Good(value) => Some(value),
            Value::Unset | Value::Bad => None,
        }
    }

    /// A required setting; unset is a problem. Empty when unset or bad.
    pub fn required(&mut self, spec: &Spec) -> String {
        let IfUnset::Required(meaning) = spec.if_unset else {
            unreachable!("{} is not declared required", spec.name)
        };
        match self.read(spec) {
            Value::Good(value) => value,
            Value::Unset => {
                self.problem(spec, format_args!("required ({meaning})"));
                String::new()
            }
            Value::Bad => String::new(),
        }
    }

    pub fn secret(&mut self, spec: &Spec) -> Option<Secret> {
        self.optional(spec).map(Secret::new)
    }

    pub fn required_secret(&mut self, spec: &Spec) -> Secret {
        Secret::new(self.required(spec))
    }

    /// A number in its declared range, as the field's type.
    pub fn number<T: TryFrom<u64>>(&mut self, spec: &Spec) -> T {
        let value = self.value(spec);
        // Only a declared range that does not fit the type fails here, never input: the
        // config tests read both ends of every range.
        value
            .parse::<u64>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .unwrap_or_else(|| panic!("{}: the declared range does not fit the type", spec.name))
    }

    pub fn list(&mut self, spec: &Spec) -> Vec<String> {
        split_list(&self.value(spec))
    }

    /// One of the declared choices, as the field's type.
    pub fn choice<T: FromStr>(&mut self, spec: &Spec) -> T {
        let value = self.value(spec);
        // Only a declared choice the type does not know fails here, never input: the config
        // tests read every choice.
        value
            .parse()
            .unwrap_or_else(|_| panic!("{}: the declared choice {value:?} is unknown", spec.name))
    }
}
