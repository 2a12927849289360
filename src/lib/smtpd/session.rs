//! One SMTP session (RFC 5321 section 4.1.4 ordering): greeting, HELO/EHLO, then
//! transactions of MAIL, RCPT and DATA until QUIT, end of input, a timeout or too many
//! errors; a client's message and recipient rates are counted at MAIL and RCPT
//! ([`super::anvil`]). Accepted messages go through the same queue-writing path as
//! `sendmail` ([`crate::cleanup`]), so `250 Ok: queued` is sent only after the queue
//! file is durable.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::anvil::{Anvil, Ticket};
use super::auth::{self, Exchange, Login, Peer};
use super::command::{self, Body, Command};
use super::connection::{Connection, Line, is_timeout};
use super::data::{BARE_LF_KIND, DataReader, Ending};
use super::features::{Features, ListenerFeatures};
use super::relay::{Network, RelayPolicy};
use super::reply::{self, Reply};
use super::restrictions::Facts;
use crate::address;
use crate::cleanup::{
    self, Commit, Content, Draft, Message, Origin, QueueError, Settings, SmtpTrace,
};
use crate::log::Log;
use crate::message::input::{InputError, InputReader};
use crate::queue::{Queue, Recipient};
use crate::sasl::SaslSettings;

/// What every session of one server shares: settings read once from `main.cf`, and the
/// [`Features`] its sessions have (the listener's, by default).
pub struct Server<F: Features = ListenerFeatures> {
    pub settings: Settings,
    /// The text after `220 `.
    pub banner: String,
    pub recipient_limit: usize,
    /// RCPTs over the limit that are answered 452 before they count as errors.
    pub recipient_overshoot_limit: usize,
    pub hard_error_limit: usize,
    /// `smtpd_soft_error_limit`: from this many errors on, each reply waits
    /// `error_sleep` first.
    pub soft_error_limit: usize,
    /// `smtpd_junk_command_limit`.
    pub junk_command_limit: usize,
    /// `smtpd_error_sleep_time`.
    pub error_sleep: Duration,
    /// The longest command line (RFC 5321 allows 512; Postfix's limit is 2048).
    pub line_length_limit: usize,
    pub timeout: Duration,
    /// `smtpd_per_request_deadline`: `timeout` bounds a whole request, not each read.
    pub per_request_deadline: bool,
    /// `smtpd_min_data_rate`: bytes per second of message text that earn more time.
    pub min_data_rate: u64,
    /// The per-client counters (the listener only).
    pub anvil: Option<Arc<Anvil>>,
    /// `smtpd_client_event_limit_exceptions`: clients that are not counted.
    pub limit_exceptions: Vec<Network>,
    pub relay: RelayPolicy,
    /// `smtpd_tls_auth_only` (implied by `encrypt`): no AUTH before STARTTLS.
    pub tls_auth_only: bool,
    /// The submission service: MAIL only after AUTH.
    pub auth_required: bool,
    /// `local_recipient_maps`: unknown local users are refused at RCPT.
    pub local_recipients: super::local_recipients::LocalRecipients,
    /// `smtpd_tls_security_level = encrypt`: no mail before STARTTLS.
    pub tls_required: bool,
    pub queue: Queue,
    pub log: Arc<Log>,
    pub bare_newline: BareNewline,
    /// Clients for which `bare_newline` is [`BareNewline::Allow`].
    pub bare_newline_exclusions: Vec<Network>,
    /// `smtpd_forbid_bare_newline_reject_code`.
    pub bare_newline_reject_code: u16,
    /// STARTTLS, AUTH, restrictions, `Authentication-Results:`: the listener's only.
    pub features: F,
}

/// `smtpd_forbid_bare_newline`: what a line that ends in a bare LF rather than CRLF does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewline {
    /// `no`: taken as CRLF, and a `.` line with bare LFs ends DATA (Postfix before 3.9).
    Allow,
    /// `normalize` (and `yes`): taken as CRLF, but only `<CRLF>.<CRLF>` ends DATA.
    Normalize,
    /// `note`: as `normalize`, and the session's disconnect line says `notes=bare_lf`.
    Note,
    /// `reject`: the command, or the message, is refused.
    Reject,
}

impl BareNewline {
    /// Postfix's values, case-insensitive.
    pub fn parse(text: &str) -> Option<BareNewline> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "no" => BareNewline::Allow,
            "normalize" | "yes" => BareNewline::Normalize,
            "note" => BareNewline::Note,
            "reject" => BareNewline::Reject,
            _ => return None,
        })
    }

    fn ending(self) -> Ending {
        Ending {
            standard: self != BareNewline::Allow,
            reject_bare_lf: self == BareNewline::Reject,
        }
    }
}

