//! Cluster-wide tokens through the API: `strata token create|list|revoke` on any agent. The
//! contacted agent makes or revokes the record in its set, which its catalog record carries to
//! every other agent; the secret is in the create reply only, and no agent stores it.

use crate::auth::cluster_tokens::{ClusterTokenError, ClusterTokens, NewToken};
use crate::auth::tokens::{self, TOKENS_FILE};
use crate::auth::{Identity, Role, Scope};
use std::path::Path;
use std::time::Duration;
use strata_proto::v1::{
    CreateTokenReply, CreateTokenRequest, ListTokensReply, RevokeTokenReply, RevokeTokenRequest,
    Role as WireRole,
};
use tonic::Status;

/// The caller as token records name it: `NAME (via)`.
fn caller(who: &Identity) -> String {
    format!("{} ({})", who.name, who.via.as_str())
}

fn status(e: ClusterTokenError) -> Status {
    match e {
        ClusterTokenError::Invalid(m) => Status::invalid_argument(m),
        e @ ClusterTokenError::Exists(_) => Status::already_exists(e.to_string()),
        e @ ClusterTokenError::NotFound(_) => Status::not_found(e.to_string()),
        e @ ClusterTokenError::Revoked(_) => Status::failed_precondition(e.to_string()),
        e @ (ClusterTokenError::Io { .. } | ClusterTokenError::Random(_)) => {
            Status::internal(e.to_string())
        }
    }
}

/// Makes a cluster token for the caller; a name this agent's `tokens.toml` uses is refused
/// (the file would win on this agent, see the README).
pub fn create(
    store: &ClusterTokens,
    data_dir: &Path,
    who: &Identity,
    request: CreateTokenRequest,
) -> Result<CreateTokenReply, Status> {
    let role = match WireRole::from_wire(request.role) {
        WireRole::Read => Role::Read,
        WireRole::Operate => Role::Operate,
        WireRole::Admin => Role::Admin,
        WireRole::Unspecified => {
            return Err(Status::invalid_argument(
                "role: must be read, operate or admin",
            ));
        }
    };
    let local = tokens::list(&data_dir.join(TOKENS_FILE)).unwrap_or_default();
    if local.iter().any(|t| t.name == request.name) {
        return Err(Status::already_exists(format!(
            "{:?} names a token in this agent's {TOKENS_FILE}; pick another name",
            request.name
        )));
    }
    let scope = request.scope.unwrap_or_default();
    let new = NewToken {
        name: request.name,
        role,
        expires_in: (request.expires_in_secs > 0)
            .then(|| Duration::from_secs(request.expires_in_secs)),
        scope: Scope {
            services: scope.services,
            team: Some(scope.team).filter(|t| !t.is_empty()),
        },
    };
    let (token, secret) = store.create(new, &caller(who)).map_err(status)?;
    Ok(CreateTokenReply {
        token: Some(token),
        secret,
    })
}

/// Every cluster token this agent knows, by name.
pub fn list(store: &ClusterTokens) -> ListTokensReply {
    ListTokensReply {
        tokens: store.snapshot().values().cloned().collect(),
    }
}

/// Revokes a cluster token for the caller.
pub fn revoke(
    store: &ClusterTokens,
    who: &Identity,
    request: RevokeTokenRequest,
) -> Result<RevokeTokenReply, Status> {
    let token = store.revoke(&request.name, &caller(who)).map_err(status)?;
    Ok(RevokeTokenReply { token: Some(token) })
}
