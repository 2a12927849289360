//! The SMTP client in `mailroom smtp-agent` processes: the process that talks to a
//! server is the agent, as `mail_owner` when the daemon runs as root; an agent that dies
//! in the middle of a delivery defers its recipients and the next message goes out
//! through a new one; warnings of the client reach the daemon's log.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::MailSystem;
use common::listening::Daemon;
use common::smtp_server::Step::{self, *};
use common::smtp_server::{Scripted, SlowSink};
use mailroom::deliver::smtp::agent::{AgentProcess, Reply};
use mailroom::deliver::{MessageSource, Outcome, Status};
use mailroom::queue::{Envelope, QueueId, QueueName, Recipient};

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");
const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");

fn daemon(sys: &MailSystem) -> Daemon {
    Daemon::start_and_wait(sys, Duration::from_secs(30))
}

fn wait_for(sys: &MailSystem, what: &str, done: impl FnMut() -> bool) {
    common::wait_for(sys, what, Duration::from_secs(30), done)
}

fn send(sys: &MailSystem, to: &str, subject: &str) {
    let body = format!("Subject: {subject}\n\nhello\n");
    let out = sys.run(
        SENDMAIL,
        &["-i", "-f", "sender@example.org", to],
        body.as_bytes(),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// A whole conversation that delivers one recipient; `first` comes before the greeting.
fn conversation(first: &[Step]) -> Vec<Step> {
    let mut steps = first.to_vec();
    steps.extend([
        Say("220 test.example ESMTP"),
        Expect("EHLO"),
        Say("250-test.example\r\n250 8BITMIME"),
        Expect("EHLO"),
        Say("250-test.example\r\n250 8BITMIME"),
        Expect("MAIL FROM:"),
        Say("250 2.1.0 Ok"),
        Expect("RCPT TO:"),
        Say("250 2.1.5 Ok"),
        Expect("DATA"),
        Say("354 End data with <CR><LF>.<CR><LF>"),
        Data,
        Say("250 2.0.0 Ok: queued"),
        Expect("QUIT"),
        Say("221 2.0.0 Bye"),
    ]);
    steps
}

// ---------------------------------------------------------------------------------------
// Which process holds a TCP connection: /proc/net/tcp gives the socket's inode,
// /proc/PID/fd the process that has it open.

/// The inode of the socket from 127.0.0.1:`local` to 127.0.0.1:`remote`.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = format!("0100007F:{local:04X}");
    let want_remote = format!("0100007F:{remote:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&want_local.as_str())
            && fields.get(2) == Some(&want_remote.as_str()))
        .then(|| fields.get(9)?.parse().ok())
        .flatten()
    })
}

/// The process that has socket `inode` open.
fn holder(inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The process at the client's end of the connection from `peer` to the server on
/// `server_port`.
fn client_process(peer: std::net::SocketAddr, server_port: u16) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = socket_inode(peer.port(), server_port).and_then(holder) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no process holds {peer}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A line of /proc/PID/status (`Uid:`, `PPid:`), its first value.
fn status_field(pid: u32, name: &str) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in the status of {pid}"));
    line[name.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The `smtp-agent` children of `daemon`.
fn agents_of(daemon: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.lines().any(|l| l == format!("PPid:\t{daemon}")))
                && command_line(pid).contains(" smtp-agent ")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------

#[test]
fn the_process_that_talks_to_the_server_is_mail_owner() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root (the daemon drops to mail_owner only as root)");
        return;
    }
    // The server waits before its greeting: time to see who is connected.
    let server = Scripted::start(vec![conversation(&[Silence])]);
    let sys = MailSystem::new(&format!("relayhost = [127.0.0.1]:{}", server.port));
    let owner = nix::unistd::User::from_name(common::TEST_MAIL_OWNER)
        .unwrap()
        .expect("the test mail_owner exists");
    let d = daemon(&sys);
    send(&sys, "someone@example.net", "who am I");
    let pid = client_process(server.peer(0), server.port);
    assert_eq!(
        status_field(pid, "PPid:"),
        d.0.id(),
        "a child of the daemon"
    );
    assert!(
        command_line(pid).contains(" smtp-agent "),
        "{}",
        command_line(pid)
    );
    let uid = status_field(pid, "Uid:");
    assert_ne!(uid, 0, "the SMTP client runs as root");
    assert_eq!(
        uid,
        owner.uid.as_raw(),
        "the SMTP client runs as mail_owner"
    );
    wait_for(&sys, "delivery", || sys.maillog().contains("status=sent"));
    let transcript = server.finish();
    assert!(
        transcript.iter().any(|l| l.starts_with("DATA ")),
        "{transcript:?}"
    );
}

