//! The tests' own guard for external tools (tests/common/tools.rs): a missing tool skips
//! the test with one line that a plain `cargo test` shows, and fails it under
//! `MAILROOM_REQUIRE_TOOLS=1`. Each case runs this test binary again, as `cargo test`
//! would, on one of the ignored probes below.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::{require_python_module, require_tool};

/// Run by the cases below only (MAILROOM_TOOLS_PROBE names the tool): writes the result
/// where libtest does not capture it.
#[test]
#[ignore]
fn probe_tool() {
    if let Ok(tool) = std::env::var("MAILROOM_TOOLS_PROBE") {
        let found = require_tool(&tool);
        let _ = std::io::stdout().write_all(format!("found: {found}\n").as_bytes());
    }
}

#[test]
#[ignore]
fn probe_python_module() {
    if let Ok(module) = std::env::var("MAILROOM_TOOLS_PROBE") {
        let found = require_python_module(&module);
        let _ = std::io::stdout().write_all(format!("found: {found}\n").as_bytes());
    }
}

/// Runs `probe` for `name` in a child test process, as a plain `cargo test` runs tests
/// (output captured), with MAILROOM_REQUIRE_TOOLS set to `require` (or unset).
fn probe(probe: &str, name: &str, require: Option<&str>, path: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([probe, "--exact", "--ignored", "--test-threads=1"])
        .env("MAILROOM_TOOLS_PROBE", name);
    match require {
        Some(v) => cmd.env("MAILROOM_REQUIRE_TOOLS", v),
        None => cmd.env_remove("MAILROOM_REQUIRE_TOOLS"),
    };
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_missing_tool_skips_with_one_visible_line() {
    let out = probe("probe_tool", "mailroom-no-such-tool", None, None);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        "skipped: mailroom-no-such-tool not installed\n"
    );
    assert!(text(&out.stdout).contains("found: false\n"));
    // MAILROOM_REQUIRE_TOOLS=0 is not a requirement.
    let out = probe("probe_tool", "mailroom-no-such-tool", Some("0"), None);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn mailroom_require_tools_turns_a_missing_tool_into_a_failure() {
    let out = probe("probe_tool", "mailroom-no-such-tool", Some("1"), None);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("mailroom-no-such-tool not installed, and MAILROOM_REQUIRE_TOOLS is set"),
        "{stdout}"
    );
    assert!(!stdout.contains("found:"), "{stdout}");
    assert!(
        !text(&out.stderr).contains("skipped"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn only_an_executable_file_on_path_counts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mode) in [("mr-plain", 0o644), ("mr-exec", 0o755)] {
        let file = dir.path().join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir(dir.path().join("mr-dir")).unwrap();
    for (name, found) in [("mr-exec", true), ("mr-plain", false), ("mr-dir", false)] {
        let out = probe("probe_tool", name, Some("1"), Some(dir.path()));
        assert_eq!(out.status.success(), found, "{name}: {}", text(&out.stdout));
        if found {
            assert!(text(&out.stdout).contains("found: true\n"));
            assert_eq!(text(&out.stderr), "");
        }
    }
}

#[test]
fn python_modules_are_asked_of_python3() {
    let out = probe("probe_python_module", "mailroom_no_such_module", None, None);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        "skipped: Python module mailroom_no_such_module not installed\n"
    );
    let out = probe(
        "probe_python_module",
        "mailroom_no_such_module",
        Some("1"),
        None,
    );
    assert!(!out.status.success());
    // The standard library's json is always there: no line, no failure.
    let out = probe("probe_python_module", "json", Some("1"), None);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("found: true\n"));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn tools_that_are_there_are_found_without_a_word() {
    assert!(require_tool("sh"));
    assert!(require_tool("/bin/sh"));
    assert!(require_python_module("email"));
}
