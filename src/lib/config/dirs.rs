//! Which configuration directory a program reads: `-C`/`-c DIR`, else `MAIL_CONFIG`, else
//! `/etc/mailroom` — unless the program runs set-gid or set-uid for a caller who is not
//! root, who then cannot choose (Postfix's rule: otherwise anyone could point a privileged
//! program at a `queue_directory` of their choosing).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The directory used when none is named.
pub const DEFAULT_DIR: &str = "/etc/mailroom";

/// The real and effective ids of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIds {
    pub real_uid: u32,
    pub effective_uid: u32,
    pub real_gid: u32,
    pub effective_gid: u32,
}

impl ProcessIds {
    /// The ids of this process.
    pub fn current() -> ProcessIds {
        ProcessIds {
            real_uid: nix::unistd::getuid().as_raw(),
            effective_uid: nix::unistd::geteuid().as_raw(),
            real_gid: nix::unistd::getgid().as_raw(),
            effective_gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// True when the caller's choice of directory must be ignored: the process has
    /// privileges its (non-root) caller does not.
    pub fn distrusts_caller(&self) -> bool {
        let privileged = self.real_uid != self.effective_uid || self.real_gid != self.effective_gid;
        privileged && self.real_uid != 0
    }
}

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

/// Picks the configuration directory. Pure, so the set-gid rule is testable.
pub fn choose_dir(
    explicit: Option<&Path>,
    env: Option<&OsStr>,
    ids: ProcessIds,
) -> (PathBuf, DirSource) {
    if !ids.distrusts_caller() {
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

    fn ids(real_uid: u32, effective_uid: u32, real_gid: u32, effective_gid: u32) -> ProcessIds {
        ProcessIds {
            real_uid,
            effective_uid,
            real_gid,
            effective_gid,
        }
    }

    const PLAIN: ProcessIds = ProcessIds {
        real_uid: 1000,
        effective_uid: 1000,
        real_gid: 1000,
        effective_gid: 1000,
    };

    #[test]
    fn explicit_wins_then_environment_then_default() {
        let env = OsStr::new("/env");
        let x = Path::new("/x");
        assert_eq!(
            choose_dir(Some(x), Some(env), PLAIN),
            (PathBuf::from("/x"), DirSource::Explicit)
        );
        assert_eq!(
            choose_dir(None, Some(env), PLAIN),
            (PathBuf::from("/env"), DirSource::Environment)
        );
        assert_eq!(
            choose_dir(None, None, PLAIN),
            (PathBuf::from(DEFAULT_DIR), DirSource::Default)
        );
        assert_eq!(
            choose_dir(None, Some(OsStr::new("")), PLAIN).1,
            DirSource::Default
        );
    }

    #[test]
    fn setgid_or_setuid_ignores_a_non_root_callers_choice() {
        let env = Some(OsStr::new("/env"));
        let x = Some(Path::new("/x"));
        for privileged in [ids(1000, 1000, 1000, 50), ids(1000, 0, 1000, 1000)] {
            assert!(privileged.distrusts_caller());
            assert_eq!(choose_dir(x, env, privileged).1, DirSource::Default);
            assert_eq!(choose_dir(None, env, privileged).1, DirSource::Default);
        }
    }

    #[test]
    fn root_and_unprivileged_callers_may_choose() {
        let root_via_setgid = ids(0, 0, 0, 50);
        assert!(!root_via_setgid.distrusts_caller());
        assert_eq!(
            choose_dir(Some(Path::new("/x")), None, root_via_setgid).1,
            DirSource::Explicit
        );
        assert!(!PLAIN.distrusts_caller());
    }
}
