//! The table of known `main.cf` parameters: name, Postfix default, value type and a one-line
//! description. The man page's parameter section is generated from this table (see
//! [`man_section`]) and a test keeps `man/mailroom.cf.5` in step with it.

/// How a parameter's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Free text (after `$name` expansion).
    String,
    /// Items separated by commas and/or white space.
    List,
    /// A duration: a number with an optional unit `s m h d w`; a bare number takes this unit.
    Time(char),
    /// A non-negative integer (sizes in bytes, counts).
    Number,
    /// `yes` or `no`.
    Bool,
    /// A list of `type:path` lookup tables.
    Tables,
}

impl ParamKind {
    /// The type as the man page and `mailroom config` word it.
    pub fn describe(self) -> String {
        match self {
            ParamKind::String => "string".into(),
            ParamKind::List => "list".into(),
            ParamKind::Time(unit) => format!("time, default unit {unit}"),
            ParamKind::Number => "number".into(),
            ParamKind::Bool => "yes or no".into(),
            ParamKind::Tables => "list of type:path tables".into(),
        }
    }
}

/// One known parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamInfo {
    pub name: &'static str,
    /// The default as written in `main.cf` syntax (it may refer to other parameters). Empty
    /// for [`COMPUTED`] parameters, whose default depends on the host.
    pub default: &'static str,
    pub kind: ParamKind,
    pub description: &'static str,
    /// False for Postfix parameters that mailroom accepts silently but does not act on.
    pub effective: bool,
}

/// Parameters whose default is computed from the host rather than written in the table.
pub const COMPUTED: &[&str] = &["myhostname", "mydomain", "config_directory"];

const fn p(
    name: &'static str,
    default: &'static str,
    kind: ParamKind,
    description: &'static str,
) -> ParamInfo {
    ParamInfo {
        name,
        default,
        kind,
        description,
        effective: true,
    }
}

/// A Postfix parameter that loads silently and changes nothing in mailroom.
const fn inert(
    name: &'static str,
    default: &'static str,
    kind: ParamKind,
    description: &'static str,
) -> ParamInfo {
    ParamInfo {
        name,
        default,
        kind,
        description,
        effective: false,
    }
}

use ParamKind::{Bool, List, Number, String as Text, Tables, Time};

