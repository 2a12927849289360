//! Tests of the whole module: files, defaults, expansion through real parameters, and the
//! man page against the parameter table.

use super::*;
use crate::sysexits::ExitCode;
use std::fs;

const FILE: &str = "/etc/mailroom/main.cf";

/// A configuration on a host whose gethostname(2) says `host`.
fn on_host(text: &str, host: &str) -> Config {
    Config::build(
        text,
        PathBuf::from("/etc/mailroom"),
        PathBuf::from(FILE),
        host.to_string(),
    )
}

fn cfg(text: &str) -> Config {
    on_host(text, "vm.example.com")
}

#[test]
fn getters_expand_every_reference_form() {
    let c = cfg(
        "a = A\nb = $a ${a} $(a)\ncost = $$5\nq = ${a?set}${nope?set}\nc = ${a:unset}${nope:unset}\n",
    );
    assert_eq!(c.get("b").unwrap(), "A A A");
    assert_eq!(c.get("cost").unwrap(), "$5");
    assert_eq!(c.get("q").unwrap(), "set");
    assert_eq!(c.get("c").unwrap(), "unset");
}

#[test]
fn expansion_is_lazy_and_uses_the_last_setting() {
    let c = cfg("b = <$a>\na = 1\na = 2\n");
    assert_eq!(c.get("b").unwrap(), "<2>");
    assert_eq!(c.raw("b"), Some("<$a>"));
    assert_eq!(c.set_line("a"), Some(3));
    assert!(c.is_set("a"));
    assert!(!c.is_set("myhostname"));
}

#[test]
fn undefined_reference_is_empty_with_a_warning() {
    let c = cfg("smtpd_banner = hello $nosuch world\n");
    assert_eq!(c.get("smtpd_banner").unwrap(), "hello  world");
    assert_eq!(
        c.warnings(),
        [
            "/etc/mailroom/main.cf, line 1: parameter smtpd_banner: undefined parameter $nosuch expands to nothing"
        ]
    );
}

#[test]
fn cycles_are_errors_naming_the_parameter() {
    let c = cfg("a = $b\nb = x $a\nself = ${self}\n");
    let err = c.get("a").unwrap_err();
    assert_eq!(err.code, ExitCode::Config);
    assert_eq!(
        err.message,
        "/etc/mailroom/main.cf, line 1: parameter a: recursive reference: $a -> $b -> $a"
    );
    assert!(
        c.get("self")
            .unwrap_err()
            .message
            .contains("parameter self: recursive")
    );
    let recursive = c
        .warnings()
        .iter()
        .filter(|w| w.contains("recursive"))
        .count();
    assert_eq!(recursive, 3);
}

#[test]
fn a_cycle_through_defaults_is_caught() {
    let c = on_host("mydomain = $myhostname\n", "vm");
    assert!(c.myhostname().unwrap_err().message.contains("recursive"));
}

#[test]
fn unknown_names_warn_and_are_still_readable() {
    let c = cfg("# comment\nfoo = bar\nmyhostname = h.example\n");
    assert_eq!(
        c.warnings(),
        ["/etc/mailroom/main.cf, line 2: unknown parameter \"foo\""]
    );
    assert_eq!(c.get("foo").unwrap(), "bar");
    let err = c.get("neither_known_nor_set").unwrap_err();
    assert_eq!(err.code, ExitCode::Config);
}

#[test]
fn syntax_warnings_keep_the_rest() {
    let c = cfg("relayhost = [smarthost]\nfoo\nmydestination = a,\n # note\n\n  b\n");
    assert_eq!(
        c.warnings(),
        ["/etc/mailroom/main.cf, line 2: missing '=' after attribute name: \"foo\""]
    );
    assert_eq!(c.get("relayhost").unwrap(), "[smarthost]");
    assert_eq!(c.mydestination().unwrap(), ["a", "b"]);
}