/// Who is on the other side.
#[derive(Debug, Clone)]
pub struct Client {
    /// `unknown` (we make no DNS lookups), `localhost` for `sendmail -bs`.
    pub name: String,
    pub addr: String,
    /// May send mail to any domain: in `mynetworks`, or a local user (`-bs`).
    pub may_relay: bool,
    /// Headers are qualified with `$myorigin` for local clients only.
    pub local: bool,
    /// The uid recorded in the queue file.
    pub uid: u32,
    /// The address the client connected to (told to Dovecot as `lip=`).
    pub server_ip: Option<IpAddr>,
    /// `sendmail -bs`: stdin/stdout, lenient line endings in DATA.
    pub pipe: bool,
}

impl Client {
    /// A client connected over the network from `ip`.
    pub fn network(ip: IpAddr, relay: &RelayPolicy) -> Client {
        let ip = ip.to_canonical();
        Client {
            name: "unknown".into(),
            addr: ip.to_string(),
            may_relay: relay.in_mynetworks(ip),
            local: ip.is_loopback(),
            uid: nix::unistd::getuid().as_raw(),
            server_ip: None,
            pipe: false,
        }
    }

    /// A local user speaking SMTP on stdin (`sendmail -bs`): trusted as a local
    /// submission is, and recorded as Postfix records it.
    pub fn local_user(uid: u32) -> Client {
        Client {
            name: "localhost".into(),
            addr: "127.0.0.1".into(),
            may_relay: true,
            local: true,
            uid,
            server_ip: None,
            pipe: true,
        }
    }
}

impl std::fmt::Display for Client {
    /// `unknown[192.0.2.1]`, as Postfix names clients in log lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.name, self.addr)
    }
}

struct Transaction {
    sender: String,
    /// (as given, qualified)
    recipients: Vec<(String, String)>,
    /// RCPTs refused for being over the limit.
    overshoot: usize,
    /// MAIL FROM's `AUTH=` (not `<>`), logged as `sasl_sender=`.
    sasl_sender: Option<String>,
}

/// [`Session::last`] while the message text comes (Postfix's `SMTPD_AFTER_DATA`).
const DATA_CONTENT: &str = "DATA content";

/// Commands that move no mail: past `smtpd_junk_command_limit` of them each counts as
/// an error, so that a client cannot keep a session for ever with NOOPs sent just
/// inside the deadline (Postfix's `SMTPD_CMD_FLAG_LIMIT` commands; no ETRN here).
const JUNK_COMMANDS: [&str; 5] = ["helo", "ehlo", "rset", "noop", "vrfy"];

/// Commands counted for the `disconnect` log line, in Postfix's order.
const STAT_ORDER: [&str; 13] = [
    "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "rset", "noop", "vrfy", "help",
    "quit", "unknown",
];

#[derive(Default)]
struct Stats {
    /// (accepted, total) per entry of `STAT_ORDER`.
    counts: [(u32, u32); 13],
}

impl Stats {
    fn record(&mut self, name: &str, ok: bool) {
        if let Some(i) = STAT_ORDER.iter().position(|n| *n == name) {
            self.counts[i].1 += 1;
            if ok {
                self.counts[i].0 += 1;
            }
        }
    }

    /// ` ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4`
    fn summary(&self) -> String {
        let show = |(ok, total): (u32, u32)| {
            if ok == total {
                format!("{total}")
            } else {
                format!("{ok}/{total}")
            }
        };
        let mut out = String::new();
        let mut all = (0, 0);
        for (name, &(ok, total)) in STAT_ORDER.iter().zip(&self.counts) {
            if total > 0 {
                out.push_str(&format!(" {name}={}", show((ok, total))));
                all = (all.0 + ok, all.1 + total);
            }
        }
        // As Postfix: a session without commands shows 0/0, so that every abnormal
        // session matches "[0-9]/" in the log.
        if all.1 == 0 {
            out.push_str(" commands=0/0");
        } else {
            out.push_str(&format!(" commands={}", show(all)));
        }
        out
    }
}

/// How a session ended, for the log.
enum End {
    Quit,
    Lost,
    Timeout,
    TooManyErrors,
    TlsFailed(String),
}

