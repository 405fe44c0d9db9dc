//! The README's settings table is the declaration in `src/config/declare.rs`, rendered: every
//! setting in the code is in the README and vice versa, with the same default.
//!
//! `UPDATE_README=1 cargo test -p messenger-handover --test settings_table` rewrites it.

use std::collections::BTreeMap;

use messenger_handover::config::settings_table_markdown;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
const BEGIN: &str = "<!-- settings:begin -->\n";
const END: &str = "<!-- settings:end -->";
const REGENERATE: &str = "UPDATE_README=1 cargo test -p messenger-handover --test settings_table";

/// Table rows by variable name (the first cell).
fn rows(table: &str) -> BTreeMap<String, String> {
    table
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("| `")?.split_once('`')?.0;
            Some((name.to_owned(), line.to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_settings_table_is_the_declaration() {
    let readme = std::fs::read_to_string(README).expect("README.md at the workspace root");
    let (before, rest) = readme
        .split_once(BEGIN)
        .unwrap_or_else(|| panic!("README.md has no {BEGIN:?} line"));
    let (current, after) = rest
        .split_once(END)
        .unwrap_or_else(|| panic!("README.md has no {END:?} after {BEGIN:?}"));
    let expected = settings_table_markdown();
    if current == expected {
        return;
    }
    if std::env::var_os("UPDATE_README").is_some_and(|v| v == "1") {
        std::fs::write(README, format!("{before}{BEGIN}{expected}{END}{after}"))
            .expect("README.md is writable");
        eprintln!("README.md's settings table was rewritten from the declaration");
        return;
    }
    let (current_rows, expected_rows) = (rows(current), rows(&expected));
    let mut differences = Vec::new();
    for (name, row) in &expected_rows {
        match current_rows.get(name) {
            None => differences.push(format!("missing from the README: {row}")),
            Some(old) if old != row => {
                differences.push(format!("README: {old}\n  code: {row}"));
            }
            Some(_) => {}
        }
    }
    for (name, row) in &current_rows {
        if !expected_rows.contains_key(name) {
            differences.push(format!("in the README but not declared: {row}"));
        }
    }
    if differences.is_empty() {
        differences.push("the rows are the same; their order or the header differs".into());
    }
    panic!(
        "README.md's settings table differs from src/config/declare.rs; run `{REGENERATE}` to \
         rewrite it.\n{}",
        differences.join("\n")
    );
}

#[test]
fn the_rows_are_the_declared_settings() {
    let table = settings_table_markdown();
    let names: Vec<String> = rows(&table).into_keys().collect();
    let mut declared: Vec<String> = messenger_handover::config::KNOWN_SETTINGS
        .iter()
        .map(|n| n.to_string())
        .collect();
    declared.sort();
    assert_eq!(names, declared);
}