#[test]
fn lists_after_expansion() {
    let c = cfg("mynetworks = 127.0.0.0/8, [::1]/128\tx\ninet_interfaces = $mynetworks,,y\n");
    assert_eq!(
        c.list("inet_interfaces").unwrap(),
        ["127.0.0.0/8", "[::1]/128", "x", "y"]
    );
    assert!(c.list("relay_domains").unwrap().is_empty());
}

#[test]
fn times_with_units_and_default_units() {
    let c = cfg(
        "maximal_queue_lifetime = 3\nminimal_backoff_time = 10\nqueue_run_delay = 2m\nbounce_queue_lifetime = 1w\n",
    );
    assert_eq!(
        c.time("maximal_queue_lifetime").unwrap(),
        Duration::from_secs(3 * 86400)
    );
    assert_eq!(
        c.time("minimal_backoff_time").unwrap(),
        Duration::from_secs(10)
    );
    assert_eq!(c.time("queue_run_delay").unwrap(), Duration::from_secs(120));
    assert_eq!(
        c.time("bounce_queue_lifetime").unwrap(),
        Duration::from_secs(7 * 86400)
    );
    let d = cfg("");
    assert_eq!(
        d.time("maximal_queue_lifetime").unwrap(),
        Duration::from_secs(5 * 86400)
    );
    assert_eq!(
        d.time("maximal_backoff_time").unwrap(),
        Duration::from_secs(4000)
    );
    assert_eq!(d.time("smtpd_timeout").unwrap(), Duration::from_secs(300));
}

#[test]
fn bad_values_name_parameter_and_value() {
    let c = cfg(
        "maximal_queue_lifetime = 5x\nmessage_size_limit = 10M\nsmtp_sasl_auth_enable = maybe\nalias_maps = /etc/aliases\nqueue_directory = spool\n",
    );
    let msg = |r: Result<()>| r.unwrap_err().message;
    assert_eq!(
        msg(c.time("maximal_queue_lifetime").map(drop)),
        "/etc/mailroom/main.cf, line 1: parameter maximal_queue_lifetime: bad time value: \"5x\""
    );
    let m = msg(c.message_size_limit().map(drop));
    assert!(
        m.contains("message_size_limit") && m.contains("\"10M\""),
        "{m}"
    );
    let m = msg(c.boolean("smtp_sasl_auth_enable").map(drop));
    assert!(
        m.contains("smtp_sasl_auth_enable") && m.contains("\"maybe\""),
        "{m}"
    );
    let m = msg(c.tables("alias_maps").map(drop));
    assert!(
        m.contains("alias_maps") && m.contains("/etc/aliases"),
        "{m}"
    );
    assert!(msg(c.queue_directory().map(drop)).contains("absolute"));
    assert_eq!(c.tables("alias_maps").unwrap_err().code, ExitCode::Config);
}

#[test]
fn sizes_and_booleans() {
    let c = cfg("message_size_limit = 0\nsmtp_sasl_auth_enable = YES\nmailbox_size_limit = 123\n");
    assert_eq!(c.message_size_limit().unwrap(), 0);
    assert_eq!(c.number("mailbox_size_limit").unwrap(), 123);
    assert!(c.boolean("smtp_sasl_auth_enable").unwrap());
    assert!(!cfg("").boolean("smtp_sasl_auth_enable").unwrap());
}

#[test]
fn tables_parse_type_and_path() {
    let c = cfg("alias_maps = hash:/etc/aliases, cdb:/x/y\n");
    let t = c.tables("alias_maps").unwrap();
    assert_eq!(
        t,
        [
            Table {
                kind: "hash".into(),
                path: "/etc/aliases".into()
            },
            Table {
                kind: "cdb".into(),
                path: "/x/y".into()
            },
        ]
    );
    assert!(c.tables("smtp_sasl_password_maps").unwrap().is_empty());
    assert_eq!(
        cfg("").tables("alias_database").unwrap()[0].to_string(),
        "hash:/etc/aliases"
    );
}

