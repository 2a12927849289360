//! `/file` targets: the message appended in mbox format (From_ line, `>From ` quoting,
//! empty line after), with the same locks as a mailbox, as the user the target belongs
//! to. A missing file is created mode 0600 by that user. `/dev/null` takes anything.

use std::path::Path;

use chrono::Local;

use super::format::{self, Style};
use super::mbox;
use super::privileges::Identity;
use super::{LocalContext, RELAY, failure_outcome, warn_repaired};
use crate::deliver::{Outcome, Request};

pub fn deliver(
    ctx: &LocalContext,
    req: &Request,
    path: &str,
    rights: &Identity,
    envelope: &format::Envelope,
) -> Outcome {
    if path == "/dev/null" {
        return Outcome::sent(RELAY, "delivered to file: /dev/null");
    }
    let now = Local::now();
    let target = mbox::Target {
        path: Path::new(path),
        user: rights,
        creator: rights,
        chown_new: false,
        require_owner: false,
        dotlock_may_fail: true,
        refuse_executable: true,
        size_limit: 0,
        lock_wait: ctx.lock_wait,
        stale_after: ctx.stale_lock_time,
    };
    let message = req.message;
    match mbox::append(&target, |w| {
        format::write_copy(w, envelope, &message, Style::MBOX, &now)
    }) {
        Ok(appended) => {
            warn_repaired(ctx, Path::new(path), appended.repaired);
            Outcome::sent(RELAY, format!("delivered to file: {path}"))
        }
        Err(f) => failure_outcome(
            f.dsn,
            format!("cannot append message to file {path}: {}", f.text),
        ),
    }
}