/// Agents started for a burst of deliveries in parallel are told to quit once idle for
/// `max_idle`, and the one in use stays.
#[test]
fn agents_idle_for_max_idle_are_let_go() {
    const BURST: usize = 4;
    let sink = SlowSink::start(Duration::from_millis(700));
    let sys = MailSystem::new(&format!(
        "relayhost = [127.0.0.1]:{}\nmax_idle = 1s",
        sink.port
    ));
    let d = daemon(&sys);
    for n in 0..BURST {
        let body = format!("Subject: burst {n}\n\nhello\n");
        let out = sys.run(
            SENDMAIL,
            &["-odq", "-i", "-f", "sender@example.org", "r@example.net"],
            body.as_bytes(),
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
    }
    wait_for(&sys, "the burst in flight", || sink.in_flight() == BURST);
    assert_eq!(agents_of(d.0.id()).len(), BURST, "one agent each");
    wait_for(&sys, "the burst delivered", || sink.messages() == BURST);
    std::thread::sleep(Duration::from_millis(1500));
    send(&sys, "r@example.net", "after the burst");
    wait_for(&sys, "the idle agents to go", || {
        agents_of(d.0.id()).len() == 1
    });
    assert_eq!(sink.messages(), BURST + 1);
}

#[test]
fn an_agent_that_dies_defers_its_batch_and_a_new_one_takes_over() {
    // Session 0 waits before its greeting while the test kills the agent; session 1
    // delivers the next message.
    let server = Scripted::start(vec![conversation(&[Silence]), conversation(&[])]);
    let sys = MailSystem::new(&format!("relayhost = [127.0.0.1]:{}", server.port));
    let d = daemon(&sys);
    send(&sys, "first@example.net", "first");
    let victim = client_process(server.peer(0), server.port);
    assert_eq!(
        agents_of(d.0.id()),
        [victim],
        "the agent holds the connection"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(&sys, "the deferral", || {
        sys.maillog().contains("status=deferred")
    });
    let text = sys.maillog();
    let line = text
        .lines()
        .find(|l| l.contains("status=deferred"))
        .unwrap();
    assert!(line.contains("to=<first@example.net>"), "{line}");
    assert!(line.contains("dsn=4.3.0"), "{line}");
    assert!(
        line.contains(&format!("delivery agent smtp-agent[{victim}] died")),
        "{line}"
    );
    // The daemon logs the outcome before it moves the file to deferred/.
    wait_for(&sys, "the first message to wait in deferred/", || {
        sys.messages(QueueName::Deferred).len() == 1
    });

    send(&sys, "second@example.net", "second");
    wait_for(&sys, "the second delivery", || {
        sys.maillog().contains("status=sent")
    });
    assert!(
        sys.maillog()
            .contains("to=<second@example.net>, relay=127.0.0.1")
    );
    let agents = agents_of(d.0.id());
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_ne!(agents[0], victim, "a new agent");
    drop(d);
    server.finish();
}

/// An agent started by hand, as the daemon starts one: its outcomes, and the client's
/// warnings sent back for the daemon to log.
#[test]
fn an_agent_reports_outcomes_and_the_clients_warnings() {
    let server = Scripted::start(vec![
        vec![
            Say("220 test.example ESMTP"),
            Expect("EHLO"),
            Say("250-test.example\r\n250 STARTTLS"),
            Expect("STARTTLS"),
            Say("454 4.7.0 TLS not available"),
        ],
        conversation(&[]),
        conversation(&[]),
    ]);
    let sys = MailSystem::new(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = may",
        server.port
    ));
    let mut agent = AgentProcess::start(Path::new(MAILROOM), &sys.config_dir()).unwrap();
    let reply = deliver_sample(&mut agent);
    assert_eq!(reply.outcomes.len(), 1);
    assert_eq!(
        reply.outcomes[0].status,
        Status::Sent,
        "{:?}",
        reply.outcomes
    );
    assert_eq!(reply.warnings.len(), 1, "{:?}", reply.warnings);
    assert!(
        reply.warnings[0].contains("refused to start TLS"),
        "{:?}",
        reply.warnings
    );
    // The same process serves the next job.
    let pid = agent.pid();
    let reply = deliver_sample(&mut agent);
    assert_eq!(
        reply.outcomes[0].status,
        Status::Sent,
        "{:?}",
        reply.outcomes
    );
    assert!(reply.warnings.is_empty(), "{:?}", reply.warnings);
    assert_eq!(agent.pid(), pid);
    drop(agent);
    server.finish();
}

#[test]
fn an_agent_that_cannot_start_says_why() {
    let sys = MailSystem::new("smtp_tls_security_level = sometimes");
    let err = AgentProcess::start(Path::new(MAILROOM), &sys.config_dir())
        .err()
        .expect("a bad configuration");
    assert!(err.contains("could not start"), "{err}");
    assert!(err.contains("smtp_tls_security_level"), "{err}");
}

#[test]
fn smtp_agent_refuses_to_run_without_its_socket() {
    let out = Command::new(MAILROOM)
        .args(["smtp-agent", "-c", "/nonexistent"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(common::stderr(&out).contains("started by the mailroom daemon"));
}

// ---------------------------------------------------------------------------------------
// The connection cache: an agent keeps a connection after a successful transaction for
// the next message to the same server.

/// The greeting and both EHLOs (lettre's, and ours once TLS is settled).
fn opening() -> Vec<Step> {
    vec![
        Say("220 test.example ESMTP"),
        Expect("EHLO"),
        Say("250-test.example\r\n250 8BITMIME"),
        Expect("EHLO"),
        Say("250-test.example\r\n250 8BITMIME"),
    ]
}

/// The same, from a server that offers PIPELINING.
fn opening_pipelining() -> Vec<Step> {
    const EHLO: &str = "250-test.example\r\n250-PIPELINING\r\n250 8BITMIME";
    vec![
        Say("220 test.example ESMTP"),
        Expect("EHLO"),
        Say(EHLO),
        Expect("EHLO"),
        Say(EHLO),
    ]
}

/// The envelope as a pipelining client sends it: in one go, before any reply.
const ENVELOPE: &[&str] = &["MAIL FROM:", "RCPT TO:", "DATA"];

/// One pipelined transaction that delivers one recipient.
fn pipelined_transaction() -> Vec<Step> {
    vec![
        Together(ENVELOPE),
        Say("250 2.1.0 Ok"),
        Say("250 2.1.5 Ok"),
        Say("354 End data with <CR><LF>.<CR><LF>"),
        Data,
        Say("250 2.0.0 Ok: queued"),
    ]
}

/// One transaction that delivers one recipient.
fn transaction() -> Vec<Step> {
    vec![
        Expect("MAIL FROM:"),
        Say("250 2.1.0 Ok"),
        Expect("RCPT TO:"),
        Say("250 2.1.5 Ok"),
        Expect("DATA"),
        Say("354 End data with <CR><LF>.<CR><LF>"),
        Data,
        Say("250 2.0.0 Ok: queued"),
    ]
}

fn goodbye() -> Vec<Step> {
    vec![Expect("QUIT"), Say("221 2.0.0 Bye")]
}

/// An agent relaying to `server` with `extra` main.cf lines.
fn cache_agent(server: &Scripted, extra: &str) -> (MailSystem, AgentProcess) {
    let sys = MailSystem::new(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = none\n{extra}",
        server.port
    ));
    let agent = AgentProcess::start(Path::new(MAILROOM), &sys.config_dir()).unwrap();
    (sys, agent)
}

/// Has `agent` deliver one message to one recipient and returns its status.
fn deliver_one(agent: &mut AgentProcess) -> Status {
    deliver_one_outcome(agent).status
}

/// Has `agent` deliver one message to one recipient and returns its outcome.
fn deliver_one_outcome(agent: &mut AgentProcess) -> Outcome {
    let reply = deliver_sample(agent);
    assert!(reply.warnings.is_empty(), "{:?}", reply.warnings);
    reply.outcomes[0].clone()
}

/// Has `agent` deliver a small message from sender@example.org to to@example.net, as
/// one job, and returns its reply.
fn deliver_sample(agent: &mut AgentProcess) -> Reply {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, b"Subject: x\n\nbody\n").unwrap();
    let mut envelope = Envelope::new(QueueId::generate(), 0, 0, "sender@example.org");
    envelope.size = 17;
    let rcpt = Recipient::new("to@example.net", "to@example.net");
    agent
        .deliver(
            &envelope,
            MessageSource::for_envelope(&file, &envelope),
            &[&rcpt],
            Duration::from_secs(60),
        )
        .unwrap()
}

fn sessions(transcript: &[String]) -> usize {
    transcript
        .iter()
        .filter(|l| l.starts_with("session "))
        .count()
}

#[test]
fn messages_in_a_row_share_one_connection() {
    // One session only: a second connection would never be greeted.
    let server = Scripted::start(vec![
        [opening(), transaction(), transaction(), goodbye()].concat(),
    ]);
    let (_sys, mut agent) = cache_agent(&server, "");
    // The log names the connection's use from the second on (Postfix's conn_use=2).
    let uses: Vec<(Status, u64)> = (0..2)
        .map(|_| deliver_one_outcome(&mut agent))
        .map(|o| (o.status, o.conn_use))
        .collect();
    assert_eq!(uses, [(Status::Sent, 0), (Status::Sent, 2)]);
    // Closing the agent's socket makes it say QUIT.
    drop(agent);
    let transcript = server.finish();
    assert_eq!(sessions(&transcript), 1, "{transcript:?}");
    let ehlos = transcript.iter().filter(|l| l.starts_with("EHLO")).count();
    assert_eq!(ehlos, 2, "one greeting and EHLO pair: {transcript:?}");
    let data = transcript.iter().filter(|l| l.starts_with("DATA ")).count();
    assert_eq!(data, 2, "{transcript:?}");
    assert_eq!(transcript.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn a_pipelining_server_gets_each_envelope_in_one_go_on_a_cached_connection() {
    let server = Scripted::start(vec![
        [
            opening_pipelining(),
            pipelined_transaction(),
            pipelined_transaction(),
            goodbye(),
        ]
        .concat(),
    ]);
    let (_sys, mut agent) = cache_agent(&server, "");
    for _ in 0..2 {
        assert_eq!(deliver_one(&mut agent), Status::Sent);
    }
    drop(agent);
    let transcript = server.finish();
    assert_eq!(sessions(&transcript), 1, "{transcript:?}");
    assert!(
        !transcript
            .iter()
            .any(|l| l.starts_with("UNEXPECTED") || l == "NOT PIPELINED"),
        "{transcript:?}"
    );
    let data = transcript.iter().filter(|l| l.starts_with("DATA ")).count();
    assert_eq!(data, 2, "{transcript:?}");
    assert_eq!(transcript.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn an_unused_connection_is_closed_with_quit_after_the_time_limit() {
    let server = Scripted::start(vec![[opening(), transaction(), goodbye()].concat()]);
    let (_sys, mut agent) = cache_agent(&server, "smtp_connection_cache_time_limit = 1s");
    assert_eq!(deliver_one(&mut agent), Status::Sent);
    let delivered = Instant::now();
    // No further job: the agent closes the connection on its own.
    let transcript = server.finish();
    let took = delivered.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "QUIT after {took:?}"
    );
    assert!(!agent.exited(), "the agent waits for jobs still");
    assert_eq!(transcript.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn a_cached_connection_the_server_closed_is_replaced_not_deferred() {
    let cases: Vec<(&str, Vec<Step>)> = vec![
        // The server closes right after the first transaction: the agent sees it before
        // it reuses the connection.
        ("closed between messages", vec![]),
        // The server closes as the next MAIL FROM arrives: the agent finds out from
        // MAIL FROM and starts over on a new connection.
        ("closed at MAIL FROM", vec![Expect("MAIL FROM:")]),
        // Or says 421 to it.
        (
            "421 to MAIL FROM",
            vec![Expect("MAIL FROM:"), Say("421 4.4.2 idle too long")],
        ),
    ];
    // The same with a server that offers PIPELINING: the whole envelope is out before
    // the server's reply to MAIL FROM, or the end of the connection, comes back.
    let pipelined: Vec<(&str, Vec<Step>)> = vec![
        ("pipelined, closed at MAIL FROM", vec![Together(ENVELOPE)]),
        (
            "pipelined, 421 to MAIL FROM",
            vec![Together(ENVELOPE), Say("421 4.4.2 idle too long")],
        ),
    ];
    let plain = cases.into_iter().map(|(name, after)| (name, after, false));
    let pipelined = pipelined
        .into_iter()
        .map(|(name, after)| (name, after, true));
    for (name, after, pipelining) in plain.chain(pipelined) {
        type Script = fn() -> Vec<Step>;
        let (opening, transaction): (Script, Script) = match pipelining {
            false => (opening, transaction),
            true => (opening_pipelining, pipelined_transaction),
        };
        let server = Scripted::start(vec![
            [opening(), transaction(), after].concat(),
            [opening(), transaction(), goodbye()].concat(),
        ]);
        let (_sys, mut agent) = cache_agent(&server, "");
        assert_eq!(deliver_one(&mut agent), Status::Sent, "{name}");
        // Time for the server to close its end.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(deliver_one(&mut agent), Status::Sent, "{name}");
        drop(agent);
        let transcript = server.finish();
        assert_eq!(sessions(&transcript), 2, "{name}: {transcript:?}");
        let data = transcript.iter().filter(|l| l.starts_with("DATA ")).count();
        assert_eq!(data, 2, "{name}: {transcript:?}");
    }
}

#[test]
fn the_reuse_count_limit_and_on_demand_no_close_connections() {
    // (main.cf, sessions the server scripts, messages sent)
    let one = || [opening(), transaction(), goodbye()].concat();
    let two = || [opening(), transaction(), transaction(), goodbye()].concat();
    let cases: Vec<(&str, Vec<Vec<Step>>, usize)> = vec![
        // As in Postfix, a limit of N allows N reuses: N+1 messages a connection.
        (
            "smtp_connection_reuse_count_limit = 1",
            vec![two(), one()],
            3,
        ),
        (
            "smtp_connection_cache_on_demand = no",
            vec![one(), one()],
            2,
        ),
        (
            "smtp_connection_reuse_time_limit = 1s",
            vec![one(), one()],
            2,
        ),
    ];
    for (config, script, messages) in cases {
        let wanted = script.len();
        let server = Scripted::start(script);
        let (_sys, mut agent) = cache_agent(&server, config);
        for _ in 0..messages {
            assert_eq!(deliver_one(&mut agent), Status::Sent, "{config}");
            if config.contains("reuse_time_limit") {
                std::thread::sleep(Duration::from_millis(1100));
            }
        }
        drop(agent);
        let transcript = server.finish();
        assert_eq!(sessions(&transcript), wanted, "{config}: {transcript:?}");
        assert!(
            !transcript
                .iter()
                .any(|l| l.starts_with("UNEXPECTED") || l == "EOF"),
            "{config}: {transcript:?}"
        );
    }
}
