//! Problems in the files the configuration names: the queue (the dry run of
//! `postsuper -s`, plus owners), the aliases database, TLS files, the SASL password
//! table, the DKIM keys and the mail spool.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::aliases::AliasDb;
use crate::aliases::rebuild::local_files;
use crate::config::Config;
use crate::queue::{Queue, QueueName};
use crate::sysexits::describe_io;

use super::{Problem, Severity};

/// Every problem found in the files `config` names.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut found = Vec::new();
    queue(config, &mut found);
    aliases(config, &mut found);
    tls(config, &mut found);
    sasl_passwords(config, &mut found);
    dkim_keys(config, &mut found);
    spool(config, &mut found);
    found
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// The queue: what `postsuper -s` would repair, and directories owned by someone who
/// should not own them.
fn queue(config: &Config, found: &mut Vec<Problem>) {
    let Ok(root) = config.queue_directory() else {
        return; // reported with the parameters
    };
    let queue =
        Queue::new(&root).with_group(Queue::from_config(config).ok().and_then(|q| q.group()));
    let result = queue.inspect_structure(&mut |text| {
        // Directory problems name an absolute path; file problems `queue/ID: ...`.
        let (place, what) = text.split_once(": ").unwrap_or(("", text.as_str()));
        let file = if place.starts_with('/') {
            PathBuf::from(place)
        } else {
            root.join(place)
        };
        let hint =
            if what.starts_with("missing") || what.starts_with("mode") || what.starts_with("group")
            {
                " (postsuper -s repairs it)"
            } else {
                " (postsuper -s moves it to corrupt/)"
            };
        found.push(Problem::new(
            show(&file),
            Severity::Error,
            format!("{what}{hint}"),
        ));
    });
    if let Err(e) = result {
        found.push(Problem::new(
            show(&root),
            Severity::Warning,
            format!("cannot inspect the queue: {}", describe_io(&e)),
        ));
        return;
    }
    owners(&queue, found);
}

/// Every queue directory must belong to the owner of `queue_directory`, and that must be
/// root or whoever runs the check (a private test queue): anyone else could read or
/// change mail in it.
fn owners(queue: &Queue, found: &mut Vec<Problem>) {
    let Ok(top) = fs::metadata(queue.root()) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    if top.uid() != 0 && top.uid() != me {
        found.push(Problem::new(
            show(queue.root()),
            Severity::Error,
            format!("owned by uid {}, should be root", top.uid()),
        ));
    }
    let mut dirs: Vec<PathBuf> = QueueName::ALL.iter().map(|&q| queue.dir(q)).collect();
    dirs.push(queue.pid_dir());
    for dir in dirs {
        if let Ok(meta) = fs::symlink_metadata(&dir)
            && meta.is_dir()
            && meta.uid() != top.uid()
        {
            found.push(Problem::new(
                show(&dir),
                Severity::Error,
                format!(
                    "owned by uid {}, should be uid {} like {}",
                    meta.uid(),
                    top.uid(),
                    queue.root().display()
                ),
            ));
        }
    }
}

/// Each local alias table: a source without a database (delivery reads the source
/// directly, but slowly and with a warning each time), or a database older than its
/// source (forgotten `newaliases`).
fn aliases(config: &Config, found: &mut Vec<Problem>) {
    let mut tables = Vec::new();
    for name in ["alias_maps", "alias_database"] {
        // A bad value is reported with the parameters.
        tables.extend(config.tables(name).unwrap_or_default());
    }
    let mut sources = local_files(&tables, &mut |_| {});
    sources.sort();
    sources.dedup();
    for source in sources {
        match AliasDb::open(&source) {
            Err(e) => found.push(Problem::new(
                show(&source),
                Severity::Error,
                format!("{} (run newaliases)", e.message),
            )),
            Ok(db) => {
                if let Some(warning) = db.warning() {
                    let advice = if warning.ends_with("run newaliases") {
                        String::new()
                    } else {
                        " (run newaliases)".to_string()
                    };
                    found.push(Problem::new(
                        show(&source),
                        Severity::Warning,
                        format!("{warning}{advice}"),
                    ));
                }
            }
        }
    }
}

/// With signing on, each of `dkim_domains` needs a usable key, which only root should
/// read. A missing key does not stop mail (it leaves unsigned), but it is not what the
/// configuration asks for.
fn dkim_keys(config: &Config, found: &mut Vec<Problem>) {
    let Ok(settings) = crate::dkim::Settings::from_config(config) else {
        return; // reported with the parameters
    };
    if !settings.enabled() {
        return;
    }
    for domain in &settings.domains {
        let path = match settings.key_path(domain, &settings.selector) {
            Ok(path) => path,
            Err(why) => {
                let mut p = Problem::new(show(config.file()), Severity::Error, why);
                p.parameter = Some("dkim_domains".into());
                found.push(p);
                continue;
            }
        };
        match crate::dkim::key::read_file(&path) {
            Ok((_, mode)) if mode & 0o077 != 0 => found.push(Problem::new(
                show(&path),
                Severity::Warning,
                format!(
                    "DKIM key readable by others than its owner (mode {:04o}); chmod 600",
                    mode & 0o7777
                ),
            )),
            Ok(_) => {}
            Err(why) => found.push(Problem::new(
                show(&path),
                Severity::Error,
                format!(
                    "DKIM key of {domain}: {why}; its mail leaves unsigned \
                     (mailroom dkim keygen -d {domain} makes one)"
                ),
            )),
        }
    }
}

