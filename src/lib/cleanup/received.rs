//! The one `Received:` header builder: every queue file starts with the trace line of how
//! its message got here (RFC 5321 section 4.4), in Postfix's layout.
//!
//! ```text
//! local submission   Received: by HOST (mailroom, from userid UID)
//!                            id QUEUEID; DATE
//! SMTP               Received: from HELO (NAME [ADDR])
//!                            by HOST (mailroom) with PROTOCOL id QUEUEID
//!                            for <RCPT>; DATE             (for: one recipient only)
//! bounce, resubmission
//!                    Received: by HOST (mailroom)
//!                            id QUEUEID; DATE
//! ```
//!
//! The queue ID goes in through [`NewQueueFile::write_id`], so that it is rewritten in
//! place if the file has to take another ID when it is committed.

use std::io::{self, Write};

use super::Origin;
use super::write::Stamp;
use crate::queue::NewQueueFile;

/// The facts an SMTP `Received:` header records (RFC 5321 section 4.4).
#[derive(Debug, Clone)]
pub struct SmtpTrace {
    /// What the client said in HELO/EHLO, or its name when it said nothing.
    pub helo: String,
    /// The client's name (`unknown` without a reverse lookup).
    pub client_name: String,
    pub client_addr: String,
    /// `SMTP`, `ESMTP` or `ESMTPS` (RFC 3848): TLS shows here, and only here.
    pub protocol: &'static str,
    /// `smtpd_sasl_authenticated_header`: the login name of an AUTH client, shown as
    /// Postfix shows it (`(Authenticated sender: NAME)`).
    pub authenticated_sender: Option<String>,
    /// The recipient, named only when there is exactly one (as Postfix does), so that
    /// Bcc recipients of a multi-recipient message stay hidden.
    pub for_rcpt: Option<String>,
}

/// Writes the `Received:` header for a message that came from `origin`.
pub(super) fn write(file: &mut NewQueueFile, origin: &Origin, stamp: &Stamp) -> io::Result<()> {
    let host = stamp.myhostname;
    match origin {
        Origin::Local { uid } => {
            write!(
                file,
                "Received: by {host} (mailroom, from userid {uid})\n\tid "
            )?;
            file.write_id()?;
        }
        Origin::Smtp(smtp) => {
            // Postfix's layout: from-part, by-part, for-part on their own folded lines.
            writeln!(
                file,
                "Received: from {} ({} [{}])",
                smtp.helo, smtp.client_name, smtp.client_addr
            )?;
            if let Some(user) = &smtp.authenticated_sender {
                // A comment: parentheses and backslashes would end or escape it.
                let user: String = user
                    .chars()
                    .map(|c| {
                        if matches!(c, '(' | ')' | '\\') {
                            '?'
                        } else {
                            c
                        }
                    })
                    .collect();
                writeln!(file, "\t(Authenticated sender: {user})")?;
            }
            write!(file, "\tby {host} (mailroom) with {} id ", smtp.protocol)?;
            file.write_id()?;
            if let Some(rcpt) = &smtp.for_rcpt {
                write!(file, "\n\tfor <{rcpt}>")?;
            }
        }
        Origin::Bounce | Origin::Resubmit => {
            write!(file, "Received: by {host} (mailroom)\n\tid ")?;
            file.write_id()?;
        }
    }
    writeln!(file, "; {}", stamp.date())
}
