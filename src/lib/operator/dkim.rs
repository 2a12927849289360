//! `mailroom dkim keygen` and `mailroom dkim record`: make a DKIM key where the SMTP
//! client looks for it, and print the DNS record that publishes it.
//!
//! Both print exactly one line, the record in zone-file form (see `dkim::record`), so
//! that `mailroom dkim record >> zone` or a copy and paste is all it takes.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::dkim::{self, Algorithm, PrivateKey, Settings};
use crate::queue::QueueId;
use crate::sysexits::{Error, ExitCode, Result};

use super::write_out;

/// What `mailroom dkim keygen` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keygen {
    /// Default: `$mydomain`.
    pub domain: Option<String>,
    /// Default: `dkim_selector`, else [`dkim::DEFAULT_SELECTOR`].
    pub selector: Option<String>,
    pub algorithm: Algorithm,
    /// RSA only; default 2048.
    pub bits: Option<usize>,
    /// Replace an existing key.
    pub force: bool,
}

/// The RSA key size when `--bits` is not given.
pub const DEFAULT_BITS: usize = 2048;

/// `mailroom dkim keygen`: writes a new key, mode 0600, to
/// `dkim_key_directory/DOMAIN.SELECTOR.key` (making the directory, mode 0700, when
/// missing) and prints its record. An existing key is kept unless `force`: replacing it
/// breaks the signatures of mail in flight until the new record is published.
pub fn keygen(config: &Config, args: &Keygen, out: &mut dyn Write) -> Result<()> {
    let settings = Settings::from_config(config)?;
    let (domain, selector) = names(
        config,
        &settings,
        args.domain.as_deref(),
        args.selector.as_deref(),
    )?;
    let bits = match (args.algorithm, args.bits) {
        (Algorithm::Ed25519, Some(_)) => {
            return Err(Error::usage("--bits applies to RSA keys only"));
        }
        (Algorithm::Ed25519, None) => 0,
        (Algorithm::Rsa, bits) => bits.unwrap_or(DEFAULT_BITS),
    };
    if args.algorithm == Algorithm::Rsa && !dkim::key::RSA_BITS.contains(&bits) {
        let range = &dkim::key::RSA_BITS;
        return Err(Error::usage(format!(
            "--bits {bits}: RSA keys are {} to {} bits (ring, which signs, refuses smaller ones)",
            range.start(),
            range.end()
        )));
    }
    let path = settings
        .key_path(&domain, &selector)
        .map_err(Error::usage)?;
    if !args.force && path.exists() {
        return Err(exists(&path));
    }
    let pem = dkim::key::generate(args.algorithm, bits).map_err(Error::software)?;
    // Read back through the signer's own reader: what is written is what will sign.
    let key = PrivateKey::from_pem(pem.as_bytes()).map_err(Error::software)?;
    let line = record_line(&key, &selector, &domain)?;
    make_directory(&settings.key_directory)?;
    write_key(&path, pem.as_bytes(), args.force)?;
    write_out(out, format!("{line}\n").as_bytes())
}

/// `mailroom dkim record`: prints the record of the existing key.
pub fn record(
    config: &Config,
    domain: Option<&str>,
    selector: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let settings = Settings::from_config(config)?;
    let (domain, selector) = names(config, &settings, domain, selector)?;
    let path = settings
        .key_path(&domain, &selector)
        .map_err(Error::usage)?;
    let mut pem = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(dkim::key::MAX_KEY_FILE).read_to_end(&mut pem))
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::new(
                ExitCode::NoInput,
                format!(
                    "no DKIM key {}: make one with mailroom dkim keygen -d {domain} -s {selector}",
                    path.display()
                ),
            ),
            _ => Error::io(format!("open {}", path.display()), &e),
        })?;
    let key = PrivateKey::from_pem(&pem)
        .map_err(|why| Error::data(format!("DKIM key {}: {why}", path.display())))?;
    let line = record_line(&key, &selector, &domain)?;
    write_out(out, format!("{line}\n").as_bytes())
}

/// The domain and selector asked for, or their defaults, checked.
fn names(
    config: &Config,
    settings: &Settings,
    domain: Option<&str>,
    selector: Option<&str>,
) -> Result<(String, String)> {
    let domain = match domain {
        Some(d) => d.to_string(),
        None => config.mydomain()?,
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let selector = match selector {
        Some(s) => s.to_string(),
        None if settings.selector.is_empty() => dkim::DEFAULT_SELECTOR.to_string(),
        None => settings.selector.clone(),
    };
    dkim::check_name("domain", &domain).map_err(Error::usage)?;
    dkim::check_name("selector", &selector).map_err(Error::usage)?;
    Ok((domain, selector))
}

fn record_line(key: &PrivateKey, selector: &str, domain: &str) -> Result<String> {
    let public = key.public_key().map_err(Error::software)?;
    Ok(dkim::record::zone_line(
        selector,
        domain,
        key.algorithm(),
        &public,
    ))
}

fn exists(path: &Path) -> Error {
    Error::new(
        ExitCode::CantCreat,
        format!(
            "{} exists: use --force to replace it (mail signed with the old key fails \
             verification until the new record is published)",
            path.display()
        ),
    )
}

/// Makes the key directory, 0700: only root reads the keys (the SMTP client, before it
/// gives up root). An existing directory is left as it is.
fn make_directory(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), &e))
}

