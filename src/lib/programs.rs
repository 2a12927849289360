//! Finding mailroom's other programs. They are installed side by side (`$PREFIX/sbin`,
//! with links elsewhere), and a test build has them all in `target/debug`, so each is
//! looked for in the directory of the running program: never through `PATH`, which a
//! caller controls.

use std::path::PathBuf;

use crate::sysexits::{Error, Result};

/// The operator program, which also runs the daemon and its unprivileged children.
pub const MAILROOM: &str = "mailroom";

/// The program `name` in the directory of the running one; an error naming the path when
/// it is not there.
pub fn beside_this_program(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().map_err(|e| Error::io("cannot find this program", &e))?;
    let path = me
        .parent()
        .map(|dir| dir.join(name))
        .ok_or_else(|| Error::software("cannot find this program's directory"))?;
    if !path.is_file() {
        return Err(Error::software(format!(
            "{} not found: mailroom's programs are installed side by side",
            path.display()
        )));
    }
    Ok(path)
}