struct Session<'s, F: Features> {
    server: &'s Server<F>,
    client: Client,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: usize,
    /// Commands that move no mail (`JUNK_COMMANDS`) since the last message taken.
    junk: usize,
    /// The client's place in the per-client counts; `None` when it is not counted.
    ticket: Option<Ticket>,
    stats: Stats,
    /// The last command, for `lost connection after DATA` lines.
    last: &'static str,
    /// The bytes of message text received before the session was cut off in it.
    data_bytes: u64,
    /// A line ended in a bare LF under `smtpd_forbid_bare_newline = note`.
    noted_bare_lf: bool,
    /// The client has logged in with AUTH.
    login: Option<Login>,
}

/// Runs one session to its end. Never fails: a broken connection ends the session, and
/// what happened is logged. `ticket`: the client's place in the per-client counts.
pub fn run<F: Features>(
    server: &Server<F>,
    client: Client,
    ticket: Option<Ticket>,
    conn: &mut Connection<'_>,
) {
    let log = &server.log;
    log.info(&format!("connect from {client}"));
    let mut session = Session {
        server,
        client,
        helo: None,
        esmtp: false,
        tx: None,
        errors: 0,
        junk: 0,
        ticket,
        stats: Stats::default(),
        last: "CONNECT",
        data_bytes: 0,
        noted_bare_lf: false,
        login: None,
    };
    conn.send(&Reply::new(220, server.banner.clone()));
    let end = session.serve(conn);
    let client = &session.client;
    match end {
        End::Quit => {}
        End::Lost => log.info(&format!(
            "lost connection after {} from {client}",
            session.stage()
        )),
        End::Timeout => {
            // The spent budget was the client's; the goodbye gets a new one (Postfix).
            conn.start_request(0);
            conn.send(&reply::timeout(&server.settings.myhostname));
            log.info(&format!("timeout after {} from {client}", session.stage()));
        }
        End::TooManyErrors => {
            conn.send(&reply::too_many_errors(&server.settings.myhostname));
            log.info(&format!(
                "too many errors after {} from {client}",
                session.stage()
            ));
        }
        End::TlsFailed(why) => {
            log.warning(&format!("TLS handshake failed from {client}: {why}"));
        }
    }
    conn.close();
    let notes = if session.noted_bare_lf {
        " notes=bare_lf"
    } else {
        ""
    };
    log.info(&format!(
        "disconnect from {client}{}{notes}",
        session.stats.summary()
    ));
}

/// Turns a client away before its session begins (over its connection limits): the
/// log lines of a session with no commands around `warning`, and `reply`.
pub fn refuse<F: Features>(
    server: &Server<F>,
    client: &Client,
    conn: &mut Connection<'_>,
    reply: &Reply,
    warning: &str,
) {
    server.log.info(&format!("connect from {client}"));
    server.log.warning(warning);
    conn.send(reply);
    conn.close();
    server.log.info(&format!(
        "disconnect from {client}{}",
        Stats::default().summary()
    ));
}

impl<'s, F: Features> Session<'s, F> {
    /// Where the session was, as Postfix's `... after DATA (1234 bytes) from ...` says:
    /// the byte count only while the message text was coming, not after a DATA command
    /// that was refused.
    fn stage(&self) -> String {
        if self.last == DATA_CONTENT {
            format!("DATA ({} bytes)", self.data_bytes)
        } else {
            self.last.to_string()
        }
    }

    fn serve(&mut self, conn: &mut Connection<'_>) -> End {
        let mut line = Vec::with_capacity(512);
        loop {
            // Each command has the whole of smtpd_timeout, for its line and its reply.
            conn.start_request(0);
            match conn.read_line(&mut line, self.server.line_length_limit) {
                Ok(Line::Complete) => {}
                Ok(Line::TooLong) => {
                    self.stats.record("unknown", false);
                    if let Some(end) = self.answer(conn, reply::line_too_long(), false) {
                        return end;
                    }
                    continue;
                }
                Ok(Line::Eof) => return End::Lost,
                Err(e) if is_timeout(&e) => return End::Timeout,
                Err(_) => return End::Lost,
            }
            if conn.last_line_bare_lf() {
                match self.bare_newline(conn) {
                    BareNewline::Reject => {
                        // As Postfix: logged under the command before, refused, closed.
                        let code = self.server.bare_newline_reject_code;
                        let envelope = self.tx.as_ref().map(|tx| {
                            let rcpt = tx.recipients.last().map(|(given, _)| given.as_str());
                            (tx.sender.as_str(), rcpt)
                        });
                        self.whatsup_log(self.last, "bare <LF> received", envelope, conn.is_tls());
                        conn.send(&reply::bare_lf(code, &self.server.settings.myhostname));
                        return End::Quit;
                    }
                    BareNewline::Note => self.noted_bare_lf = true,
                    BareNewline::Allow | BareNewline::Normalize => {}
                }
            }
            let name = command::stat_name(&line);
            let parsed = command::parse(&line);
            self.last = verb_for_log(name);
            let outcome = match parsed {
                Ok(cmd) => self.execute(cmd, conn),
                Err(reply) => Step::Reply(reply),
            };
            let reply = match outcome {
                Step::Reply(r) => r,
                Step::Exempt(r) => {
                    self.stats.record(name, false);
                    self.pace();
                    conn.send(&r);
                    continue;
                }
                Step::Nothing => continue,
                Step::End(end) => {
                    self.stats.record(name, matches!(end, End::Quit));
                    return end;
                }
            };
            self.stats.record(name, !reply.is_error());
            if let Some(end) = self.answer(conn, reply, JUNK_COMMANDS.contains(&name)) {
                return end;
            }
        }
    }

