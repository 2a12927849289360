//! `postsuper`: queue maintenance for the superuser (delete, hold, release, requeue,
//! structure repair, temporary-file purge). Its argv is Postfix's getopt style, parsed
//! by `mailroom::postsuper::args`; this file only maps outcomes to messages and exit
//! codes.

use std::io::{self, Write};
use std::process::ExitCode;

use mailroom::postsuper::{self, ArgError, args};
use mailroom::privilege;
use mailroom::sysexits::{Error, ExitCode as Sysexit};

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postsuper: fatal: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}

fn try_main() -> Result<(), Error> {
    // As Postfix: who may run it is settled before anything else is looked at. Our exit
    // code is 77 (EX_NOPERM) where Postfix exits 1.
    privilege::require_root("use of this command is reserved for the superuser")?;
    let argv = mailroom::getopt::text_args(std::env::args_os().skip(1))
        .map_err(|e| Error::usage(e.to_string()))?;
    let request = match args::parse(argv) {
        Ok(request) => request,
        Err(ArgError::Usage(complaint)) => {
            let _ = io::stderr().write_all(format!("postsuper: {complaint}\n").as_bytes());
            return Err(Error::usage(args::USAGE));
        }
        Err(ArgError::Fatal(message)) => return Err(Error::new(Sysexit::Usage, message)),
    };
    let stdin = io::stdin();
    let stderr = io::stderr();
    postsuper::run_command(&request, &mut stdin.lock(), &mut stderr.lock()).map(drop)
}
