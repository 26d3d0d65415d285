//! Shell completions and man pages, generated from the same clap definition as the CLI so
//! they never drift from it.

use super::{Cli, out};
use crate::client::{Failure, FailureKind};
use clap::CommandFactory;
use std::path::Path;

/// `strata completions SHELL [--dynamic]`: the completion script on stdout; the dynamic one
/// is clap_complete's registration, which runs `strata` (as `COMPLETE=SHELL strata`) on Tab.
pub fn completions(shell: clap_complete::Shell, dynamic: bool) -> Result<(), Failure> {
    let mut script = Vec::new();
    if dynamic {
        use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
        let registration: &dyn EnvCompleter = match shell {
            clap_complete::Shell::Bash => &Bash,
            clap_complete::Shell::Elvish => &Elvish,
            clap_complete::Shell::Fish => &Fish,
            clap_complete::Shell::PowerShell => &Powershell,
            clap_complete::Shell::Zsh => &Zsh,
            other => {
                return Err(Failure::new(
                    FailureKind::Usage,
                    format!("--dynamic: no dynamic completion for {other}"),
                ));
            }
        };
        // The completer is this very binary, so Tab runs the same version that wrote the
        // script.
        let exe = std::env::current_exe().ok();
        let completer = exe.as_deref().and_then(Path::to_str).unwrap_or("strata");
        registration
            .write_registration("COMPLETE", "strata", "strata", completer, &mut script)
            .map_err(|e| Failure::new(FailureKind::ActionFailed, e.to_string()))?;
    } else {
        clap_complete::generate(shell, &mut Cli::command(), "strata", &mut script);
    }
    out::raw(&script)
}

/// `strata man --dir DIR`: `strata.1` and `strata-<subcommand>.1` for every subcommand.
pub fn man_pages(dir: &Path) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::new(
            FailureKind::ActionFailed,
            format!("cannot write man pages to {}: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(fail)?;
    // The main page again, with the sections clap does not know about.
    std::fs::write(dir.join("strata.1"), main_page()).map_err(fail)?;
    out::line(format!("man pages written to {}", dir.display()))
}

/// `strata.1`: clap's sections, then EXIT STATUS (from [`FailureKind`], the codes the CLI
/// exits with, so the page cannot drift from them), ENVIRONMENT and EXAMPLES.
pub fn main_page() -> Vec<u8> {
    let man = clap_mangen::Man::new(Cli::command());
    let mut page = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut page);
    let _ = man.render_name_section(&mut page);
    let _ = man.render_synopsis_section(&mut page);
    let _ = man.render_description_section(&mut page);
    let _ = man.render_options_section(&mut page);
    let _ = man.render_subcommands_section(&mut page);
    page.extend_from_slice(extra_sections().as_bytes());
    let _ = man.render_version_section(&mut page);
    page
}

/// The variables `strata` reads, each with what it stands for.
const ENVIRONMENT: [(&str, &str); 7] = [
    (
        "STRATA_AGENT",
        "the agent to talk to, HOST:PORT or https://HOST:PORT (--agent)",
    ),
    (
        "STRATA_CA",
        "the cluster CA certificate; given, TLS is used (--ca)",
    ),
    ("STRATA_CERT", "a client certificate (--cert)"),
    (
        "STRATA_KEY",
        "the private key of the client certificate (--key)",
    ),
    (
        "STRATA_TOKEN",
        "an API token sent with every request (--token)",
    ),
    (
        "STRATA_NO_RETRY",
        "fail at once when the agent refuses a call for now (--no-retry)",
    ),
    (
        "NO_COLOR",
        "any non-empty value: the console draws without colour",
    ),
];

/// Examples, each a command and what it does.
const EXAMPLES: [(&str, &str); 6] = [
    ("strata", "open the console on the local agent"),
    (
        "strata services -o json",
        "every service on the node, for scripts",
    ),
    (
        "strata apply ./strata.toml --wait",
        "apply a spec and wait until it converged",
    ),
    (
        "strata events --since 1h --severity warning",
        "warnings and worse of the last hour",
    ),
    (
        "strata logs api -f --grep ERROR",
        "follow a service's error lines",
    ),
    (
        "strata --agent 10.0.0.5:7700 --ca ca.pem members",
        "the cluster seen from another host",
    ),
];

/// EXIT STATUS, ENVIRONMENT and EXAMPLES in roff.
fn extra_sections() -> String {
    let escape = |text: &str| text.replace('\\', "\\e").replace('-', "\\-");
    let mut roff = String::from(".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nsuccess\n");
    for kind in FailureKind::ALL {
        roff += &format!(".TP\n\\fB{}\\fR\n{}\n", kind.code(), escape(kind.meaning()));
    }
    roff += ".SH ENVIRONMENT\n";
    for (name, meaning) in ENVIRONMENT {
        roff += &format!(".TP\n\\fB{name}\\fR\n{}\n", escape(meaning));
    }
    roff += ".SH EXAMPLES\n";
    for (command, meaning) in EXAMPLES {
        roff += &format!(".TP\n\\fB{}\\fR\n{}\n", escape(command), escape(meaning));
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_has_exit_status_environment_and_examples() {
        let page = String::from_utf8(main_page()).unwrap();
        for section in [
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            ".SH EXAMPLES",
            ".SH OPTIONS",
        ] {
            assert!(page.contains(section), "{section} missing:\n{page}");
        }
        for kind in FailureKind::ALL {
            assert!(
                page.contains(&format!("\\fB{}\\fR", kind.code())),
                "{kind:?}"
            );
        }
        assert!(page.contains("STRATA_TOKEN"));
    }

    #[test]
    fn bash_completion_has_every_subcommand_and_the_severity_words() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "strata",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        for sub in Cli::command().get_subcommands() {
            assert!(
                script.contains(sub.get_name()),
                "{} missing",
                sub.get_name()
            );
        }
        assert!(script.contains("demo"));
        assert!(
            script.contains("\"info warning critical\""),
            "severity words missing"
        );
        assert!(script.contains("SIGTERM") && script.contains("operate"));
    }
}