#[rustfmt::skip]
static PARAMETERS: &[ParamInfo] = &[
    // Identity and routing.
    p("myhostname", "", Text,
      "The fully qualified name of this host; default: gethostname(2), with .localdomain (or .$mydomain when mydomain is set) appended when it has no dot. No DNS lookup is made."),
    p("mydomain", "", Text,
      "The domain of this host; default: $myhostname without its first label when what remains has a dot, else localdomain."),
    p("config_directory", "", Text,
      "The configuration directory in use: the directory of this main.cf (-C or -c, MAIL_CONFIG, else /etc/mailroom). Read-only in effect: other parameters refer to it as $config_directory."),
    p("myorigin", "$myhostname", Text,
      "The domain appended to unqualified sender and recipient addresses. A value that is an absolute path (Debian's /etc/mailname) means the first line of that file."),
    p("mydestination", "$myhostname, localhost.$mydomain, localhost", List,
      "The domains delivered locally; matched case-insensitively."),
    p("inet_interfaces", "loopback-only", List,
      "The addresses the SMTP listener binds: all, loopback-only or a list of addresses. Postfix's default is all; mailroom's is loopback-only so that a fresh install is not an open door."),
    p("inet_protocols", "all", List,
      "The IP protocols used: all, ipv4, ipv6 or ipv4, ipv6. The SMTP client connects only to addresses of these families, IPv4 first."),
    p("mynetworks", "", List,
      "Networks of trusted SMTP clients that may relay; empty means computed from mynetworks_style."),
    p("mynetworks_style", "host", Text,
      "How mynetworks is computed when empty: host (this host only), subnet or class."),
    p("relay_domains", "", List,
      "Remote domains that SMTP clients outside mynetworks may send mail to (Postfix 3.x default with compatibility_level 2 or later: empty)."),
    p("relayhost", "", Text,
      "The next-hop server for remote mail: host, host:port, [host] or [host]:port (brackets: no MX lookup; the port may be a number, smtp or submission); a list is tried in order. Empty means deliver directly to each domain's MX hosts, or to its own address when it has no MX record. A relay host that is not found in DNS defers the mail rather than bouncing it."),
    // Local delivery.
    p("home_mailbox", "", Text,
      "A mailbox path relative to the user's home directory; a value ending in / means Maildir. Empty means mbox under mail_spool_directory."),
    p("mail_spool_directory", "/var/mail", Text,
      "The directory of mbox mailboxes, one file per user."),
    p("mailbox_size_limit", "51200000", Number,
      "The largest mailbox or Maildir file, in bytes; 0 means no limit."),
    p("alias_maps", "hash:/etc/aliases", Tables,
      "The alias tables used for local delivery."),
    p("alias_database", "hash:/etc/aliases", Tables,
      "The alias tables that newaliases (sendmail -bi) builds."),
    p("recipient_delimiter", "", Text,
      "Characters that separate a user name from an address extension (user+ext); empty means none."),
    p("allow_mail_to_commands", "alias, forward", List,
      "Where |command deliveries are allowed: alias, forward, include."),
    p("allow_mail_to_files", "alias, forward", List,
      "Where /file deliveries are allowed: alias, forward, include."),
    p("default_privs", "nobody", Text,
      "The user whose rights deliveries to commands and files from root-owned aliases run with."),
    p("stale_lock_time", "500s", Time('s'),
      "How old a mailbox dot-lock (MAILBOX.lock) must be before delivery takes it for left over from a crash and removes it. A dot-lock holding the pid of a process that no longer exists is removed at once; one whose process is alive, or that holds no pid (Postfix writes none), is waited for until it is this old."),
    p("command_time_limit", "1000s", Time('s'),
      "The longest time a |command delivery may run; then its process group is killed and the message bounces."),
    p("bounce_size_limit", "50000", Number,
      "The largest original message a bounce returns whole, in bytes; a larger one is returned as its header only (text/rfc822-headers). 0 means no limit."),
    // Queue.
    p("queue_directory", "/var/spool/mailroom", Text,
      "The queue's top directory (Postfix: /var/spool/postfix)."),
    p("message_size_limit", "10240000", Number,
      "The largest message accepted, in bytes; 0 means no limit."),
    p("header_size_limit", "102400", Number,
      "The largest header field kept, in bytes (its name and folded lines included): a longer one is cut at this size and the rest of it discarded, and the header fields after it are read as usual, as Postfix's cleanup does. 0 means no limit."),
    p("cleanup_replace_stray_cr_lf", "yes", Bool,
      "Replace each carriage return that does not end a line in a message's text with a space, so that no server the message is relayed to can read it as a line break (outbound SMTP smuggling), as Postfix 3.9 does."),
    p("maximal_queue_lifetime", "5d", Time('d'),
      "How long a message is retried before it bounces."),
    p("bounce_queue_lifetime", "5d", Time('d'),
      "How long a bounce message is retried before it is given up."),
    p("minimal_backoff_time", "300s", Time('s'),
      "The shortest wait before a deferred message is retried."),
    p("maximal_backoff_time", "4000s", Time('s'),
      "The longest wait between retries of a deferred message."),
    p("queue_run_delay", "300s", Time('s'),
      "How often the daemon scans the deferred queue."),
    p("default_process_limit", "100", Number,
      "The most remote deliveries the daemon runs at once, each in a mailroom smtp-agent process (at most 1000); one over it waits in the active queue until another ends. Beside them, pickup and local delivery work on the disk, at most this many jobs at once, 8, and four per CPU."),
    p("max_idle", "100s", Time('s'),
      "How long a mailroom smtp-agent process is kept idle for the next remote delivery before it is told to quit (it says QUIT to the servers it keeps connections to first); as in Postfix, where an idle process ends itself after max_idle. Checked after each remote delivery and at the daemon's 10-second scans."),
    p("default_destination_concurrency_limit", "20", Number,
      "The most deliveries to one destination at once, for the delivery agents that have no limit of their own: the default of smtp_destination_concurrency_limit. 0 means no limit."),
    p("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit", Number,
      "The most SMTP deliveries in flight to one destination at once: to the relayhost when there is one, otherwise to the recipient's domain. A message whose destination has that many waits in the active queue, without a retry delay, until one of them ends; nothing is deferred for it. All remote deliveries together are also bounded by default_process_limit. Unlike Postfix, the limit is fixed: there is no slow start (initial_destination_concurrency) and no lowering after failures. 0 means no limit."),
    p("setgid_group", "mailroom", Text,
      "The group the installed sendmail and mailq run set-gid as (Postfix: setgid_group = postdrop). It owns maildrop/ (mode 1730: submissions only) and may read the other queue directories (mode 0750) and their files (mode 0640, set by the daemon at pickup), so that mailq works for the users authorized_mailq_users names. postsuper -s sets these modes and groups. When no such group exists, the queue stays root's alone (0700, 0600)."),
    p("mail_owner", "mailroom", Text,
      "The unprivileged account the SMTP server sessions and the SMTP client (with its DNS lookups) run as, and the owner of the queue directories and of the queue files (Postfix's parameter, whose default there is postfix). install.sh and the package create it as a system user whose primary group is setgid_group. It must not be root or in root's group. When the daemon runs as root and the account does not exist, the listener does not start and remote mail is deferred, and the log says why; mailroom check reports it."),
    p("authorized_mailq_users", "static:anyone", List,
      "Who may list the queue: static:anyone, or a list of user names."),
    // Logging.
    p("maillog_file", "", Text,
      "A file to log to instead of syslog; empty means syslog."),
    p("syslog_name", "mailroom", Text,
      "The program name in log lines (Postfix: postfix)."),
    p("syslog_facility", "mail", Text,
      "The syslog facility: mail, daemon, user, local0 to local7, or another name of syslog(3); an unknown name logs as mail."),
    p("syslog_socket", "/dev/log", Text,
      "The local syslog daemon's socket, where log lines go when maillog_file is empty; each line is an RFC 3164 message tagged with its own program name, mailroom/pickup, mailroom/local... (a mailroom parameter; Postfix always uses the C library's /dev/log)."),
    p("mail_name", "mailroom", Text,
      "The mail system's name in the SMTP banner and bounces (Postfix: Postfix)."),
    // SMTP client.
    p("smtp_tls_security_level", "", Text,
      "STARTTLS use when sending: none (never); may (when offered, without a certificate check; a failed handshake is retried in plain text); empty (unset) means may, unlike Postfix, whose empty default means none: opportunistic TLS to every destination, as modern MTAs do (set none to keep mail in plain text); encrypt (required, else the mail is deferred; no certificate check); verify, secure or dane-only (required, with the certificate checked against smtp_tls_CAfile or the built-in Mozilla roots and the server's name). dane is taken as may, which is what Postfix does for a destination without DNSSEC-signed TLSA records."),
    p("smtp_tls_wrappermode", "no", Bool,
      "Speak TLS from the first byte (implicit TLS, the SMTPS/submissions port 465) instead of STARTTLS, as with relayhost = [smtp.isp.example]:465. TLS is then always used, whatever smtp_tls_security_level says; the level only decides whether the certificate is checked (verify, secure) or not (none, may, encrypt), and a failed handshake defers the mail."),
    p("smtp_tls_CAfile", "", Text,
      "A PEM file of CA certificates trusted by the verify and secure levels, instead of the built-in Mozilla root store (as Postfix's tls_append_default_CA = no). At the levels that check nothing (may, encrypt) it only names the connection in the log: Trusted when the server's certificate chains to it, else Untrusted."),
    p("smtp_sasl_auth_enable", "no", Bool,
      "Authenticate to the server with SMTP AUTH (PLAIN or LOGIN) when smtp_sasl_password_maps has credentials for it. Authentication failures defer the mail."),
    p("smtp_sasl_password_maps", "", Tables,
      "Tables of server to user:password for SMTP AUTH. mailroom reads the source text file of hash:, btree:, cdb:, lmdb: and texthash: tables itself (no postmap needed), at each delivery; lines are KEY user:password, looked up first by the next hop as written in relayhost ([host]:port), then by the server's host name. static:user:password answers every server. A warning is logged when the file is readable by group or others."),
    p("smtp_sasl_security_options", "noplaintext, noanonymous", List,
      "With noplaintext (the default), the password is never sent over a connection without TLS; over TLS, PLAIN and LOGIN are always allowed (Postfix's default refuses them even there)."),
    p("smtp_helo_name", "$myhostname", Text,
      "The name sent in EHLO (the SMTP client never says HELO)."),
    p("smtp_discard_ehlo_keywords", "", List,
      "EHLO keywords the SMTP client acts as if the server had not offered, in any case: pipelining (commands one at a time), starttls, auth, size, dsn, 8bitmime, smtputf8; others are accepted and change nothing. Each new connection that discards an offered keyword logs host[addr]: discarding EHLO keywords: ..., unless the list also holds silent-discard. For a server that announces an extension it gets wrong."),
    p("smtp_mx_address_limit", "5", Number,
      "The most server addresses tried per delivery, over all MX hosts or relay hosts; 0 means no limit."),
    p("smtp_connect_timeout", "30s", Time('s'),
      "The longest wait for a TCP connection to a server; then the next address is tried. lettre's client also waits no longer than this for the greeting and the reply to the first EHLO."),
    p("smtp_helo_timeout", "300s", Time('s'),
      "The longest wait for the server's greeting and its reply to EHLO (and AUTH); the greeting and the first EHLO also count against smtp_connect_timeout, whichever is shorter."),
    p("smtp_starttls_timeout", "300s", Time('s'),
      "The longest wait for the reply to STARTTLS, for the TLS handshake and for the reply to the EHLO that follows it."),
    p("smtp_mail_timeout", "300s", Time('s'),
      "The longest wait for the reply to MAIL FROM."),
    p("smtp_rcpt_timeout", "300s", Time('s'),
      "The longest wait for the reply to each RCPT TO."),
    p("smtp_data_init_timeout", "120s", Time('s'),
      "The longest wait for the reply to DATA."),
    p("smtp_data_xfer_timeout", "180s", Time('s'),
      "The longest wait for each write of the message content to complete (the client waits the longer of this and smtp_data_done_timeout for both)."),
    p("smtp_data_done_timeout", "600s", Time('s'),
      "The longest wait for the server's reply after the message has been sent (the client waits the longer of this and smtp_data_xfer_timeout for both)."),
    p("smtp_quit_timeout", "300s", Time('s'),
      "The longest wait for the reply to QUIT."),
    p("smtp_connection_cache_on_demand", "yes", Bool,
      "Keep a connection open after a successful mail transaction, for the next message to the same server (same address and port, host name, TLS and SASL settings, HELO name), instead of saying QUIT at once. Each smtp-agent process keeps its own connections, so up to one per agent per server. Unlike Postfix, which caches only while a destination has a backlog, mailroom caches after every successful delivery; an unused connection is closed after smtp_connection_cache_time_limit."),
    p("smtp_connection_cache_time_limit", "2s", Time('s'),
      "How long a cached connection may stay unused before the client closes it with QUIT, whether or not more mail comes. Do not raise it without the remote site's permission."),
    p("smtp_connection_reuse_time_limit", "300s", Time('s'),
      "How long a connection may be used for new transactions, counted from the moment it was opened (connect, greeting, EHLO, TLS and AUTH included); older connections are closed after their last transaction instead of cached."),
    p("smtp_connection_reuse_count_limit", "0", Number,
      "How many times a connection may be reused; with N, a connection carries up to N+1 transactions, as in Postfix. 0 means no limit (smtp_connection_reuse_time_limit still applies)."),
    // DNS (a mailroom parameter; Postfix always uses the C library's resolver).
    p("dns_nameservers", "", List,
      "The name servers every DNS lookup of mailroom asks (the SMTP client's MX and address lookups, mailroom dns), as ADDRESS or ADDRESS:PORT (an IPv6 address with a port as [ADDRESS]:PORT; port 53 when none is given), at most 8; empty means the system's resolver configuration, /etc/resolv.conf. Servers are given by address, since finding one by name would need DNS. An entry that is not an address is a configuration error: remote mail is deferred and mailroom check reports it. For split-horizon set-ups and tests; mailroom dns --server overrides it for one run."),
    // DKIM signing (mailroom parameters; Postfix needs a milter such as OpenDKIM).
    p("dkim_selector", "", Text,
      "The DKIM selector mail is signed with (s=, the DNS record SELECTOR._domainkey.DOMAIN); empty means no signing. Mail leaving over SMTP (relayhost or MX) whose From: address is in one of dkim_domains gets one DKIM-Signature: field, relaxed/relaxed, rsa-sha256 or ed25519-sha256 by the key's type, covering those of From, To, Cc, Subject, Date, Message-ID, MIME-Version, Content-Type, Reply-To, In-Reply-To and References it has. The SMTP client signs, once per delivery attempt, not cleanup: the keys are root's and only the client reads them, at its start, before it becomes mail_owner (see mailroom-smtp(8)). mailroom dkim keygen makes a key and prints the record to publish."),
    p("dkim_domains", "$mydomain", List,
      "The domains whose mail is signed: a message is signed when the domain of its From: address (one From: field, all its addresses in one domain) is one of these, compared case-insensitively, and it has no DKIM-Signature: of that domain yet. Each needs a key in dkim_key_directory; one that is missing or unusable is a warning in the log when the SMTP client starts, and that domain's mail leaves unsigned, never deferred."),
    p("dkim_key_directory", "$config_directory/dkim", Text,
      "The directory of the DKIM private keys: DOMAIN.SELECTOR.key, in PEM (RSA in PKCS#1 or PKCS#8, Ed25519 in PKCS#8; RSA keys under 2048 bits are refused). Keys should be root's, mode 0600, as mailroom dkim keygen writes them; they are read again when the daemon is reloaded."),
    // SMTP server.
    p("smtpd_port", "25", Text,
      "The TCP port of the SMTP listener started by sendmail -bd/-bD; empty means no listener (a mailroom parameter; Postfix sets this in master.cf)."),
    p("smtps_port", "", Text,
      "The TCP port of the mail submission listener with TLS from the first byte (RFC 8314's submissions: implicit TLS, usually 465), with smtpd_tls_cert_file and smtpd_tls_key_file; empty means none (a mailroom parameter; Postfix's master.cf submissions entry, formerly smtps: smtpd_tls_wrappermode = yes, smtpd_sasl_auth_enable = yes, only permit_sasl_authenticated). Its sessions are those of submission_port except that TLS starts before the greeting instead of with STARTTLS: no STARTTLS is offered; AUTH is offered from the first EHLO, whatever smtpd_sasl_auth_enable says, and required: MAIL before AUTH is answered 530 5.7.0 Authentication required, from mynetworks too, and only a logged-in client may send, to any domain (Received: says ESMTPSA). Log lines say smtps (mailroom/smtps/smtpd) and its clients are counted as service smtps. Without a usable certificate, or with smtpd_sasl_type other than dovecot, nobody could ever send through it: it stays off, with a warning in the log, from mailroom check and in mailroom status."),
    p("smtpd_banner", "$myhostname ESMTP $mail_name", Text,
      "The text after 220 in the SMTP greeting."),
    p("smtpd_recipient_limit", "1000", Number,
      "The most recipients accepted in one SMTP transaction."),
    p("smtpd_timeout", "300s", Time('s'),
      "How long an SMTP client may take: with smtpd_per_request_deadline = yes, for a whole command line and its reply (the message text: see smtpd_min_data_rate), else for each read or write; then the server answers 421 4.4.2 $myhostname Error: timeout exceeded, logs timeout after COMMAND from CLIENT, and closes."),
    p("smtpd_recipient_overshoot_limit", "1000", Number,
      "How many RCPT commands over smtpd_recipient_limit are answered 452 before each further one counts as an error."),
    p("smtpd_hard_error_limit", "20", Number,
      "The most error replies (4xx, 5xx) in one SMTP session without a message taken in between (a message taken forgives the errors before it); then the server answers 421 4.7.0 $myhostname Error: too many errors and closes."),
    // SMTP server: per-request deadlines, the tarpit and per-client limits (anvil).
    p("smtpd_per_request_deadline", "yes", Bool,
      "Whether smtpd_timeout bounds a whole request (a command line with its reply, or the message text) rather than each read or write, so that a client sending one byte at a time cannot hold a session for ever. Postfix's default is no (yes only under overload); mailroom's is yes, because a listener open to the internet must not let one slow client keep sessions, and the time it gives an honest client is the same."),
    p("smtpd_min_data_rate", "500", Number,
      "With smtpd_per_request_deadline = yes, the bytes per second of message text that earn one more second, up to smtpd_timeout again: a message sent at least this fast is never cut off, a slower one is after smtpd_timeout less what its bytes earned. 0 gives the message text smtpd_timeout in all."),
    p("smtpd_soft_error_limit", "10", Number,
      "From this many errors on in an SMTP session (counted as for smtpd_hard_error_limit), every reply waits smtpd_error_sleep_time first."),
    p("smtpd_junk_command_limit", "100", Number,
      "How many commands that move no mail (HELO, EHLO, RSET, NOOP, VRFY) a client may send without a message taken before each further one counts as an error (see smtpd_soft_error_limit, smtpd_hard_error_limit): a client cannot keep a session for ever with a NOOP now and then."),
    p("smtpd_error_sleep_time", "1s", Time('s'),
      "The wait before each reply to a client past smtpd_soft_error_limit errors."),
    p("smtpd_client_connection_count_limit", "50", Number,
      "The most connections one client address may have open to the SMTP listener at once; a connection over it is answered 421 4.7.0 $myhostname Error: too many connections from ADDR before the greeting and closed, with the warning Connection concurrency limit exceeded: N from CLIENT for service smtp. It does not take a session's place (smtpd_process_limit). 0 means no limit."),
    p("smtpd_client_connection_rate_limit", "0", Number,
      "The most connections one client address may make to the SMTP listener per anvil_rate_time_unit, refused ones included; then as smtpd_client_connection_count_limit, with the warning Connection rate limit exceeded. 0 means no limit."),
    p("smtpd_client_message_rate_limit", "0", Number,
      "The most MAIL FROM commands one client address may send per anvil_rate_time_unit, whether or not the mail is taken; the next are answered 450 4.7.1 Error: too much mail from ADDR, with the warning Message delivery request rate limit exceeded. 0 means no limit."),
    p("smtpd_client_recipient_rate_limit", "0", Number,
      "The most RCPT TO commands one client address may send per anvil_rate_time_unit, whether or not the recipients are taken; the next are answered 450 4.7.1 Error: too many recipients from ADDR, with the warning Recipient address rate limit exceeded. 0 means no limit."),
    p("smtpd_client_event_limit_exceptions", "$mynetworks", List,
      "Clients (addresses and networks, as in mynetworks) that no smtpd_client_*_limit applies to. Postfix writes the default as ${smtpd_client_connection_limit_exceptions:$mynetworks}, which is $mynetworks unless that obsolete parameter is set."),
    p("smtpd_client_ipv4_prefix_length", "32", Number,
      "The smtpd_client_*_limit parameters count IPv4 clients by network blocks of this many bits (32: each address; at most 32)."),
    p("smtpd_client_ipv6_prefix_length", "84", Number,
      "The smtpd_client_*_limit parameters count IPv6 clients by network blocks of this many bits (at most 128): one IPv6 client can use a whole /64 or more, so each address alone would let it past every limit."),
    p("anvil_rate_time_unit", "60s", Time('s'),
      "The time unit of the smtpd_client_*_rate_limit parameters. A client's window opens at its first event and is reset by its first event after a unit; a client with no connection open is forgotten a unit after it leaves. The counts live in the SMTP sessions process and start again when it is restarted (mailroom reload)."),
    p("smtpd_process_limit", "$default_process_limit", Number,
      "The most SMTP sessions the listener serves at once; more clients are answered 421 and closed (a mailroom parameter; Postfix sets this in master.cf)."),
    p("smtpd_chroot", "no", Bool,
      "Whether the SMTP sessions process, started by a daemon running as root, also confines itself to queue_directory (chroot) before it becomes mail_owner (a mailroom parameter; Postfix sets chroot per service in master.cf). It has read main.cf, the TLS files and opened its log by then; the local time zone is kept from /etc/localtime's rule (a TZ naming a file is not found inside), and a syslog daemon restarted meanwhile is not reached again. local_recipient_maps is then answered from a snapshot of the passwd names and alias databases taken before the chroot, renewed by mailroom reload."),
    p("line_length_limit", "2048", Number,
      "The longest SMTP command line accepted; a longer one is read to its end and answered 500."),
    p("smtpd_forbid_bare_newline", "normalize", Text,
      "What the SMTP listener does with a line that ends in a bare LF instead of CRLF (SMTP smuggling, CVE-2023-51764): normalize (or yes) takes it as CRLF, but only CRLF.CRLF ends DATA, and a dot line next to a bare LF is kept as text; note does the same and adds notes=bare_lf to the disconnect log line; reject answers $smtpd_forbid_bare_newline_reject_code 5.5.2 (a command: and closes the connection; message text: after its end, and nothing is queued); no lets a dot line with bare LFs end DATA (Postfix before 3.9). sendmail -bs: a client that ends its DATA command with CRLF must end the data with CRLF.CRLF, one that ends it with a bare LF may end it with LF.LF (Postfix enforces nothing on a local client)."),
    p("smtpd_forbid_bare_newline_exclusions", "", List,
      "Clients (addresses and networks, as in mynetworks; $mynetworks works) for which smtpd_forbid_bare_newline is no. Postfix's default is $mynetworks; mailroom's is empty, because a relay inside mynetworks that passes internet mail on (a filter appliance) is just where smuggled mail would come from."),
    p("smtpd_forbid_bare_newline_reject_code", "550", Number,
      "The reply code of smtpd_forbid_bare_newline = reject, 500 to 599 (521 to say the server closes the connection)."),
    p("smtpd_authentication_results", "yes", Bool,
      "Whether mail the SMTP listener receives from clients outside mynetworks that have not logged in with AUTH gets one Authentication-Results: $myhostname; spf=...; dkim=...; dmarc=... header (RFC 8601): SPF of the client's address for the envelope sender (the HELO name for the null sender), each DKIM signature, and DMARC of the From: domain, evaluated with the mail-auth library against the servers of dns_nameservers. The whole message is held in memory for it (at most message_size_limit) and the lookups get 10 seconds per message in all; when they do not finish, every result is temperror and the message is queued as always. Authentication-Results: fields of the message that name $myhostname are removed first (RFC 8601 section 5). A mailroom parameter; Postfix needs a milter such as OpenDMARC."),
    p("smtpd_tls_cert_file", "", Text,
      "The PEM certificate (chain) the SMTP listener offers with STARTTLS; setting it turns STARTTLS on when smtpd_tls_security_level is empty."),
    p("smtpd_tls_key_file", "$smtpd_tls_cert_file", Text,
      "The PEM private key of smtpd_tls_cert_file."),
    p("smtpd_tls_security_level", "", Text,
      "STARTTLS offer of the SMTP listener: none (not offered), may (offered), encrypt (required before MAIL); empty means may when smtpd_tls_cert_file is set, else none. sendmail -bs never offers it."),
    p("smtpd_relay_restrictions",
      "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination", List,
      "Who may send mail to which domains over SMTP, read left to right at RCPT TO before smtpd_recipient_restrictions: permit_mynetworks (the client is in mynetworks), permit_sasl_authenticated (it has logged in with AUTH), permit_auth_destination (the recipient's domain is in mydestination or relay_domains), reject_unauth_destination (any other domain: 554 5.7.1 <rcpt>: Relay access denied), defer_unauth_destination (the same with 454 4.7.1), permit, reject, defer. The first permit ends the list, the first refusal refuses the recipient. Other Postfix restrictions (table lookups, RBLs, policy services) are ignored with a warning; when neither list can stop relaying, reject_unauth_destination is added with a warning. Postfix's default ends in defer_unauth_destination (454); mailroom's in reject_unauth_destination (554), which is what its listener has always answered. sendmail -bs is not subject to either list (a local submission is trusted, as in Postfix)."),
    p("smtpd_recipient_restrictions", "", List,
      "More restrictions for RCPT TO, with the names and rules of smtpd_relay_restrictions, read after it (for example permit_sasl_authenticated, reject: only logged-in clients)."),
    p("smtpd_sasl_auth_enable", "no", Bool,
      "Offer SMTP AUTH (RFC 4954) in the SMTP listener (the submission_port and smtps_port listeners always offer it), with the password checked by Dovecot through smtpd_sasl_path; the mechanisms offered are those of PLAIN and LOGIN that Dovecot offers. A logged-in client passes permit_sasl_authenticated, its mail's Received: header says ESMTPA (ESMTPSA over TLS), and the queue ID's client= log line adds sasl_method= and sasl_username=. When Dovecot cannot be reached, EHLO still offers the last mechanisms it gave (PLAIN LOGIN before it ever answered) and AUTH is answered 454 4.7.0 Temporary authentication failure, with a warning. sendmail -bs never offers AUTH."),
    p("smtpd_sasl_type", "dovecot", Text,
      "The SASL server: dovecot, the only one mailroom speaks (Dovecot's auth protocol, version 1). Any other value (cyrus) turns AUTH off with a warning, and keeps the submission_port and smtps_port listeners closed."),
    p("smtpd_sasl_path", "private/auth", Text,
      "Dovecot's auth-client socket (a UNIX socket; unix: in front is allowed): a relative path is relative to queue_directory, as in Postfix, and so also reachable under smtpd_chroot = yes; an absolute one must then lie under queue_directory. The daemon makes the directory of a socket under queue_directory (private/, mode 0700, mail_owner's) when AUTH, submission_port or smtps_port is configured: Dovecot cannot bind its listener without it. The sessions process connects as mail_owner, so the socket must be writable by it (Dovecot: service auth { unix_listener ... { user = mailroom  group = mailroom  mode = 0660 } })."),
    p("smtpd_sasl_security_options", "noanonymous", List,
      "Which mechanisms AUTH may offer without TLS, by Dovecot's properties of each: noplaintext (none that sends the password in clear: PLAIN and LOGIN), noanonymous, nodictionary, noactive; mutual_auth and forward_secrecy require the property. mailroom offers only PLAIN and LOGIN, so noplaintext here with noanonymous in smtpd_sasl_tls_security_options offers AUTH only after STARTTLS, as Postfix does."),
    p("smtpd_sasl_tls_security_options", "$smtpd_sasl_security_options", List,
      "smtpd_sasl_security_options for sessions over TLS."),
    p("smtpd_sasl_service", "smtp", Text,
      "The service name Dovecot is told with each AUTH (service=), which its passdb may look at."),
    p("smtpd_sasl_authenticated_header", "no", Bool,
      "Add (Authenticated sender: NAME) with the login name to the Received: header of mail from a logged-in client, as Postfix does. Off by default: the login name is private."),
    p("broken_sasl_auth_clients", "no", Bool,
      "Also advertise AUTH in the obsolete AUTH=PLAIN LOGIN form that Outlook Express 4 and Microsoft Exchange 5.0 need."),
    p("smtpd_tls_auth_only", "no", Bool,
      "Offer and accept AUTH only after STARTTLS, so that no password crosses the network in clear (before it AUTH is answered 503 5.5.1 Error: authentication not enabled, as in Postfix). smtpd_tls_security_level = encrypt implies it."),
    p("submission_port", "", Text,
      "The TCP port of the mail submission listener (RFC 6409) started beside the SMTP listener at inet_interfaces, usually 587; empty means none (a mailroom parameter; Postfix sets this in master.cf). Its sessions are those of Postfix's master.cf submission entry: logged as submission (mailroom/submission/smtpd), STARTTLS required (smtpd_tls_security_level = encrypt: 530 5.7.0 Must issue a STARTTLS command first), AUTH on (smtpd_sasl_auth_enable = yes, smtpd_tls_auth_only = yes) and required: MAIL before AUTH is answered 530 5.7.0 Authentication required, and only a logged-in client may send, to any domain. Without a usable smtpd_tls_cert_file or with smtpd_sasl_type other than dovecot, nobody could ever send through it: the port is then not opened, with a warning in the log, in mailroom status and in mailroom check."),
    p("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps", Tables,
      "The names a recipient in a mydestination domain must have for the SMTP server (the listener and sendmail -bs) to take it: the local part (case-folded; user+ext also as user, with recipient_delimiter) must be in one of these tables, else the RCPT is answered $unknown_local_recipient_reject_code 5.1.1 Recipient address rejected: User unknown in local recipient table, and nothing is queued for it (no bounce later: backscatter). unix:passwd.byname (also as proxy:unix:passwd.byname) is the passwd database; hash:, cdb:, btree:, lmdb:, dbm: and sdbm: tables are read as alias databases (the SOURCE.cdb newaliases builds, re-read when rebuilt); any other table answers 451 4.3.0 Temporary lookup failure, with a warning. Empty means every local part is taken (Postfix's meaning). Under smtpd_chroot = yes the passwd names and the alias databases are a snapshot taken when the sessions process starts: after adding users or running newaliases, run mailroom reload. Unlike Postfix, sendmail -bs checks too, so a local client learns of a mistyped user at once rather than from a bounce."),
    p("unknown_local_recipient_reject_code", "550", Number,
      "The reply code for a recipient that local_recipient_maps does not know, 400 to 599; the enhanced status code is 5.1.1 for 5XX and 4.1.1 for 4XX (450 while testing a new table: clients retry)."),
    // Accepted for compatibility with existing Postfix configurations, no effect.
    inert("compatibility_level", "0", Text,
      "Postfix's backwards-compatibility switch; mailroom always behaves like Postfix 3.x at its current level."),
    inert("biff", "yes", Bool, "Notify the local biff service of new mail."),
    inert("append_dot_mydomain", "no", Bool,
      "Append .$mydomain to host names without a dot (Postfix's address rewriting)."),
    inert("readme_directory", "no", Text, "Where Postfix's README files are installed."),
    inert("html_directory", "no", Text, "Where Postfix's HTML documentation is installed."),
    inert("manpage_directory", "/usr/share/man", Text, "Where Postfix's man pages are installed."),
    inert("sample_directory", "/etc/postfix", Text, "Where Postfix's sample files are installed."),
    inert("data_directory", "/var/lib/mailroom", Text,
      "Postfix's directory for caches and random seeds (referenced by the TLS session cache parameters)."),
    inert("command_directory", "/usr/sbin", Text, "Where Postfix's commands are installed."),
    inert("daemon_directory", "/usr/lib/postfix/sbin", Text, "Where Postfix's daemons are installed."),
    inert("meta_directory", "/etc/postfix", Text, "Where Postfix's non-executable files are installed."),
    inert("shlib_directory", "no", Text, "Where Postfix's shared libraries are installed."),
    inert("sendmail_path", "/usr/sbin/sendmail", Text, "Postfix's sendmail path."),
    inert("newaliases_path", "/usr/bin/newaliases", Text, "Postfix's newaliases path."),
    inert("mailq_path", "/usr/bin/mailq", Text, "Postfix's mailq path."),
    inert("default_transport", "smtp", Text,
      "Postfix's delivery transport for remote mail (error in a local-only setup)."),
    inert("relay_transport", "relay", Text, "Postfix's delivery transport for relay_domains."),
    inert("mailbox_command", "", Text, "A command that delivers to mailboxes (procmail)."),
    inert("delay_warning_time", "0h", Time('h'),
      "When to send a delayed-mail warning; mailroom sends none."),
    inert("smtpd_client_restrictions", "", List, "Postfix's client access rules."),
    inert("smtpd_helo_restrictions", "", List, "Postfix's HELO access rules."),
    inert("smtpd_sender_restrictions", "", List, "Postfix's MAIL FROM access rules."),
    inert("smtpd_helo_required", "no", Bool, "Require HELO or EHLO before MAIL FROM."),
    inert("disable_vrfy_command", "no", Bool, "Refuse the VRFY command."),
    inert("smtpd_sasl_local_domain", "", Text,
      "The SASL realm; Postfix passes it to Cyrus SASL only, and Dovecot never sees it."),
    inert("smtpd_use_tls", "no", Bool, "Obsolete form of smtpd_tls_security_level = may."),
    inert("smtpd_enforce_tls", "no", Bool, "Obsolete form of smtpd_tls_security_level = encrypt."),
    inert("smtp_use_tls", "no", Bool, "Obsolete form of smtp_tls_security_level = may."),
    inert("smtp_enforce_tls", "no", Bool, "Obsolete form of smtp_tls_security_level = encrypt."),
    inert("smtpd_tls_session_cache_database", "", Text, "Postfix's server-side TLS session cache."),
    inert("smtp_tls_session_cache_database", "", Text, "Postfix's client-side TLS session cache."),
    inert("smtp_tls_CApath", "", Text,
      "A directory of trusted CA certificates; mailroom uses its built-in root store."),
    inert("smtpd_tls_CApath", "", Text, "CA certificates for verifying client certificates."),
    inert("smtpd_tls_CAfile", "", Text, "CA certificates for verifying client certificates."),
    inert("smtp_tls_loglevel", "0", Number, "Postfix's TLS client log detail."),
    inert("smtpd_tls_loglevel", "0", Number, "Postfix's TLS server log detail."),
    inert("smtpd_tls_received_header", "no", Bool, "Add TLS details to Received headers."),
    inert("smtp_tls_note_starttls_offer", "no", Bool, "Log servers that offer STARTTLS."),
    inert("smtp_tls_mandatory_protocols", "", List, "TLS protocol versions for mandatory TLS."),
    inert("smtpd_tls_mandatory_protocols", "", List, "TLS protocol versions for mandatory TLS."),
    inert("smtp_tls_protocols", "", List, "TLS protocol versions for opportunistic TLS."),
    inert("smtpd_tls_protocols", "", List, "TLS protocol versions for opportunistic TLS."),
    inert("smtp_sasl_tls_security_options", "$smtp_sasl_security_options", List,
      "SASL mechanism restrictions of the SMTP client over TLS."),
    inert("tls_random_source", "", Text, "Postfix's source of TLS randomness."),
];