#[test]
fn myorigin_from_a_mailname_file() {
    let dir = tempfile::tempdir().unwrap();
    let mailname = dir.path().join("mailname");
    fs::write(&mailname, "mail.server.com\nignored\n").unwrap();
    let text = format!(
        "myorigin = {}\nsender = root@$myorigin\n",
        mailname.display()
    );
    let c = cfg(&text);
    assert_eq!(c.myorigin().unwrap(), "mail.server.com");
    assert_eq!(c.get("sender").unwrap(), "root@mail.server.com");

    let missing = cfg("myorigin = /nonexistent/mailname\n");
    let err = missing.myorigin().unwrap_err();
    assert_eq!(err.code, ExitCode::Config);
    assert!(
        err.message
            .contains("open /nonexistent/mailname: No such file or directory"),
        "{}",
        err.message
    );
    assert!(missing.warnings().is_empty());

    fs::write(&mailname, "\n").unwrap();
    assert!(cfg(&text).myorigin().is_err());
}

#[test]
fn defaults_of_the_design_parameters() {
    let c = on_host("", "mail.example.com");
    assert_eq!(c.myhostname().unwrap(), "mail.example.com");
    assert_eq!(c.mydomain().unwrap(), "example.com");
    assert_eq!(c.myorigin().unwrap(), "mail.example.com");
    assert_eq!(
        c.mydestination().unwrap(),
        ["mail.example.com", "localhost.example.com", "localhost"]
    );
    let get = |n| c.get(n).unwrap();
    assert_eq!(get("inet_interfaces"), "loopback-only");
    assert_eq!(get("inet_protocols"), "all");
    assert_eq!(get("mynetworks"), "");
    assert_eq!(get("mynetworks_style"), "host");
    assert_eq!(get("relay_domains"), "");
    assert_eq!(get("home_mailbox"), "");
    assert_eq!(get("mail_spool_directory"), "/var/mail");
    assert_eq!(
        c.queue_directory().unwrap(),
        PathBuf::from("/var/spool/mailroom")
    );
    assert_eq!(get("relayhost"), "");
    assert_eq!(get("maillog_file"), "");
    assert_eq!(get("syslog_name"), "mailroom");
    assert_eq!(c.message_size_limit().unwrap(), 10_240_000);
    assert_eq!(get("default_privs"), "nobody");
    assert_eq!(get("smtp_tls_security_level"), "");
    assert_eq!(get("recipient_delimiter"), "");
    assert_eq!(get("smtpd_port"), "25");
    assert_eq!(get("smtpd_banner"), "mail.example.com ESMTP mailroom");
    assert_eq!(
        c.list("allow_mail_to_commands").unwrap(),
        ["alias", "forward"]
    );
    assert_eq!(
        c.time("bounce_queue_lifetime").unwrap(),
        Duration::from_secs(5 * 86400)
    );
    assert_eq!(
        c.time("minimal_backoff_time").unwrap(),
        Duration::from_secs(300)
    );
    assert_eq!(c.time("queue_run_delay").unwrap(), Duration::from_secs(300));
    assert_eq!(c.number("smtpd_recipient_limit").unwrap(), 1000);
    assert!(c.warnings().is_empty());
}

#[test]
fn host_name_defaults_follow_postfix() {
    assert_eq!(on_host("", "vm").myhostname().unwrap(), "vm.localdomain");
    assert_eq!(on_host("", "vm").mydomain().unwrap(), "localdomain");
    // A two-label host name is taken to be a domain itself.
    assert_eq!(
        on_host("", "example.com").mydomain().unwrap(),
        "localdomain"
    );
    // A dotless host name borrows mydomain when main.cf sets it.
    let c = on_host("mydomain = corp.example\n", "vm");
    assert_eq!(c.myhostname().unwrap(), "vm.corp.example");
    // mydomain follows a myhostname set in main.cf.
    let c = on_host("myhostname = a.b.example\n", "vm");
    assert_eq!(c.mydomain().unwrap(), "b.example");
    assert_eq!(c.default_text("mydomain").unwrap(), "b.example");
    assert_eq!(c.default_text("myorigin").unwrap(), "$myhostname");
    assert_eq!(c.default_text("nosuch"), None);
    assert!(!host_name().is_empty());
}

