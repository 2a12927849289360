//! `mailroom`, the operator's command, run as a real binary against a temporary
//! `MAIL_CONFIG`: config listing and in-place editing, the checker (each planted problem
//! found, a clean system clean), and the queue's shape.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Output;

use common::smtp_server::free_port;
use common::{MailSystem, require_tool, stderr};
use mailroom::queue::{Envelope, NewQueueFile, QueueId, QueueName, Recipient};

const MAILROOM: &str = env!("CARGO_BIN_EXE_mailroom");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mail system whose queue and spool are as a fresh install leaves them.
fn ready_system(extra: &str) -> MailSystem {
    let sys = MailSystem::new(extra);
    sys.queue().ensure_dirs().unwrap();
    fs::set_permissions(sys.root().join("spool"), fs::Permissions::from_mode(0o1777)).unwrap();
    sys
}

fn mailroom(sys: &MailSystem, args: &[&str]) -> Output {
    sys.run(MAILROOM, args, b"")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

// ---- config -------------------------------------------------------------------------

/// Debian 12's stock main.cf, with a continued mynetworks (comment inside) added.
const DEBIAN_MAIN_CF: &str = "\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version


# Debian specific:  Specifying a file name will cause the first
# line of that file to be used as the name.  The Debian default
# is /etc/mailname.
#myorigin = /etc/mailname

smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no

# appending .domain is the MUA's job.
append_dot_mydomain = no

# Uncomment the next line to generate \"delayed mail\" warnings
#delay_warning_time = 4h

readme_directory = no

# See http://www.postfix.org/COMPATIBILITY_README.html -- default to 3.6 on
# fresh installs.
compatibility_level = 3.6



# TLS parameters
smtpd_tls_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file=/etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level=may

smtp_tls_CApath=/etc/ssl/certs
smtp_tls_security_level=may
smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache


smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = vm
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
myorigin = /etc/mailname
mydestination = $myhostname, vm, localhost.localdomain, , localhost
relayhost = 
mynetworks = 127.0.0.0/8
    [::ffff:127.0.0.0]/104
    # the IPv6 loopback
    [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = all
";

fn write_main_cf(sys: &MailSystem, text: &str) -> std::path::PathBuf {
    let path = sys.config_dir().join("main.cf");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_set_changes_only_the_named_lines() {
    if !is_root() {
        eprintln!("skipped: config set needs root");
        return;
    }
    let sys = MailSystem::new("");
    let path = write_main_cf(&sys, DEBIAN_MAIN_CF);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&path, Some(4321), Some(4322)).unwrap();
    let out = mailroom(
        &sys,
        &[
            "config",
            "set",
            "relayhost=[smtp.example.net]:587",
            "mynetworks = 10.0.0.0/8",
            "message_size_limit=20480000",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let expected = DEBIAN_MAIN_CF
        .replace("relayhost = \n", "relayhost = [smtp.example.net]:587\n")
        .replace(
            "mynetworks = 127.0.0.0/8\n    [::ffff:127.0.0.0]/104\n    # the IPv6 loopback\n    [::1]/128\n",
            "mynetworks = 10.0.0.0/8\n    # the IPv6 loopback\n",
        )
        + "message_size_limit = 20480000\n";
    assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    // No temporary file is left beside it.
    let names: Vec<String> = fs::read_dir(sys.config_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["main.cf"]);
}

#[test]
fn config_unset_removes_continuation_lines() {
    if !is_root() {
        eprintln!("skipped: config unset needs root");
        return;
    }
    let sys = MailSystem::new("");
    let path = write_main_cf(&sys, DEBIAN_MAIN_CF);
    let out = mailroom(&sys, &["config", "unset", "mynetworks", "biff"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let expected = DEBIAN_MAIN_CF
        .replace("biff = no\n", "")
        .replace(
            "mynetworks = 127.0.0.0/8\n    [::ffff:127.0.0.0]/104\n    # the IPv6 loopback\n    [::1]/128\n",
            "    # the IPv6 loopback\n",
        );
    assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    // A misspelled name the file sets can be removed; one it does not set is an error.
    write_main_cf(&sys, "mydestinaton = x\nmyhostname = vm\n");
    assert_eq!(
        code(&mailroom(&sys, &["config", "unset", "mydestinaton"])),
        0
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "myhostname = vm\n");
    let out = mailroom(&sys, &["config", "unset", "myhostnme"]);
    assert_eq!(code(&out), 64);
    assert!(stderr(&out).contains("did you mean \"myhostname\"?"));
}

#[test]
fn config_n_lists_exactly_what_the_file_sets() {
    let sys = MailSystem::new("");
    write_main_cf(&sys, DEBIAN_MAIN_CF);
    let out = mailroom(&sys, &["config", "-n"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut names: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split(" =").next().unwrap().to_string())
        .collect();
    let mut expected: Vec<&str> = DEBIAN_MAIN_CF
        .lines()
        .filter(|l| !l.starts_with(['#', ' ']) && !l.is_empty())
        .map(|l| l.split(['=', ' ']).next().unwrap())
        .collect();
    expected.sort();
    names.sort();
    assert_eq!(names, expected);
    let text = stdout(&out);
    assert!(text.contains("\nmynetworks = 127.0.0.0/8    [::ffff:127.0.0.0]/104    [::1]/128\n"));
    assert!(text.contains("\nrelayhost =\n"));
}

#[test]
fn config_shows_values_as_written_or_expanded() {
    let sys = MailSystem::new("");
    write_main_cf(
        &sys,
        "myhostname = mail.example.org\nmyorigin = $myhostname\n",
    );
    let out = mailroom(&sys, &["config", "myorigin", "queue_directory"]);
    assert_eq!(
        stdout(&out),
        "myorigin = $myhostname\nqueue_directory = /var/spool/mailroom\n"
    );
    let out = mailroom(&sys, &["config", "-x", "myorigin"]);
    assert_eq!(stdout(&out), "myorigin = mail.example.org\n");
    let out = mailroom(&sys, &["config", "-h", "-d", "queue_directory"]);
    assert_eq!(stdout(&out), "/var/spool/mailroom\n");
    let all = stdout(&mailroom(&sys, &["config"]));
    assert!(all.lines().count() > 50);
    assert!(all.contains("\nmydestination = $myhostname, localhost.$mydomain, localhost\n"));
}

#[test]
fn unknown_names_suggest_a_spelling() {
    let sys = MailSystem::new("");
    let out = mailroom(&sys, &["config", "mydestinaton"]);
    assert_eq!(code(&out), 64);
    assert_eq!(
        stderr(&out),
        "mailroom: fatal: unknown parameter \"mydestinaton\" (did you mean \"mydestination\"?)\n"
    );
    if is_root() {
        let before = fs::read(sys.config_dir().join("main.cf")).unwrap();
        let out = mailroom(&sys, &["config", "set", "relyhost=x"]);
        assert_eq!(code(&out), 64);
        assert!(stderr(&out).contains("did you mean \"relayhost\"?"));
        assert_eq!(fs::read(sys.config_dir().join("main.cf")).unwrap(), before);
    }
}

#[test]
fn config_set_refuses_a_value_of_the_wrong_type() {
    if !is_root() {
        return;
    }
    let sys = MailSystem::new("");
    let before = fs::read(sys.config_dir().join("main.cf")).unwrap();
    for bad in [
        "message_size_limit=10M",
        "maximal_queue_lifetime=5x",
        "relayhost=[x",
    ] {
        let out = mailroom(&sys, &["config", "set", bad]);
        assert_eq!(code(&out), 65, "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("not changed"), "{}", stderr(&out));
    }
    let out = mailroom(&sys, &["config", "set", "myhostname=a\nb = c"]);
    assert_eq!(code(&out), 64);
    assert_eq!(fs::read(sys.config_dir().join("main.cf")).unwrap(), before);
}

// ---- check --------------------------------------------------------------------------

/// Runs `mailroom check` and returns its exit code and output lines.
fn check(sys: &MailSystem) -> (i32, Vec<String>) {
    let out = mailroom(sys, &["check"]);
    assert_eq!(stderr(&out), "");
    (
        code(&out),
        stdout(&out).lines().map(str::to_string).collect(),
    )
}

/// Asserts that the check fails with exactly one problem, containing each of `parts`.
fn finds(sys: &MailSystem, parts: &[&str]) {
    let (code, lines) = check(sys);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    for part in parts {
        assert!(lines[0].contains(part), "{part:?} not in {lines:?}");
    }
}

fn main_cf_line(sys: &MailSystem, name: &str) -> usize {
    let text = fs::read_to_string(sys.config_dir().join("main.cf")).unwrap();
    text.lines().position(|l| l.starts_with(name)).unwrap() + 1
}

#[test]
fn check_a_clean_system_is_clean() {
    let sys = ready_system("");
    assert_eq!(check(&sys), (0, vec![]));
    let out = mailroom(&sys, &["check", "--json"]);
    assert_eq!(stdout(&out), "[]\n");
}

#[test]
fn check_finds_a_mail_owner_the_sessions_cannot_run_as() {
    if !is_root() {
        eprintln!("skipped: mail_owner matters to root only");
        return;
    }
    // (value, what the problem says)
    let table = [
        ("mailroom-no-such-user", "no user \"mailroom-no-such-user\""),
        ("root", "must be neither root nor in root's group"),
    ];
    for (value, says) in table {
        let sys = ready_system(&format!("mail_owner = {value}"));
        let line = main_cf_line(&sys, &format!("mail_owner = {value}"));
        finds(
            &sys,
            &[
                &format!("main.cf, line {line}: mail_owner: "),
                says,
                "SMTP listener",
            ],
        );
    }
}

#[test]
fn check_finds_an_unknown_parameter() {
    let sys = ready_system("mydestinaton = example.com");
    let line = main_cf_line(&sys, "mydestinaton");
    let file = sys.config_dir().join("main.cf");
    let (code, lines) = check(&sys);
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        [format!(
            "{}, line {line}: unknown parameter \"mydestinaton\" (did you mean \"mydestination\"?)",
            file.display()
        )]
    );
}

#[test]
fn check_finds_a_bad_time_value() {
    let sys = ready_system("maximal_queue_lifetime = 5 days");
    finds(
        &sys,
        &["parameter maximal_queue_lifetime: bad time value: \"5 days\""],
    );
}

#[test]
fn check_finds_a_bad_size() {
    let sys = ready_system("message_size_limit = 10MB");
    finds(
        &sys,
        &["parameter message_size_limit: bad numerical value: \"10MB\""],
    );
}

#[test]
fn check_finds_a_bad_boolean() {
    let sys = ready_system("smtp_sasl_auth_enable = true");
    finds(
        &sys,
        &["parameter smtp_sasl_auth_enable: bad boolean value"],
    );
}

#[test]
fn check_finds_a_bad_network_in_mynetworks() {
    let sys = ready_system("mynetworks = 127.0.0.0/8, 192.168.1.0/33");
    let line = main_cf_line(&sys, "mynetworks");
    finds(
        &sys,
        &[
            &format!("line {line}: parameter mynetworks"),
            "192.168.1.0/33",
        ],
    );
}

#[test]
fn check_finds_a_reference_to_nothing() {
    let sys = ready_system("smtpd_banner = $myhostnam ESMTP");
    finds(
        &sys,
        &["parameter smtpd_banner: undefined parameter $myhostnam"],
    );
}

#[test]
fn check_finds_overlapping_domain_lists() {
    let sys = ready_system("relay_domains = mail.server.com, example.org");
    let line = main_cf_line(&sys, "relay_domains");
    finds(
        &sys,
        &[
            &format!("line {line}:"),
            "\"mail.server.com\" is in both mydestination and relay_domains",
        ],
    );
}

#[test]
fn check_finds_a_relayhost_that_does_not_parse() {
    let sys = ready_system("relayhost = [smtp.example.com:587");
    finds(
        &sys,
        &["parameter relayhost: \"[smtp.example.com:587\": unbalanced ["],
    );
}

#[test]
fn check_finds_a_missing_queue_directory_and_a_wrong_mode() {
    let sys = ready_system("");
    let queue = sys.queue();
    fs::remove_dir(queue.dir(QueueName::Hold)).unwrap();
    finds(
        &sys,
        &[&format!(
            "{}: missing directory",
            queue.dir(QueueName::Hold).display()
        )],
    );
    queue.ensure_dirs().unwrap();
    fs::set_permissions(
        queue.dir(QueueName::Deferred),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    finds(&sys, &["deferred: mode 0755, should be 0700"]);
    // The check repairs nothing: that is postsuper -s's job.
    let mode = fs::metadata(queue.dir(QueueName::Deferred))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn check_finds_a_wrongly_owned_queue_directory() {
    if !is_root() {
        return;
    }
    let sys = ready_system("");
    let dir = sys.queue().dir(QueueName::Active);
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    finds(&sys, &[&format!("{}: owned by uid 65534", dir.display())]);
}

#[test]
fn check_finds_a_missing_or_stale_aliases_database() {
    let sys = ready_system("");
    let source = sys.config_dir().join("aliases");
    fs::write(&source, "postmaster: root\n").unwrap();
    finds(
        &sys,
        &[&format!("{}: ", source.display()), "run newaliases"],
    );
    let out = sys.run(env!("CARGO_BIN_EXE_newaliases"), &[], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(check(&sys), (0, vec![]));
    // Edited after the last newaliases.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&source)
        .unwrap()
        .set_modified(later)
        .unwrap();
    finds(&sys, &["is older than source file", "run newaliases"]);
}

/// Issue defect 3: a truncated or corrupt `aliases.cdb` was read as a table without
/// the names it lost, and mail to them bounced (5.1.1 unknown user). A table that fails
/// its checks defers the mail (4.3.0) and keeps it queued, is logged once at the fatal
/// level, and `mailroom check` names it.
#[test]
fn a_damaged_aliases_database_defers_mail_and_check_names_it() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 5] = [
        ("header only", |b| b.truncate(2048)),
        ("cut in half", |b| b.truncate(b.len() / 2)),
        ("last byte missing", |b| {
            b.pop();
        }),
        ("a key changed", |b| b[2048 + 8] ^= 0x01),
        ("hash tables zeroed", |b| {
            let records_end = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let end = b.len();
            b[records_end..end].fill(0);
        }),
    ];
    for (what, damage) in cases {
        let sys = ready_system("");
        let source = sys.config_dir().join("aliases");
        fs::write(&source, "team: root\nstaff: root\n").unwrap();
        let out = sys.run(env!("CARGO_BIN_EXE_newaliases"), &[], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let database = sys.config_dir().join("aliases.cdb");
        let mut bytes = fs::read(&database).unwrap();
        damage(&mut bytes);
        fs::write(&database, &bytes).unwrap();

        let out = sys.run(
            env!("CARGO_BIN_EXE_sendmail"),
            &["-odi", "-i", "team", "staff"],
            b"Subject: hello\n\nbody\n",
        );
        let log = fs::read_to_string(sys.root().join("maillog")).unwrap_or_default();
        assert_eq!(
            out.status.code(),
            Some(75),
            "{what}: {}\n{log}",
            stderr(&out)
        );
        let deferred: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("status=deferred"))
            .collect();
        assert_eq!(deferred.len(), 2, "{what}: {log}");
        assert!(
            deferred.iter().all(|l| l.contains("dsn=4.3.0")),
            "{what}: {log}"
        );
        assert!(!log.contains("status=bounced"), "{what}: {log}");
        let fatal: Vec<&str> = log.lines().filter(|l| l.contains(": fatal: ")).collect();
        assert_eq!(fatal.len(), 1, "{what}: {log}");
        assert!(
            fatal[0].contains(&database.display().to_string()),
            "{what}: {log}"
        );
        assert_eq!(
            sys.queue().list(&[QueueName::Deferred]).unwrap().len(),
            1,
            "{what}"
        );

        let (code, lines) = check(&sys);
        assert_eq!(code, 1, "{what}: {lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&database.display().to_string())
                    && l.contains("corrupt")
                    && l.contains("run newaliases")),
            "{what}: {lines:?}"
        );
    }
}

#[test]
fn check_finds_unreadable_tls_files() {
    let sys = ready_system(
        "smtpd_tls_cert_file = /nonexistent/cert.pem\nsmtpd_tls_key_file = /nonexistent/key.pem",
    );
    let (code, lines) = check(&sys);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("/nonexistent/cert.pem: cannot read (smtpd_tls_cert_file)"));
    assert!(lines[1].starts_with("/nonexistent/key.pem: cannot read (smtpd_tls_key_file)"));
}

#[test]
fn check_finds_a_password_table_open_to_others() {
    let sys = ready_system("");
    let table = sys.config_dir().join("sasl_passwd");
    fs::write(&table, "[smtp.example.net]:587 user:secret\n").unwrap();
    fs::set_permissions(&table, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(
        sys.config_dir().join("main.cf"),
        fs::read_to_string(sys.config_dir().join("main.cf")).unwrap()
            + &format!("smtp_sasl_password_maps = hash:{}\n", table.display()),
    )
    .unwrap();
    assert_eq!(check(&sys), (0, vec![]));
    fs::set_permissions(&table, fs::Permissions::from_mode(0o644)).unwrap();
    finds(
        &sys,
        &[
            &format!("{}: holds SMTP passwords", table.display()),
            "mode 0644",
        ],
    );
}

#[test]
fn check_finds_a_missing_or_open_mail_spool() {
    let sys = ready_system("");
    let spool = sys.root().join("spool");
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o755)).unwrap();
    finds(
        &sys,
        &[&format!(
            "{}: mail_spool_directory has mode 0755",
            spool.display()
        )],
    );
    fs::remove_dir(&spool).unwrap();
    finds(
        &sys,
        &[&format!(
            "{}: mail_spool_directory: No such file",
            spool.display()
        )],
    );
}

#[test]
fn check_notes_postfix_parameters_without_effect() {
    let sys = ready_system("biff = no");
    let (code, lines) = check(&sys);
    assert_eq!(code, 0, "notes do not fail the check");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains(": note: parameter biff is accepted for compatibility"));
}

#[test]
fn check_json_parses_and_carries_every_field() {
    let sys = ready_system("mydestinaton = x\nbiff = no\nmessage_size_limit = big");
    let out = mailroom(&sys, &["check", "--json"]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 3);
    let file = sys.config_dir().join("main.cf").display().to_string();
    for p in all {
        assert_eq!(p["file"], file.as_str());
        assert!(p["line"].is_u64());
        assert!(p["parameter"].is_string());
        assert!(p["problem"].is_string());
    }
    let severities: Vec<&str> = all
        .iter()
        .map(|p| p["severity"].as_str().unwrap())
        .collect();
    assert_eq!(severities, ["warning", "note", "error"]);
}

// ---- queue --------------------------------------------------------------------------

/// Queues a message in `queue` that arrived `minutes` ago.
fn queue_message(sys: &MailSystem, queue: QueueName, minutes: u64, sender: &str, rcpts: &[&str]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut env = Envelope::new(QueueId::generate(), now - minutes * 60_000_000, 0, sender);
    for r in rcpts {
        env.recipients.push(Recipient::new(r, r));
    }
    let mut file = NewQueueFile::create(&sys.queue().dir(queue), env).unwrap();
    file.write_all(b"Subject: x\n\nbody\n").unwrap();
    file.commit().unwrap();
}

fn filled_queue() -> MailSystem {
    let sys = ready_system("");
    let d = QueueName::Deferred;
    queue_message(&sys, d, 2, "a@example.org", &["x@gmail.com", "y@gmail.com"]);
    queue_message(
        &sys,
        d,
        30,
        "a@example.org",
        &["z@gmail.com", "w@yahoo.com"],
    );
    queue_message(&sys, d, 2000, "", &["old@yahoo.com"]);
    queue_message(&sys, d, 7, "b@example.net", &["q@hotmail.com"]);
    queue_message(
        &sys,
        QueueName::Hold,
        2,
        "h@example.org",
        &["held@gmail.com"],
    );
    queue_message(
        &sys,
        QueueName::Active,
        2,
        "c@example.org",
        &["now@gmail.com"],
    );
    sys
}

#[test]
fn queue_prints_qshape_table() {
    let sys = filled_queue();
    let out = mailroom(&sys, &["queue", "deferred"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        concat!(
            "             T  5 10 20 40 80 160 320 640 1280 1280+\n",
            "      TOTAL  6  2  1  0  2  0   0   0   0    0     1\n",
            "  gmail.com  3  2  0  0  1  0   0   0   0    0     0\n",
            "  yahoo.com  2  0  0  0  1  0   0   0   0    0     1\n",
            "hotmail.com  1  0  1  0  0  0   0   0   0    0     0\n",
        )
    );
    // Senders; the null sender counts as MAILER-DAEMON.
    let out = mailroom(&sys, &["queue", "-s", "--queue", "deferred", "-n", "2"]);
    assert_eq!(
        stdout(&out),
        concat!(
            "               T  5 10 20 40 80 160 320 640 1280 1280+\n",
            "        TOTAL  4  1  1  0  1  0   0   0   0    0     1\n",
            "  example.org  2  1  0  0  1  0   0   0   0    0     0\n",
            "MAILER-DAEMON  1  0  0  0  0  0   0   0   0    0     1\n",
        )
    );
    // The default queues are maildrop, incoming and active.
    let out = mailroom(&sys, &["queue"]);
    assert!(
        stdout(&out).contains("\n    TOTAL  1  1"),
        "{}",
        stdout(&out)
    );
    let out = mailroom(&sys, &["queue", "corrupt"]);
    assert_eq!(code(&out), 64);
}

#[test]
fn queue_json_parses() {
    let sys = filled_queue();
    let out = mailroom(&sys, &["queue", "--json", "deferred", "hold"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["queues"], serde_json::json!(["deferred", "hold"]));
    assert_eq!(v["total"]["total"], 7);
    assert_eq!(v["buckets"][9], "1280+");
    assert_eq!(v["domains"][0]["domain"], "gmail.com");
    assert_eq!(v["domains"][0]["total"], 4);
    assert_eq!(v["domains"][0]["counts"][0], 3);
}

// ---- completions and permissions ----------------------------------------------------

#[test]
fn completions_are_generated_for_each_shell() {
    let sys = MailSystem::new("");
    for shell in ["bash", "zsh", "fish"] {
        let out = mailroom(&sys, &["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}");
        let text = stdout(&out);
        assert!(
            text.contains("mailroom") && text.contains("check"),
            "{shell}"
        );
    }
}

#[test]
fn writing_commands_refuse_non_root_with_77() {
    if !is_root() || !require_tool("setpriv") {
        return;
    }
    let sys = MailSystem::new("");
    let nobody = 65534;
    let out = sys
        .command("setpriv")
        .args([
            &format!("--reuid={nobody}"),
            &format!("--regid={nobody}"),
            "--clear-groups",
            MAILROOM,
            "config",
            "set",
            "myhostname=x",
        ])
        .output()
        .unwrap();
    if out.status.code() == Some(127) || String::from_utf8_lossy(&out.stderr).contains("setpriv:") {
        eprintln!("skipped: setpriv cannot drop privileges here");
        return;
    }
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(stderr(&out).contains("only root"));
}

// ---- the daemon: start, status, reload, flush, stop ---------------------------------

/// Runs `mailroom ARGS` and gives up after `secs` seconds (a start that never returns
/// must fail the test, not hang it).
fn mailroom_within(sys: &MailSystem, args: &[&str], secs: u64) -> Output {
    let mut child = sys
        .command(MAILROOM)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("mailroom {args:?} did not return within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The pid in `status`'s first line, when it says the daemon runs.
fn status_pid(sys: &MailSystem) -> Option<u32> {
    let out = mailroom(sys, &["status"]);
    let text = stdout(&out);
    let pid = text
        .lines()
        .next()?
        .strip_prefix("mailroom is running (pid ")?
        .split(')')
        .next()?
        .parse()
        .ok()?;
    assert_eq!(code(&out), 0);
    Some(pid)
}

/// Stops whatever daemon a test left running, even when the test failed.
struct StopOnDrop<'a>(&'a MailSystem);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pid) = status_pid(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn start_status_reload_flush_stop() {
    if !is_root() {
        eprintln!("skipped: starting the daemon needs root");
        return;
    }
    let sys = ready_system("");
    let _guard = StopOnDrop(&sys);

    let out = mailroom(&sys, &["status"]);
    assert_eq!(code(&out), 3);
    assert!(stdout(&out).starts_with("mailroom is not running\n"));
    assert!(stdout(&out).contains("listening: none (not running; smtpd_port is empty)\n"));
    assert!(stdout(&out).contains("queue: maildrop 0, incoming 0, active 0, deferred 0"));

    let out = mailroom_within(&sys, &["start"], 20);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pid = status_pid(&sys).expect("running after start");
    assert_eq!(stdout(&out), format!("mailroom started (pid {pid})\n"));

    let out = mailroom_within(&sys, &["start"], 20);
    assert_eq!(code(&out), 1, "a second start is refused");
    assert_eq!(
        stderr(&out),
        format!("mailroom: the mail system is already running (pid {pid})\n")
    );
    assert_eq!(status_pid(&sys), Some(pid));

    let out = mailroom(&sys, &["reload"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(status_pid(&sys), Some(pid), "a reload keeps the daemon");

    let out = mailroom(&sys, &["flush"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "0 deferred messages will be tried now\n");

    let out = mailroom_within(&sys, &["stop"], 40);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("mailroom stopped (pid {pid})\n"));
    assert_eq!(code(&mailroom(&sys, &["status"])), 3);
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start().chars().next());
    assert!(
        matches!(state, None | Some(Some('Z' | 'X'))),
        "the process is gone: {stat}"
    );

    let out = mailroom(&sys, &["stop"]);
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (0, "mailroom is not running\n")
    );
    let out = mailroom(&sys, &["reload"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("not running"));
}

#[test]
fn the_commands_act_on_a_daemon_started_by_sendmail_bd_foreground() {
    if !is_root() {
        return;
    }
    let sys = ready_system("");
    let _guard = StopOnDrop(&sys);
    // As a systemd unit runs it.
    let mut daemon = sys
        .command(env!("CARGO_BIN_EXE_sendmail"))
        .arg("-bD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_pid(&sys) != Some(daemon.id()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A deferred message whose next try is far away: only flush brings it back now.
    let id = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let mut env = Envelope::new(QueueId::generate(), now.as_micros() as u64, 0, "root");
        env.recipients.push(Recipient::new(
            "nobody@nowhere.invalid",
            "nobody@nowhere.invalid",
        ));
        env.attempts = 1;
        env.next_attempt = now.as_secs() + 86400;
        let mut file = NewQueueFile::create(&sys.queue().dir(QueueName::Deferred), env).unwrap();
        file.write_all(b"Subject: x\n\nbody\n").unwrap();
        file.commit().unwrap()
    };
    let out = mailroom(&sys, &["flush"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "1 deferred message will be tried now\n");
    // The daemon takes it at once (SIGUSR1), well before its 10 s rescan: it is tried
    // again (attempts grows) or leaves the queue.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let tried = QueueName::MAIL
            .iter()
            .all(|&q| match sys.queue().read_envelope(q, id) {
                Ok(env) => q == QueueName::Deferred && env.attempts > 1,
                Err(_) => true,
            });
        if tried {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the flushed message was not tried"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let out = mailroom(&sys, &["reload"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = mailroom_within(&sys, &["stop"], 40);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(daemon.wait().unwrap().success(), "SIGTERM is a clean exit");
    assert_eq!(code(&mailroom(&sys, &["status"])), 3);
}

/// `status` says where the SMTP listener listens only when it does: with no daemon it
/// says so and gives the configured addresses as configured; with one it lists the
/// addresses it holds, and an address it could not bind is named as not listening.
#[test]
fn status_claims_to_listen_only_when_it_does() {
    let port = free_port();
    let sys = ready_system(&format!(
        "smtpd_port = {port}\ninet_interfaces = 127.0.0.1, 127.0.0.2\ninet_protocols = ipv4"
    ));
    let out = mailroom(&sys, &["status"]);
    assert_eq!(code(&out), 3);
    let text = stdout(&out);
    assert!(text.starts_with("mailroom is not running\n"), "{text}");
    assert!(
        text.contains(&format!(
            "listening: none (not running; configured: 127.0.0.1:{port}, 127.0.0.2:{port})\n"
        )),
        "{text}"
    );
    assert!(!text.contains("listening: 127."), "{text}");
    if !is_root() {
        eprintln!("skipped the running half: starting the daemon needs root");
        return;
    }
    // Someone else holds one of the two addresses: the daemon logs it and goes on.
    let squatter = std::net::TcpListener::bind(("127.0.0.2", port)).unwrap();
    let _guard = StopOnDrop(&sys);
    let out = mailroom_within(&sys, &["start"], 20);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "no listener");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = mailroom(&sys, &["status"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "listening: 127.0.0.1:{port}; not listening: 127.0.0.2:{port}"
        )),
        "{text}"
    );
    drop(squatter);
    let out = mailroom_within(&sys, &["stop"], 40);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn flush_without_a_daemon_runs_the_queue_in_the_foreground() {
    if !is_root() {
        return;
    }
    let sys = ready_system("");
    queue_message(
        &sys,
        QueueName::Deferred,
        1,
        "root",
        &["nobody@nowhere.invalid"],
    );
    let out = mailroom_within(&sys, &["flush"], 60);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("not running; delivering the queue now"));
}
