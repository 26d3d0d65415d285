//! `strata-agent tls ca` and `strata-agent tls issue`: the command-line side of the cluster
//! CA. Both write into `<data-dir>/tls` unless told otherwise.

use super::files::{self, CA_CERT_FILE, CA_KEY_FILE};
use super::issue::{self, CA_DAYS, IssueRequest, LEAF_DAYS, Pem};
use super::subject::CertKind;
use crate::auth::{Role, Scope};
use clap::{ArgGroup, Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The subcommands of `strata-agent tls`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create the cluster CA: DIR/ca.pem and DIR/ca-key.pem (keep the key offline).
    #[command(
        after_help = "Examples:\n  strata-agent tls ca --name prod\n  strata-agent tls ca --dir ./pki --days 3650"
    )]
    Ca(CaArgs),
    /// Issue a certificate signed by the cluster CA: DIR/NAME.pem and DIR/NAME-key.pem.
    #[command(
        after_help = "Examples:\n  strata-agent tls issue --agent n1 --san 10.0.0.5 --san n1.example.com\n  strata-agent tls issue --operator alice --role operate --days 90\n  strata-agent tls issue --operator web-ci --role operate --services 'web-*'"
    )]
    Issue(IssueArgs),
}

/// Where the files go by default: `<data-dir>/tls`.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Data dir whose `tls` subdirectory is the default for every other dir
    /// [default: /var/lib/strata as root, else $XDG_DATA_HOME/strata].
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn tls_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::config::default_data_dir)
            .join("tls")
    }
}

/// Flags of `strata-agent tls ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Where to write ca.pem and ca-key.pem [default: <data-dir>/tls].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The cluster's name, written into the CA and every certificate it issues.
    #[arg(long, value_name = "CLUSTER", default_value = "strata")]
    name: String,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = CA_DAYS)]
    days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// Flags of `strata-agent tls issue`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("who").required(true).args(["agent", "operator"])))]
pub struct IssueArgs {
    /// An agent certificate (server and client) for the node NAME.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// An operator certificate (client only) for NAME; needs --role.
    #[arg(long, value_name = "NAME", requires = "role")]
    operator: Option<String>,
    /// The operator's role.
    #[arg(long, conflicts_with = "agent")]
    role: Option<Role>,
    /// Limit the operator to changing services whose name matches GLOB (`*`, `?`;
    /// repeatable), like a scoped token.
    #[arg(long = "services", value_name = "GLOB", requires = "operator")]
    services: Vec<String>,
    /// Limit the operator to changing the services of TEAM (spec tag `team:TEAM`).
    #[arg(long, value_name = "TEAM", requires = "operator")]
    team: Option<String>,
    /// Where ca.pem and ca-key.pem are [default: <data-dir>/tls].
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// Where to write NAME.pem and NAME-key.pem [default: <data-dir>/tls].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// An extra IP address or DNS name the agent is reached at (repeatable); NAME,
    /// localhost and 127.0.0.1 are always included.
    #[arg(long = "san", value_name = "IP_OR_DNS", conflicts_with = "operator")]
    sans: Vec<String>,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = LEAF_DAYS)]
    days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// Runs a `tls` subcommand; prints what was written, or one line saying why not.
pub fn run(command: &TlsCommand) -> ExitCode {
    let result = match command {
        TlsCommand::Ca(args) => ca(args),
        TlsCommand::Issue(args) => issue(args),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strata-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ca(args: &CaArgs) -> anyhow::Result<String> {
    let dir = args.dir.clone().unwrap_or_else(|| args.data_dir.tls_dir());
    let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    let pem = issue::create_ca(&args.name, args.days)?;
    files::write_pair(&pem, &cert, &key, args.force)?;
    Ok(format!(
        "wrote {} and {} (cluster {}, valid {} days); keep the key offline",
        cert.display(),
        key.display(),
        args.name,
        args.days
    ))
}

fn issue(args: &IssueArgs) -> anyhow::Result<String> {
    let (name, kind) = match (&args.agent, &args.operator, &args.role) {
        (Some(name), None, _) => (name.clone(), CertKind::Agent),
        (None, Some(name), Some(role)) => {
            let scope = Scope {
                services: args.services.clone(),
                team: args.team.clone(),
            };
            scope
                .check()
                .map_err(|e| anyhow::anyhow!("--services/--team: {e}"))?;
            (name.clone(), CertKind::Operator { role: *role, scope })
        }
        _ => anyhow::bail!("give --agent NAME, or --operator NAME --role read|operate|admin"),
    };
    let ca_dir = args
        .ca_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.tls_dir());
    let ca = Pem {
        cert: files::read(&ca_dir.join(CA_CERT_FILE))?,
        key: files::read(&ca_dir.join(CA_KEY_FILE))?,
    };
    let dir = args.dir.clone().unwrap_or_else(|| args.data_dir.tls_dir());
    let (cert, key) = files::pair_paths(&dir, &name);
    let request = IssueRequest {
        name,
        kind: kind.clone(),
        sans: args.sans.clone(),
        days: args.days,
    };
    let pem = issue::issue(&ca, &request)?;
    files::write_pair(&pem, &cert, &key, args.force)?;
    Ok(format!(
        "wrote {} and {} ({} {}, valid {} days)",
        cert.display(),
        key.display(),
        kind.unit(),
        request.name,
        args.days
    ))
}
