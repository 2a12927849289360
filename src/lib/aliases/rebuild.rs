//! `newaliases` / `sendmail -bi`: compile every table that `alias_database` names.

use std::path::{Path, PathBuf};

use super::database::{self, Compiled};
use crate::config::{Config, Table};
use crate::sysexits::Result;

/// `newaliases` and `sendmail -bi`: compiles every table of `alias_database`. Warnings
/// (without a program prefix) go to `warn`; the result lists each database written.
pub fn rebuild_all(config: &Config, warn: &mut dyn FnMut(&str)) -> Result<Vec<Compiled>> {
    let tables = config.tables("alias_database")?;
    rebuild_tables(
        tables.iter().map(|t| (t.kind.as_str(), t.path.as_path())),
        warn,
    )
}

/// The source files of the local file tables among `tables`; the others are reported to
/// `warn` and left out.
pub fn local_files(tables: &[Table], warn: &mut dyn FnMut(&str)) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for table in tables {
        if is_file_type(&table.kind) {
            files.push(table.path.clone());
        } else {
            warn(&format!("{table}: not a local file table, skipped"));
        }
    }
    files
}

fn is_file_type(kind: &str) -> bool {
    FILE_TYPES.iter().any(|t| t.eq_ignore_ascii_case(kind))
}

/// Table types whose source is a local file. We compile all of them to CDB (`SOURCE.cdb`)
/// so an existing `main.cf` with `hash:/etc/aliases` keeps working unchanged.
pub const FILE_TYPES: &[&str] = &["hash", "btree", "cdb", "lmdb", "dbm", "sdbm"];

/// Compiles each `(type, path)` table in order. Tables of other types (`ldap:`, `proxy:`,
/// `texthash:`...) are skipped with a warning. Stops at the first table that cannot be
/// compiled, as `postalias` does.
pub fn rebuild_tables<'a>(
    tables: impl IntoIterator<Item = (&'a str, &'a Path)>,
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<Compiled>> {
    let mut compiled = Vec::new();
    for (kind, path) in tables {
        if !is_file_type(kind) {
            warn(&format!(
                "{kind}:{}: not a local file table, skipped",
                path.display()
            ));
            continue;
        }
        compiled.push(database::compile(path, warn)?);
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_type_becomes_cdb_and_others_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = dir.path().join("one");
        let two = dir.path().join("two");
        std::fs::write(&one, "a: b\n").expect("write");
        std::fs::write(&two, "c: d\ne: f\n").expect("write");
        let mut warnings = Vec::new();
        let ldap = Path::new("/etc/postfix/ldap-aliases.cf");
        let compiled = rebuild_tables(
            [
                ("hash", one.as_path()),
                ("ldap", ldap),
                ("cdb", two.as_path()),
            ],
            &mut |w| warnings.push(w.to_string()),
        )
        .expect("compiles");
        let summary: Vec<_> = compiled
            .iter()
            .map(|c| (c.database.clone(), c.entries))
            .collect();
        assert_eq!(
            summary,
            vec![
                (dir.path().join("one.cdb"), 1),
                (dir.path().join("two.cdb"), 2)
            ]
        );
        assert_eq!(
            warnings,
            vec!["ldap:/etc/postfix/ldap-aliases.cf: not a local file table, skipped"]
        );
    }
}
