//! `strata-agent token`: make, import, list and revoke API tokens in a data dir.

use super::cluster_tokens::CLUSTER_TOKENS_FILE;
use super::credentials::MarkerFile;
use super::tokens::{self, TOKENS_FILE, TokenError};
use super::{Role, Scope};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `strata-agent token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// The agent's data dir, where tokens.toml lives [default: as `strata-agent run`].
    #[arg(long, global = true, env = "STRATA_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token, print it once, and store only its hash.
    #[command(
        after_help = "Example:\n  strata-agent token create ci --role operate\n  STRATA_TOKEN=... strata restart web"
    )]
    Create {
        /// The name audit records show for calls made with it.
        name: String,
        /// read, operate or admin.
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Store an existing token read from stdin (the same token on several agents).
    #[command(
        after_help = "Example:\n  echo \"$TOKEN\" | strata-agent token add ci --role operate"
    )]
    Add {
        /// The name audit records show for calls made with it.
        name: String,
        /// read, operate or admin.
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List token names and roles (never the tokens).
    List,
    /// Remove a token: calls with it are refused from then on.
    Revoke {
        /// The token's name.
        name: String,
    },
    /// Opens an agent that failed closed: forgets that it has had credentials, and moves an
    /// unreadable tokens.toml aside. Needs write access to the data dir (root).
    #[command(
        after_help = "An agent that has had tokens refuses every call once tokens.toml is missing or\nunreadable. Restore the file, or run this to accept its loss; tokens still in\ntokens.toml or known cluster-wide keep the agent closed to anonymous callers."
    )]
    Reset,
}

/// What a token may change: services by name glob, or a team's services.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Only services whose name matches this glob (`*`, `?`); repeat for several.
    #[arg(long = "services", value_name = "GLOB")]
    services: Vec<String>,
    /// Only services whose spec has the tag `team:TEAM`.
    #[arg(long, value_name = "TEAM")]
    team: Option<String>,
}

impl ScopeArgs {
    fn scope(self) -> Scope {
        Scope {
            services: self.services,
            team: self.team,
        }
    }
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &Role::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Runs `strata-agent token ...`; exit 2 for usage errors, 1 for the rest.
pub fn run(args: TokenArgs) -> ExitCode {
    let dir = args
        .data_dir
        .unwrap_or_else(crate::config::default_data_dir);
    let path = dir.join(TOKENS_FILE);
    let result = match args.command {
        TokenCommand::Create { name, role, scope } => {
            let scope = scope.scope();
            tokens::create(&path, &name, role, &scope).map(|secret| {
                println!("{secret}");
                eprintln!(
                    "token {name:?} ({role}, may change {scope}) stored in {}; it is not shown again",
                    path.display()
                );
            })
        }
        TokenCommand::Add { name, role, scope } => read_secret().and_then(|secret| {
            let scope = scope.scope();
            tokens::add(&path, &name, role, &scope, &secret)?;
            eprintln!(
                "token {name:?} ({role}, may change {scope}) stored in {}",
                path.display()
            );
            Ok(())
        }),
        TokenCommand::List => tokens::list(&path).map(|list| {
            for token in list {
                println!("{}\t{}\t{}", token.name, token.role, token.scope);
            }
        }),
        TokenCommand::Revoke { name } => tokens::revoke(&path, &name).map(|()| {
            eprintln!("token {name:?} revoked");
        }),
        TokenCommand::Reset => reset(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-agent: {e}");
            match e {
                TokenError::Usage(_) | TokenError::Exists(_) | TokenError::NotFound(_) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `token reset`: removes the marker, moves an unreadable tokens.toml aside and says what it
/// did and what still keeps the agent closed.
fn reset(dir: &std::path::Path) -> Result<(), TokenError> {
    let path = dir.join(TOKENS_FILE);
    let marker = MarkerFile::in_dir(dir);
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| TokenError::Io { path, source }
    };
    match tokens::list(&path) {
        Ok(list) if path.exists() => eprintln!(
            "{} is readable with {} token(s); kept",
            path.display(),
            list.len()
        ),
        Ok(_) => eprintln!(
            "{} is missing; the agent no longer expects it",
            path.display()
        ),
        Err(e) => {
            let aside = dir.join(format!(
                "{TOKENS_FILE}.reset-{}",
                crate::state::unix_now_ms()
            ));
            std::fs::rename(&path, &aside).map_err(io(&path))?;
            eprintln!(
                "{} could not be read ({e}); moved to {}",
                path.display(),
                aside.display()
            );
        }
    }
    if marker.remove().map_err(io(marker.path()))? {
        eprintln!(
            "removed {}: the agent no longer fails closed for a missing tokens.toml",
            marker.path().display()
        );
    } else {
        eprintln!("{} was not there", marker.path().display());
    }
    if dir.join(CLUSTER_TOKENS_FILE).exists() {
        eprintln!(
            "{} holds cluster-wide tokens: while the agent knows any, it still refuses anonymous callers",
            dir.join(CLUSTER_TOKENS_FILE).display()
        );
    }
    Ok(())
}

/// The token on stdin, without the trailing newline.
fn read_secret() -> Result<String, TokenError> {
    let mut text = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| TokenError::Usage(format!("cannot read the token from stdin: {e}")))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
