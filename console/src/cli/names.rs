//! Service, instance and node names for shell completion, asked of the agent while the user
//! presses Tab. clap_complete's dynamic engine runs `strata` itself to complete (the shell's
//! script comes from `strata completions SHELL --dynamic`, or `COMPLETE=bash strata`), so a
//! name argument can list what the cluster has now, as kubectl does for pods.
//!
//! The agent and credentials come from the words typed so far (`--agent`, `--ca`, `--cert`,
//! `--key`, `--token`), else the same environment variables as every command. A completion
//! never waits long nor prints errors: with no agent in reach it offers nothing and the
//! shell falls back to its default.

use crate::client::connect::{ClientAuth, Connector, DEFAULT_AGENT};
use crate::client::ops::Target;
use crate::client::retry::RetryPolicy;
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::time::Duration;
use strata_proto::v1::{GetCatalogReply, GetCatalogRequest, ListMembersReply, ListMembersRequest};

/// How long one completion may wait for the agent: a shell must never hang on Tab.
const PATIENCE: Duration = Duration::from_millis(1500);

/// Completes a service name, or `NAME/INDEX` once a `/` is typed, from the cluster catalog.
pub(crate) fn services() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let Some(current) = current.to_str() else {
            return Vec::new();
        };
        let Some(catalog) = ask(|mut client| async move {
            client
                .get_catalog(GetCatalogRequest::default())
                .await
                .ok()
                .map(tonic::Response::into_inner)
        }) else {
            return Vec::new();
        };
        candidates(service_words(&catalog, current.contains('/')), current)
    })
}

/// Completes a node name from the cluster's members.
pub(crate) fn nodes() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let Some(current) = current.to_str() else {
            return Vec::new();
        };
        let Some(members) = ask(|mut client| async move {
            client
                .list_members(ListMembersRequest::default())
                .await
                .ok()
                .map(tonic::Response::into_inner)
        }) else {
            return Vec::new();
        };
        candidates(node_words(&members), current)
    })
}

/// Every service name in the catalog; with `instances`, every `NAME/INDEX` too.
fn service_words(catalog: &GetCatalogReply, instances: bool) -> BTreeSet<String> {
    let services = catalog.records.iter().flat_map(|r| &r.services);
    let mut words = BTreeSet::new();
    for service in services {
        words.insert(service.name.clone());
        if instances {
            let ids = service.instances.iter().map(|i| &i.id);
            // Only ids the command itself would take as a target.
            words.extend(ids.filter(|id| Target::parse(id).is_ok()).cloned());
        }
    }
    words
}

/// Every member's name.
fn node_words(members: &ListMembersReply) -> BTreeSet<String> {
    members
        .members
        .iter()
        .map(|m| m.name.clone())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The words starting with what is typed, sorted.
fn candidates(words: BTreeSet<String>, typed: &str) -> Vec<CompletionCandidate> {
    words
        .into_iter()
        .filter(|w| w.starts_with(typed))
        .map(CompletionCandidate::new)
        .collect()
}

/// One call to the agent the command line names, within [`PATIENCE`]; None on any failure.
fn ask<T, F>(call: impl FnOnce(crate::client::Client) -> F) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let words: Vec<OsString> = std::env::args_os().collect();
    let typed =
        |flag: &str, var: &str| typed_flag(&words, flag).or_else(|| std::env::var(var).ok());
    let agent = typed("--agent", "STRATA_AGENT").unwrap_or_else(|| DEFAULT_AGENT.to_string());
    let auth = ClientAuth {
        ca: typed("--ca", "STRATA_CA").map(Into::into),
        cert: typed("--cert", "STRATA_CERT").map(Into::into),
        key: typed("--key", "STRATA_KEY").map(Into::into),
        token: typed("--token", "STRATA_TOKEN"),
    };
    let connector = Connector::new(&agent, &auth)
        .ok()?
        .with_retry(RetryPolicy::Never);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            let client = connector.connect().await.ok()?;
            call(client).await
        })
        .await
        .ok()
        .flatten()
    })
}

/// The value of `flag` in the words typed so far (`--flag VALUE` or `--flag=VALUE`; the last
/// one wins, as clap's parsing does).
fn typed_flag(words: &[OsString], flag: &str) -> Option<String> {
    let mut found = None;
    let mut words = words.iter().filter_map(|w| w.to_str());
    while let Some(word) = words.next() {
        if word == flag {
            found = words.next().map(str::to_string);
        } else if let Some(value) = word.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
            found = Some(value.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{CatalogInstance, CatalogService, Member, NodeRecord};

    fn catalog() -> GetCatalogReply {
        let service = |name: &str, ids: &[&str]| CatalogService {
            name: name.into(),
            instances: ids
                .iter()
                .map(|id| CatalogInstance {
                    id: (*id).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        GetCatalogReply {
            records: vec![
                NodeRecord {
                    services: vec![service("web", &["web/1", "web/2"]), service("api", &[])],
                    ..Default::default()
                },
                NodeRecord {
                    services: vec![service("web", &["web/3"]), service("worker", &["bad id"])],
                    ..Default::default()
                },
            ],
        }
    }

    fn values(c: Vec<CompletionCandidate>) -> Vec<String> {
        c.iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn service_names_once_each_across_nodes_and_instances_once_a_slash_is_typed() {
        let names = service_words(&catalog(), false);
        assert_eq!(values(candidates(names, "w")), ["web", "worker"]);
        let with_instances = service_words(&catalog(), true);
        assert_eq!(
            values(candidates(with_instances, "web/")),
            ["web/1", "web/2", "web/3"]
        );
    }

    #[test]
    fn node_names_skip_members_not_named_yet() {
        let member = |name: &str| Member {
            name: name.into(),
            ..Default::default()
        };
        let members = ListMembersReply {
            members: vec![member("n2"), member(""), member("n1"), member("db")],
            ..Default::default()
        };
        assert_eq!(values(candidates(node_words(&members), "n")), ["n1", "n2"]);
    }

    #[test]
    fn the_agent_typed_on_the_line_wins_in_either_spelling() {
        let words = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
        let typed = words(&[
            "strata",
            "--",
            "strata",
            "--agent",
            "a:1",
            "logs",
            "--agent=b:2",
        ]);
        assert_eq!(typed_flag(&typed, "--agent").as_deref(), Some("b:2"));
        assert_eq!(typed_flag(&words(&["strata", "--agent"]), "--agent"), None);
        assert_eq!(
            typed_flag(&words(&["strata", "--agents=x"]), "--agent"),
            None
        );
    }
}
