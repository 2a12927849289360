//! SMTP replies (RFC 5321 section 4.2) with RFC 3463 enhanced status codes, worded as
//! Postfix's smtpd words them, so that clients, log parsers and people see what they
//! are used to.

use std::fmt;

/// One reply: a code and one or more lines of text (the enhanced status code, when there
/// is one, is part of the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, lines }
    }

    /// 4xx and 5xx replies count against the client's error limit.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// The reply on the wire: `250-first\r\n250 last\r\n`.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
        out
    }
}

impl fmt::Display for Reply {
    /// The last line, as log lines quote a reply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.code,
            self.lines.last().map_or("", String::as_str)
        )
    }
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0 Ok")
}
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0 Ok")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5 Ok")
}
pub fn queued(id: &str) -> Reply {
    Reply::new(250, format!("2.0.0 Ok: queued as {id}"))
}
pub fn start_data() -> Reply {
    Reply::new(354, "End data with <CR><LF>.<CR><LF>")
}
pub fn bye() -> Reply {
    Reply::new(221, "2.0.0 Bye")
}
pub fn vrfy(what: &str) -> Reply {
    Reply::new(252, format!("2.0.0 {what}"))
}
pub fn ready_for_tls() -> Reply {
    Reply::new(220, "2.0.0 Ready to start TLS")
}
pub fn help() -> Reply {
    Reply::multi(
        214,
        vec![
            "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS".into(),
            "2.0.0 See mailroom-smtpd(8)".into(),
        ],
    )
}
pub fn not_recognized() -> Reply {
    Reply::new(500, "5.5.2 Error: command not recognized")
}
pub fn not_implemented() -> Reply {
    Reply::new(502, "5.5.1 Error: command not implemented")
}
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, format!("5.5.4 Syntax: {usage}"))
}
pub fn need_mail() -> Reply {
    Reply::new(503, "5.5.1 Error: need MAIL command")
}
pub fn need_rcpt() -> Reply {
    Reply::new(503, "5.5.1 Error: need RCPT command")
}
pub fn nested_mail() -> Reply {
    Reply::new(503, "5.5.1 Error: nested MAIL command")
}
pub fn no_valid_recipients() -> Reply {
    Reply::new(554, "5.5.1 Error: no valid recipients")
}
pub fn bad_sender() -> Reply {
    Reply::new(501, "5.1.7 Bad sender address syntax")
}
pub fn bad_recipient() -> Reply {
    Reply::new(501, "5.1.3 Bad recipient address syntax")
}
pub fn unsupported_option(name: &str) -> Reply {
    Reply::new(555, format!("5.5.4 Unsupported option: {name}"))
}
pub fn bad_size() -> Reply {
    Reply::new(501, "5.5.4 Bad message size syntax")
}
pub fn bad_body() -> Reply {
    Reply::new(501, "5.5.4 Error: BODY syntax error")
}
pub fn size_exceeds_limit() -> Reply {
    Reply::new(552, "5.3.4 Message size exceeds fixed limit")
}
pub fn message_too_big() -> Reply {
    Reply::new(552, "5.3.4 Error: message file too big")
}
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3 Error: too many recipients")
}
pub fn relay_denied(rcpt: &str) -> Reply {
    Reply::new(554, format!("5.7.1 <{rcpt}>: Relay access denied"))
}
pub fn queue_write_error() -> Reply {
    Reply::new(451, "4.3.0 Error: queue file write error")
}
pub fn tls_already_active() -> Reply {
    Reply::new(554, "5.5.1 Error: TLS already active")
}
pub fn tls_required() -> Reply {
    Reply::new(530, "5.7.0 Must issue a STARTTLS command first")
}
pub fn tls_unavailable() -> Reply {
    Reply::new(454, "4.7.0 TLS not available due to local problem")
}
pub fn line_too_long() -> Reply {
    // Postfix answers an over-long command line as an unknown command (section 8 of the
    // reference): the line cannot be any command we know.
    not_recognized()
}
/// `smtpd_forbid_bare_newline = reject`, with `smtpd_forbid_bare_newline_reject_code`.
pub fn bare_lf(code: u16, host: &str) -> Reply {
    Reply::new(code, format!("5.5.2 {host} Error: bare <LF> received"))
}

pub fn too_many_errors(host: &str) -> Reply {
    Reply::new(421, format!("4.7.0 {host} Error: too many errors"))
}
pub fn timeout(host: &str) -> Reply {
    Reply::new(421, format!("4.4.2 {host} Error: timeout exceeded"))
}
/// A client over `smtpd_client_connection_count_limit` or `_rate_limit`, before the
/// greeting; the connection is closed.
pub fn too_many_connections_from(host: &str, addr: &str) -> Reply {
    Reply::new(
        421,
        format!("4.7.0 {host} Error: too many connections from {addr}"),
    )
}
/// A client over `smtpd_client_message_rate_limit`, at MAIL FROM.
pub fn too_much_mail_from(addr: &str) -> Reply {
    Reply::new(450, format!("4.7.1 Error: too much mail from {addr}"))
}
/// A client over `smtpd_client_recipient_rate_limit`, at RCPT TO.
pub fn too_many_recipients_from(addr: &str) -> Reply {
    Reply::new(450, format!("4.7.1 Error: too many recipients from {addr}"))
}
/// `smtpd_process_limit` sessions are in progress (the listener's own limit; Postfix's
/// master leaves such a client waiting in the backlog instead).
pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.3.2 Service not available, too many connections")
}
pub fn shutting_down(host: &str) -> Reply {
    Reply::new(
        421,
        format!("4.3.2 {host} Service shutting down, closing channel"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(bye().to_wire(), b"221 2.0.0 Bye\r\n");
        let r = Reply::multi(
            250,
            vec!["vm".into(), "PIPELINING".into(), "8BITMIME".into()],
        );
        assert_eq!(r.to_wire(), b"250-vm\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        assert_eq!(
            relay_denied("bob@example.net").to_string(),
            "554 5.7.1 <bob@example.net>: Relay access denied"
        );
        assert!(too_many_recipients().is_error());
        assert!(!start_data().is_error());
    }
}
