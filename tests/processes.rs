//! The daemon's processes and their privileges, seen from outside through /proc: the
//! master runs as root, the SMTP sessions as `mail_owner` without supplementary groups,
//! the socket of an accepted connection is held by a process that is not root, and a
//! sessions process that crashes loses no accepted mail and is replaced while the master
//! goes on. Run as another user, the parts about uids are skipped (every process runs as
//! that user); the crash and the restart are still tried.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::listening::Daemon;
use common::smtp_server::free_port;
use common::{MailSystem, me};

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");

fn wait_for(sys: &MailSystem, what: &str, secs: u64, cond: impl FnMut() -> bool) {
    common::wait_for(sys, what, Duration::from_secs(secs), cond)
}

/// Waits until the daemon's listener answers on `port`.
fn wait_listening(sys: &MailSystem, port: u16) {
    wait_for(sys, "the SMTP listener", 20, || Smtp::connect(port).is_ok());
}

/// A field of /proc/PID/status (`Uid:`, `Groups:`), its values split.
fn status_field(pid: u32, name: &str) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    Some(
        line[name.len()..]
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect(),
    )
}

/// The real uid of process `pid`.
fn uid_of(pid: u32) -> Option<u32> {
    status_field(pid, "Uid:")?.first().copied()
}

/// The parent of process `pid`, from /proc/PID/stat (after the command's closing paren).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// `master` and every process below it.
fn family(master: u32) -> Vec<u32> {
    let mut all = vec![master];
    let mut i = 0;
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    while i < all.len() {
        let parent = all[i];
        for &pid in &pids {
            if parent_of(pid) == Some(parent) && alive(pid) && !all.contains(&pid) {
                all.push(pid);
            }
        }
        i += 1;
    }
    all
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The daemon's sessions process: the one below `master` running `smtpd-sessions`.
fn sessions_process(master: u32) -> Option<u32> {
    family(master)
        .into_iter()
        .find(|&pid| pid != master && cmdline(pid).contains("smtpd-sessions"))
}

/// `127.0.0.1:25` as /proc/net/tcp writes it (`0100007F:0019` on little-endian).
fn proc_net_addr(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}");
    };
    let word = u32::from_ne_bytes(v4.ip().octets());
    format!("{word:08X}:{:04X}", v4.port())
}

/// The inode of the socket whose local and remote addresses are `local` and `remote`.
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (l, r) = (proc_net_addr(local), proc_net_addr(remote));
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&l.as_str()) && f.get(2) == Some(&r.as_str()))
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

/// The processes among `pids` holding socket `inode`.
fn holders(pids: &[u32], inode: u64) -> Vec<u32> {
    let want = format!("socket:[{inode}]");
    pids.iter()
        .copied()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .any(|t| t.to_str() == Some(want.as_str()))
            })
        })
        .collect()
}

/// The one process of the daemon holding the server side of `conn`.
fn holder(conn: &Smtp, master: u32) -> u32 {
    let client = conn.writer.local_addr().unwrap();
    let server = conn.writer.peer_addr().unwrap();
    let inode = socket_inode(server, client).expect("the accepted socket in /proc/net/tcp");
    let holding = holders(&family(master), inode);
    assert_eq!(holding.len(), 1, "one process holds it: {holding:?}");
    holding[0]
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> std::io::Result<Smtp> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut smtp = Smtp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let banner = smtp.reply();
        if !banner.starts_with("220") {
            return Err(std::io::Error::other(format!("banner: {banner}")));
        }
        Ok(smtp)
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        let _ = self.writer.write_all(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends one message up to (not including) the final dot.
    fn start_message(&mut self, subject: &str) {
        assert!(self.cmd("EHLO client.example").starts_with("250"));
        assert!(
            self.cmd("MAIL FROM:<sender@example.org>")
                .starts_with("250")
        );
        let rcpt = format!("RCPT TO:<{}@localhost>", me());
        assert!(self.cmd(&rcpt).starts_with("250"));
        assert!(self.cmd("DATA").starts_with("354"));
        let _ = self
            .writer
            .write_all(format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes());
    }

    fn send(&mut self, subject: &str) -> String {
        self.start_message(subject);
        let reply = self.cmd(".");
        self.cmd("QUIT");
        reply
    }
}

fn mbox(sys: &MailSystem) -> String {
    sys.mailbox(&me())
}

#[test]
fn sessions_run_without_root_and_survive_their_crash() {
    let port = free_port();
    let sys = MailSystem::new(&format!(
        "smtpd_port = {port}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
         smtpd_timeout = 20s\n"
    ));
    let root = nix::unistd::geteuid().is_root();
    let daemon = Daemon::start(&sys);
    let master = daemon.0.id();
    wait_listening(&sys, port);
    let first = sessions_process(master).expect("a sessions process below the master");

    // (1) Every process of the daemon, and its uid.
    let owner = nix::unistd::User::from_name(common::TEST_MAIL_OWNER)
        .ok()
        .flatten();
    if root {
        let owner = owner.clone().expect("the test mail_owner exists");
        for pid in family(master) {
            let uid = uid_of(pid).expect("uid");
            if pid == master {
                assert_eq!(uid, 0, "the master runs as root");
            } else {
                assert_ne!(uid, 0, "pid {pid} ({}) runs as root", cmdline(pid));
            }
        }
        assert_eq!(uid_of(first), Some(owner.uid.as_raw()));
    } else {
        eprintln!("skipped the uid checks: not root, every process runs as this user");
    }

    // (2) The process holding an accepted connection's socket.
    let mut held = Smtp::connect(port).unwrap();
    assert_eq!(
        holder(&held, master),
        first,
        "the sessions process holds it"
    );
    if root {
        let owner = owner.expect("the test mail_owner exists");
        assert_eq!(uid_of(first), Some(owner.uid.as_raw()));
        assert_eq!(status_field(first, "Gid:").unwrap()[0], owner.gid.as_raw());
        assert_eq!(
            status_field(first, "Groups:"),
            Some(Vec::new()),
            "no supplementary groups"
        );
    }
    assert!(held.cmd("QUIT").starts_with("221"));

    // (3) Mail accepted before a crash is delivered; a session cut by it is not.
    let reply = Smtp::connect(port).unwrap().send("before the crash");
    assert!(reply.starts_with("250"), "{reply}");
    let mut cut = Smtp::connect(port).unwrap();
    cut.start_message("cut by the crash");
    // Rust's runtime catches the first SIGSEGV (its stack-overflow handler) and puts the
    // default action back; a real fault would come again at once, so send it again.
    let pid = nix::unistd::Pid::from_raw(first as i32);
    wait_for(&sys, "the sessions process to crash", 10, || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSEGV);
        std::thread::sleep(Duration::from_millis(50));
        !alive(first)
    });
    wait_for(&sys, "a new sessions process", 10, || {
        sessions_process(master).is_some_and(|p| p != first)
    });
    assert!(alive(master), "the master goes on");
    let warning = format!("pid {first} killed by signal 11");
    assert!(
        sys.maillog()
            .contains(&format!("mailroom/master[{master}]: warning: process "))
            && sys.maillog().contains(&warning),
        "{}",
        sys.maillog()
    );
    let mut again = Smtp::connect(port).unwrap();
    let second = holder(&again, master);
    assert_ne!(second, first);
    if root {
        assert_ne!(
            uid_of(second),
            Some(0),
            "the new sessions process is not root"
        );
    }
    let reply = again.send("after the crash");
    assert!(reply.starts_with("250"), "{reply}");
    wait_for(&sys, "both messages delivered", 20, || {
        let mbox = mbox(&sys);
        mbox.contains("Subject: before the crash") && mbox.contains("Subject: after the crash")
    });
    assert!(!mbox(&sys).contains("cut by the crash"));
    drop(cut);
    drop(daemon);
    assert!(!alive(second), "the sessions process stops with the daemon");
}

