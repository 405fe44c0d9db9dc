//! The migrations of each backend, embedded in the binary, and the runner that applies them.
//!
//! Applied migrations are recorded in `_sqlx_migrations`, in the format and with the
//! checksums (SHA-384 of the SQL) of sqlx's migrator, which earlier versions of the service
//! used: a database migrated by them is recognised as it is, and one migrated by this runner
//! is valid to them. Hand-written because the store no longer depends on sqlx, and the rules
//! are few: each migration once, in order, in a transaction; a checksum that differs from
//! the recorded one, or a migration recorded that this binary does not know, is refused; on
//! PostgreSQL an advisory lock (sqlx's key) keeps replicas that start together from racing.

use sha2::{Digest, Sha384};

use super::db::{Conn, params};
use super::{Backend, StoreError};

/// (version, description, SQL), in the order of the files in `migrations/<backend>/`.
type Embedded = &'static [(i64, &'static str, &'static str)];

const SQLITE: Embedded = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "facts and epochs",
        include_str!("../../migrations/sqlite/0002_facts_and_epochs.sql"),
    ),
    (
        3,
        "claimable jobs",
        include_str!("../../migrations/sqlite/0003_claimable_jobs.sql"),
    ),
    (
        4,
        "threads by psid",
        include_str!("../../migrations/sqlite/0004_threads_by_psid.sql"),
    ),
    (
        5,
        "waiting since",
        include_str!("../../migrations/sqlite/0005_waiting_since.sql"),
    ),
    (
        6,
        "jobs by lane",
        include_str!("../../migrations/sqlite/0006_jobs_by_lane.sql"),
    ),
];

const POSTGRES: Embedded = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "facts and epochs",
        include_str!("../../migrations/postgres/0002_facts_and_epochs.sql"),
    ),
    (
        3,
        "claimable jobs",
        include_str!("../../migrations/postgres/0003_claimable_jobs.sql"),
    ),
    (
        4,
        "threads by psid",
        include_str!("../../migrations/postgres/0004_threads_by_psid.sql"),
    ),
    (
        5,
        "waiting since",
        include_str!("../../migrations/postgres/0005_waiting_since.sql"),
    ),
    (
        6,
        "jobs by lane",
        include_str!("../../migrations/postgres/0006_jobs_by_lane.sql"),
    ),
];

pub(super) fn embedded(backend: Backend) -> Embedded {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

fn create_table(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)"
        }
    }
}

/// sqlx's advisory-lock key for a database: the same lock as replicas of earlier versions.
fn lock_key(database: &str) -> i64 {
    0x3d32_ad9e * i64::from(crc32fast::hash(database.as_bytes()))
}

fn checksum(sql: &str) -> Vec<u8> {
    Sha384::digest(sql.as_bytes()).to_vec()
}

/// Applies what is not applied yet; the number applied.
pub(super) fn run(conn: &mut dyn Conn) -> Result<usize, StoreError> {
    let backend = conn.backend();
    let lock = match backend {
        Backend::Postgres => {
            let database = conn
                .query_one("SELECT current_database()", params![])?
                .text(0)?;
            let key = lock_key(&database);
            conn.execute("SELECT pg_advisory_lock($1)", params![key])?;
            Some(key)
        }
        Backend::Sqlite => None,
    };
    let result = apply_missing(conn, embedded(backend));
    if let Some(key) = lock {
        let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", params![key]);
        if let (Ok(_), Err(e)) = (&result, unlocked) {
            return Err(e);
        }
    }
    result
}

fn apply_missing(conn: &mut dyn Conn, list: Embedded) -> Result<usize, StoreError> {
    conn.batch(create_table(conn.backend()))?;
    let recorded = conn.query(
        "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
        params![],
    )?;
    for row in &recorded {
        let version = row.int(0)?;
        if row.int(1)? == 0 {
            return Err(StoreError::Migrate(format!(
                "migration {version} was left half-applied; repair the database by hand"
            )));
        }
        let Some(&(_, description, sql)) = list.iter().find(|m| m.0 == version) else {
            return Err(StoreError::Migrate(format!(
                "migration {version} was applied by a newer version of the service; run that version"
            )));
        };
        if row.bytes(2)? != checksum(sql) {
            return Err(StoreError::Migrate(format!(
                "migration {version} ({description}) was applied with different SQL"
            )));
        }
    }
    let mut applied = 0;
    for &(version, description, sql) in list {
        if recorded.iter().any(|r| r.int(0).ok() == Some(version)) {
            continue;
        }
        let started = std::time::Instant::now();
        conn.begin_write(true)?;
        let outcome = conn.batch(sql).and_then(|()| {
            insert_record(
                conn,
                version,
                description,
                sql,
                started.elapsed().as_nanos(),
            )
        });
        match outcome.and_then(|()| conn.batch("COMMIT")) {
            Ok(()) => applied += 1,
            Err(e) => {
                let _ = conn.batch("ROLLBACK");
                return Err(StoreError::Migrate(format!(
                    "migration {version} ({description}): {e}"
                )));
            }
        }
    }
    Ok(applied)
}

/// The checksum goes in as a literal: the driver interface binds integers and text only.
fn insert_record(
    conn: &mut dyn Conn,
    version: i64,
    description: &str,
    sql: &str,
    nanos: u128,
) -> Result<(), StoreError> {
    let hex = hex::encode(checksum(sql));
    let blob = match conn.backend() {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
    };
    let sql = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, TRUE, {blob}, $3)"
    );
    let nanos = i64::try_from(nanos).unwrap_or(i64::MAX);
    conn.execute(&sql, params![version, description, nanos])?;
    Ok(())
}

/// Migrations recorded as applied, and how many this binary embeds.
pub(super) fn status(conn: &mut dyn Conn) -> Result<(usize, usize), StoreError> {
    let applied = conn
        .scalar(
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE",
            params![],
        )?
        .unwrap_or(0);
    Ok((applied as usize, embedded(conn.backend()).len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in the folder is embedded, in order, with the version and description its
    /// name gives (`0002_facts_and_epochs.sql`: 2, "facts and epochs"), and nothing else is.
    #[test]
    fn the_lists_match_the_migration_folders() {
        for (folder, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = format!("{}/migrations/{folder}", env!("CARGO_MANIFEST_DIR"));
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            files.sort();
            assert_eq!(files.len(), list.len(), "{dir}: {files:?}");
            for (file, &(version, description, sql)) in files.iter().zip(list) {
                let (number, rest) = file.trim_end_matches(".sql").split_once('_').unwrap();
                assert_eq!(number.parse::<i64>().unwrap(), version, "{file}");
                assert_eq!(rest.replace('_', " "), description, "{file}");
                let on_disk = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
                assert_eq!(on_disk, sql, "{file}");
            }
        }
    }
}
