//! `newaliases` run as a program against a temporary `MAIL_CONFIG` directory.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::require_tool;
use mailroom::aliases::AliasDb;

/// A configuration directory whose `main.cf` points both alias settings at `DIR/aliases`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(aliases: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("aliases");
        fs::write(
            dir.path().join("main.cf"),
            format!(
                "alias_database = cdb:{0}\nalias_maps = cdb:{0}\n",
                source.display()
            ),
        )
        .expect("write main.cf");
        fs::write(&source, aliases).expect("write aliases");
        Setup { dir }
    }

    fn source(&self) -> PathBuf {
        self.dir.path().join("aliases")
    }

    fn newaliases(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_newaliases"))
            .args(args)
            .env("MAIL_CONFIG", self.dir.path())
            .output()
            .expect("runs")
    }

    fn lookup(&self, name: &str) -> Option<String> {
        AliasDb::open(&self.source()).expect("database").get(name)
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn seed_example_compiles_first_duplicate_wins() {
    let setup = Setup::new("root: john\njsmith: john\nj.smith: john\nroot: root,james\n");
    let output = setup.newaliases(&[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stderr(&output),
        format!(
            "newaliases: warning: {}.cdb: duplicate entry: \"root\"\n",
            setup.source().display()
        )
    );
    assert!(output.stdout.is_empty());
    assert_eq!(setup.lookup("root").as_deref(), Some("john"));
    assert_eq!(setup.lookup("JSMITH").as_deref(), Some("john"));
    assert_eq!(setup.lookup("j.smith").as_deref(), Some("john"));
}

#[test]
fn every_syntax_form() {
    let setup = Setup::new(concat!(
        "# comment at the start\n",
        "   # indented comment\n",
        "\n",
        "Team: alice,bob , carol\n",
        "continued: alice\n",
        "# a comment inside the entry\n",
        "  , bob\n",
        "\t,carol\n",
        "\"quoted name\": alice\n",
        "\"with space\"@x: bob\n",
        "cmd: \"|/usr/bin/foo args\", |/bin/cat\n",
        "file: /var/log/file\n",
        "inc: :include:/etc/mail/list\n",
        "trailing: alice,\n",
        "crlf: alice\r\n",
    ));
    let output = setup.newaliases(&[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stderr(&output),
        format!(
            "newaliases: warning: {}, line 10: name must be local\n",
            setup.source().display()
        )
    );
    let expect = [
        ("team", "alice, bob, carol"),
        ("continued", "alice, bob, carol"),
        ("quoted name", "alice"),
        ("cmd", "\"|/usr/bin/foo args\", |/bin/cat"),
        ("file", "/var/log/file"),
        ("inc", ":include:/etc/mail/list"),
        ("trailing", "alice, "),
        ("crlf", "alice"),
    ];
    for (name, value) in expect {
        assert_eq!(setup.lookup(name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(setup.lookup("\"with space\"@x"), None);
}

#[test]
fn missing_colon_warns_with_file_and_line_and_the_rest_compiles() {
    let setup = Setup::new("first: alice\nnocolon alice\nempty:\nlast: bob\n");
    let output = setup.newaliases(&[]);
    assert_eq!(output.status.code(), Some(0));
    let source = setup.source().display().to_string();
    assert_eq!(
        stderr(&output),
        format!(
            "newaliases: warning: {source}, line 2: need name:value pair\n\
             newaliases: warning: {source}, line 3: need name:value pair\n"
        )
    );
    assert_eq!(setup.lookup("first").as_deref(), Some("alice"));
    assert_eq!(setup.lookup("last").as_deref(), Some("bob"));
}

#[test]
fn missing_source_is_fatal_with_ex_noinput() {
    let setup = Setup::new("");
    fs::remove_file(setup.source()).expect("remove");
    let output = setup.newaliases(&[]);
    assert_eq!(output.status.code(), Some(66));
    assert_eq!(
        stderr(&output),
        format!(
            "newaliases: fatal: open {}: No such file or directory\n",
            setup.source().display()
        )
    );
}

#[test]
fn config_dir_option_and_verbose_summary() {
    let setup = Setup::new("a: b\nc: d\n");
    let output = Command::new(env!("CARGO_BIN_EXE_newaliases"))
        .args(["-v", "-c"])
        .arg(setup.dir.path())
        .env("MAIL_CONFIG", "/nonexistent")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!("newaliases: {}.cdb: 2 entries\n", setup.source().display())
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_newaliases"))
        .args(["-c", "/nonexistent/dir"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(78));
    assert!(stderr(&missing).starts_with("newaliases: fatal: open /nonexistent/dir/main.cf"));
}

#[test]
fn unknown_option_is_a_usage_error() {
    let setup = Setup::new("a: b\n");
    let output = setup.newaliases(&["-x"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).starts_with("newaliases: fatal: unexpected argument '-x'"));
}

#[test]
fn non_file_tables_are_skipped_with_a_warning() {
    let setup = Setup::new("a: b\n");
    let source = setup.source();
    fs::write(
        setup.dir.path().join("main.cf"),
        format!(
            "alias_database = ldap:/etc/ldap.cf, hash:{}\n",
            source.display()
        ),
    )
    .expect("write");
    let output = setup.newaliases(&[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stderr(&output),
        "newaliases: warning: ldap:/etc/ldap.cf: not a local file table, skipped\n"
    );
    // hash: compiles to the same SOURCE.cdb.
    assert!(Path::new(&format!("{}.cdb", source.display())).exists());
}

#[test]
fn rebuilding_replaces_the_database_atomically() {
    let setup = Setup::new("a: one\n");
    assert_eq!(setup.newaliases(&[]).status.code(), Some(0));
    let mut db = AliasDb::open(&setup.source()).expect("open");
    fs::write(setup.source(), "a: two\n").expect("write");
    assert_eq!(setup.newaliases(&[]).status.code(), Some(0));
    assert_eq!(db.lookup("a").expect("lookup").as_deref(), Some("two"));
    let leftovers = fs::read_dir(setup.dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0);
}

/// tinycdb's `cdb` (Debian package `tinycdb`) is an independent reader of the format.
#[test]
fn an_independent_cdb_reader_agrees() {
    if !require_tool("cdb") {
        return;
    }
    let setup = Setup::new("Team: alice,bob\n\"quoted name\": carol\n");
    assert_eq!(setup.newaliases(&[]).status.code(), Some(0));
    let database = format!("{}.cdb", setup.source().display());
    let query = |key: &str| {
        Command::new("cdb")
            .args(["-q", &database, key])
            .output()
            .expect("cdb")
    };
    assert_eq!(String::from_utf8_lossy(&query("team").stdout), "alice, bob");
    assert_eq!(
        String::from_utf8_lossy(&query("quoted name").stdout),
        "carol"
    );
    assert_eq!(query("nobody").status.code(), Some(100));
}

/// A user who may read the source but not write in its directory (here a throwaway uid
/// run through `setpriv`, so the test needs root) is refused with 77 (EX_NOPERM), as the
/// exit-code contract says of a permission problem, not 73 (EX_CANTCREAT).
#[test]
fn a_user_who_may_not_write_the_database_gets_ex_noperm() {
    use std::os::unix::fs::PermissionsExt;
    let setpriv = Path::new("/usr/bin/setpriv");
    if !nix::unistd::geteuid().is_root() || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let setup = Setup::new("a: b\n");
    // Everything readable, nothing writable for the throwaway uid.
    fs::set_permissions(setup.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = Command::new(setpriv)
        .args(["--reuid=47313", "--regid=47313", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_newaliases"))
        .env("MAIL_CONFIG", setup.dir.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(77), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.starts_with("newaliases: fatal: create ") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(!Path::new(&format!("{}.cdb", setup.source().display())).exists());
}
