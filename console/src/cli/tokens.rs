//! `strata token create|list|revoke`: cluster-wide API tokens through any agent. The secret
//! of a new token is printed once (stdout, alone, so scripts can capture it); only its SHA-256
//! is stored, by every agent.

use super::{OutputFormat, print_as};
use crate::client::connect::call;
use crate::client::{Client, Failure, FailureKind};
use crate::format::{table, time_ms};
use clap::{Args, Subcommand};
use strata_proto::v1::{
    ClusterToken, CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, Role, TokenScope,
};

/// `strata token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a cluster-wide token (admin); the secret is printed once.
    #[command(
        after_help = "Examples:\n  strata token create ci --role operate --expires 30d\n  strata token create web-team --role operate --services 'web-*'\n  strata token create pay --role operate --team payments   # services tagged team:payments"
    )]
    Create(CreateArgs),
    /// The cluster-wide tokens (names, roles, scopes, states; never a secret).
    #[command(after_help = "Example:\n  strata token list -o json")]
    List,
    /// Revoke a cluster-wide token (admin): every agent refuses it within gossip time.
    #[command(after_help = "Example:\n  strata token revoke ci")]
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Arguments of `strata token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The name audit records show for calls made with it.
    name: String,
    /// read, operate or admin.
    #[arg(long, value_parser = super::words::role())]
    role: Role,
    /// How long it is valid (30d, 12h, ...); until revoked when not given.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires: Option<std::time::Duration>,
    /// Only services whose name matches this glob (`*`, `?`); repeat for several.
    #[arg(long = "services", value_name = "GLOB")]
    services: Vec<String>,
    /// Only services whose spec has the tag `team:TEAM`.
    #[arg(long, value_name = "TEAM")]
    team: Option<String>,
}

/// Runs `strata token ...`.
pub async fn run(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    command: TokenCommand,
) -> Result<(), Failure> {
    match command {
        TokenCommand::Create(args) => {
            let scope = (!args.services.is_empty() || args.team.is_some()).then(|| TokenScope {
                services: args.services,
                team: args.team.unwrap_or_default(),
            });
            let request = CreateTokenRequest {
                name: args.name,
                role: args.role as i32,
                expires_in_secs: args.expires.map_or(0, |d| d.as_secs().max(1)),
                scope,
            };
            let reply = call(client.create_token(request), agent).await?;
            print_as(output, &reply, |r| {
                let token = r.token.clone().unwrap_or_default();
                eprintln!(
                    "cluster token {:?} ({}, may change {}) made on agent {}; it is not shown again",
                    token.name,
                    token.role(),
                    scope_words(&token),
                    token.created_on
                );
                r.secret.clone()
            })
        }
        TokenCommand::List => {
            let reply = call(client.list_tokens(ListTokensRequest {}), agent).await?;
            print_as(output, &reply, |r| render(&r.tokens))
        }
        TokenCommand::Revoke { name } => {
            let reply = call(client.revoke_token(RevokeTokenRequest { name }), agent).await?;
            let token = reply.token.clone().ok_or_else(|| {
                Failure::new(FailureKind::ActionFailed, "the agent sent no token record")
            })?;
            print_as(output, &reply, |_| {
                format!(
                    "cluster token {:?} revoked on agent {}; every agent refuses it once gossip carried it",
                    token.name, token.revoked_on
                )
            })
        }
    }
}

/// What a token may change, in words.
fn scope_words(token: &ClusterToken) -> String {
    let scope = token.scope.clone().unwrap_or_default();
    let mut parts = Vec::new();
    if !scope.services.is_empty() {
        parts.push(format!("services {}", scope.services.join(", ")));
    }
    if !scope.team.is_empty() {
        parts.push(format!("team {}", scope.team));
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join(" or ")
    }
}

/// The token table.
fn render(tokens: &[ClusterToken]) -> String {
    let mut t = table(&[
        "name", "role", "scope", "state", "created", "by", "on", "expires",
    ]);
    for token in tokens {
        let state = if token.revoked_unix_ms > 0 {
            format!(
                "revoked {} by {}",
                time_ms(token.revoked_unix_ms),
                token.revoked_by
            )
        } else if token.expires_unix_ms > 0 && token.expires_unix_ms <= crate::format::now_ms() {
            "expired".into()
        } else {
            "valid".into()
        };
        t.add_row(vec![
            token.name.clone(),
            token.role().to_string(),
            scope_words(token),
            state,
            time_ms(token.created_unix_ms),
            token.created_by.clone(),
            token.created_on.clone(),
            match token.expires_unix_ms {
                0 => "never".into(),
                ms => time_ms(ms),
            },
        ]);
    }
    t.to_string()
}