#[test]
fn explicit_directory_without_main_cf_is_code_78() {
    let err = Config::load(Some(Path::new("/nonexistent"))).unwrap_err();
    assert_eq!(err.code, ExitCode::Config);
    assert_eq!(
        err.message,
        "open /nonexistent/main.cf: No such file or directory"
    );
    let err = Config::load_dir("/nonexistent".into(), DirSource::Environment).unwrap_err();
    assert_eq!(err.code(), 78);
}

#[test]
fn missing_default_file_means_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load_dir(dir.path().to_path_buf(), DirSource::Default).unwrap();
    assert_eq!(c.file(), dir.path().join("main.cf"));
    assert_eq!(c.dir(), dir.path());
    assert_eq!(c.get("queue_directory").unwrap(), "/var/spool/mailroom");
    assert!(c.warnings().is_empty());
}

#[test]
fn unreadable_default_file_is_code_78() {
    let dir = tempfile::tempdir().unwrap();
    // A directory in place of the file fails even for root, unlike a chmod 000 file.
    fs::create_dir(dir.path().join("main.cf")).unwrap();
    let err = Config::load_dir(dir.path().to_path_buf(), DirSource::Default).unwrap_err();
    assert_eq!(err.code, ExitCode::Config);
    assert!(err.message.starts_with("open "), "{}", err.message);
}

/// Runs `f` on a thread of its own and fails the test if it takes more than 10 s, so a
/// read that blocks fails instead of hanging the suite.
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("did not finish within 10 s")
}

#[test]
fn only_a_regular_main_cf_of_sane_size_is_read() {
    let big = usize::try_from(host::MAX_MAIN_CF).unwrap();
    // (what, how to make DIR/main.cf, error expected or None to load)
    type Make = fn(&Path);
    let cases: &[(&str, Make, Option<&str>)] = &[
        (
            "FIFO",
            |p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap(),
            Some("not a regular file"),
        ),
        (
            "symlink to /dev/zero",
            |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            Some("not a regular file"),
        ),
        (
            "symlink to a FIFO",
            |p| {
                let fifo = p.with_file_name("fifo");
                nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .unwrap();
                std::os::unix::fs::symlink(&fifo, p).unwrap();
            },
            Some("not a regular file"),
        ),
        (
            "sparse 4 GiB file",
            |p| fs::File::create(p).unwrap().set_len(4 << 30).unwrap(),
            Some("file too large (more than 1048576 bytes)"),
        ),
        (
            "one byte over the limit",
            |p| fs::write(p, "#".repeat((1 << 20) + 1)).unwrap(),
            Some("file too large"),
        ),
        (
            "exactly at the limit",
            |p| {
                let line = "queue_directory = /srv/q\n";
                let pad = (1 << 20) - line.len();
                fs::write(p, format!("{line}{}", "#".repeat(pad))).unwrap()
            },
            None,
        ),
    ];
    assert_eq!(big, 1 << 20, "the cases above assume 1 MiB");
    for &(what, make, want) in cases {
        for source in [DirSource::Default, DirSource::Explicit] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("main.cf");
            make(&file);
            let path = dir.path().to_path_buf();
            let got = within_10s(move || Config::load_dir(path, source));
            match (got, want) {
                (Ok(c), None) => assert_eq!(c.get("queue_directory").unwrap(), "/srv/q"),
                (Err(err), Some(part)) => {
                    assert_eq!(err.code, ExitCode::Config, "{what}");
                    let prefix = format!("open {}: ", file.display());
                    assert!(
                        err.message.starts_with(&prefix) && err.message.contains(part),
                        "{what}: {}",
                        err.message
                    );
                }
                (got, want) => panic!("{what} ({source:?}): got {got:?}, want {want:?}"),
            }
        }
    }
}

