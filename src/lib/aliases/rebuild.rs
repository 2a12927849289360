//! `newaliases` / `sendmail -bi`: compile every table that `alias_database` names.

use std::path::Path;

use super::database::{self, Compiled};
use crate::sysexits::Result;

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
        if !FILE_TYPES.contains(&kind.to_ascii_lowercase().as_str()) {
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
