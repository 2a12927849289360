//! The seam between local delivery and alias expansion. Delivery only needs "what does
//! this local part expand to"; the `aliases` module (databases, `:include:`, owners,
//! loops) answers through [`AliasExpander`], in that module's own types.

pub use crate::aliases::{Delivery, Destination, Expansion, ExpansionError};
use crate::deliver::Dsn;

/// Alias expansion as delivery sees it. Implementations are shared by the daemon's
/// delivery threads, so they take `&self` (and lock inside if they must).
pub trait AliasExpander: Send + Sync {
    /// Expands a local part (as in the recipient address; case-insensitive). A name that
    /// is no alias expands to its own mailbox, with an empty chain.
    fn expand(&self, local_part: &str) -> Expansion;
}

/// No alias tables (`alias_maps =`): every name is its own mailbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAliases;

impl AliasExpander for NoAliases {
    fn expand(&self, local_part: &str) -> Expansion {
        Expansion {
            deliveries: vec![Delivery {
                destination: Destination::Mailbox {
                    user: local_part.to_lowercase(),
                },
                chain: Vec::new(),
                sender: None,
            }],
            failures: Vec::new(),
        }
    }
}

/// The `alias_maps` databases, shared by all delivery threads (lookups are in-memory CDB
/// reads, so one lock costs little). A database that cannot be opened, or that fails its
/// checks (truncated, corrupt), does not stop the daemon: each expansion tries again
/// and, while it fails, defers the recipient (4.3.0), so mail waits in the queue until
/// `newaliases` has been run. Reading it as a table without the names it lost would
/// bounce mail to them as unknown users.
pub struct DatabaseAliases {
    files: Vec<std::path::PathBuf>,
    options: crate::aliases::ExpandOptions,
    maps: std::sync::Mutex<Maps>,
    warn: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
    fatal: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
}

/// The open tables, the warnings about them already logged, and the error that makes
/// them unusable, once logged.
struct Maps {
    open: Option<crate::aliases::AliasMaps>,
    reported: Vec<String>,
    failing: Option<String>,
}

impl DatabaseAliases {
    /// The tables of `alias_maps`; tables that are not local files are reported to `warn`
    /// and left out, as `newaliases` does. `warn` also gets, once each time it appears,
    /// what lookups notice about a table: a database older than its source, or no
    /// database at all (Postfix logs the first at every lookup). `fatal` gets, once
    /// until the tables work again, why they cannot be used (local mail is deferred).
    pub fn from_config(
        config: &crate::config::Config,
        warn: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
        fatal: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
    ) -> crate::sysexits::Result<DatabaseAliases> {
        let tables = config.tables("alias_maps")?;
        let files = crate::aliases::rebuild::local_files(&tables, &mut |w| warn(w));
        let options = crate::aliases::ExpandOptions::from_config(config)?;
        let aliases = DatabaseAliases {
            files,
            options,
            maps: std::sync::Mutex::new(Maps {
                open: None,
                reported: Vec::new(),
                failing: None,
            }),
            warn,
            fatal,
        };
        let mut maps = aliases.maps.lock().unwrap_or_else(|e| e.into_inner());
        maps.open = crate::aliases::AliasMaps::open(&aliases.files).ok();
        aliases.report(&mut maps);
        drop(maps);
        Ok(aliases)
    }

    /// Logs the tables' warnings that are new since the last call.
    fn report(&self, maps: &mut Maps) {
        let now = maps.open.as_ref().map(|m| m.warnings()).unwrap_or_default();
        if now == maps.reported {
            return;
        }
        for warning in now.iter().filter(|w| !maps.reported.contains(w)) {
            (self.warn)(warning);
        }
        maps.reported = now;
    }

    /// Defers `local_part` because the tables cannot be used, logging why unless that
    /// was the last thing logged.
    fn unavailable(&self, maps: &mut Maps, local_part: &str, why: &str) -> Expansion {
        if maps.failing.as_deref() != Some(why) {
            (self.fatal)(&format!(
                "{why}: mail to local recipients is deferred until it is fixed (run newaliases)"
            ));
            maps.failing = Some(why.to_string());
        }
        Expansion {
            deliveries: Vec::new(),
            failures: vec![ExpansionError {
                target: local_part.to_string(),
                chain: Vec::new(),
                reason: format!("alias database unavailable: {why}"),
                dsn: Dsn::TEMP_LOCAL,
            }],
        }
    }
}

