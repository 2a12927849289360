//! Running set-gid for a caller who is not root: `sendmail` and `mailq` are installed
//! setgid `mailroom` (the `setgid_group` parameter), like Postfix's `postdrop` and
//! `postqueue` are setgid `postdrop`. The group lets them do exactly two things: create
//! and rename files in `maildrop/` (mode 1730), and read envelopes in the other queue
//! directories (mode 0750, files 0640, group `mailroom`) for `mailq`.
//!
//! What a set-gid program does with it, in order:
//!
//! 1. At start, before anything reads the environment: [`sanitize_environment`] clears it
//!    but for the locale and time zone (a `TZ` that names a file outside the zone
//!    database goes too), and sets a fixed `PATH`. `MAIL_CONFIG` and `-C`
//!    are ignored for such a caller (`config::dirs`), so the queue is always the real one.
//! 2. Submission: the group is effective until the temporary file is open in
//!    `maildrop/` (the header block has been read by then: `-t` takes the recipients
//!    from it, and they go into the file's envelope), then [`suspend_group`]ed (effective gid = real gid; the saved gid keeps
//!    it) while the message is read from the caller and written through the already open
//!    descriptor, and resumed only for the rename into place (a rename in `maildrop/`
//!    needs write and search permission on it, which only the group has) or for removing
//!    the temporary file on failure. Right after the rename, `sendmail` drops the group
//!    for good ([`drop_group`]: real, effective and saved gid = the real gid), before any
//!    other work (waking the daemon, reporting).
//! 3. Modes that need no group (`-bv`) drop it before they start; modes reserved to root
//!    (`-bi`, `-q`, `-bd`, `-bD`) refuse a caller who is not root with exit 77.
//!
//! Everything here is a no-op in a process that is not set-id, so the same code runs
//! unprivileged in tests and for root.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::{Gid, getresgid, setegid, setresgid};

use crate::sysexits::{Error, ExitCode, Result};

/// The `PATH` a set-id program runs with, whatever its caller's was.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether a variable of the caller's environment survives in a set-id program: the time
/// zone and locale only (they change how dates and messages are written, nothing else).
pub fn is_safe_variable(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    matches!(name, "TZ" | "LANG" | "LANGUAGE") || name.starts_with("LC_")
}

/// Whether the caller's `name=value` survives in a set-id program: a
/// [`is_safe_variable`], and for `TZ` only a zone name (`Europe/Paris`, `:UTC`, a POSIX
/// rule such as `CET-1CEST`) or a file of the system's zone database. A `TZ` that names
/// another file (`/home/me/zone`, `:../../x`) would make the program open and read that
/// file while it holds the group: chrono reads `TZ` files itself, without the C library's
/// set-id checks, and a FIFO or `/dev/zero` there would hang it. Such a `TZ` is dropped
/// and the system's zone is used.
pub fn keeps_variable(name: &OsStr, value: &OsStr) -> bool {
    if !is_safe_variable(name) {
        return false;
    }
    name != "TZ" || is_zone_name(value)
}

/// Where an absolute `TZ` may point: the zone database and the system's zone file, as
/// the C library allows for set-id programs (glibc's `__tzfile_read`).
const ZONE_DIRECTORY: &str = "/usr/share/zoneinfo/";
const SYSTEM_ZONE: &str = "/etc/localtime";

/// A `TZ` value that cannot make anyone open a file outside the zone database: relative
/// names are looked up only inside it, absolute ones must lie in it, and no `..` may
/// climb out of it.
fn is_zone_name(value: &OsStr) -> bool {
    let Some(value) = value.to_str() else {
        return false;
    };
    let name = value.strip_prefix(':').unwrap_or(value);
    if name.split('/').any(|part| part == "..") {
        return false;
    }
    !name.starts_with('/') || name == SYSTEM_ZONE || name.starts_with(ZONE_DIRECTORY)
}

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

    /// True when the process has privileges its (non-root) caller does not: the caller's
    /// environment and choice of configuration directory must be ignored.
    pub fn distrusts_caller(&self) -> bool {
        let privileged = self.real_uid != self.effective_uid || self.real_gid != self.effective_gid;
        privileged && self.real_uid != 0
    }
}

/// Set once a process has been seen to run set-id for an ordinary caller: giving up the
/// group later must not make the caller trusted again (and `-C` honoured).
static DISTRUSTED: AtomicBool = AtomicBool::new(false);