#[test]
fn a_mailname_that_is_not_a_regular_file_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("mailname");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let text = format!("myorigin = {}\n", fifo.display());
    let err = within_10s(move || cfg(&text).myorigin()).unwrap_err();
    assert_eq!(err.code, ExitCode::Config);
    assert!(
        err.message
            .ends_with(&format!("open {}: not a regular file", fifo.display())),
        "{}",
        err.message
    );
}

#[test]
fn expansion_limits_are_config_errors_naming_the_parameter() {
    // myhostname = $n0, n0 = $n1$n1, ... n60 = x: 2^60 bytes if nothing stopped it.
    let mut text = String::from("myhostname = $n0\n");
    for i in 0..60 {
        text.push_str(&format!("n{i} = $n{0}$n{0}\n", i + 1));
    }
    text.push_str("n60 = x\n");
    let (err, warnings) = within_10s(move || {
        let c = cfg(&text);
        (c.myhostname().unwrap_err(), c.warnings().to_vec())
    });
    assert_eq!(err.code, ExitCode::Config);
    assert!(
        err.message.starts_with(
            "/etc/mailroom/main.cf, line 1: parameter myhostname: unreasonable macro expansion size"
        ),
        "{}",
        err.message
    );
    // The check of the whole file says so too, once, and stops there.
    let size: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("unreasonable"))
        .collect();
    assert_eq!(size.len(), 1, "{warnings:?}");
}

#[test]
fn explicit_directory_is_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("main.cf"), "queue_directory = /srv/q\n").unwrap();
    let c = Config::load(Some(dir.path())).unwrap();
    assert_eq!(c.queue_directory().unwrap(), PathBuf::from("/srv/q"));
    assert_eq!(c.set_line("queue_directory"), Some(1));
}

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
myhostname = vm.example.com
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
myorigin = MAILNAME
mydestination = $myhostname, vm, localhost.localdomain, localhost
relayhost = 
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = all
";

#[test]
fn a_stock_debian_postfix_main_cf_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mailname = dir.path().join("mailname");
    fs::write(&mailname, "mail.server.com\n").unwrap();
    let text = DEBIAN_MAIN_CF.replace("MAILNAME", &mailname.display().to_string());
    fs::write(dir.path().join("main.cf"), &text).unwrap();
    let c = Config::load(Some(dir.path())).unwrap();
    assert_eq!(c.warnings(), [] as [String; 0]);

    assert_eq!(c.myhostname().unwrap(), "vm.example.com");
    assert_eq!(c.myorigin().unwrap(), "mail.server.com");
    assert_eq!(c.mydomain().unwrap(), "example.com");
    assert_eq!(
        c.mydestination().unwrap(),
        ["vm.example.com", "vm", "localhost.localdomain", "localhost"]
    );
    assert_eq!(
        c.get("smtpd_banner").unwrap(),
        "vm.example.com ESMTP mailroom (Debian/GNU)"
    );
    assert_eq!(c.get("relayhost").unwrap(), "");
    assert_eq!(c.number("mailbox_size_limit").unwrap(), 0);
    assert_eq!(c.get("recipient_delimiter").unwrap(), "+");
    assert_eq!(c.list("inet_interfaces").unwrap(), ["all"]);
    assert_eq!(c.list("mynetworks").unwrap().len(), 3);
    assert_eq!(
        c.tables("alias_maps").unwrap()[0].path,
        PathBuf::from("/etc/aliases")
    );
    assert_eq!(c.get("smtp_tls_security_level").unwrap(), "may");
    assert_eq!(
        c.get("smtp_tls_session_cache_database").unwrap(),
        "btree:/var/lib/mailroom/smtp_scache"
    );
    assert!(!c.boolean("biff").unwrap());
    assert_eq!(c.set_line("smtpd_banner"), Some(9));
    assert_eq!(c.settings().first().map(|s| s.0), Some("smtpd_banner"));
    for (name, _, _) in c.settings() {
        assert!(params::find(name).is_some(), "{name} should be known");
    }
    assert!(params::find("smtpd_relay_restrictions").unwrap().effective);
}

