//! Noticing new mail in `maildrop/` at once: one inotify watch, for close-after-write only.
//!
//! A submission is written under a temporary name, renamed to its ID while still locked,
//! made durable, unlocked and closed: the close says "ready", and it is the only event
//! that does. `postsuper -r` and `-H` move mail in through a read-write descriptor that
//! they unlock and close afterwards, so their close says the same. So nothing else is
//! watched: creations, writes, renames and the daemon's own moves out would each wake a
//! thread for nothing (with every event watched, about four wake-ups a message). A file
//! that appears another way, such as an operator's `mv`, is found by the periodic scan,
//! as Postfix's pickup finds it on its next scan.
//!
//! The reader is a thread blocked in `read(2)` on the inotify descriptor. Removing the
//! watch, which the kernel reports as `IN_IGNORED`, is what wakes it to stop.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::queue::QueueId;

/// What one inotify event on `maildrop/` asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// This file may be ready: try it.
    File(QueueId),
    /// Events were lost: look at the whole directory.
    Rescan,
    /// The watch is gone (the directory was removed, or reading failed): nothing more
    /// will be announced; what it says is why.
    Lost(String),
    Nothing,
}

/// What an event with this mask, about this name, announces.
pub fn announcement(mask: AddWatchFlags, name: Option<&OsStr>) -> Announcement {
    // The kernel removed the watch: the directory went away, or its file system.
    if mask.contains(AddWatchFlags::IN_IGNORED) {
        return Announcement::Lost("the directory was removed".into());
    }
    // The kernel's queue of events overflowed, or the file system is being unmounted
    // (the watch's removal follows): what happened since is unknown.
    if mask.intersects(AddWatchFlags::IN_Q_OVERFLOW | AddWatchFlags::IN_UNMOUNT) {
        return Announcement::Rescan;
    }
    if mask.contains(AddWatchFlags::IN_CLOSE_WRITE) && !mask.contains(AddWatchFlags::IN_ISDIR) {
        // Temporary names and anything else that is not an ID say nothing.
        return name
            .and_then(OsStr::to_str)
            .and_then(QueueId::parse)
            .map_or(Announcement::Nothing, Announcement::File);
    }
    Announcement::Nothing
}

/// A running watch on one directory; dropping it stops the reader thread.
pub struct MaildropWatch {
    inotify: Arc<Inotify>,
    wd: WatchDescriptor,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MaildropWatch {
    /// Watches `dir` and calls `tell` with each announcement other than `Nothing`, from
    /// a thread of its own, until `tell` returns false, the watch fails or it is dropped.
    pub fn start(
        dir: &Path,
        tell: impl Fn(Announcement) -> bool + Send + 'static,
    ) -> std::io::Result<MaildropWatch> {
        let inotify = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC)?);
        let wd = inotify.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_ONLYDIR,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let inotify = Arc::clone(&inotify);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("maildrop-watch".into())
                .spawn(move || read_events(&inotify, &stop, &tell))?
        };
        Ok(MaildropWatch {
            inotify,
            wd,
            stop,
            thread: Some(thread),
        })
    }
}

fn read_events(inotify: &Inotify, stop: &AtomicBool, tell: &dyn Fn(Announcement) -> bool) {
    loop {
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    tell(Announcement::Lost(format!("read: {}", e.desc())));
                }
                return;
            }
        };
        for event in events {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let said = announcement(event.mask, event.name.as_deref());
            let lost = matches!(said, Announcement::Lost(_));
            if (said != Announcement::Nothing && !tell(said)) || lost {
                return;
            }
        }
    }
}