/// Writes the key under a temporary name, mode 0600, flushed to disk, then puts it in
/// place: renamed over an old key with `force` (no moment without a key), else linked
/// to its name, which fails if a key appeared there meanwhile (never overwritten).
fn write_key(path: &Path, pem: &[u8], force: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary: PathBuf = dir.join(format!(".keygen.{}", QueueId::generate()));
    let io = |what: &str, e: &std::io::Error| Error::io(format!("{what} {}", path.display()), e);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| io("create", &e))?;
        // The umask can only take bits away; this makes the mode exact.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(pem))
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", &e))?;
        if force {
            std::fs::rename(&temporary, path).map_err(|e| io("rename to", &e))
        } else {
            match std::fs::hard_link(&temporary, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(exists(path)),
                Err(e) => Err(io("link to", &e)),
            }
        }
    })();
    // Gone after a rename; after a link or a failure, the temporary name goes.
    let _ = std::fs::remove_file(&temporary);
    if result.is_ok() {
        sync_directory(dir);
    }
    result
}

/// Makes the new name durable; a failure here loses nothing already written.
fn sync_directory(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn config(dir: &Path, extra: &str) -> Config {
        let text = format!("mydomain = example.com\n{extra}\n");
        Config::from_text(&text, &dir.join("main.cf"))
    }

    fn keygen_args(algorithm: Algorithm) -> Keygen {
        Keygen {
            domain: None,
            selector: None,
            algorithm,
            bits: None,
            force: false,
        }
    }

    #[test]
    fn keygen_writes_a_private_key_and_record_prints_the_same_line() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        let mut out = Vec::new();
        keygen(&c, &keygen_args(Algorithm::Ed25519), &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with("mail._domainkey.example.com. IN TXT \"v=DKIM1; k=ed25519; p="),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
        let key = dir.path().join("dkim/example.com.mail.key");
        assert_eq!(key.metadata().unwrap().mode() & 0o7777, 0o600);
        assert_eq!(
            dir.path().join("dkim").metadata().unwrap().mode() & 0o7777,
            0o700
        );
        let mut again = Vec::new();
        record(&c, None, None, &mut again).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), line);
        // No temporary file left beside it.
        assert_eq!(
            std::fs::read_dir(dir.path().join("dkim")).unwrap().count(),
            1
        );
    }

    #[test]
    fn an_existing_key_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "dkim_selector = s2024");
        let mut args = keygen_args(Algorithm::Ed25519);
        args.domain = Some("Other.Example.".into());
        keygen(&c, &args, &mut Vec::new()).unwrap();
        let path = dir.path().join("dkim/other.example.s2024.key");
        let before = std::fs::read(&path).unwrap();
        let err = keygen(&c, &args, &mut Vec::new()).unwrap_err();
        assert_eq!(err.code(), 73);
        assert!(err.to_string().contains("use --force"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        args.force = true;
        keygen(&c, &args, &mut Vec::new()).unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), before);
        assert_eq!(path.metadata().unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn bad_requests_are_usage_errors_and_missing_keys_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        let mut args = keygen_args(Algorithm::Rsa);
        args.bits = Some(1024);
        assert_eq!(keygen(&c, &args, &mut Vec::new()).unwrap_err().code(), 64);
        let mut args = keygen_args(Algorithm::Ed25519);
        args.bits = Some(2048);
        assert_eq!(keygen(&c, &args, &mut Vec::new()).unwrap_err().code(), 64);
        let mut args = keygen_args(Algorithm::Ed25519);
        args.selector = Some("../../etc/x".into());
        assert_eq!(keygen(&c, &args, &mut Vec::new()).unwrap_err().code(), 64);
        assert!(!dir.path().join("dkim").exists());
        let err = record(&c, Some("example.com"), Some("nokey"), &mut Vec::new()).unwrap_err();
        assert_eq!(err.code(), 66);
        assert!(
            err.to_string()
                .contains("mailroom dkim keygen -d example.com -s nokey")
        );
        std::fs::create_dir(dir.path().join("dkim")).unwrap();
        std::fs::write(dir.path().join("dkim/example.com.junk.key"), "junk").unwrap();
        let err = record(&c, None, Some("junk"), &mut Vec::new()).unwrap_err();
        assert_eq!(err.code(), 65);
    }
}
