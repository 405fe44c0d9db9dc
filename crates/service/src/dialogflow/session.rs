//! What a Dialogflow ES session name may be. A session from `/fulfillment` is stored and later
//! becomes the path of Dialogflow API calls, so it must be one of the documented forms
//! (reference, dialogflow.md §1.1 and §4.1):
//!
//! - `projects/P/agent/sessions/S`
//! - `projects/P/agent/environments/E/users/U/sessions/S`
//! - `projects/P/locations/L/agent/sessions/S`
//! - `projects/P/locations/L/agent/environments/E/users/U/sessions/S`
//!
//! with every part a plain path segment of sane length: nothing that could change the URL's
//! meaning (`/`, `..`, `?`, `#`, `%`, spaces) and nothing longer than Google allows.

/// Project ids are 6 to 30 characters; older domain-scoped ones (`example.com:my-project`)
/// are longer.
const MAX_PROJECT: usize = 100;
/// Region ids such as `europe-west2` (a DNS label, at most 63).
const MAX_LOCATION: usize = 63;
/// Environment ids (`draft` by default).
const MAX_ENVIRONMENT: usize = 64;
/// "The length of the Session ID and User ID must not exceed 36 characters" (Google's
/// `DetectIntentRequest.session`): Dialogflow makes no longer ones.
const MAX_SESSION_ID: usize = 36;
const MAX_USER_ID: usize = 36;

/// Why `session` is not a Dialogflow ES session name; `Ok` when it is one.
pub fn check(session: &str) -> Result<(), String> {
    let parts: Vec<&str> = session.split('/').collect();
    let tail: &[&str] = match parts.as_slice() {
        ["projects", project, rest @ ..] => {
            segment("the project id", project, MAX_PROJECT, is_project_char)?;
            rest
        }
        _ => return Err(forms("it does not start with `projects/<project>/`")),
    };
    let tail = match tail {
        ["locations", location, rest @ ..] => {
            let ok = !location.starts_with('-')
                && !location.ends_with('-')
                && location.len() <= MAX_LOCATION
                && !location.is_empty()
                && location
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(format!(
                    "the location is not a region id (lower-case letters, digits and `-`, at \
                     most {MAX_LOCATION} characters)"
                ));
            }
            rest
        }
        rest => rest,
    };
    let session_id = match tail {
        ["agent", "sessions", id] => id,
        [
            "agent",
            "environments",
            environment,
            "users",
            user,
            "sessions",
            id,
        ] => {
            segment(
                "the environment id",
                environment,
                MAX_ENVIRONMENT,
                is_id_char,
            )?;
            if *user != "-" {
                segment("the user id", user, MAX_USER_ID, is_id_char)?;
            }
            id
        }
        _ => return Err(forms("its path is none of the session forms")),
    };
    segment("the session id", session_id, MAX_SESSION_ID, is_id_char)
}

fn forms(why: &str) -> String {
    format!(
        "not a Dialogflow ES session name: {why} (expected projects/P/agent/sessions/S, \
         projects/P/agent/environments/E/users/U/sessions/S, or either with \
         locations/L/ after the project)"
    )
}

/// A non-empty path segment of at most `max` characters, each one `allowed`, that is not made
/// of dots alone.
fn segment(what: &str, value: &str, max: usize, allowed: fn(char) -> bool) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{what} is empty"))
    } else if value.chars().count() > max {
        Err(format!("{what} is longer than {max} characters"))
    } else if !value.chars().all(allowed) || value.chars().all(|c| c == '.') {
        Err(format!(
            "{what} has characters a path segment cannot have (letters, digits, `-`, `_`, `.`, \
             `~`, `:`, `@`, `+`, `=` are allowed)"
        ))
    } else {
        Ok(())
    }
}

fn is_project_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_')
}

/// URL-safe characters that are not separators: RFC 3986's unreserved ones, and a few
/// sub-delimiters that session ids made by integrations use.
fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | ':' | '@' | '+' | '=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms_are_sessions() {
        for ok in [
            "projects/handover-demo-4f2a1/agent/sessions/3c32f610-3f2b-4bd8-9712-43eb69c06c43",
            "projects/p/agent/sessions/s",
            "projects/p/agent/environments/draft/users/-/sessions/abc",
            "projects/p/agent/environments/production/users/user-7/sessions/abc",
            "projects/p/locations/europe-west2/agent/sessions/s",
            "projects/p/locations/global/agent/sessions/s",
            "projects/p/locations/europe-west1/agent/environments/prod/users/u/sessions/abc",
            "projects/example.com:my-project/agent/sessions/dfMessenger-123456",
            "projects/p/agent/sessions/+15551234567",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for (bad, why) in [
            ("", "does not start"),
            ("../../etc/passwd", "does not start"),
            (
                "projects/p/agent/sessions/../../x",
                "none of the session forms",
            ),
            ("projects/p/agent/sessions/..", "session id has characters"),
            ("projects/p/agent/sessions/a/b", "none of the session forms"),
            ("projects/p/agent/sessions/a b", "session id has characters"),
            (
                "projects/p/agent/sessions/s?x=1",
                "session id has characters",
            ),
            ("projects/p/agent/sessions/s#f", "session id has characters"),
            (
                "projects/p/agent/sessions/a%2Fb",
                "session id has characters",
            ),
            ("projects/p/agent/sessions/", "session id is empty"),
            ("projects//agent/sessions/s", "project id is empty"),
            (
                "projects/p/agent/sessions/s/contexts/c",
                "none of the session forms",
            ),
            (
                "projects/p/agent/users/-/sessions/s",
                "none of the session forms",
            ),
            (
                "projects/p/locations/Europe-West2/agent/sessions/s",
                "region id",
            ),
            (
                "projects/p/locations/evil.example.com/agent/sessions/s",
                "region id",
            ),
            ("projects/p/locations//agent/sessions/s", "region id"),
            (
                "projects/p/agent/environments/e/users/../sessions/s",
                "user id has",
            ),
            ("projects/p/agent/sessions/é", "session id has characters"),
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long_id = format!("projects/p/agent/sessions/{}", "a".repeat(37));
        assert!(check(&long_id).unwrap_err().contains("longer than 36"));
        let huge = format!("projects/p/agent/sessions/{}", "a".repeat(500_000));
        let err = check(&huge).unwrap_err();
        // The reason never repeats the value.
        assert!(err.len() < 200, "{err}");
        let long_project = format!("projects/{}/agent/sessions/s", "p".repeat(101));
        assert!(check(&long_project).is_err());
    }
}
