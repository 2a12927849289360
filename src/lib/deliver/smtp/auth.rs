//! SMTP AUTH credentials from `smtp_sasl_password_maps`. lettre encodes them for the
//! mechanism (PLAIN, LOGIN).
//!
//! Postfix's tables are compiled (`postmap hash:/etc/postfix/sasl_passwd` makes
//! `sasl_passwd.db`); mailroom reads the source text file itself, so the same main.cf
//! works and no compile step can be forgotten. The file is read at each delivery, so a
//! changed password is used from the next message on. Lines are `KEY user:password`,
//! `#` comments and blank lines ignored, a line starting with white space continuing the
//! previous one (Postfix's table syntax).
//!
//! An SMTP agent process (`agent`) runs as `mail_owner`, which cannot read a password
//! file that only root may read (as it should be): it reads the tables once as it starts,
//! before it gives up root ([`ReadTable`]), and a changed file is used by the agents the
//! daemon starts after `mailroom reload`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::Table;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// The result of looking credentials up: what was found, and anything worth a warning.
#[derive(Debug, Default)]
pub struct Lookup {
    pub credentials: Option<Credentials>,
    pub warnings: Vec<String>,
}

/// A table read in advance: its entries (`None` when it could not be used) and the
/// warnings reading it gave, repeated at each lookup as if it were read then.
#[derive(Debug, Clone)]
pub struct ReadTable {
    entries: Option<Vec<(String, String)>>,
    warnings: Vec<String>,
}

/// Reads `table` now, for lookups later.
pub fn read_in_advance(table: &Table) -> ReadTable {
    let mut warnings = Vec::new();
    let entries = match table.kind.as_str() {
        "static" => None,
        _ => read_table(table, &mut warnings),
    };
    ReadTable { entries, warnings }
}

/// Finds the credentials for a server: first by `keys[0]`, then `keys[1]`... in each table
/// in turn, as Postfix looks up the next hop as written in relayhost (`[host]:port`), then
/// the host name. Keys compare case-insensitively (postmap lowercases them). A table that
/// `read[i]` holds (read in advance) is taken from there instead of its file.
pub fn lookup(tables: &[Table], read: &[ReadTable], keys: &[String]) -> Lookup {
    let mut found = Lookup::default();
    for (i, table) in tables.iter().enumerate() {
        // `static:user:password` answers every key.
        if table.kind == "static" {
            found.credentials = parse_value(&table.path.to_string_lossy());
            return found;
        }
        let entries = match read.get(i) {
            Some(done) => {
                found.warnings.extend(done.warnings.iter().cloned());
                done.entries.clone()
            }
            None => read_table(table, &mut found.warnings),
        };
        let entries = match entries {
            Some(entries) => entries,
            None => continue,
        };
        for key in keys {
            if let Some((_, value)) = entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                found.credentials = parse_value(value);
                if found.credentials.is_none() {
                    found
                        .warnings
                        .push(format!("{table}: value for \"{key}\" is not user:password"));
                }
                return found;
            }
        }
    }
    found
}

/// The table's (key, value) lines, or `None` (with a warning) when it cannot be used.
fn read_table(table: &Table, warnings: &mut Vec<String>) -> Option<Vec<(String, String)>> {
    match table.kind.as_str() {
        "hash" | "btree" | "cdb" | "lmdb" | "dbm" | "texthash" => {}
        other => {
            warnings.push(format!(
                "{table}: table type \"{other}\" is not supported for smtp_sasl_password_maps"
            ));
            return None;
        }
    }
    let path = table.path.as_path();
    if let Some(warning) = permission_warning(path) {
        warnings.push(warning);
    }
    match fs::read_to_string(path) {
        Ok(text) => Some(parse_table(&text)),
        Err(err) => {
            warnings.push(format!(
                "cannot read {}: {}",
                path.display(),
                crate::sysexits::describe_io(&err)
            ));
            None
        }
    }
}

/// A password file that anyone but its owner may read is a leak waiting to happen; say
/// so (and still use it, as Postfix does).
pub fn permission_warning(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    (meta.mode() & 0o044 != 0).then(|| {
        format!(
            "{} is readable by group or others (mode {:04o}); it holds passwords: chmod 600 it",
            path.display(),
            meta.mode() & 0o7777
        )
    })
}

fn parse_table(text: &str) -> Vec<(String, String)> {
    let mut logical: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = logical.last_mut() {
                last.push(' ');
                last.push_str(trimmed);
            }
            continue;
        }
        logical.push(trimmed.to_string());
    }
    logical
        .into_iter()
        .filter_map(|line| {
            let (key, value) = line.split_once([' ', '\t'])?;
            Some((key.to_string(), value.trim().to_string()))
        })
        .collect()
}

/// `user:password`; the password may itself contain colons.
fn parse_value(value: &str) -> Option<Credentials> {
    let (user, password) = value.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some(Credentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn table(kind: &str, path: &Path) -> Table {
        Table {
            kind: kind.into(),
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn looks_up_relayhost_as_written_then_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasl_passwd");
        fs::write(
            &path,
            "# comment\n\n[mail.isp.example]:587 alice:s3cr:et\nMAIL.isp.example\n  bob:pw\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let tables = [table("hash", &path)];
        let keys = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let found = lookup(
            &tables,
            &[],
            &keys(&["[mail.isp.example]:587", "mail.isp.example"]),
        );
        assert_eq!(
            found.credentials,
            Some(Credentials {
                user: "alice".into(),
                password: "s3cr:et".into()
            })
        );
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
        let found = lookup(
            &tables,
            &[],
            &keys(&["[mail.isp.example]:25", "mail.isp.example"]),
        );
        assert_eq!(found.credentials.unwrap().user, "bob");
        let found = lookup(&tables, &[], &keys(&["other.example"]));
        assert!(found.credentials.is_none());
    }

    #[test]
    fn warns_about_readable_files_and_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasl_passwd");
        fs::write(&path, "relay.example u:p\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let found = lookup(&[table("texthash", &path)], &[], &["relay.example".into()]);
        assert_eq!(found.credentials.unwrap().user, "u");
        assert!(found.warnings[0].contains("readable by group or others (mode 0644)"));
        let found = lookup(
            &[table("hash", &dir.path().join("missing"))],
            &[],
            &["relay.example".into()],
        );
        assert!(found.credentials.is_none());
        assert!(found.warnings[0].starts_with("cannot read"));
        let found = lookup(&[table("ldap", &path)], &[], &["relay.example".into()]);
        assert!(found.warnings[0].contains("not supported"));
    }

    #[test]
    fn tables_read_in_advance_answer_after_the_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasl_passwd");
        fs::write(&path, "relay.example u:p\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let tables = [table("hash", &path), table("ldap", &path)];
        let read: Vec<ReadTable> = tables.iter().map(read_in_advance).collect();
        fs::remove_file(&path).unwrap();
        let found = lookup(&tables, &read, &["relay.example".into()]);
        assert_eq!(found.credentials.unwrap().user, "u");
        assert!(found.warnings[0].contains("readable by group or others"));
        let found = lookup(&tables, &read, &["other.example".into()]);
        assert!(found.credentials.is_none());
        assert!(
            found.warnings[1].contains("not supported"),
            "{:?}",
            found.warnings
        );
    }

    #[test]
    fn static_tables_answer_every_key() {
        let t = Table {
            kind: "static".into(),
            path: PathBuf::from("u:p"),
        };
        let found = lookup(&[t], &[], &["anything.example".into()]);
        assert_eq!(found.credentials.unwrap().password, "p");
    }
}
