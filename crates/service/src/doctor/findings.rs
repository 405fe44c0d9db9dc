//! The rules of doctor: facts in (API answers, errors, settings), [`Finding`]s out, each ✗
//! with how to fix it. Pure: no I/O here, so every rule is unit-tested (`findings/tests.rs`).
//! One file per subject: `settings`, `page` (the token, permissions, Conversation Routing),
//! `apps` (webhook fields, `--fix`, the handover target), `graph_errors`, `dialogflow`, `store`.

mod apps;
mod dialogflow;
mod graph_errors;
mod page;
mod settings;
mod store;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use apps::*;
pub use dialogflow::*;
pub use graph_errors::*;
pub use page::*;
pub use settings::*;
pub use store::*;

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
    /// How to fix it; always set when `ok` is false.
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(text: impl Into<String>) -> Finding {
        Finding {
            ok: true,
            text: text.into(),
            fix: None,
        }
    }

    pub fn fail(text: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            ok: false,
            text: text.into(),
            fix: Some(fix.into()),
        }
    }
}

/// An id, which Graph answers as a string or a number.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A flag, which Graph answers as a boolean, a string or a number.
fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
