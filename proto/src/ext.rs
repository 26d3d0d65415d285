//! Hand-written helpers beside the generated types: the words each enum is shown and parsed
//! as (JSON, tables, flags), and the rules about states that the agent, the CLI and the
//! console share, so each rule is written once.
//!
//! JSON keeps snake_case words for enum fields: `build.rs` points every enum field at the
//! serde module [`words!`] generates next to its type (`instance_state`, `health`, ...).

use crate::v1::control_service_request::{self as control, Action as ControlAction};
use crate::v1::{
    AccessOutcome, Algorithm, ApplyAction, ClusterUpdateKind, Health, InstanceState, KeyringOp,
    ListenerState, LogGap, LogStream, MemberStatus, Role, ServiceStatus, Severity, Signal, Via,
};
use std::fmt;

/// For each enum: `ALL`, `label()` (its word), `from_label()` (the word or an alias back),
/// `Display`, and a serde module that writes an `i32` field as its word (an unknown number
/// as the default's word) and reads the word back.
macro_rules! words {
    ($ty:ident, $serde:ident, { $($variant:ident => $word:literal $(| $alias:literal)*),* $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The word shown in JSON, tables and messages.
            pub fn label(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),*
                }
            }

            /// The value a word (or one of its aliases) names.
            pub fn from_label(text: &str) -> Option<$ty> {
                match text {
                    $($word $(| $alias)* => Some($ty::$variant),)*
                    _ => None,
                }
            }

            /// The value of a wire number, or the default for a number this build does
            /// not know (sent by a newer agent).
            pub fn from_wire(value: i32) -> $ty {
                $ty::try_from(value).unwrap_or_default()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }

        #[doc = concat!("JSON form of `", stringify!($ty), "` fields: the word, not the number.")]
        pub mod $serde {
            use super::$ty;
            use serde::{Deserialize, Deserializer, Serializer};

            /// Writes the field as its word.
            pub fn serialize<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($ty::from_wire(*value).label())
            }

            /// Reads a word back into the field.
            pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
                let text = String::deserialize(deserializer)?;
                $ty::from_label(&text).map(|v| v as i32).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        concat!("unknown ", stringify!($ty), " {:?}"),
                        text
                    ))
                })
            }
        }
    };
}

words!(Severity, severity, {
    Unspecified => "unspecified" | "" | "any",
    Info => "info",
    Warning => "warning" | "warn",
    Critical => "critical" | "crit",
});

words!(InstanceState, instance_state, {
    Unspecified => "unspecified",
    Pending => "pending",
    Starting => "starting",
    Running => "running",
    Stopping => "stopping",
    Stopped => "stopped",
    Exited => "exited",
    Backoff => "backoff",
    Crashloop => "crashloop",
    Failed => "failed",
});

words!(Health, health, {
    Unknown => "unknown",
    Passing => "passing",
    Warning => "warning",
    Critical => "critical",
});

words!(MemberStatus, member_status, {
    Unknown => "unknown",
    Alive => "alive",
    Suspect => "suspect",
    Down => "down",
    Left => "left",
});

words!(Algorithm, algorithm, {
    Unspecified => "unspecified",
    RoundRobin => "round_robin",
    LeastConn => "least_conn",
    P2cEwma => "p2c_ewma",
});

words!(Signal, signal, {
    Unspecified => "unspecified",
    Hup => "SIGHUP",
    Int => "SIGINT",
    Quit => "SIGQUIT",
    Kill => "SIGKILL",
    Usr1 => "SIGUSR1",
    Usr2 => "SIGUSR2",
    Term => "SIGTERM",
});

words!(ApplyAction, apply_action, {
    Unspecified => "unspecified",
    Created => "created",
    Updated => "updated",
    Unchanged => "unchanged",
});

words!(LogStream, log_stream, {
    Unspecified => "unspecified",
    Out => "out",
    Err => "err",
});

words!(ClusterUpdateKind, cluster_update_kind, {
    Unspecified => "unspecified",
    Snapshot => "snapshot",
    Member => "member",
    Record => "record",
    Removed => "removed",
});

words!(KeyringOp, keyring_op, {
    Unspecified => "unspecified",
    List => "list",
    Install => "install",
    Use => "use",
    Remove => "remove",
});

words!(ListenerState, listener_state, {
    Unspecified => "unspecified",
    Listening => "listening",
    Failed => "failed",
});

words!(AccessOutcome, access_outcome, {
    Unspecified => "unspecified",
    Ok => "ok",
    ConnectFailed => "connect_failed",
    Reset => "reset",
    Timeout => "timeout",
    NoHealthyInstance => "no_healthy_instance",
    Drained => "drained",
    QueueTimeout => "queue_timeout",
    QueueFull => "queue_full",
    IdleTimeout => "idle_timeout",
    ResponseTimeout => "response_timeout",
});

