//! `strata-agent man`: the main page gets the sections clap does not know about. ENVIRONMENT
//! is read from the command definition itself (every flag's `STRATA_*` variable), so the page
//! cannot drift from what the agent reads.

/// Exit statuses shared by the subcommands, each with what it means.
const EXIT_STATUS: [(&str, &str); 4] = [
    ("0", "success"),
    (
        "1",
        "the action failed (the message says why; for run, the agent stopped on an error)",
    ),
    (
        "2",
        "usage or configuration error: a bad flag, variable or config file field (named)",
    ),
    (
        "3",
        "stop-services: an agent runs on the data dir; upgrade and leave: none runs there",
    ),
];

/// Examples, each a command and what it does.
const EXAMPLES: [(&str, &str); 6] = [
    (
        "strata-agent run --dev",
        "an agent on loopback with a temporary data dir",
    ),
    (
        "strata-agent install --join 10.0.0.1:7701",
        "install on this host and join a cluster (the key from STRATA_GOSSIP_KEY)",
    ),
    (
        "strata-agent upgrade --binary /usr/local/bin/strata-agent.new",
        "hand over to a new binary without closing a port",
    ),
    ("strata-agent leave", "withdraw this node from the cluster"),
    (
        "strata-agent token create ci --role operate",
        "an API token for scripts, printed once",
    ),
    (
        "strata-agent stop-services",
        "stop the services an agent left running",
    ),
];

/// The main page: clap's sections, then EXIT STATUS, ENVIRONMENT and EXAMPLES.
pub fn main_page(command: clap::Command) -> Vec<u8> {
    let environment = environment(&command);
    let versioned = command.get_version().is_some();
    let man = clap_mangen::Man::new(command);
    let mut page = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut page);
    let _ = man.render_name_section(&mut page);
    let _ = man.render_synopsis_section(&mut page);
    let _ = man.render_description_section(&mut page);
    let _ = man.render_options_section(&mut page);
    let _ = man.render_subcommands_section(&mut page);
    page.extend_from_slice(extra_sections(&environment).as_bytes());
    if versioned {
        let _ = man.render_version_section(&mut page);
    }
    page
}

/// Every variable a flag of any subcommand reads, with that flag's help, once each.
fn environment(command: &clap::Command) -> Vec<(String, String)> {
    let mut found = std::collections::BTreeMap::new();
    let mut commands = vec![command];
    while let Some(command) = commands.pop() {
        for arg in command.get_arguments() {
            if let Some(variable) = arg.get_env().and_then(|v| v.to_str()) {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                found
                    .entry(variable.to_string())
                    .or_insert(format!("{help} (--{})", arg.get_long().unwrap_or_default()));
            }
        }
        commands.extend(command.get_subcommands());
    }
    found.into_iter().collect()
}

fn extra_sections(environment: &[(String, String)]) -> String {
    let escape = |text: &str| text.replace('\\', "\\e").replace('-', "\\-");
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in EXIT_STATUS {
        roff += &format!(".TP\n\\fB{code}\\fR\n{}\n", escape(meaning));
    }
    roff += ".SH ENVIRONMENT\n";
    for (name, meaning) in environment {
        roff += &format!(".TP\n\\fB{name}\\fR\n{}\n", escape(meaning));
    }
    roff += &format!(
        ".TP\n\\fB{}\\fR\n{}\n",
        crate::reload::LOG_ENV,
        escape("the agent's log filter (a tracing filter); wins over log_level")
    );
    roff += ".SH EXAMPLES\n";
    for (command, meaning) in EXAMPLES {
        roff += &format!(".TP\n\\fB{}\\fR\n{}\n", escape(command), escape(meaning));
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    #[test]
    fn the_page_has_the_sections_and_every_variable_a_flag_reads() {
        let run = Command::new("run")
            .arg(
                Arg::new("data-dir")
                    .long("data-dir")
                    .env("STRATA_DATA_DIR")
                    .help("The data dir"),
            )
            .arg(Arg::new("dev").long("dev"));
        let page =
            String::from_utf8(main_page(Command::new("strata-agent").subcommand(run))).unwrap();
        for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH EXAMPLES"] {
            assert!(page.contains(section), "{section} missing:\n{page}");
        }
        assert!(
            page.contains("\\fBSTRATA_DATA_DIR\\fR\nThe data dir (\\-\\-data\\-dir)"),
            "{page}"
        );
        assert!(page.contains("\\fBSTRATA_LOG\\fR"), "{page}");
    }
}
