//! `strata-agent token`: make, import, list and revoke API tokens in a data dir.

use super::Role;
use super::tokens::{self, TOKENS_FILE, TokenError};
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
    },
    /// List token names and roles (never the tokens).
    List,
    /// Remove a token: calls with it are refused from then on.
    Revoke {
        /// The token's name.
        name: String,
    },
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
        TokenCommand::Create { name, role } => tokens::create(&path, &name, role).map(|secret| {
            println!("{secret}");
            eprintln!(
                "token {name:?} ({role}) stored in {}; it is not shown again",
                path.display()
            );
        }),
        TokenCommand::Add { name, role } => read_secret().and_then(|secret| {
            tokens::add(&path, &name, role, &secret)?;
            eprintln!("token {name:?} ({role}) stored in {}", path.display());
            Ok(())
        }),
        TokenCommand::List => tokens::list(&path).map(|list| {
            for token in list {
                println!("{}\t{}", token.name, token.role);
            }
        }),
        TokenCommand::Revoke { name } => tokens::revoke(&path, &name).map(|()| {
            eprintln!("token {name:?} revoked");
        }),
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

/// The token on stdin, without the trailing newline.
fn read_secret() -> Result<String, TokenError> {
    let mut text = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| TokenError::Usage(format!("cannot read the token from stdin: {e}")))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