/// The SMTP server's certificate and key: readable, loadable, and a key that others
/// cannot read.
fn tls(config: &Config, found: &mut Vec<Problem>) {
    let (Ok(cert), Ok(key)) = (
        config.get("smtpd_tls_cert_file"),
        config.get("smtpd_tls_key_file"),
    ) else {
        return;
    };
    let mut readable = true;
    for (name, file) in [("smtpd_tls_cert_file", &cert), ("smtpd_tls_key_file", &key)] {
        if file.is_empty() {
            readable = false;
            continue;
        }
        if let Err(e) = fs::File::open(file) {
            readable = false;
            let mut p = Problem::new(
                file.as_str(),
                Severity::Error,
                format!("cannot read ({name}): {}", describe_io(&e)),
            );
            p.parameter = Some(name.to_string());
            found.push(p);
        }
    }
    if !key.is_empty()
        && let Ok(meta) = fs::metadata(&key)
        && meta.permissions().mode() & 0o004 != 0
    {
        found.push(Problem::new(
            key.as_str(),
            Severity::Warning,
            format!(
                "private key readable by everyone (mode {:04o}); chmod o-r",
                meta.permissions().mode() & 0o7777
            ),
        ));
    }
    if readable && let Err(why) = crate::smtpd::tls::load(Path::new(&cert), Path::new(&key)) {
        found.push(Problem::new(
            cert.as_str(),
            Severity::Error,
            format!("STARTTLS cannot use this certificate and key: {why}"),
        ));
    }
}

/// `smtp_sasl_password_maps` holds passwords: its source and database must be readable
/// by their owner only.
fn sasl_passwords(config: &Config, found: &mut Vec<Problem>) {
    let Ok(tables) = config.tables("smtp_sasl_password_maps") else {
        return;
    };
    for source in local_files(&tables, &mut |_| {}) {
        let mut files = vec![source.clone()];
        for suffix in [".cdb", ".db", ".lmdb"] {
            let mut name = source.clone().into_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        if let Err(e) = fs::metadata(&source) {
            found.push(Problem::new(
                show(&source),
                Severity::Warning,
                format!("smtp_sasl_password_maps: {}", describe_io(&e)),
            ));
        }
        for file in files {
            let Ok(meta) = fs::metadata(&file) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                found.push(Problem::new(
                    show(&file),
                    Severity::Warning,
                    format!(
                        "holds SMTP passwords but is open to group or others (mode {mode:04o}); chmod 600"
                    ),
                ));
            }
        }
    }
}

/// The mbox spool: it must exist, and let deliveries create mailboxes without letting
/// users remove each other's: Debian's `root:mail` 2775, or 1777 (sticky).
fn spool(config: &Config, found: &mut Vec<Problem>) {
    let Ok(dir) = config.get("mail_spool_directory") else {
        return;
    };
    if !dir.starts_with('/') {
        return; // reported with the parameters
    }
    // With home_mailbox set, mail goes to home directories and the spool is unused.
    if config.get("home_mailbox").is_ok_and(|h| !h.is_empty()) {
        return;
    }
    let meta = match fs::metadata(&dir) {
        Ok(meta) => meta,
        Err(e) => {
            found.push(Problem::new(
                dir.as_str(),
                Severity::Error,
                format!("mail_spool_directory: {}", describe_io(&e)),
            ));
            return;
        }
    };
    if !meta.is_dir() {
        found.push(Problem::new(
            dir.as_str(),
            Severity::Error,
            "mail_spool_directory is not a directory",
        ));
        return;
    }
    let mode = meta.permissions().mode() & 0o7777;
    let mail_gid = nix::unistd::Group::from_name("mail")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    let group_ok = mail_gid.is_none_or(|gid| gid == meta.gid());
    let ok = match mode {
        0o1777 | 0o3777 => true,
        0o2775 | 0o0775 => group_ok,
        _ => false,
    };
    if !ok {
        let group = nix::unistd::Group::from_gid(meta.gid().into())
            .ok()
            .flatten()
            .map_or_else(|| meta.gid().to_string(), |g| g.name);
        found.push(Problem::new(
            dir.as_str(),
            Severity::Warning,
            format!(
                "mail_spool_directory has mode {mode:04o}, group {group}; expected 2775 with group mail (Debian) or 1777"
            ),
        ));
    }
}
