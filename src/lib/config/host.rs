//! What the configuration reads from the system besides its table: the `main.cf` text,
//! Debian's `/etc/mailname`, and the host name.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::sysexits::describe_io;

/// Reads a file as text; bytes that are not UTF-8 are replaced rather than refused, so a
/// Latin-1 comment cannot stop mail.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The first line of `path`, trimmed (Debian's `/etc/mailname`). Reads at most 4 KiB.
pub fn first_line_of(path: &Path) -> std::result::Result<String, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("open {}: {}", path.display(), describe_io(&e)))?;
    let mut line = Vec::new();
    BufReader::new(file.take(4096))
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("read {}: {}", path.display(), describe_io(&e)))?;
    let text = String::from_utf8_lossy(&line).trim().to_string();
    if text.is_empty() {
        return Err(format!("{}: first line is empty", path.display()));
    }
    Ok(text)
}

/// This host's name from gethostname(2), or `localhost` if it cannot be had. No DNS.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which gethostname writes at most
    // `len` bytes into.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}