#[test]
fn without_a_usable_mail_owner_the_listener_stays_off_and_mail_still_flows() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mail_owner matters to root only");
        return;
    }
    let port = free_port();
    let sys = MailSystem::new(&format!(
        "smtpd_port = {port}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
         mail_owner = mailroom-no-such-user\n"
    ));
    let daemon = Daemon::start(&sys);
    let master = daemon.0.id();
    wait_for(&sys, "the fatal line", 20, || {
        sys.maillog().contains("mailroom/smtpd[")
            && sys
                .maillog()
                .contains("fatal: mail_owner: no user \"mailroom-no-such-user\"")
    });
    assert!(sys.maillog().contains("the SMTP listener is off"));
    // Pickup and delivery go on.
    let out = sys.run(
        SENDMAIL,
        &[&me()],
        b"Subject: submitted while the listener is off\n\nbody\n",
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    wait_for(&sys, "the delivery", 20, || {
        mbox(&sys).contains("Subject: submitted while the listener is off")
    });
    assert_eq!(sessions_process(master), None);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // Fixed and reloaded: the listener comes up.
    let main_cf = sys.config_dir().join("main.cf");
    let text = std::fs::read_to_string(&main_cf).unwrap();
    std::fs::write(
        &main_cf,
        text.replace("mailroom-no-such-user", common::TEST_MAIL_OWNER),
    )
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(master as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(&sys, "the listener after the reload", 20, || {
        Smtp::connect(port).is_ok()
    });
    let conn = Smtp::connect(port).unwrap();
    assert_ne!(uid_of(holder(&conn, master)), Some(0));
}

#[test]
fn smtpd_chroot_confines_the_sessions_to_the_queue() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let port = free_port();
    let sys = MailSystem::new(&format!(
        "smtpd_port = {port}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
         smtpd_chroot = yes\n"
    ));
    let daemon = Daemon::start(&sys);
    let master = daemon.0.id();
    wait_listening(&sys, port);
    let mut conn = Smtp::connect(port).unwrap();
    let sessions = holder(&conn, master);
    let root_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root_of(sessions), sys.root().join("queue"));
    assert_eq!(root_of(master), std::path::Path::new("/"));
    assert_ne!(uid_of(sessions), Some(0));
    let reply = conn.send("from inside the chroot");
    assert!(reply.starts_with("250"), "{reply}");
    wait_for(&sys, "the delivery", 20, || {
        mbox(&sys).contains("Subject: from inside the chroot")
    });
    // The sessions' log lines still reach maillog_file, opened before the chroot.
    assert!(
        sys.maillog()
            .contains(&format!("mailroom/smtpd[{sessions}]: disconnect from")),
        "{}",
        sys.maillog()
    );
}

#[test]
fn a_master_killed_outright_takes_the_sessions_process_with_it() {
    let port = free_port();
    let sys = MailSystem::new(&format!(
        "smtpd_port = {port}\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
    ));
    let mut daemon = Daemon::start(&sys);
    let master = daemon.0.id();
    wait_listening(&sys, port);
    let sessions = sessions_process(master).expect("a sessions process");
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    wait_for(&sys, "the sessions process to go too", 10, || {
        !alive(sessions)
    });
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nobody listens"
    );
}
