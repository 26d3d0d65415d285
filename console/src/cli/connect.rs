//! Connecting to an agent: address parsing and the one-line "cannot reach" failure.

use super::failure::{Failure, FailureKind, root_cause};
use std::time::Duration;
use strata_proto::v1::agent_client::AgentClient;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for the agent to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Normalises an `--agent` value (`host:port` or `http://host:port`) to a URI.
pub fn agent_uri(agent: &str) -> Result<String, Failure> {
    let usage = |why: &str| {
        Failure::new(
            FailureKind::Usage,
            format!("--agent {agent:?}: {why} (expected HOST:PORT, e.g. 127.0.0.1:7700)"),
        )
    };
    let rest = agent
        .strip_prefix("http://")
        .or_else(|| agent.strip_prefix("https://"))
        .unwrap_or(agent);
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| usage("no port"))?;
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(usage("bad host"));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| usage("the port must be a number from 1 to 65535"))?;
    let scheme = if agent.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{rest}"))
}

/// Connects to the agent at `agent`; an unreachable agent is one line naming the address.
pub async fn connect(agent: &str) -> Result<AgentClient<Channel>, Failure> {
    let uri = agent_uri(agent)?;
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| Failure::new(FailureKind::Usage, format!("--agent {agent:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::new(
            FailureKind::Unreachable,
            format!("cannot reach the agent at {agent}: {}", root_cause(&e)),
        )
    })?;
    Ok(AgentClient::new(channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_and_http_uris() {
        assert_eq!(
            agent_uri("127.0.0.1:7700").unwrap(),
            "http://127.0.0.1:7700"
        );
        assert_eq!(agent_uri("http://n1:7700").unwrap(), "http://n1:7700");
        assert_eq!(agent_uri("[::1]:7700").unwrap(), "http://[::1]:7700");
    }

    #[test]
    fn bad_addresses_are_usage_errors() {
        for bad in ["127.0.0.1", "host:notaport", ":7700", "host:0", "a b:1"] {
            let f = agent_uri(bad).unwrap_err();
            assert_eq!(f.kind, FailureKind::Usage, "{bad}");
            assert!(f.message.contains("--agent"), "{}", f.message);
        }
    }
}
