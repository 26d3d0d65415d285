//! JSON form of `Severity` fields: the lower-case name ("info", "warning", "critical"),
//! so scripts read words, not enum numbers.

use crate::v1::Severity;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(Severity::try_from(*value).unwrap_or_default().label())
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    let text = String::deserialize(deserializer)?;
    Severity::from_label(&text)
        .map(|s| s as i32)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown severity `{text}`")))
}

impl Severity {
    /// The short lower-case name used in JSON, tables and flags.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Unspecified => "unspecified",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses a label as accepted on the command line (`warn` is short for `warning`).
    pub fn from_label(text: &str) -> Option<Severity> {
        match text.to_ascii_lowercase().as_str() {
            "unspecified" | "" | "any" => Some(Severity::Unspecified),
            "info" => Some(Severity::Info),
            "warn" | "warning" => Some(Severity::Warning),
            "crit" | "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}