    /// Sends a reply, counting errors; `Some` when the client has had too many. `junk`:
    /// the reply is to a command that moves no mail, which counts as an error once the
    /// client has sent more than `smtpd_junk_command_limit` of them.
    fn answer(&mut self, conn: &mut Connection<'_>, reply: Reply, junk: bool) -> Option<End> {
        self.pace();
        if reply.is_error() {
            self.errors += 1;
        }
        conn.send(&reply);
        if junk {
            if self.junk > self.server.junk_command_limit {
                self.errors += 1;
            }
            self.junk = self.junk.saturating_add(1);
        }
        (self.errors >= self.server.hard_error_limit).then_some(End::TooManyErrors)
    }

    /// Postfix's tarpit: once the client has made `smtpd_soft_error_limit` errors, every
    /// reply waits `smtpd_error_sleep_time`, which slows down run-away clients and
    /// address harvesters.
    fn pace(&self) {
        if self.errors >= self.server.soft_error_limit && !self.server.error_sleep.is_zero() {
            std::thread::sleep(self.server.error_sleep);
        }
    }

    /// The protocol of RFC 3848 for `Received:` and log lines: `A` for a logged-in
    /// client, as Postfix adds it, for ESMTP only.
    fn protocol(&self, tls: bool) -> &'static str {
        match (self.esmtp, tls, self.login.is_some()) {
            (true, true, true) => "ESMTPSA",
            (true, false, true) => "ESMTPA",
            (true, true, false) => "ESMTPS",
            (true, false, false) => "ESMTP",
            (false, true, _) => "SMTPS",
            (false, false, _) => "SMTP",
        }
    }

    /// AUTH is offered and taken now: enabled, and over TLS when it must be (Postfix
    /// does not even activate SASL before STARTTLS then).
    fn auth_active(&self, tls: bool) -> Option<&'s SaslSettings> {
        let server = self.server;
        if self.client.pipe || (server.tls_auth_only && !tls) {
            return None;
        }
        server.features.sasl()
    }

    /// `AUTH mechanism [initial-response]`, checked in Postfix's order.
    fn auth(&mut self, args: Vec<String>, conn: &mut Connection<'_>) -> Step {
        if self.auth_active(conn.is_tls()).is_none() {
            return Step::Reply(auth::not_enabled());
        }
        if self.tx.is_some() {
            return Step::Reply(Reply::new(503, "5.5.1 Error: MAIL transaction in progress"));
        }
        if self.login.is_some() {
            return Step::Reply(Reply::new(503, "5.5.1 Error: already authenticated"));
        }
        if args.is_empty() || args.len() > 2 {
            return Step::Reply(Reply::new(501, "5.5.4 Syntax: AUTH mechanism"));
        }
        let name = self.client.to_string();
        let peer = Peer {
            name: &name,
            local_ip: self.client.server_ip,
            remote_ip: self.client.addr.parse().ok(),
            tls: conn.is_tls(),
        };
        let initial = args.get(1).map(String::as_str);
        let features = &self.server.features;
        match features.authenticate(&self.server.log, &peer, &args[0], initial, conn) {
            Exchange::Reply(reply, login) => {
                if login.is_some() {
                    self.login = login;
                }
                Step::Reply(reply)
            }
            Exchange::Lost { timeout } => Step::End(if timeout { End::Timeout } else { End::Lost }),
        }
    }

    fn execute(&mut self, cmd: Command, conn: &mut Connection<'_>) -> Step {
        let server = self.server;
        let tls_pending = server.tls_required && !conn.is_tls();
        match cmd {
            Command::Ehlo(name) => {
                self.helo = Some(name);
                self.esmtp = true;
                self.tx = None;
                Step::Reply(self.ehlo_reply(conn.is_tls()))
            }
            Command::Helo(name) => {
                self.helo = Some(name);
                self.esmtp = false;
                self.tx = None;
                Step::Reply(Reply::new(250, server.settings.myhostname.clone()))
            }
            Command::StartTls => self.start_tls(conn),
            Command::Auth(args) => self.auth(args, conn),
            Command::Mail { .. } | Command::Rcpt { .. } | Command::Data if tls_pending => {
                Step::Reply(reply::tls_required())
            }
            Command::Mail {
                sender,
                size,
                body,
                auth,
            } => self.mail(sender, size, body, auth, conn),
            Command::Rcpt { recipient } => self.rcpt(recipient, conn),
            Command::Data => self.data(conn),
            Command::Rset => {
                self.tx = None;
                Step::Reply(reply::ok())
            }
            Command::Noop => Step::Reply(reply::ok()),
            Command::Vrfy(what) => Step::Reply(reply::vrfy(&what)),
            Command::Help => Step::Reply(reply::help()),
            Command::Quit => {
                conn.send(&reply::bye());
                Step::End(End::Quit)
            }
        }
    }

    fn ehlo_reply(&self, tls: bool) -> Reply {
        let limit = self.server.settings.message_size_limit;
        let mut lines = vec![self.server.settings.myhostname.clone(), "PIPELINING".into()];
        lines.push(if limit > 0 {
            format!("SIZE {limit}")
        } else {
            "SIZE".into()
        });
        lines.push("VRFY".into());
        if self.server.features.offers_tls() && !tls {
            lines.push("STARTTLS".into());
        }
        if let Some(sasl) = self.auth_active(tls) {
            let mechanisms = self
                .server
                .features
                .mechanisms(tls, &self.server.log)
                .join(" ");
            if !mechanisms.is_empty() {
                lines.push(format!("AUTH {mechanisms}"));
                if sasl.broken_clients {
                    lines.push(format!("AUTH={mechanisms}"));
                }
            }
        }
        lines.push("ENHANCEDSTATUSCODES".into());
        lines.push("8BITMIME".into());
        Reply::multi(250, lines)
    }

    fn start_tls(&mut self, conn: &mut Connection<'_>) -> Step {
        if !self.server.features.offers_tls() {
            return Step::Reply(if self.server.tls_required {
                reply::tls_unavailable()
            } else {
                reply::not_implemented()
            });
        };
        if conn.is_tls() {
            return Step::Reply(reply::tls_already_active());
        }
        if self.tx.is_some() {
            return Step::Reply(Reply::new(503, "5.5.1 Error: MAIL transaction in progress"));
        }
        conn.send(&reply::ready_for_tls());
        if conn.flush().is_err() {
            return Step::End(End::Lost);
        }
        if conn.pending_input() > 0 {
            self.server.log.warning(&format!(
                "{}: discarding plain-text input sent after STARTTLS",
                self.client
            ));
        }
        if let Err(e) = self.server.features.start_tls(conn) {
            return Step::End(End::TlsFailed(e.to_string()));
        }
        // RFC 3207 section 4.2: forget everything learned before TLS.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.login = None;
        self.stats.record("starttls", true);
        self.last = "STARTTLS";
        Step::Nothing
    }

    fn mail(
        &mut self,
        sender: String,
        size: Option<u64>,
        _body: Body,
        auth: Vec<String>,
        conn: &mut Connection<'_>,
    ) -> Step {
        if self.tx.is_some() {
            return Step::Reply(reply::nested_mail());
        }
        if let Some(ticket) = &self.ticket
            && let Some(rate) = ticket.mail()
        {
            self.server.log.warning(&format!(
                "Message delivery request rate limit exceeded: {rate} from {} for service {}",
                self.client,
                ticket.service()
            ));
            return Step::Reply(reply::too_much_mail_from(&self.client.addr));
        }
        // AUTH= exists only where AUTH is offered (smtpd_sasl_mail_opt); elsewhere it is
        // an option like any unknown one.
        if !auth.is_empty() && self.auth_active(conn.is_tls()).is_none() {
            return Step::Reply(reply::unsupported_option("AUTH"));
        }
        if auth.len() > 1 {
            return Step::Reply(Reply::new(503, "5.5.4 Error: multiple AUTH= options"));
        }
        let sasl_sender = auth.into_iter().next().filter(|a| a != "<>");
        if self.server.auth_required && self.login.is_none() && !self.client.pipe {
            // RFC 4954 section 6's reply: the submission service takes mail only from
            // a logged-in client, and says so before any message text is sent.
            let r = Reply::new(530, "5.7.0 Authentication required");
            self.reject_log("MAIL", &r, &sender, None, conn.is_tls());
            return Step::Reply(r);
        }
        let limit = self.server.settings.message_size_limit;
        if limit > 0 && size.is_some_and(|s| s > limit) {
            let r = reply::size_exceeds_limit();
            self.reject_log("MAIL", &r, &sender, None, conn.is_tls());
            return Step::Reply(r);
        }
        let sender = address::qualify(&sender, &self.server.settings.myorigin);
        self.tx = Some(Transaction {
            sender,
            recipients: Vec::new(),
            overshoot: 0,
            sasl_sender,
        });
        Step::Reply(reply::sender_ok())
    }

    fn rcpt(&mut self, recipient: String, conn: &mut Connection<'_>) -> Step {
        let server = self.server;
        let Some(tx) = self.tx.as_mut() else {
            return Step::Reply(reply::need_mail());
        };
        if let Some(ticket) = &self.ticket
            && let Some(rate) = ticket.rcpt()
        {
            server.log.warning(&format!(
                "Recipient address rate limit exceeded: {rate} from {} for service {}",
                self.client,
                ticket.service()
            ));
            return Step::Reply(reply::too_many_recipients_from(&self.client.addr));
        }
        if tx.recipients.len() >= server.recipient_limit {
            tx.overshoot += 1;
            // Postfix's smtpd_recipient_overshoot_limit: a client that pipelines too many
            // recipients is told 452 for each extra one without being cut off at once.
            if tx.overshoot <= server.recipient_overshoot_limit {
                return Step::Exempt(reply::too_many_recipients());
            }
            return Step::Reply(reply::too_many_recipients());
        }
        // sendmail -bs is a local submission: trusted, as Postfix's stand-alone mode.
        let facts = Facts {
            in_mynetworks: self.client.may_relay,
            authenticated: self.login.is_some(),
            recipient: &recipient,
        };
        let refused = (!self.client.pipe)
            .then(|| server.features.check_recipient(&facts, &server.relay))
            .flatten();
        if let Some(r) = refused {
            let sender = tx.sender.clone();
            self.reject_log("RCPT", &r, &sender, Some(&recipient), conn.is_tls());
            return Step::Reply(r);
        }
        let qualified = address::qualify(&recipient, &server.settings.myorigin);
        if let Some(r) = server
            .local_recipients
            .refuse(&recipient, &qualified, &server.log)
        {
            let sender = tx.sender.clone();
            self.reject_log("RCPT", &r, &sender, Some(&recipient), conn.is_tls());
            return Step::Reply(r);
        }
        let (local, domain) = address::split(&qualified);
        let key = format!("{local}@{}", domain.unwrap_or("").to_ascii_lowercase());
        let seen = tx.recipients.iter().any(|(_, q)| {
            let (l, d) = address::split(q);
            format!("{l}@{}", d.unwrap_or("").to_ascii_lowercase()) == key
        });
        if !seen {
            tx.recipients.push((recipient, qualified));
        }
        Step::Reply(reply::recipient_ok())
    }

    fn data(&mut self, conn: &mut Connection<'_>) -> Step {
        // As Postfix: outside a transaction "need RCPT"; inside one without an accepted
        // recipient (none given, or all refused) "no valid recipients".
        let tx = match self.tx.take() {
            Some(tx) if !tx.recipients.is_empty() => tx,
            Some(tx) => {
                self.tx = Some(tx);
                return Step::Reply(reply::no_valid_recipients());
            }
            None => return Step::Reply(reply::need_rcpt()),
        };
        conn.send(&reply::start_data());
        let tls = conn.is_tls();
        let (trace, draft) = self.envelope_of(&tx, tls);
        let mode = self.bare_newline(conn);
        // The message text may take longer than a command, as long as it keeps coming.
        conn.start_request(self.server.min_data_rate);
        let mut data = DataReader::new(conn, mode.ending());
        let result = self.queue_data(&mut data, trace, draft);
        self.last = "END-OF-MESSAGE";
        if mode == BareNewline::Note && data.saw_bare_lf() {
            self.noted_bare_lf = true;
        }
        match result {
            Ok(id) => {
                // As Postfix: a client that got its mail through is forgiven its errors.
                self.errors = 0;
                self.junk = 0;
                // The from=/size= line is the daemon's to write when it takes the
                // message in, as Postfix's qmgr does; pflogsumm counts that one.
                let mut sasl = self.login.as_ref().map_or_else(String::new, |l| {
                    format!(", sasl_method={}, sasl_username={}", l.method, l.user)
                });
                if let Some(sender) = &tx.sasl_sender {
                    sasl.push_str(&format!(", sasl_sender={sender}"));
                }
                self.server
                    .log
                    .info(&format!("{id}: client={}{sasl}", self.client));
                Step::Reply(reply::queued(&id))
            }
            Err(e) => self.refuse_data(e, &mut data, &tx, tls),
        }
    }

    /// The Received: header's facts and the queue file's envelope for transaction `tx`.
    fn envelope_of(&self, tx: &Transaction, tls: bool) -> (SmtpTrace, Draft) {
        let trace = SmtpTrace {
            helo: self
                .helo
                .clone()
                .unwrap_or_else(|| self.client.name.clone()),
            client_name: self.client.name.clone(),
            client_addr: self.client.addr.clone(),
            protocol: self.protocol(tls),
            authenticated_sender: self
                .login
                .as_ref()
                .filter(|_| {
                    self.server
                        .features
                        .sasl()
                        .is_some_and(|s| s.authenticated_header)
                })
                .map(|l| l.user.clone()),
            for_rcpt: (tx.recipients.len() == 1).then(|| tx.recipients[0].0.clone()),
        };
        let draft = Draft {
            sender: tx.sender.clone(),
            full_name: String::new(),
            uid: self.client.uid,
            recipients: tx
                .recipients
                .iter()
                .map(|(original, address)| Recipient::new(original, address))
                .collect(),
            ret: String::new(),
            envid: String::new(),
        };
        (trace, draft)
    }

    /// Streams the DATA section through cleanup into the queue; the queue ID once the
    /// message is durable.
    fn queue_data(
        &self,
        data: &mut DataReader<'_, '_>,
        trace: SmtpTrace,
        draft: Draft,
    ) -> Result<String, QueueError> {
        let server = self.server;
        let settings = &server.settings;
        // Only mail from the network is judged: mynetworks, local users (sendmail -bs)
        // and clients that logged in with AUTH (our own users submitting) are trusted.
        if server.features.authentication_results()
            && !self.client.may_relay
            && !self.client.pipe
            && self.login.is_none()
            && let Ok(client) = self.client.addr.parse::<IpAddr>()
        {
            let received = read_whole(data, settings.message_size_limit)?;
            let envelope = super::authres::Envelope {
                client,
                helo: &trace.helo,
                sender: &draft.sender,
            };
            let text = server.features.authenticated(received, &envelope);
            // The limit was applied as the message came; the header is ours.
            let reader = InputReader::new(text.as_slice(), false, 0);
            return self.queue_text(reader, trace, draft);
        }
        let reader = InputReader::new(data, false, settings.message_size_limit);
        self.queue_text(reader, trace, draft)
    }

    /// Writes the message `reader` gives through cleanup into the queue.
    fn queue_text<R: std::io::BufRead>(
        &self,
        mut reader: InputReader<R>,
        trace: SmtpTrace,
        draft: Draft,
    ) -> Result<String, QueueError> {
        let server = self.server;
        let settings = &server.settings;
        cleanup::read_headers(&mut reader, settings)
            .and_then(|head| {
                let message = Message {
                    origin: Origin::Smtp(trace),
                    envelope: draft,
                    content: Content::Input {
                        settings,
                        head,
                        body: &mut reader,
                        // Postfix's submission entry rewrites the headers of every
                        // client (local_header_rewrite_clients = static:all).
                        qualify_headers: self.client.local
                            || (server.auth_required && self.login.is_some()),
                    },
                };
                cleanup::write(
                    &server.queue,
                    &settings.myhostname,
                    message,
                    Commit::Unlocked,
                )
            })
            .map(|(queued, _)| queued.id.to_string())
            .map_err(|f| QueueError::new(f, "smtpd", &server.queue))
    }

    /// The answer to a message that was not queued. Except when the connection is lost,
    /// it is given only after the final dot: until then the client is still sending.
    fn refuse_data(
        &mut self,
        error: QueueError,
        data: &mut DataReader<'_, '_>,
        tx: &Transaction,
        tls: bool,
    ) -> Step {
        let server = self.server;
        // Cut off while the message text was still coming: logged with its bytes.
        let mut lost = |e: &std::io::Error, data: &DataReader<'_, '_>| {
            self.last = DATA_CONTENT;
            self.data_bytes = data.received();
            Step::End(if is_timeout(e) {
                End::Timeout
            } else {
                End::Lost
            })
        };
        let refused = match error {
            QueueError::TooBig { .. } => reply::message_too_big(),
            QueueError::Queue(e) => {
                server.log.warning(&format!(
                    "{}: queue file write error: {}",
                    self.client, e.message
                ));
                reply::queue_write_error()
            }
            QueueError::Input(e) if e.kind() == BARE_LF_KIND => {
                // Refused only after the end of the data, so the client reads the
                // reply (and drops the message from its queue) rather than a timeout.
                if let Err(e) = data.drain() {
                    return lost(&e, data);
                }
                let rcpt = tx.recipients.last().map(|(given, _)| given.as_str());
                self.whatsup_log(
                    "END-OF-MESSAGE",
                    "bare <LF> received",
                    Some((&tx.sender, rcpt)),
                    tls,
                );
                return Step::Reply(reply::bare_lf(
                    server.bare_newline_reject_code,
                    &server.settings.myhostname,
                ));
            }
            QueueError::Input(e) => return lost(&e, data),
        };
        match data.drain() {
            Ok(()) => Step::Reply(refused),
            Err(e) => lost(&e, data),
        }
    }

    /// `NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <x>: Relay access
    /// denied; from=<s> to=<x> proto=ESMTP helo=<h>`
    fn reject_log(&self, stage: &str, r: &Reply, sender: &str, rcpt: Option<&str>, tls: bool) {
        self.whatsup_log(stage, &r.to_string(), Some((sender, rcpt)), tls);
    }

    /// Postfix's `log_whatsup`: `NOQUEUE: reject: STAGE from CLIENT: WHY; from=<s>
    /// to=<r> proto=P helo=<h>`, the envelope parts when there are some.
    fn whatsup_log(
        &self,
        stage: &str,
        why: &str,
        envelope: Option<(&str, Option<&str>)>,
        tls: bool,
    ) {
        let mut line = format!("NOQUEUE: reject: {stage} from {}: {why};", self.client);
        if let Some((sender, rcpt)) = envelope {
            line.push_str(&format!(" from=<{sender}>"));
            if let Some(rcpt) = rcpt {
                line.push_str(&format!(" to=<{rcpt}>"));
            }
        }
        line.push_str(&format!(" proto={}", self.protocol(tls)));
        if let Some(helo) = &self.helo {
            line.push_str(&format!(" helo=<{helo}>"));
        }
        if let Some(login) = &self.login {
            line.push_str(&format!(" sasl_username=<{}>", login.user));
        }
        self.server.log.info(&line);
    }

    /// The `smtpd_forbid_bare_newline` rule for this client now. A network client in
    /// `smtpd_forbid_bare_newline_exclusions` gets `no`. `sendmail -bs` (where Postfix
    /// enforces nothing): a client that ended its last line (the DATA command) with
    /// CRLF writes CRLF, and a bare-LF dot line in its text is text (a mail library
    /// passing on what a web form gave it); one that ended it with a bare LF (a person,
    /// a script with echo) ends the data with LF.LF as it always could.
    fn bare_newline(&self, conn: &Connection<'_>) -> BareNewline {
        if self.client.pipe {
            return if conn.last_line_bare_lf() {
                BareNewline::Allow
            } else {
                BareNewline::Normalize
            };
        }
        let excluded = self.client.addr.parse::<IpAddr>().is_ok_and(|ip| {
            self.server
                .bare_newline_exclusions
                .iter()
                .any(|n| n.contains(ip))
        });
        if excluded {
            BareNewline::Allow
        } else {
            self.server.bare_newline
        }
    }
}