/// Whether this process runs (or ran, before [`drop_group`]) with privileges its caller
/// does not have (set-gid or set-uid, called by someone other than root).
pub fn distrusts_caller() -> bool {
    if DISTRUSTED.load(Ordering::Relaxed) {
        return true;
    }
    let now = ProcessIds::current().distrusts_caller();
    if now {
        DISTRUSTED.store(true, Ordering::Relaxed);
    }
    now
}

/// Clears the environment of a set-id program run by a caller who is not root, but for
/// the variables [`keeps_variable`] keeps, and sets `PATH` to [`SAFE_PATH`]. Call first thing in `main`,
/// before any thread starts. Returns whether it did anything.
pub fn sanitize_environment() -> bool {
    if !distrusts_caller() {
        return false;
    }
    let unsafe_names: Vec<_> = std::env::vars_os()
        .filter(|(name, value)| !keeps_variable(name, value))
        .map(|(name, _)| name)
        .collect();
    for name in unsafe_names {
        // SAFETY: called at the start of main, before any other thread exists, so no one
        // reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("PATH", SAFE_PATH) };
    true
}

/// Makes sure descriptors 0, 1 and 2 are open, putting `/dev/null` where one is closed,
/// as Postfix's sendmail does (and the Rust runtime, which `sendmail` skips). A set-gid
/// program started with, say, stderr closed would otherwise get descriptor 2 for the
/// first file it opens (a queue file) and write its complaints into it. An error means
/// `/dev/null` could not be opened: nothing is safe to go on with.
pub fn open_standard_descriptors() -> std::io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the descriptor's flags; it fails only when the
        // descriptor is not open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // The lowest free descriptor is the closed one: those below it are open by now.
        // Not close-on-exec (as std would open it): it stands for a standard descriptor
        // that programs we start inherit.
        // SAFETY: a NUL-terminated path and plain flags.
        let opened = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if opened == -1 {
            return Err(std::io::Error::last_os_error());
        }
        if opened != fd {
            // SAFETY: `opened` is the descriptor just opened, owned by nobody else.
            unsafe { libc::close(opened) };
            return Err(std::io::Error::other(format!(
                "/dev/null opened as descriptor {opened}, not {fd}"
            )));
        }
    }
    Ok(())
}

/// While alive, the set-gid group is not effective (it stays the saved gid); dropping
/// the guard makes it effective again. See the module documentation for when.
pub struct SuspendedGroup {
    group: Option<Gid>,
}

/// Makes the real gid the effective one, keeping the set-gid group as the saved gid so
/// that it can come back. A no-op (the guard does nothing) when effective = real.
pub fn suspend_group() -> SuspendedGroup {
    let Ok(ids) = getresgid() else {
        return SuspendedGroup { group: None };
    };
    if ids.effective == ids.real || setegid(ids.real).is_err() {
        return SuspendedGroup { group: None };
    }
    SuspendedGroup {
        group: Some(ids.effective),
    }
}

impl Drop for SuspendedGroup {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            // Cannot fail: the group is our saved gid. If it did, the rename that follows
            // fails with EACCES and the caller is told; nothing is lost.
            let _ = setegid(group);
        }
    }
}

/// Gives up the set-gid group for good: real, effective and saved gid all become the real
/// gid, and this is checked. A no-op when the process is not set-gid.
pub fn drop_group() -> Result<()> {
    // Remember that the caller is not trusted before the evidence goes.
    distrusts_caller();
    let ids = getresgid().map_err(|e| Error::new(ExitCode::OsErr, format!("getresgid: {e}")))?;
    if ids.real == ids.effective && ids.real == ids.saved {
        return Ok(());
    }
    let fail = |e: nix::Error| Error::new(ExitCode::OsErr, format!("setresgid: {e}"));
    setresgid(ids.real, ids.real, ids.real).map_err(fail)?;
    let now = getresgid().map_err(fail)?;
    if now.effective != ids.real || now.saved != ids.real {
        return Err(Error::new(
            ExitCode::OsErr,
            "could not give up the set-gid group",
        ));
    }
    Ok(())
}

