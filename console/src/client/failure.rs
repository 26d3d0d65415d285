//! Why a command failed, and the stable exit code each kind of failure gets, so scripts
//! can tell "the agent is down" from "you typed it wrong".

use tonic::Code;

/// The kinds of failure, each with its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The agent refused or failed the action (exit 1).
    ActionFailed,
    /// Bad flags, arguments or config (exit 2, as clap's own usage errors).
    Usage,
    /// The agent could not be reached (exit 3).
    Unreachable,
    /// What was named does not exist (exit 4).
    NotFound,
    /// Missing or insufficient credentials (exit 5).
    PermissionDenied,
    /// Nobody reads the output any more (`| head -3`): the process ends by SIGPIPE, as
    /// `cat` would, quietly (141 in a shell).
    OutputClosed,
}

impl FailureKind {
    /// Every kind, in the order of their exit codes (the man page's EXIT STATUS lists these).
    pub const ALL: [FailureKind; 6] = [
        FailureKind::ActionFailed,
        FailureKind::Usage,
        FailureKind::Unreachable,
        FailureKind::NotFound,
        FailureKind::PermissionDenied,
        FailureKind::OutputClosed,
    ];

    /// What the exit code tells a script, one line.
    pub fn meaning(self) -> &'static str {
        match self {
            FailureKind::ActionFailed => "the agent refused or failed the action",
            FailureKind::Usage => "bad flags, arguments, spec or config",
            FailureKind::Unreachable => "the agent could not be reached (down, wrong address, TLS)",
            FailureKind::NotFound => {
                "what was named (service, instance, node, token) does not exist"
            }
            FailureKind::PermissionDenied => "missing or insufficient credentials",
            FailureKind::OutputClosed => "the reader of the output went away (SIGPIPE)",
        }
    }

    /// The process exit code for this kind.
    pub fn code(self) -> u8 {
        match self {
            FailureKind::ActionFailed => 1,
            FailureKind::Usage => 2,
            FailureKind::Unreachable => 3,
            FailureKind::NotFound => 4,
            FailureKind::PermissionDenied => 5,
            FailureKind::OutputClosed => 141,
        }
    }
}

/// A failed command: its kind and a one-line message for the person or script.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure, which decides the exit code.
    pub kind: FailureKind,
    /// One line saying what failed and, where it helps, what to do.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// Maps an error status from the agent at `agent` to a failure.
    pub fn from_status(status: &tonic::Status, agent: &str) -> Failure {
        // A connection that broke under the request (e.g. a plaintext client of a TLS agent)
        // comes back as a status whose source is the transport error.
        if let Some(source) = std::error::Error::source(status)
            && source.downcast_ref::<tonic::transport::Error>().is_some()
        {
            return Failure {
                kind: FailureKind::Unreachable,
                message: format!(
                    "cannot reach the agent at {agent}: {} (an agent serving TLS needs --ca)",
                    root_cause(source)
                ),
            };
        }
        let kind = match status.code() {
            Code::Unavailable => FailureKind::Unreachable,
            Code::NotFound => FailureKind::NotFound,
            Code::InvalidArgument | Code::OutOfRange => FailureKind::Usage,
            Code::Unauthenticated | Code::PermissionDenied => FailureKind::PermissionDenied,
            _ => FailureKind::ActionFailed,
        };
        let message = if kind == FailureKind::Unreachable {
            format!("cannot reach the agent at {agent}: {}", status.message())
        } else {
            status.message().to_string()
        };
        Failure { kind, message }
    }
}

/// The innermost cause of an error: the part a person can act on ("Connection refused").
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_stable_exit_codes() {
        let cases = [
            (Code::Unavailable, 3),
            (Code::NotFound, 4),
            (Code::InvalidArgument, 2),
            (Code::PermissionDenied, 5),
            (Code::Unauthenticated, 5),
            (Code::Internal, 1),
        ];
        for (code, exit) in cases {
            let f = Failure::from_status(&tonic::Status::new(code, "x"), "127.0.0.1:7700");
            assert_eq!(f.kind.code(), exit, "{code:?}");
        }
    }

    #[test]
    fn unreachable_message_names_the_address() {
        let f = Failure::from_status(&tonic::Status::unavailable("refused"), "10.0.0.9:7700");
        assert!(f.message.contains("10.0.0.9:7700"), "{}", f.message);
    }
}