words!(Role, role, {
    Unspecified => "unspecified",
    Read => "read",
    Operate => "operate",
    Admin => "admin",
});

words!(Via, via, {
    Unspecified => "unspecified",
    Open => "open",
    Token => "token",
    Certificate => "certificate",
    Agent => "agent",
    None => "none",
});

impl InstanceState {
    /// Whether the instance's process is up (starting or running).
    pub fn is_live(self) -> bool {
        matches!(self, InstanceState::Starting | InstanceState::Running)
    }

    /// Whether the instance needs a person: it cannot start or is held in a crash loop.
    pub fn is_broken(self) -> bool {
        matches!(self, InstanceState::Failed | InstanceState::Crashloop)
    }

    /// How much attention the state asks for, most first (0): what a whole service is
    /// summed up as is its instances' worst state.
    pub fn attention(self) -> u8 {
        match self {
            InstanceState::Failed => 0,
            InstanceState::Crashloop => 1,
            InstanceState::Backoff => 2,
            InstanceState::Exited => 3,
            InstanceState::Stopping => 4,
            InstanceState::Starting => 5,
            InstanceState::Pending => 6,
            InstanceState::Stopped => 7,
            InstanceState::Running => 8,
            InstanceState::Unspecified => 9,
        }
    }

    /// The state among `states` that asks for the most attention; running when empty.
    pub fn worst(states: impl IntoIterator<Item = InstanceState>) -> InstanceState {
        states
            .into_iter()
            .min_by_key(|s| s.attention())
            .filter(|s| *s != InstanceState::Unspecified)
            .unwrap_or(InstanceState::Running)
    }
}

impl Health {
    /// Whether the instance may get traffic by its check.
    pub fn is_passing(self) -> bool {
        self == Health::Passing
    }
}

impl MemberStatus {
    /// Alive or suspect: still a member others route to and forward to.
    pub fn is_live(self) -> bool {
        matches!(self, MemberStatus::Alive | MemberStatus::Suspect)
    }

    /// How much attention the status asks for, most first (0): down, suspect, unknown,
    /// left, alive.
    pub fn attention(self) -> u8 {
        match self {
            MemberStatus::Down => 0,
            MemberStatus::Suspect => 1,
            MemberStatus::Unknown => 2,
            MemberStatus::Left => 3,
            MemberStatus::Alive => 4,
        }
    }
}

impl Algorithm {
    /// What a balancer runs: the algorithm itself, or p2c_ewma when none was given.
    pub fn effective(self) -> Algorithm {
        match self {
            Algorithm::Unspecified => Algorithm::P2cEwma,
            other => other,
        }
    }

    /// The algorithms a spec may name, as a list for messages.
    pub fn choices() -> String {
        choices(Algorithm::ALL, Algorithm::Unspecified, Algorithm::label)
    }
}

impl Signal {
    /// Parses "SIGTERM", "TERM" or "term".
    pub fn parse(text: &str) -> Option<Signal> {
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::from_label(&format!("SIG{name}")).filter(|s| *s != Signal::Unspecified)
    }

    /// The signal number on Linux.
    pub fn number(self) -> i32 {
        self as i32
    }

    /// The signals a spec or an operator may send, as a list for messages.
    pub fn choices() -> String {
        choices(Signal::ALL, Signal::Unspecified, Signal::label)
    }
}

impl ControlAction {
    /// Start what is not running.
    pub fn start() -> ControlAction {
        ControlAction::Start(control::Start {})
    }

    /// Stop and keep stopped.
    pub fn stop() -> ControlAction {
        ControlAction::Stop(control::Stop {})
    }

    /// Stop, then start again.
    pub fn restart() -> ControlAction {
        ControlAction::Restart(control::Restart {})
    }

    /// Run `count` instances.
    pub fn scale(count: u32) -> ControlAction {
        ControlAction::Scale(control::Scale { count })
    }

    /// Send `signal`.
    pub fn signal(signal: Signal) -> ControlAction {
        ControlAction::Signal(control::SendSignal {
            signal: signal as i32,
        })
    }

    /// The action's verb as the CLI names it (roles, audit records, messages).
    pub fn verb(&self) -> &'static str {
        match self {
            ControlAction::Start(_) => "start",
            ControlAction::Stop(_) => "stop",
            ControlAction::Restart(_) => "restart",
            ControlAction::Scale(_) => "scale",
            ControlAction::Signal(_) => "signal",
        }
    }
}

