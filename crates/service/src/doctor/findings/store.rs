//! The store: reachable and migrated, never an in-memory SQLite database.

use std::path::{Path, PathBuf};

use super::Finding;

const MIGRATE: &str = "run `messenger-handover migrate` with the same DATABASE_URL";

/// An SQLite `DATABASE_URL` that is in memory, or whose file does not exist (`exists` asks);
/// `None` when there is a file to connect to, or the store is not SQLite.
pub fn sqlite_file_problem(database_url: &str, exists: impl Fn(&Path) -> bool) -> Option<Finding> {
    if !database_url.starts_with("sqlite:") {
        return None;
    }
    match sqlite_path(database_url) {
        None => Some(Finding::fail(
            format!(
                "DATABASE_URL={} is an in-memory SQLite database: conversations and queued jobs \
                 are lost on every restart",
                display_database_url(database_url)
            ),
            "use a file, sqlite:///path/to/handover.db (one replica), or postgres://… \
             (several), and run `messenger-handover migrate`",
        )),
        Some(path) if !exists(&path) => Some(Finding::fail(
            format!(
                "the SQLite store {} (DATABASE_URL) does not exist",
                path.display()
            ),
            format!("{MIGRATE} (it creates and migrates the file), or correct DATABASE_URL"),
        )),
        Some(_) => None,
    }
}

/// No connection to the store: `err` says why, or `None` for no answer within `waited_secs`.
pub fn store_unreachable(
    database_url: &str,
    err: Option<&dyn std::fmt::Display>,
    waited_secs: u64,
) -> Finding {
    let shown = display_database_url(database_url);
    match err {
        Some(e) => {
            let fix = if database_url.starts_with("sqlite:") {
                format!("check that the file is readable and writable, or {MIGRATE}")
            } else {
                "check DATABASE_URL (host, port, user, password, database) and that PostgreSQL \
                 is up and reachable from here"
                    .to_owned()
            };
            Finding::fail(format!("the store {shown} is not reachable: {e}"), fix)
        }
        None => Finding::fail(
            format!("the store {shown} is not reachable: no connection within {waited_secs} s"),
            "check DATABASE_URL and that the database is up and reachable from here",
        ),
    }
}

/// Connected to the store (`backend` names it): `ready` is its readiness (migrations applied).
pub fn store_finding(database_url: &str, backend: &str, ready: Result<(), String>) -> Finding {
    let shown = display_database_url(database_url);
    match ready {
        Ok(()) => Finding::pass(format!(
            "the store ({backend}, {shown}) is reachable and migrated"
        )),
        Err(problem) => Finding::fail(
            format!("the store ({backend}, {shown}) is reachable but not ready: {problem}"),
            MIGRATE,
        ),
    }
}

/// The file of an SQLite `DATABASE_URL`, or `None` for an in-memory database.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

/// An SQLite URL that never creates the file (`mode=rw` unless a mode is given).
pub fn no_create_url(url: &str) -> String {
    if !url.starts_with("sqlite:") || url.contains("mode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rw")
}

/// `DATABASE_URL` without a password, for display.
pub fn display_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
