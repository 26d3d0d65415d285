//! A value parser for flags that take one word of a proto enum (severity, signal, role,
//! keyring operation): it parses as the command always did (aliases, any case), and lists
//! the words to clap, so completions offer them and `--help` shows them.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use std::ffi::OsStr;
use strata_proto::v1::{KeyringOp, Role, Severity, Signal};

/// `--severity`: info, warn, critical.
pub(crate) fn severity() -> Words<Severity> {
    Words {
        all: Severity::ALL,
        unspecified: Severity::Unspecified,
        label: Severity::label,
        parse: |text| Severity::from_label(&text.to_ascii_lowercase()),
    }
}

/// A signal, with or without its `SIG` prefix, in any case.
pub(crate) fn signal() -> Words<Signal> {
    Words {
        all: Signal::ALL,
        unspecified: Signal::Unspecified,
        label: Signal::label,
        parse: Signal::parse,
    }
}

/// `--role`: read, operate, admin.
pub(crate) fn role() -> Words<Role> {
    Words {
        all: Role::ALL,
        unspecified: Role::Unspecified,
        label: Role::label,
        parse: |text| Role::from_label(text).filter(|r| *r != Role::Unspecified),
    }
}

/// The keyring operation: list, install, use, remove.
pub(crate) fn keyring_op() -> Words<KeyringOp> {
    Words {
        all: KeyringOp::ALL,
        unspecified: KeyringOp::Unspecified,
        label: KeyringOp::label,
        parse: |text| KeyringOp::from_label(text).filter(|op| *op != KeyringOp::Unspecified),
    }
}

/// The words of an enum and how to parse one.
#[derive(Clone, Copy)]
pub(crate) struct Words<T: 'static> {
    /// Every variant, in the order completions offer them.
    pub all: &'static [T],
    /// The variant that is no word (the proto enum's `Unspecified`).
    pub unspecified: T,
    /// A variant's word.
    pub label: fn(T) -> &'static str,
    /// The command's own parser (aliases, any case).
    pub parse: fn(&str) -> Option<T>,
}

impl<T: Copy + PartialEq + Send + Sync + 'static> TypedValueParser for Words<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        (self.parse)(&text).ok_or_else(|| {
            let mut err = clap::Error::new(ErrorKind::InvalidValue).with_cmd(cmd);
            if let Some(arg) = arg {
                err.insert(
                    ContextKind::InvalidArg,
                    ContextValue::String(arg.to_string()),
                );
            }
            err.insert(
                ContextKind::InvalidValue,
                ContextValue::String(text.into_owned()),
            );
            err.insert(
                ContextKind::ValidValue,
                ContextValue::Strings(self.words().map(str::to_string).collect()),
            );
            err
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.words().map(PossibleValue::new)))
    }
}

impl<T: Copy + PartialEq> Words<T> {
    fn words(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.all
            .iter()
            .filter(|v| **v != self.unspecified)
            .map(|v| (self.label)(*v))
    }
}
