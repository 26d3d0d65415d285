//! `strata-shim DIR`: runs one service instance from `DIR/launch.json`. The agent starts it;
//! see the crate documentation for the protocol.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: strata-shim DIR\n\
    Runs one service instance as DIR/launch.json describes and records how it ended in\n\
    DIR/exit.json. strata-agent starts it, one per instance; it is not meant to be run by hand.";

/// Exit status for a wrong command line.
const EXIT_USAGE: u8 = 2;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    Run(PathBuf),
    Help,
    Version,
    /// A wrong command line, with what is wrong with it.
    Usage(String),
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Invocation {
    let (Some(first), None) = (args.next(), args.next()) else {
        return Invocation::Usage("expected exactly one argument, the instance directory".into());
    };
    match first.to_str() {
        Some("-h" | "--help") => Invocation::Help,
        Some("-V" | "--version") => Invocation::Version,
        Some(flag) if flag.starts_with('-') => Invocation::Usage(format!("unknown flag {flag}")),
        _ if first.is_empty() => Invocation::Usage("the instance directory is empty".into()),
        _ => Invocation::Run(PathBuf::from(first)),
    }
}

fn main() -> ExitCode {
    match parse(std::env::args_os().skip(1)) {
        Invocation::Run(dir) => strata_shim::run::run(&dir),
        Invocation::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Invocation::Version => {
            println!("strata-shim {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Invocation::Usage(problem) => {
            eprintln!("strata-shim: {problem}\n{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Invocation {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn takes_exactly_one_directory() {
        assert_eq!(
            parse_strs(&["/var/lib/strata/services/web/instances/0"]),
            Invocation::Run(PathBuf::from("/var/lib/strata/services/web/instances/0"))
        );
        assert_eq!(parse_strs(&["--help"]), Invocation::Help);
        assert_eq!(parse_strs(&["-V"]), Invocation::Version);
        for bad in [&[][..], &["a", "b"], &["--bogus"], &[""], &["shim", "/dir"]] {
            assert!(
                matches!(parse_strs(bad), Invocation::Usage(_)),
                "{bad:?} is accepted"
            );
        }
    }
}