/// "a, b, c": every value but `unspecified`, by its word.
fn choices<T: Copy + PartialEq>(all: &[T], unspecified: T, label: fn(T) -> &'static str) -> String {
    all.iter()
        .filter(|v| **v != unspecified)
        .map(|v| label(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

impl LogGap {
    /// The gap as one line for people, the same in the agent's `text`, the CLI and the
    /// console: `… 10,482,113 lines skipped …`.
    pub fn describe(&self) -> String {
        let lines = thousands(self.lines);
        let unit = if self.lines == 1 { "line" } else { "lines" };
        match (self.uncounted, self.lines) {
            (false, _) => format!("… {lines} {unit} skipped …"),
            (true, 0) => "… lines skipped: rotated log files were deleted before they were read …"
                .to_string(),
            (true, _) => format!(
                "… more than {lines} lines skipped: rotated log files were deleted before they were read …"
            ),
        }
    }
}

/// `n` with a comma between groups of three digits: 10,482,113.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl ServiceStatus {
    /// One state for the whole service: stopped when an operator stopped it, else the
    /// worst state among its instances.
    pub fn summary_state(&self) -> InstanceState {
        if self.stopped {
            return InstanceState::Stopped;
        }
        InstanceState::worst(self.instances.iter().map(|i| i.state()))
    }

    /// Instances whose process is up.
    pub fn live_instances(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.state().is_live())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_value() {
        for s in InstanceState::ALL {
            assert_eq!(InstanceState::from_label(s.label()), Some(*s));
        }
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_label(a.label()), Some(*a));
        }
        for o in AccessOutcome::ALL {
            assert_eq!(AccessOutcome::from_label(o.label()), Some(*o));
        }
        assert_eq!(Severity::from_label("warn"), Some(Severity::Warning));
        assert_eq!(Health::from_label("bogus"), None);
    }

    #[test]
    fn unknown_wire_numbers_read_as_the_default() {
        assert_eq!(Health::from_wire(77), Health::Unknown);
        assert_eq!(InstanceState::from_wire(77), InstanceState::Unspecified);
        assert_eq!(MemberStatus::from_wire(2), MemberStatus::Suspect);
    }

    #[test]
    fn the_worst_state_is_the_one_asking_most_attention() {
        use InstanceState::*;
        assert_eq!(InstanceState::worst([Running, Backoff, Stopped]), Backoff);
        assert_eq!(InstanceState::worst([Running, Failed, Crashloop]), Failed);
        assert_eq!(InstanceState::worst([Running, Running]), Running);
        assert_eq!(InstanceState::worst([]), Running);
        let mut by_attention = InstanceState::ALL.to_vec();
        by_attention.sort_by_key(|s| s.attention());
        assert_eq!(by_attention.first(), Some(&Failed));
    }

    #[test]
    fn signals_parse_with_or_without_the_prefix() {
        assert_eq!(Signal::parse("term"), Some(Signal::Term));
        assert_eq!(Signal::parse("SIGUSR1"), Some(Signal::Usr1));
        assert_eq!(Signal::parse(" hup "), Some(Signal::Hup));
        assert_eq!(Signal::parse("SIGWINCH"), None);
        assert_eq!(Signal::parse("unspecified"), None);
        assert_eq!(Signal::Kill.number(), 9);
        assert!(Signal::choices().starts_with("SIGHUP, SIGINT"));
        assert_eq!(Algorithm::choices(), "round_robin, least_conn, p2c_ewma");
    }

    #[test]
    fn json_writes_words_and_reads_them_back() {
        let status = crate::v1::InstanceStatus {
            state: InstanceState::Crashloop as i32,
            health: Health::Critical as i32,
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["state"], "crashloop");
        assert_eq!(json["health"], "critical");
        let back: crate::v1::InstanceStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.state(), InstanceState::Crashloop);
        let bad = serde_json::json!({"state": "sleeping"});
        let err = serde_json::from_value::<crate::v1::InstanceStatus>(bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown InstanceState \"sleeping\""),
            "{err}"
        );
    }

    #[test]
    fn a_gap_is_described_with_its_count_and_only_a_gap_has_a_gap_in_json() {
        let gap = |lines, uncounted| LogGap { lines, uncounted }.describe();
        assert_eq!(gap(10_482_113, false), "… 10,482,113 lines skipped …");
        assert_eq!(gap(1, false), "… 1 line skipped …");
        assert_eq!(gap(999, false), "… 999 lines skipped …");
        assert!(gap(1000, true).starts_with("… more than 1,000 lines skipped: rotated"));
        assert!(gap(0, true).starts_with("… lines skipped: rotated log files"));
        let line = serde_json::to_value(crate::v1::LogLine::default()).unwrap();
        assert!(line["gap"].is_null(), "{line}");
        let marker = crate::v1::LogLine {
            gap: Some(LogGap {
                lines: 7,
                uncounted: false,
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&marker).unwrap();
        assert_eq!(json["gap"]["lines"], 7);
        let back: crate::v1::LogLine = serde_json::from_value(json).unwrap();
        assert_eq!(back, marker);
    }
}
