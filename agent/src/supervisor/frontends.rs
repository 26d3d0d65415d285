//! Which frontend ports a spec may claim. A frontend port is served by the balancer of every
//! node, so it must not be one of the agent's own ports, nor inside the range backend ports
//! are allocated from, nor serve two ports of one spec, nor be served already for another
//! service anywhere in the catalog. Pure functions over the spec and what it is checked
//! against; the supervisor runs them at every apply.

use super::spec::{ServiceSpec, SpecError};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use strata_registry::table::ServiceTable;

/// The ports this agent listens on itself (port to what listens on it: "gRPC API", "HTTP",
/// "gossip", "DNS"), which no frontend may take.
pub type AgentPorts = BTreeMap<u16, &'static str>;

/// The spec's frontends against itself and this agent: each frontend serves one port of the
/// spec, and none is an agent port or inside `backend` (the agent's backend port range).
pub fn check_frontends(
    spec: &ServiceSpec,
    file: &str,
    text: &str,
    agent: &AgentPorts,
    backend: &RangeInclusive<u16>,
) -> Result<(), SpecError> {
    let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
    for (name, port) in &spec.ports {
        let Some(frontend) = port.frontend else {
            continue;
        };
        let field = format!("ports.{name}.frontend");
        let refuse = |problem: String| Err(SpecError::at(file, text, &field, problem));
        if let Some(first) = seen.insert(frontend, name) {
            return refuse(format!(
                "port {frontend} is also the frontend of port {first:?}; a frontend port serves \
                 one port"
            ));
        }
        if let Some(what) = agent.get(&frontend) {
            return refuse(format!(
                "port {frontend} is this agent's own {what} port; choose another frontend port"
            ));
        }
        if backend.contains(&frontend) {
            return refuse(format!(
                "port {frontend} is inside the agent's backend port range {}-{} (port_range), \
                 from which instances get their ports; choose a frontend port outside it",
                backend.start(),
                backend.end()
            ));
        }
    }
    Ok(())
}

/// The spec's frontends against the catalog: a frontend port the service does not already
/// have (`current` is its spec on this agent, if any) must not be claimed by another service
/// in any record the catalog routes, this node's own excepted (the agent's own services are
/// checked from the supervisor itself, which is newer than its published record). The error
/// names the service and its nodes.
pub fn check_cluster_claims(
    spec: &ServiceSpec,
    file: &str,
    text: &str,
    current: Option<&ServiceSpec>,
    catalog: &ServiceTable,
    own_node: &str,
) -> Result<(), SpecError> {
    let held =
        |port: u16| current.is_some_and(|c| c.ports.values().any(|p| p.frontend == Some(port)));
    for (name, port) in &spec.ports {
        let Some(frontend) = port.frontend.filter(|f| !held(*f)) else {
            continue;
        };
        let Some(claims) = catalog.frontend_claims.get(&frontend) else {
            continue;
        };
        let mut others: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for claim in claims {
            if claim.service != spec.name && claim.node != own_node {
                others
                    .entry(claim.service.as_str())
                    .or_default()
                    .push(claim.node.as_str());
            }
        }
        if let Some((service, nodes)) = others.into_iter().next() {
            let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
            let on = if nodes.len() == 1 { "node" } else { "nodes" };
            return Err(SpecError::at(
                file,
                text,
                &format!("ports.{name}.frontend"),
                format!(
                    "frontend {frontend} is already served for service {service:?} on {on} {}; \
                     choose another port, or remove {service:?} first",
                    nodes.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::parse_spec;
    use strata_registry::table::FrontendClaim;

    const SPEC: &str = "name = \"beta\"\ncommand = [\"/bin/true\"]\n\
                        [ports.http]\nfrontend = 8080\n[ports.admin]\nfrontend = 9090\n";

    fn spec(text: &str) -> ServiceSpec {
        parse_spec("beta.toml", text).unwrap()
    }

    fn agent() -> AgentPorts {
        [(7700, "gRPC API"), (7702, "HTTP"), (7753, "DNS")].into()
    }

    fn catalog(claims: &[(u16, &str, &str)]) -> ServiceTable {
        let mut table = ServiceTable::default();
        for (port, service, node) in claims {
            table
                .frontend_claims
                .entry(*port)
                .or_default()
                .push(FrontendClaim {
                    service: service.to_string(),
                    node: node.to_string(),
                });
        }
        table
    }

    #[test]
    fn a_repeated_frontend_an_agent_port_and_the_backend_range_are_refused_by_field() {
        let range = 20000..=29999;
        assert!(check_frontends(&spec(SPEC), "beta.toml", SPEC, &agent(), &range).is_ok());
        for (from, to, field, problem) in [
            (
                "frontend = 9090",
                "frontend = 8080",
                "ports.http.frontend",
                "port 8080 is also the frontend of port \"admin\"",
            ),
            (
                "frontend = 9090",
                "frontend = 7753",
                "ports.admin.frontend",
                "this agent's own DNS port",
            ),
            (
                "frontend = 8080",
                "frontend = 20001",
                "ports.http.frontend",
                "inside the agent's backend port range 20000-29999",
            ),
        ] {
            let text = SPEC.replace(from, to);
            let e =
                check_frontends(&spec(&text), "beta.toml", &text, &agent(), &range).expect_err(to);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(problem), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
    }

    #[test]
    fn a_frontend_served_for_another_service_is_refused_naming_it_and_its_nodes() {
        let beta = spec(SPEC);
        let taken = catalog(&[(8080, "alpha", "n1"), (8080, "alpha", "n3")]);
        let e = check_cluster_claims(&beta, "beta.toml", SPEC, None, &taken, "n2").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("ports.http.frontend", Some(4)));
        assert_eq!(
            e.problem,
            "frontend 8080 is already served for service \"alpha\" on nodes \"n1\", \"n3\"; \
             choose another port, or remove \"alpha\" first"
        );
    }

    #[test]
    fn the_same_service_this_node_and_frontends_already_held_are_not_conflicts() {
        let beta = spec(SPEC);
        // beta elsewhere: the same service, served together.
        let same = catalog(&[(8080, "beta", "n1")]);
        assert!(check_cluster_claims(&beta, "beta.toml", SPEC, None, &same, "n2").is_ok());
        // This node's own record lags its supervisor, which checks its own services.
        let own = catalog(&[(8080, "alpha", "n2")]);
        assert!(check_cluster_claims(&beta, "beta.toml", SPEC, None, &own, "n2").is_ok());
        // A port the service already has is not a new claim (a race lost earlier is not
        // re-reported on every apply of the service).
        let raced = catalog(&[(8080, "alpha", "n1")]);
        assert!(check_cluster_claims(&beta, "beta.toml", SPEC, Some(&beta), &raced, "n2").is_ok());
        let moved = SPEC.replace("frontend = 8080", "frontend = 8081");
        let e = check_cluster_claims(&beta, "beta.toml", SPEC, Some(&spec(&moved)), &raced, "n2")
            .unwrap_err();
        assert!(e.problem.contains("\"alpha\" on node \"n1\""), "{e}");
    }
}
