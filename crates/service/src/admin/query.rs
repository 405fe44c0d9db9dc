//! What the admin API's requests carry, read into typed values: the query parameters, the
//! path's PSID and job id, the optional JSON body of an action. Every problem names its field.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::store::{JobStatus, ThreadCursor};
use handover_core::State;

/// A request the API refuses, and the field that is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
/// The longest note an operator may leave with an action.
pub const MAX_NOTE_CHARS: usize = 500;

const ALL_STATES: [State; 5] = [
    State::Human,
    State::Passing,
    State::Returning,
    State::Bot,
    State::Idle,
];

/// The query string as name → value, each name one of `allowed` and given once.
pub fn params(query: &str, allowed: &[&str]) -> Result<HashMap<String, String>, FieldError> {
    let mut out = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            return Err(FieldError::new(
                name.as_ref(),
                format!(
                    "unknown query parameter; this route takes {}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
        if out.insert(name.to_string(), value.into_owned()).is_some() {
            return Err(FieldError::new(
                name.as_ref(),
                "given twice; list several values comma-separated",
            ));
        }
    }
    Ok(out)
}

/// `state=HUMAN,PASSING` (any case); every state when absent.
pub fn states(value: Option<&str>) -> Result<Vec<State>, FieldError> {
    let Some(value) = value else {
        return Ok(ALL_STATES.to_vec());
    };
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim) {
        let state = State::parse(&part.to_ascii_uppercase()).ok_or_else(|| {
            FieldError::new(
                "state",
                format!(
                    "{part:?} is not a state; expected HUMAN, PASSING, RETURNING, BOT or IDLE (several comma-separated)"
                ),
            )
        })?;
        if !out.contains(&state) {
            out.push(state);
        }
    }
    Ok(out)
}

/// `status=failed,pending` (any case); `failed` when absent. Done and cancelled jobs are not
/// listed: they are many, pruned after a week, and a thread's own jobs show them.
pub fn statuses(value: Option<&str>) -> Result<Vec<JobStatus>, FieldError> {
    let Some(value) = value else {
        return Ok(vec![JobStatus::Failed]);
    };
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim) {
        let status = match JobStatus::parse(&part.to_ascii_lowercase()) {
            Some(s @ (JobStatus::Pending | JobStatus::Running | JobStatus::Failed)) => s,
            Some(_) => {
                return Err(FieldError::new(
                    "status",
                    format!(
                        "{part:?} jobs are not listed here (see a thread's jobs); expected failed, pending or running"
                    ),
                ));
            }
            None => {
                return Err(FieldError::new(
                    "status",
                    format!(
                        "{part:?} is not a job status; expected failed, pending or running (several comma-separated)"
                    ),
                ));
            }
        };
        if !out.contains(&status) {
            out.push(status);
        }
    }
    Ok(out)
}

/// `limit=N`, 1 to [`MAX_LIMIT`]; [`DEFAULT_LIMIT`] when absent.
pub fn limit(value: Option<&str>) -> Result<i64, FieldError> {
    let Some(value) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match value.trim().parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(FieldError::new(
            "limit",
            format!("{value:?} is not a whole number from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// The `next_cursor` a page of threads ends with: opaque to callers.
pub fn encode_thread_cursor(cursor: &ThreadCursor) -> String {
    let json = serde_json::json!([cursor.state_since, cursor.page_id, cursor.psid]);
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn bad_cursor() -> FieldError {
    FieldError::new(
        "cursor",
        "not a cursor of this list; pass the next_cursor of the previous page as it was given",
    )
}

pub fn thread_cursor(value: Option<&str>) -> Result<Option<ThreadCursor>, FieldError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(value.trim())
        .map_err(|_| bad_cursor())?;
    let (state_since, page_id, psid): (i64, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
    Ok(Some(ThreadCursor {
        state_since,
        page_id,
        psid,
    }))
}

/// The `next_cursor` of a page of jobs: the last job's id (jobs are listed newest first).
pub fn job_cursor(value: Option<&str>) -> Result<Option<i64>, FieldError> {
    value
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(bad_cursor)
        })
        .transpose()
}

/// A PSID or Page id as the store keeps them: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn identifier(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not an id: 1 to 64 letters, digits, '.', '_' or '-'"),
        ))
    }
}

pub fn job_id(value: &str) -> Result<i64, FieldError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| FieldError::new("id", format!("{value:?} is not a job id (a whole number)")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    note: Option<String>,
}