impl Drop for MaildropWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Removing the watch queues IN_IGNORED, which ends the reader's read(2). If the
        // watch had already gone, so has the reader, or it is about to: it returns on
        // the IN_IGNORED that removed it.
        let removed = self.inotify.rm_watch(self.wd).is_ok();
        if let Some(thread) = self.thread.take()
            && (removed || thread.is_finished())
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    const ID: &str = "8EA3RtcHNt";

    /// Events as the kernel reports them with only close-after-write watched, and what
    /// each announces.
    #[test]
    fn events_announce_each_ready_file_once() {
        let id = Announcement::File(QueueId::parse(ID).unwrap());
        let close = AddWatchFlags::IN_CLOSE_WRITE;
        let cases: &[(&str, AddWatchFlags, Option<&str>, Announcement)] = &[
            ("a submission's close", close, Some(ID), id.clone()),
            (
                "a submission that failed before its rename",
                close,
                Some(".tmp.8EA3RtcHNt.8673"),
                Announcement::Nothing,
            ),
            (
                "a name that is not an ID",
                close,
                Some("README"),
                Announcement::Nothing,
            ),
            ("no name", close, None, Announcement::Nothing),
            (
                "a directory",
                close | AddWatchFlags::IN_ISDIR,
                Some(ID),
                Announcement::Nothing,
            ),
            (
                "lost events",
                AddWatchFlags::IN_Q_OVERFLOW,
                None,
                Announcement::Rescan,
            ),
            (
                "the watch removed",
                AddWatchFlags::IN_IGNORED,
                None,
                Announcement::Lost("the directory was removed".into()),
            ),
            (
                "unmounted",
                AddWatchFlags::IN_UNMOUNT,
                None,
                Announcement::Rescan,
            ),
            (
                "anything else",
                AddWatchFlags::IN_MOVED_TO,
                Some(ID),
                Announcement::Nothing,
            ),
        ];
        for (what, mask, name, expected) in cases {
            assert_eq!(
                announcement(*mask, name.map(OsStr::new)),
                *expected,
                "{what}"
            );
        }
    }

    fn started(dir: &Path) -> (MaildropWatch, mpsc::Receiver<Announcement>) {
        let (tx, rx) = mpsc::channel();
        let watch = MaildropWatch::start(dir, move |a| tx.send(a).is_ok()).unwrap();
        (watch, rx)
    }

    fn next(rx: &mpsc::Receiver<Announcement>) -> Option<Announcement> {
        rx.recv_timeout(Duration::from_secs(2)).ok()
    }

    /// The real kernel: a write-then-rename submission is announced once, at its close;
    /// a move in through a read-write descriptor at that descriptor's close; moves out
    /// and read-only opens not at all.
    #[test]
    fn the_kernel_reports_closes_after_writing_only() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let maildrop = tmp.path().join("maildrop");
        let elsewhere = tmp.path().join("deferred");
        std::fs::create_dir(&maildrop).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let (_watch, rx) = started(&maildrop);

        let temp = maildrop.join(".tmp.8EA3RtcHNt.1");
        let mut file = std::fs::File::create_new(&temp).unwrap();
        file.write_all(b"message").unwrap();
        std::fs::rename(&temp, maildrop.join(ID)).unwrap();
        assert_eq!(rx.try_recv().ok(), None, "nothing before the close");
        drop(file);
        let id = Announcement::File(QueueId::parse(ID).unwrap());
        assert_eq!(next(&rx), Some(id.clone()));

        // Read, then moved out, as pickup does: silent.
        drop(std::fs::File::open(maildrop.join(ID)).unwrap());
        std::fs::rename(maildrop.join(ID), elsewhere.join(ID)).unwrap();
        // Moved back in through a read-write descriptor, as postsuper -r does.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(elsewhere.join(ID))
            .unwrap();
        std::fs::rename(elsewhere.join(ID), maildrop.join(ID)).unwrap();
        drop(held);
        assert_eq!(next(&rx), Some(id));
        assert_eq!(rx.recv_timeout(Duration::from_millis(200)).ok(), None);
    }

    #[test]
    fn dropping_the_watch_stops_its_thread_and_a_removed_directory_ends_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("maildrop");
        std::fs::create_dir(&dir).unwrap();
        let (watch, rx) = started(&dir);
        drop(watch);
        assert_eq!(next(&rx), None, "a stop is not a rescan");

        let (watch, rx) = started(&dir);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(
            next(&rx),
            Some(Announcement::Lost("the directory was removed".into()))
        );
        assert_eq!(next(&rx), None, "and nothing after");
        drop(watch);
    }
}
