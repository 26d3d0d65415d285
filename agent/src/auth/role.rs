//! Roles: what a credential may do. Each role includes the ones below it.

use std::fmt;
use std::str::FromStr;
use strata_proto::v1::Role as WireRole;

/// What a caller may do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Views, logs, events.
    Read,
    /// Read, plus start, stop, restart, scale, signal, drain.
    Operate,
    /// Operate, plus apply and remove specs, keyring changes, force-leave.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Read, Role::Operate, Role::Admin];

    /// The role's name as written in `tokens.toml`, certificates and messages: the
    /// contract's word for it.
    pub fn as_str(self) -> &'static str {
        WireRole::from(self).label()
    }
}

impl From<Role> for WireRole {
    fn from(role: Role) -> WireRole {
        match role {
            Role::Read => WireRole::Read,
            Role::Operate => WireRole::Operate,
            Role::Admin => WireRole::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `read`, `operate`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a role (expected read, operate or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Read < Role::Operate && Role::Operate < Role::Admin);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert!(err.to_string().contains("read, operate or admin"), "{err}");
    }
}