/// Refuses, with exit 77 (EX_NOPERM), a caller who is not root: the real uid, who ran
/// the program whatever set-id bits it carries. Every program asks here; `refusal` is
/// the message in the program's own words, which scripts and tests know (`postsuper`'s
/// are Postfix's).
pub fn require_root(refusal: &str) -> Result<()> {
    if nix::unistd::getuid().is_root() {
        Ok(())
    } else {
        Err(Error::perm(refusal))
    }
}

/// The unprivileged account that every process parsing bytes from the network runs as
/// (the SMTP server sessions, the SMTP client and its DNS lookups), and the owner of the
/// queue's directories and files: Postfix's `mail_owner`. Never root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailOwner {
    pub name: String,
    pub uid: u32,
    /// The primary group: the only group the account keeps once dropped to.
    pub gid: u32,
}

impl MailOwner {
    /// The account `name` from the password database. Refused when there is none, or
    /// when it is the super-user (uid 0) or in root's group (gid 0): running "without
    /// root" as root would be no separation at all.
    pub fn lookup(name: &str) -> Result<MailOwner> {
        let user = user_by_name(name)
            .map_err(|e| Error::temp(format!("mail_owner: cannot look up user \"{name}\": {e}")))?
            .ok_or_else(|| {
                Error::config(format!(
                    "mail_owner: no user \"{name}\"; create it (useradd --system --gid mailroom \
                     --no-create-home --shell /usr/sbin/nologin {name}) or set mail_owner"
                ))
            })?;
        if user.uid.is_root() || user.gid.as_raw() == 0 {
            return Err(Error::config(format!(
                "mail_owner: user \"{name}\" has uid {} and gid {}: it must be neither root \
                 nor in root's group",
                user.uid, user.gid
            )));
        }
        Ok(MailOwner {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// Becomes this account for good, for the whole process: no supplementary groups,
    /// then real, effective and saved gid, then uid (in that order: once the uid is not 0
    /// the groups can no longer change). Checked afterwards, including that root cannot
    /// be taken back. Called by a process that has read what it needs as root (its
    /// configuration, a TLS key) and is about to parse network input. A process that is
    /// not root cannot change users: it runs on as itself and `Ok(false)` says so.
    pub fn become_owner(&self) -> Result<bool> {
        use nix::unistd::{Uid, getresuid, setgroups, setresuid};
        if !nix::unistd::geteuid().is_root() {
            return Ok(false);
        }
        let fail = |what: &str, e: nix::Error| {
            Error::new(
                ExitCode::OsErr,
                format!("{what} (mail_owner {}): {e}", self.name),
            )
        };
        let gid = Gid::from_raw(self.gid);
        let uid = Uid::from_raw(self.uid);
        // glibc applies these to every thread of the process, as wanted here.
        setgroups(&[]).map_err(|e| fail("setgroups", e))?;
        setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
        setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
        let uids = getresuid().map_err(|e| fail("getresuid", e))?;
        let gids = getresgid().map_err(|e| fail("getresgid", e))?;
        let groups = nix::unistd::getgroups().map_err(|e| fail("getgroups", e))?;
        let dropped = [uids.real, uids.effective, uids.saved] == [uid; 3]
            && [gids.real, gids.effective, gids.saved] == [gid; 3]
            && groups.iter().all(|g| *g == gid)
            && nix::unistd::setuid(Uid::from_raw(0)).is_err();
        if !dropped {
            return Err(Error::new(
                ExitCode::OsErr,
                format!("could not become mail_owner {}", self.name),
            ));
        }
        Ok(true)
    }
}

/// The passwd entry of the user `name` (`getpwnam_r`); `Ok(None)` when there is none.
/// Every lookup of a user by name goes through here, because names come from outside (a
/// recipient's local part, `sendmail -bv`'s arguments): one longer than an RFC 5321 local
/// part ([`MAX_LOCAL_PART_LEN`] bytes) or holding a NUL is nobody's, and never reaches
/// the C library, whose NSS modules copy the name onto the stack (glibc with systemd's
/// module aborts on a name of megabytes, or overflows a thread's stack).
///
/// [`MAX_LOCAL_PART_LEN`]: crate::address::MAX_LOCAL_PART_LEN
pub fn user_by_name(name: &str) -> nix::Result<Option<nix::unistd::User>> {
    if name.is_empty() || name.len() > crate::address::MAX_LOCAL_PART_LEN || name.contains('\0') {
        return Ok(None);
    }
    nix::unistd::User::from_name(name)
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

    #[test]
    fn setgid_or_setuid_for_a_non_root_caller_distrusts_it() {
        assert!(ids(1000, 1000, 1000, 50).distrusts_caller());
        assert!(ids(1000, 0, 1000, 1000).distrusts_caller());
    }

    #[test]
    fn root_and_unprivileged_callers_are_trusted() {
        assert!(!ids(0, 0, 0, 50).distrusts_caller());
        assert!(!ids(1000, 1000, 1000, 1000).distrusts_caller());
    }

    #[test]
    fn mail_owner_is_an_existing_account_other_than_root() {
        // (name, accepted)
        let table = [
            ("root", false),
            ("no-such-user-mailroom-test", false),
            ("", false),
            ("nobody", true),
        ];
        for (name, accepted) in table {
            let got = MailOwner::lookup(name);
            assert_eq!(got.is_ok(), accepted, "{name}: {got:?}");
        }
        let nobody = MailOwner::lookup("nobody").unwrap();
        assert!(nobody.uid != 0 && nobody.gid != 0);
    }

    #[test]
    fn user_names_from_outside_are_bounded() {
        // (name, found)
        let table = [
            ("root".to_string(), true),
            ("a".repeat(64), false),
            ("a".repeat(65), false),
            ("a".repeat(4 << 20), false),
            ("root\0".to_string(), false),
            (String::new(), false),
        ];
        for (name, found) in table {
            let got = user_by_name(&name).unwrap();
            assert_eq!(got.is_some(), found, "{} bytes", name.len());
        }
    }

    #[test]
    fn only_locale_and_time_zone_survive() {
        for safe in ["TZ", "LANG", "LANGUAGE", "LC_ALL", "LC_TIME"] {
            assert!(is_safe_variable(OsStr::new(safe)), "{safe}");
        }
        for unsafe_name in [
            "PATH",
            "MAIL_CONFIG",
            "LD_PRELOAD",
            "HOME",
            "IFS",
            "MAILROOM_DETACHED",
            "TZDIR",
            "lc_all",
        ] {
            assert!(!is_safe_variable(OsStr::new(unsafe_name)), "{unsafe_name}");
        }
    }

    #[test]
    fn a_time_zone_that_names_a_file_of_the_callers_is_dropped() {
        let tz = OsStr::new("TZ");
        for (value, kept) in [
            ("UTC", true),
            (":UTC", true),
            ("Europe/Paris", true),
            (":Europe/Paris", true),
            ("CET-1CEST,M3.5.0,M10.5.0/3", true),
            ("<+0330>-3:30", true),
            ("", true),
            ("/usr/share/zoneinfo/Asia/Tokyo", true),
            (":/usr/share/zoneinfo/UTC", true),
            (":/etc/localtime", true),
            ("/tmp/zone", false),
            (":/tmp/zone", false),
            ("/dev/zero", false),
            (":/home/me/.zone", false),
            ("/usr/share/zoneinfo/../../../etc/shadow", false),
            ("../../../tmp/zone", false),
            (":Europe/../../../../tmp/zone", false),
            ("..", false),
            ("/etc/localtime.d/x", false),
            ("/usr/share/zoneinfo", false),
        ] {
            assert_eq!(keeps_variable(tz, OsStr::new(value)), kept, "TZ={value:?}");
        }
        // Not text: never a name the zone database has.
        use std::os::unix::ffi::OsStrExt;
        assert!(!keeps_variable(tz, OsStr::from_bytes(b"Europe/Par\xefs")));
        // Other variables are kept or dropped by name alone.
        assert!(keeps_variable(
            OsStr::new("LANG"),
            OsStr::new("de_DE.UTF-8")
        ));
        assert!(!keeps_variable(OsStr::new("TZDIR"), OsStr::new("/tmp")));
    }

    #[test]
    fn nothing_happens_in_a_process_that_is_not_set_id() {
        // Tests do not run set-gid: the guard and the drop leave the ids alone.
        let before = getresgid().unwrap();
        {
            let _suspended = suspend_group();
            assert_eq!(getresgid().unwrap().effective, before.effective);
        }
        drop_group().unwrap();
        let after = getresgid().unwrap();
        assert_eq!(
            (after.real, after.effective, after.saved),
            (before.real, before.effective, before.saved)
        );
    }
}