impl AliasExpander for DatabaseAliases {
    fn expand(&self, local_part: &str) -> Expansion {
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if maps.open.is_none() {
            match crate::aliases::AliasMaps::open(&self.files) {
                Ok(opened) => maps.open = Some(opened),
                Err(e) => return self.unavailable(&mut maps, local_part, &e.message),
            }
        }
        let Some(source) = maps.open.as_mut() else {
            return Expansion::default();
        };
        // A table rebuilt since, or broken since: the lookups would fail one by one.
        if let Err(e) = source.refresh() {
            return self.unavailable(&mut maps, local_part, &e.message);
        }
        let expansion = crate::aliases::expand(source, local_part, &self.options);
        maps.failing = None;
        self.report(&mut maps);
        expansion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_table_defers_and_is_logged_once_until_it_works_again() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("aliases");
        std::fs::write(&source, "team: alice\n").unwrap();
        crate::aliases::compile(&source, &mut |_| {}).unwrap();
        let database = crate::aliases::database_path(&source);
        let good = std::fs::read(&database).unwrap();
        let config = crate::config::Config::from_text(
            &format!("alias_maps = cdb:{}\n", source.display()),
            &dir.path().join("main.cf"),
        );
        let fatal = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = std::sync::Arc::clone(&fatal);
        let aliases = DatabaseAliases::from_config(
            &config,
            std::sync::Arc::new(|_: &str| {}),
            std::sync::Arc::new(move |f: &str| sink.lock().unwrap().push(f.to_string())),
        )
        .unwrap();
        let damage = || std::fs::write(&database, &good[..good.len() - 4]).unwrap();
        let deferred = |e: &Expansion| {
            e.deliveries.is_empty()
                && e.failures.len() == 1
                && e.failures[0].dsn == Dsn::TEMP_LOCAL
                && e.failures[0].reason.contains("corrupt or truncated")
        };
        damage();
        for name in ["team", "carol", "team"] {
            let e = aliases.expand(name);
            assert!(deferred(&e), "{e:?}");
        }
        assert_eq!(fatal.lock().unwrap().len(), 1);
        assert!(fatal.lock().unwrap()[0].contains(&database.display().to_string()));
        crate::aliases::compile(&source, &mut |_| {}).unwrap();
        assert_eq!(aliases.expand("team").deliveries.len(), 1);
        damage();
        assert!(deferred(&aliases.expand("team")));
        assert_eq!(fatal.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_real_expander_plugs_in() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("aliases");
        std::fs::write(
            &source,
            "team: alice, bob@example.org, |/bin/cat\nowner-team: dave\n",
        )
        .unwrap();
        let main_cf = dir.path().join("main.cf");
        let config = crate::config::Config::from_text(
            &format!(
                "alias_maps = hash:{}\nmyorigin = example.com\n",
                source.display()
            ),
            &main_cf,
        );
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = std::sync::Arc::clone(&warnings);
        let aliases = DatabaseAliases::from_config(
            &config,
            std::sync::Arc::new(move |w: &str| sink.lock().unwrap().push(w.to_string())),
            std::sync::Arc::new(|f: &str| panic!("fatal: {f}")),
        )
        .unwrap();
        // Not compiled yet: the source is read directly, and that is said once.
        let e = aliases.expand("team");
        assert!(e.failures.is_empty(), "{e:?}");
        assert_eq!(e.deliveries.len(), 3);
        aliases.expand("team");
        {
            let said = warnings.lock().unwrap();
            assert_eq!(said.len(), 1, "{said:?}");
            assert!(said[0].ends_with("run newaliases"), "{said:?}");
        }
        crate::aliases::compile(&source, &mut |_| {}).unwrap();
        let e = aliases.expand("TEAM");
        assert!(e.failures.is_empty(), "{e:?}");
        assert_eq!(e.deliveries.len(), 3);
        assert_eq!(
            e.deliveries[0].destination,
            Destination::Mailbox {
                user: "alice".into()
            }
        );
        assert_eq!(
            e.deliveries[0].sender.as_deref(),
            Some("owner-team@example.com")
        );
        assert_eq!(e.deliveries[0].chain, vec!["team".to_string()]);
        assert_eq!(
            aliases.expand("carol").deliveries[0].chain,
            Vec::<String>::new()
        );
    }
}