/// Every known parameter, effective ones first.
pub fn known_parameters() -> &'static [ParamInfo] {
    PARAMETERS
}

/// The table entry for `name`, if it is a known parameter.
pub fn find(name: &str) -> Option<&'static ParamInfo> {
    PARAMETERS.iter().find(|info| info.name == name)
}

/// The roff text of the man page's two parameter lists, generated from the table so the
/// documentation cannot drift from the code.
pub fn man_section() -> String {
    let mut out = String::new();
    out.push_str(".SH PARAMETERS\n");
    for info in PARAMETERS.iter().filter(|i| i.effective) {
        out.push_str(&man_entry(info));
    }
    out.push_str(".SH ACCEPTED WITHOUT EFFECT\n");
    out.push_str(
        "These Postfix parameters appear in stock Postfix configurations. mailroom loads them \
         silently so that an existing main.cf works, but they change nothing;\n\
         .B mailroom check\n\
         says so.\n",
    );
    for info in PARAMETERS.iter().filter(|i| !i.effective) {
        out.push_str(&man_entry(info));
    }
    out
}

fn man_entry(info: &ParamInfo) -> String {
    let default = if COMPUTED.contains(&info.name) {
        "computed".to_string()
    } else if info.default.is_empty() {
        "empty".to_string()
    } else {
        format!("\\fB{}\\fR", roff_escape(info.default))
    };
    format!(
        ".TP\n.B {}\n({}; default: {})\n{}\n",
        info.name,
        info.kind.describe(),
        default,
        roff_text(info.description)
    )
}

