//! The migrations of each backend, embedded in the binary.
//!
//! Hand-listed instead of `sqlx::migrate!`: the macro needs sqlx's `macros` feature, which
//! compiles sqlx's SQLite and PostgreSQL drivers (and SQLite's C code) a second time for the
//! compiler, a large part of a clean build. A test checks this list against the folders, and
//! `Migration::new` computes the same checksums as the macro, so databases migrated by
//! either are the same to sqlx.

use std::borrow::Cow;
use std::sync::OnceLock;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

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
];

fn build(list: Embedded) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

pub(super) fn migrator(backend: Backend) -> &'static Migrator {
    static SQLITE_MIGRATOR: OnceLock<Migrator> = OnceLock::new();
    static POSTGRES_MIGRATOR: OnceLock<Migrator> = OnceLock::new();
    match backend {
        Backend::Sqlite => SQLITE_MIGRATOR.get_or_init(|| build(SQLITE)),
        Backend::Postgres => POSTGRES_MIGRATOR.get_or_init(|| build(POSTGRES)),
    }
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
