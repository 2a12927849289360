//! Which configuration directory a program reads: `-C`/`-c DIR`, else `MAIL_CONFIG`, else
//! `/etc/mailroom` — unless the program runs set-gid or set-uid for a caller who is not
//! root, who then cannot choose (Postfix's rule: otherwise anyone could point a privileged
//! program at a `queue_directory` of their choosing).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The directory used when none is named.
pub const DEFAULT_DIR: &str = "/etc/mailroom";

/// Where the directory came from; a named directory must hold a `main.cf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirSource {
    /// `-C DIR` / `-c DIR`.
    Explicit,
    /// The `MAIL_CONFIG` environment variable.
    Environment,
    /// `/etc/mailroom`.
    Default,
}

/// Picks the configuration directory. Pure, so the set-gid rule is testable: `distrusted`
/// is [`crate::privilege::distrusts_caller`].
pub fn choose_dir(
    explicit: Option<&Path>,
    env: Option<&OsStr>,
    distrusted: bool,
) -> (PathBuf, DirSource) {
    if !distrusted {
        if let Some(dir) = explicit {
            return (dir.to_path_buf(), DirSource::Explicit);
        }
        // An empty MAIL_CONFIG is treated as unset, as an empty -C cannot be meant.
        if let Some(dir) = env.filter(|d| !d.is_empty()) {
            return (PathBuf::from(dir), DirSource::Environment);
        }
    }
    (PathBuf::from(DEFAULT_DIR), DirSource::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_wins_then_environment_then_default() {
        let env = OsStr::new("/env");
        let x = Path::new("/x");
        assert_eq!(
            choose_dir(Some(x), Some(env), false),
            (PathBuf::from("/x"), DirSource::Explicit)
        );
        assert_eq!(
            choose_dir(None, Some(env), false),
            (PathBuf::from("/env"), DirSource::Environment)
        );
        assert_eq!(
            choose_dir(None, None, false),
            (PathBuf::from(DEFAULT_DIR), DirSource::Default)
        );
        assert_eq!(
            choose_dir(None, Some(OsStr::new("")), false).1,
            DirSource::Default
        );
    }

    #[test]
    fn setgid_or_setuid_ignores_a_non_root_callers_choice() {
        let env = Some(OsStr::new("/env"));
        let x = Some(Path::new("/x"));
        assert_eq!(choose_dir(x, env, true).1, DirSource::Default);
        assert_eq!(choose_dir(None, env, true).1, DirSource::Default);
    }

    #[test]
    fn root_and_unprivileged_callers_may_choose() {
        assert_eq!(
            choose_dir(Some(Path::new("/x")), None, false).1,
            DirSource::Explicit
        );
    }
}
