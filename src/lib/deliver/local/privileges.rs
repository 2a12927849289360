//! Whose rights a delivery runs with, and how we take them on.
//!
//! The daemon is multi-threaded and runs as root, so it cannot `setuid` (that changes every
//! thread) and must not `fork()` without `exec` (only async-signal-safe calls are allowed in
//! such a child of a threaded parent). Two mechanisms instead:
//!
//! - **File access** (mailboxes, Maildir, `/file` targets, `.forward`): Linux keeps the
//!   file-system uid/gid and the supplementary groups per thread. [`as_identity`] switches
//!   the calling thread's `fsuid`, `fsgid` and groups to the recipient's around the file
//!   operations and restores them afterwards. While `fsuid` is not 0 the kernel also drops
//!   the thread's file capabilities (`CAP_DAC_OVERRIDE` and friends), so every open,
//!   create and mkdir is checked exactly as if the user made it, and new files belong to
//!   the user. Writes on a descriptor opened this way need no further checks.
//!   glibc's `setgroups()` changes every thread (it broadcasts with a signal), so the
//!   groups are set with the raw system call, which changes only the calling thread.
//! - **Commands**: a child made by `std::process::Command`, which sets its groups, gid and
//!   uid (in that order, with raw system calls) between `fork` and `exec`.
//!
//! Neither ever gives root's rights to a command or file delivery: uid 0 is replaced by
//! `default_privs` before it gets here (see `local/mod.rs`).

use std::io;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

/// A user as delivery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from `getgrouplist`, the primary group included).
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Identity {
    /// The passwd entry of `name`; `Ok(None)` when there is none (or the name is longer
    /// than a local part may be: see [`crate::privilege::user_by_name`]). An error means
    /// the user database could not be asked (the delivery should be deferred).
    pub fn by_name(name: &str) -> io::Result<Option<Identity>> {
        let asked = Asked::Name(name.to_string());
        if let Some(answer) = answers::recall(&asked) {
            return Ok(answer);
        }
        // getpwnam_r: safe in a threaded daemon.
        let answer = match crate::privilege::user_by_name(name) {
            Ok(Some(user)) => Some(Identity::from_user(user)),
            Ok(None) => None,
            Err(e) => return Err(io::Error::from(e)),
        };
        answers::remember(asked, answer.clone());
        Ok(answer)
    }

    /// The identity of `uid` with primary group `gid`: name, home and groups from the
    /// passwd entry when there is one, else a bare numeric identity.
    pub fn by_ids(uid: u32, gid: u32) -> Identity {
        let asked = Asked::Ids(uid, gid);
        if let Some(Some(answer)) = answers::recall(&asked) {
            return answer;
        }
        let answer = Identity::look_up_ids(uid, gid);
        answers::remember(asked, Some(answer.clone()));
        answer
    }

    fn look_up_ids(uid: u32, gid: u32) -> Identity {
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(user)) => {
                let mut id = Identity::from_user(user);
                if id.gid != gid {
                    id.gid = gid;
                    if !id.groups.contains(&gid) {
                        id.groups.insert(0, gid);
                    }
                }
                id
            }
            _ => Identity {
                name: uid.to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: PathBuf::from("/"),
                shell: PathBuf::from("/bin/sh"),
            },
        }
    }

    /// Who this process is (effective ids): the rights used for spool-level work such as
    /// creating a new mailbox or a dot-lock in a spool the users may not write.
    pub fn current() -> Identity {
        Identity::by_ids(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    fn from_user(user: User) -> Identity {
        let groups = std::ffi::CString::new(user.name.as_str())
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
            .map(|gs| gs.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|| vec![user.gid.as_raw()]);
        Identity {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
            shell: user.shell,
        }
    }
}

/// A question put to the user database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Asked {
    Name(String),
    Ids(u32, u32),
}

/// The user database's recent answers. A burst of mail to one user asked it three times
/// a message (the recipient, the spool's owner, the groups of each), and through NSS each
/// question reads `/etc/nsswitch.conf`, `/etc/passwd` and `/etc/group` and walks
/// `/run/systemd/userdb/`: about fifty system calls, a sixth of a delivery's. Answers
/// are kept for [`answers::REMEMBER`] at most, and forgotten at once when `/etc/passwd` or
/// `/etc/group` changes, so a new or removed local user is seen at the next delivery;
/// users from other sources (LDAP, systemd's dynamic users) within seconds, as with nscd.
/// Errors are never kept.
mod answers {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{LazyLock, Mutex};
    use std::time::{Duration, Instant};

    use super::{Asked, Identity};

    pub const REMEMBER: Duration = Duration::from_secs(5);
    /// Beyond this many answers the memory is cleared: it serves bursts, not a directory.
    const MOST: usize = 4096;

    /// When the two files last changed (and which files they are).
    type Stamp = [(u64, i64, i64); 2];

    struct Memory {
        stamp: Option<Stamp>,
        answers: HashMap<Asked, (Instant, Option<Identity>)>,
    }

    static MEMORY: LazyLock<Mutex<Memory>> = LazyLock::new(|| {
        Mutex::new(Memory {
            stamp: None,
            answers: HashMap::new(),
        })
    });

    fn stamp() -> Option<Stamp> {
        let of = |path: &str| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
        };
        Some([of("/etc/passwd")?, of("/etc/group")?])
    }

    /// The answer given less than [`REMEMBER`] ago, if the files have not changed since.
    pub fn recall(asked: &Asked) -> Option<Option<Identity>> {
        let now = stamp()?;
        let mut memory = memory();
        if memory.stamp != Some(now) {
            memory.answers.clear();
            memory.stamp = Some(now);
            return None;
        }
        match memory.answers.get(asked) {
            Some((at, answer)) if at.elapsed() < REMEMBER => Some(answer.clone()),
            _ => None,
        }
    }

    pub fn remember(asked: Asked, answer: Option<Identity>) {
        let mut memory = memory();
        if memory.answers.len() >= MOST {
            memory.answers.clear();
        }
        memory.answers.insert(asked, (Instant::now(), answer));
    }

    fn memory() -> std::sync::MutexGuard<'static, Memory> {
        MEMORY.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `f` with this thread's file-system identity switched to `id`, and switches back