/// The optional JSON body of an action, `{"note": "..."}`: the operator's words for the
/// audit trail. An empty body is no note.
pub fn note(body: &[u8]) -> Result<Option<String>, FieldError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let bad = |why: String| {
        FieldError::new(
            "body",
            format!("expected nothing or a JSON object {{\"note\": \"...\"}}: {why}"),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        // serde would read `["x"]` as the struct's fields in order.
        return Err(bad("not an object".into()));
    }
    let parsed: ActionBody = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    match parsed.note {
        Some(note) if note.chars().count() > MAX_NOTE_CHARS => Err(FieldError::new(
            "note",
            format!("longer than {MAX_NOTE_CHARS} characters"),
        )),
        Some(note) if note.chars().any(char::is_control) => Err(FieldError::new(
            "note",
            "contains control characters (a line break, a tab, …)",
        )),
        note => Ok(note.filter(|n| !n.trim().is_empty())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = params("state=HUMAN&sort=age", &["state", "limit"]).unwrap_err();
        assert_eq!(e.field, "sort");
        assert!(e.message.contains("state, limit"), "{e}");
        let e = params("state=HUMAN&state=BOT", &["state"]).unwrap_err();
        assert_eq!(e.field, "state");
        assert!(e.message.contains("twice"), "{e}");
        let ok = params("state=HUMAN%2CBOT&limit=3", &["state", "limit"]).unwrap();
        assert_eq!(ok["state"], "HUMAN,BOT");
    }

    #[test]
    fn states_are_read_in_any_case_and_bad_ones_named() {
        assert_eq!(states(None).unwrap().len(), 5);
        assert_eq!(
            states(Some("human, Passing,HUMAN")).unwrap(),
            vec![State::Human, State::Passing]
        );
        let e = states(Some("HUMAN,WAITING")).unwrap_err();
        assert_eq!(e.field, "state");
        assert!(e.message.contains("\"WAITING\""), "{e}");
        assert!(states(Some("")).is_err());
    }

    #[test]
    fn statuses_default_to_failed_and_leave_finished_jobs_out() {
        assert_eq!(statuses(None).unwrap(), vec![JobStatus::Failed]);
        assert_eq!(
            statuses(Some("PENDING,running")).unwrap(),
            vec![JobStatus::Pending, JobStatus::Running]
        );
        let done = statuses(Some("done")).unwrap_err();
        assert!(done.message.contains("not listed here"), "{done}");
        let bad = statuses(Some("stuck")).unwrap_err();
        assert!(bad.message.contains("not a job status"), "{bad}");
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("500")).unwrap(), 500);
        for bad in ["0", "501", "-1", "ten", ""] {
            assert_eq!(limit(Some(bad)).unwrap_err().field, "limit", "{bad}");
        }
    }

    #[test]
    fn a_thread_cursor_comes_back_as_it_was_given() {
        let c = ThreadCursor {
            state_since: 1_763_900_000_000,
            page_id: "958823367603818".into(),
            psid: "1534862223272449".into(),
        };
        let text = encode_thread_cursor(&c);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        assert_eq!(thread_cursor(Some(&text)).unwrap(), Some(c));
        for bad in ["x", "bm9wZQ", "%%%"] {
            assert_eq!(thread_cursor(Some(bad)).unwrap_err().field, "cursor");
        }
        assert_eq!(job_cursor(Some("42")).unwrap(), Some(42));
        assert!(job_cursor(Some("0")).is_err());
    }

    #[test]
    fn ids_and_notes_are_checked() {
        assert!(identifier("psid", "1534862223272449").is_ok());
        assert_eq!(identifier("psid", "").unwrap_err().field, "psid");
        assert!(identifier("page", "a/b").is_err());
        assert!(identifier("psid", &"1".repeat(65)).is_err());
        assert_eq!(job_id("17").unwrap(), 17);
        assert_eq!(job_id("x").unwrap_err().field, "id");
        assert_eq!(note(b"").unwrap(), None);
        assert_eq!(note(b" \n").unwrap(), None);
        assert_eq!(
            note(br#"{"note": "customer called"}"#).unwrap().as_deref(),
            Some("customer called")
        );
        assert_eq!(note(b"{}").unwrap(), None);
        assert_eq!(note(br#"{"nope": 1}"#).unwrap_err().field, "body");
        assert_eq!(note(b"not json").unwrap_err().field, "body");
        assert_eq!(note(br#"["x"]"#).unwrap_err().field, "body");
        assert_eq!(note(br#"{"note": 5}"#).unwrap_err().field, "body");
        let long = format!(r#"{{"note": "{}"}}"#, "x".repeat(MAX_NOTE_CHARS + 1));
        assert_eq!(note(long.as_bytes()).unwrap_err().field, "note");
        assert_eq!(note(br#"{"note": "a\nb"}"#).unwrap_err().field, "note");
    }
}
