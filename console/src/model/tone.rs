//! How much a state asks for attention, as one small type the views colour by: the
//! classification lives here once, not as word lists in every view.

use strata_proto::v1::{Health, InstanceState, MemberStatus, Severity};

/// The tone a value is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Healthy: running, passing, alive.
    Good,
    /// Needs a look: starting, warning, suspect.
    Warn,
    /// Broken: critical, crash loop, down.
    Bad,
    /// Nothing to say: stopped, left, unknown, informational.
    Plain,
}

/// A value with a tone.
pub trait Toned {
    /// The value's tone.
    fn tone(self) -> Tone;
}

impl Toned for InstanceState {
    fn tone(self) -> Tone {
        match self {
            InstanceState::Running => Tone::Good,
            InstanceState::Starting
            | InstanceState::Stopping
            | InstanceState::Pending
            | InstanceState::Backoff => Tone::Warn,
            InstanceState::Crashloop | InstanceState::Failed | InstanceState::Exited => Tone::Bad,
            InstanceState::Stopped | InstanceState::Unspecified => Tone::Plain,
        }
    }
}

impl Toned for Health {
    fn tone(self) -> Tone {
        match self {
            Health::Passing => Tone::Good,
            Health::Warning => Tone::Warn,
            Health::Critical => Tone::Bad,
            Health::Unknown => Tone::Plain,
        }
    }
}

impl Toned for MemberStatus {
    fn tone(self) -> Tone {
        match self {
            MemberStatus::Alive => Tone::Good,
            MemberStatus::Suspect => Tone::Warn,
            MemberStatus::Down => Tone::Bad,
            MemberStatus::Left | MemberStatus::Unknown => Tone::Plain,
        }
    }
}

impl Toned for Severity {
    fn tone(self) -> Tone {
        match self {
            Severity::Critical => Tone::Bad,
            Severity::Warning => Tone::Warn,
            Severity::Info | Severity::Unspecified => Tone::Plain,
        }
    }
}