/// Escapes backslashes, which roff would take as escapes.
fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e")
}

/// Escapes text for a roff line, guarding a leading `.` or `'` that roff would read as a
/// request.
fn roff_text(text: &str) -> String {
    let escaped = roff_escape(text);
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for info in known_parameters() {
            assert!(seen.insert(info.name), "duplicate {}", info.name);
            assert!(
                info.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{}",
                info.name
            );
            assert!(!info.description.is_empty(), "{}", info.name);
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let d = |name| find(name).unwrap().default;
        assert_eq!(d("queue_directory"), "/var/spool/mailroom");
        assert_eq!(d("inet_interfaces"), "loopback-only");
        assert_eq!(d("myorigin"), "$myhostname");
        assert_eq!(
            d("mydestination"),
            "$myhostname, localhost.$mydomain, localhost"
        );
        assert_eq!(d("alias_maps"), "hash:/etc/aliases");
        assert_eq!(d("message_size_limit"), "10240000");
        assert_eq!(find("maximal_queue_lifetime").unwrap().kind, Time('d'));
        assert_eq!(find("minimal_backoff_time").unwrap().kind, Time('s'));
        assert!(!find("biff").unwrap().effective);
        assert!(find("data_directory").is_some());
        assert!(find("no_such_thing").is_none());
    }

    #[test]
    fn roff_guards_requests_and_backslashes() {
        assert_eq!(roff_text(".x"), "\\&.x");
        assert_eq!(roff_text("a\\b"), "a\\eb");
    }
}
