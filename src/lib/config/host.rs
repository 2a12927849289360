//! What the configuration reads from the system besides its table: the `main.cf` text,
//! Debian's `/etc/mailname`, and the host name.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sysexits::describe_io;

/// The largest `main.cf` read. Postfix's own sample `main.cf`, every parameter explained in
/// comments, is about 30 KB, and the largest real files (long inline lists, generated
/// settings) stay under 100 KB; 1 MiB is ten times that, and still small enough that
/// every program may read it at each start.
pub const MAX_MAIN_CF: u64 = 1 << 20;

/// Reads `main.cf` as text; bytes that are not UTF-8 are replaced rather than refused, so
/// a Latin-1 comment cannot stop mail.
pub fn read_file(path: &Path) -> io::Result<String> {
    let bytes = read_main_cf(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The bytes of `main.cf`, if it is a regular file (a FIFO would block every program,
/// `/dev/zero` would never end) of at most [`MAX_MAIN_CF`] bytes. Errors of kind
/// `InvalidInput` ("not a regular file") and `FileTooLarge` say which rule it broke.
pub fn read_main_cf(path: &Path) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let too_large = || {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("file too large (more than {MAX_MAIN_CF} bytes)"),
        )
    };
    let length = file.metadata()?.len();
    if length > MAX_MAIN_CF {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(length as usize);
    // The file may grow after the check: read one byte more than allowed to notice.
    file.take(MAX_MAIN_CF + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MAIN_CF {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens `path` for reading if it is a regular file (after symbolic links), and fails
/// with "not a regular file" otherwise, without ever blocking: a FIFO or a device is not
/// opened at all when `stat` shows it, and the open itself is non-blocking in case the
/// name is replaced in between (the open file is checked again).
fn open_regular(path: &Path) -> io::Result<File> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    // O_NONBLOCK changes nothing for a regular file's reads.
    Ok(file)
}

/// Why [`first_line_of`] has no line to give; each names the file.
#[derive(Debug)]
pub enum FirstLineError {
    Open(PathBuf, io::Error),
    Read(PathBuf, io::Error),
    Empty(PathBuf),
}

impl std::fmt::Display for FirstLineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FirstLineError::Open(path, e) => {
                write!(f, "open {}: {}", path.display(), describe_io(e))
            }
            FirstLineError::Read(path, e) => {
                write!(f, "read {}: {}", path.display(), describe_io(e))
            }
            FirstLineError::Empty(path) => write!(f, "{}: first line is empty", path.display()),
        }
    }
}

impl std::error::Error for FirstLineError {}

/// The first line of `path`, trimmed (Debian's `/etc/mailname`). Reads at most 4 KiB, of
/// a regular file only.
pub fn first_line_of(path: &Path) -> Result<String, FirstLineError> {
    let file = open_regular(path).map_err(|e| FirstLineError::Open(path.to_path_buf(), e))?;
    let mut line = Vec::new();
    BufReader::new(file.take(4096))
        .read_until(b'\n', &mut line)
        .map_err(|e| FirstLineError::Read(path.to_path_buf(), e))?;
    let text = String::from_utf8_lossy(&line).trim().to_string();
    if text.is_empty() {
        return Err(FirstLineError::Empty(path.to_path_buf()));
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
