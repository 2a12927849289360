//! External tools the tests use as independent parties (swaks, groff, openssl, tinycdb's
//! `cdb`, pflogsumm, Python's aiosmtpd...). A fresh machine may lack them: a test that
//! needs one asks here first, and returns when it is missing:
//!
//! ```ignore
//! if !require_tool("swaks") {
//!     return;
//! }
//! ```
//!
//! A missing tool writes one line, `skipped: swaks not installed`, straight to the
//! process's stderr (libtest captures `eprintln!` of passing tests, not this), so that a
//! plain `cargo test` shows what it did not check. With `MAILROOM_REQUIRE_TOOLS=1` in the
//! environment (as `.ci/run` sets it) a missing tool fails the test instead: CI runs
//! everything. The checks look on `PATH` and ask `python3`; none of our code is involved.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether the program `tool` is on `PATH` (an executable file). When it is not, writes
/// the skip line and returns false, or, under `MAILROOM_REQUIRE_TOOLS=1`, panics.
pub fn require_tool(tool: &str) -> bool {
    present_or_skip(tool, on_path(tool))
}

/// Whether `python3` can import `module`. When it cannot, writes the skip line and
/// returns false, or, under `MAILROOM_REQUIRE_TOOLS=1`, panics.
pub fn require_python_module(module: &str) -> bool {
    present_or_skip(&format!("Python module {module}"), python_imports(module))
}

/// The same for a module whose package has another name (`dkim` is in dkimpy, `nacl`
/// in pynacl): the skip line names the package, what one installs.
pub fn require_python_package(module: &str, package: &str) -> bool {
    present_or_skip(package, python_imports(module))
}

fn python_imports(module: &str) -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import importlib, sys; importlib.import_module(sys.argv[1])",
        ])
        .arg(module)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn on_path(tool: &str) -> bool {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return executable(Path::new(tool));
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .filter(|dir| !dir.as_os_str().is_empty())
            .any(|dir| executable(&dir.join(tool)))
    })
}

fn present_or_skip(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let required = std::env::var("MAILROOM_REQUIRE_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!("{what} not installed, and MAILROOM_REQUIRE_TOOLS is set (.ci/run installs it)");
    }
    // Not eprintln!: libtest would capture it and show nothing for a passing test.
    let _ = std::io::stderr().write_all(format!("skipped: {what} not installed\n").as_bytes());
    false
}