/// The man page's parameter section is generated from the table. Run the tests with
/// `MAILROOM_UPDATE_MAN=1` to rewrite it after changing the table.
#[test]
fn man_page_documents_every_parameter() {
    const BEGIN: &str = ".\\\" BEGIN GENERATED PARAMETERS (src/lib/config/params.rs)\n";
    const END: &str = ".\\\" END GENERATED PARAMETERS\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/mailroom.cf.5");
    let page = fs::read_to_string(&path).unwrap();
    let start = page.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = page.find(END).expect("end marker");
    let generated = man_section();
    if std::env::var_os("MAILROOM_UPDATE_MAN").is_some() {
        let updated = format!("{}{}{}", &page[..start], generated, &page[end..]);
        fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        page[start..end] == generated,
        "man/mailroom.cf.5 is out of date: run MAILROOM_UPDATE_MAN=1 cargo test man_page"
    );
    for info in known_parameters() {
        assert!(
            page.contains(&format!(".B {}\n", info.name)),
            "{}",
            info.name
        );
    }
}

/// The table is the type system of `main.cf`: every parameter the code reads by name
/// (`config.number("smtpd_timeout")`...) is in it, and read as the kind the table gives
/// it, so that `mailroom check`, `mailroom config` and the man page describe what the
/// code does. Scans the source, since the names are string literals.
#[test]
fn every_parameter_read_by_the_code_is_in_the_table_with_its_kind() {
    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let receivers = ["config.", "c.", "fresh.", "self."];
    let mut seen = 0;
    let mut wrong = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // made-up names
        }
        let text = fs::read_to_string(&file).unwrap();
        // Tests read made-up parameters.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        // self.get(...) is Config's own only in config/.
        let config_module = file.starts_with(root.join("lib/config"));
        for (at, _) in text.match_indices("(\"") {
            let before = &text[..at];
            let Some(dot) = before.rfind('.') else {
                continue;
            };
            let getter = &before[dot + 1..];
            let receiver_start = before[..dot]
                .rfind(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .map_or(0, |i| i + 1);
            let receiver = &before[receiver_start..=dot];
            if !receivers.contains(&receiver) || (receiver == "self." && !config_module) {
                continue;
            }
            let rest = &text[at + 2..];
            let Some(end) = rest.find("\")") else {
                continue;
            };
            let name = &rest[..end];
            if !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                continue;
            }
            let fits = |kind: ParamKind| match getter {
                "get" => true,
                "list" => matches!(kind, ParamKind::List | ParamKind::Tables),
                "time" => matches!(kind, ParamKind::Time(_)),
                "number" => kind == ParamKind::Number,
                "boolean" => kind == ParamKind::Bool,
                "tables" => kind == ParamKind::Tables,
                _ => true,
            };
            if !["get", "list", "time", "number", "boolean", "tables"].contains(&getter) {
                continue;
            }
            seen += 1;
            let place = format!("{}: {receiver}{getter}(\"{name}\")", file.display());
            match known_parameters().iter().find(|p| p.name == name) {
                None => wrong.push(format!("{place}: not in the table")),
                Some(info) if !fits(info.kind) => {
                    wrong.push(format!("{place}: the table says {:?}", info.kind))
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        seen > 50,
        "the scan found only {seen} reads: has the code changed shape?"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