/// What a command led to.
enum Step {
    Reply(Reply),
    /// A reply that does not count against the error limit.
    Exempt(Reply),
    End(End),
    Nothing,
}

fn verb_for_log(stat: &'static str) -> &'static str {
    match stat {
        "helo" => "HELO",
        "ehlo" => "EHLO",
        "mail" => "MAIL",
        "rcpt" => "RCPT",
        "data" => "DATA",
        "rset" => "RSET",
        "noop" => "NOOP",
        "quit" => "QUIT",
        "vrfy" => "VRFY",
        "help" => "HELP",
        "starttls" => "STARTTLS",
        "auth" => "AUTH",
        _ => "UNKNOWN",
    }
}

/// The whole message text of DATA (LF line endings), at most `limit` bytes (0: no
/// limit), for the checks that need all of it before it is queued.
fn read_whole(data: &mut DataReader<'_, '_>, limit: u64) -> Result<Vec<u8>, QueueError> {
    let mut reader = InputReader::new(data, false, limit);
    let mut text = Vec::new();
    let mut line = Vec::new();
    loop {
        match reader.next_line(&mut line) {
            Ok(true) => text.extend_from_slice(&line),
            Ok(false) => return Ok(text),
            Err(InputError::TooBig { limit }) => return Err(QueueError::TooBig { limit }),
            Err(InputError::Io(e)) => return Err(QueueError::Input(e)),
        }
    }
}