/// whatever happens (the guard restores on unwinding too). Without root, only our own
/// identity can be taken on; anything else is a `PermissionDenied` error and `f` does not
/// run.
pub fn as_identity<T>(id: &Identity, f: impl FnOnce() -> T) -> io::Result<T> {
    let _guard = FsIdentity::switch(id)?;
    Ok(f())
}

/// The switched state of one thread; dropping it restores root's file-system identity.
struct FsIdentity {
    /// `None` when nothing was switched (we already were `id`).
    saved_groups: Option<Vec<libc::gid_t>>,
}

impl FsIdentity {
    fn switch(id: &Identity) -> io::Result<FsIdentity> {
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        if euid != 0 {
            if id.uid == euid && id.gid == egid {
                return Ok(FsIdentity { saved_groups: None });
            }
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "cannot take on the rights of uid {}: not running as root",
                    id.uid
                ),
            ));
        }
        if id.uid == 0 && id.gid == 0 {
            return Ok(FsIdentity { saved_groups: None });
        }
        let saved = thread_groups()?;
        set_thread_groups(&id.groups)?;
        let guard = FsIdentity {
            saved_groups: Some(saved),
        };
        // SAFETY: setfsgid/setfsuid take plain integers and change only this thread's
        // credentials. They return the previous id and report no errors, so the result is
        // checked by asking again with an invalid id (which changes nothing).
        unsafe {
            libc::setfsgid(id.gid);
            libc::setfsuid(id.uid);
            let now_gid = libc::setfsgid(u32::MAX) as u32;
            let now_uid = libc::setfsuid(u32::MAX) as u32;
            if now_uid != id.uid || now_gid != id.gid {
                return Err(io::Error::other(format!(
                    "cannot switch the file system identity to uid {} gid {}",
                    id.uid, id.gid
                )));
            }
        }
        Ok(guard)
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Some(groups) = self.saved_groups.take() {
            // SAFETY: as above; going back to root always succeeds for a root process.
            unsafe {
                libc::setfsuid(0);
                libc::setfsgid(0);
            }
            let _ = set_thread_groups(&groups);
        }
    }
}

fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: the first call only counts; the second fills a buffer of that size.
    unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(n as usize);
        Ok(groups)
    }
}

#[cfg(target_pointer_width = "64")]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups;
#[cfg(not(target_pointer_width = "64"))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups32;

/// setgroups(2) for the calling thread only (see the module comment). Also used in the
/// child between fork and exec, where only raw system calls are safe.
pub(super) fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice the kernel only reads.
    let rc = unsafe { libc::syscall(SYS_SETGROUPS, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether we can take on other users' rights at all.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {

    #[test]
    fn answers_are_recalled_only_for_the_same_question() {
        let me = Identity::current();
        assert_eq!(Identity::current(), me, "recalled answer is the same");
        let asked = Asked::Name("mailroom-test-no-such-user-xyz".into());
        answers::remember(asked.clone(), Some(me.clone()));
        match answers::recall(&asked) {
            // The files changed in between (another test added a user): forgotten.
            None => {}
            Some(answer) => assert_eq!(answer, Some(me)),
        }
        assert_eq!(answers::recall(&Asked::Ids(u32::MAX - 7, 1)), None);
    }

    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A recipient's local part is looked up as a user name; one of megabytes used to
    /// reach glibc, whose NSS modules copy it onto the (delivery thread's) stack.
    #[test]
    fn over_long_or_nul_names_are_unknown_users() {
        for name in [
            "a".repeat(4 << 20),
            "a".repeat(65),
            "root\0".to_string(),
            format!("{}root", "\0".repeat(100)),
        ] {
            assert_eq!(
                Identity::by_name(&name).unwrap(),
                None,
                "{} bytes",
                name.len()
            );
        }
        assert!(Identity::by_name("root").unwrap().is_some());
    }

    #[test]
    fn our_own_identity_needs_no_switch() {
        let me = Identity::current();
        let got = as_identity(&me, || 42).unwrap();
        assert_eq!(got, 42);
    }

    #[test]
    fn files_are_created_as_the_user_and_only_this_thread_changes() {
        if !is_root() {
            eprintln!("skipped: needs root to switch identities");
            return;
        }
        let nobody = Identity::by_name("nobody").unwrap().expect("user nobody");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let path = dir.path().join("made");
        let other = dir.path().join("other");
        // A thread started earlier keeps root's rights meanwhile. (A thread started while
        // switched would inherit the switched identity: never spawn inside as_identity.)
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let other_path = other.clone();
        let helper = std::thread::spawn(move || {
            wait.recv().unwrap();
            std::fs::write(&other_path, b"y").unwrap();
            done.send(()).unwrap();
        });
        as_identity(&nobody, || {
            std::fs::write(&path, b"x").unwrap();
            go.send(()).unwrap();
            finished.recv().unwrap();
            // And we cannot read root's private files.
            assert!(std::fs::read("/etc/shadow").is_err());
        })
        .unwrap();
        helper.join().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), nobody.uid);
        assert_eq!(std::fs::metadata(&other).unwrap().uid(), 0);
        // Restored.
        assert!(std::fs::read("/etc/shadow").is_ok());
    }
}
