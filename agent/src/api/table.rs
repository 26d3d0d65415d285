//! The table of RPCs: for every method of `strata.v1.Agent`, what the API layer needs to know
//! before and after its handler runs. Each row implements [`Rpc`] on the method's request
//! message: the call the request makes (its name in refusals and audit records, the weakest
//! role allowed, its cost against the client's rate limit), whether it is served by the node it
//! names or always by the contacted agent, what it acts on, and what the audit record of a
//! change carries. The layer serves nothing without a row, and a test holds the rows against
//! the service descriptor.

use super::gate::Call;
use crate::auth::Role;
use crate::auth::audit::{AuditEntry, fingerprint};
use strata_proto::v1::control_service_request::Action;
use strata_proto::v1::{
    AccessRecord, ApplySpecReply, ApplySpecRequest, BalancerReply, ClusterUpdate,
    ControlServiceReply, ControlServiceRequest, DrainNodeReply, DrainNodeRequest, Event,
    ForceLeaveReply, ForceLeaveRequest, GetBalancerRequest, GetCatalogReply, GetCatalogRequest,
    GetMetricsRequest, GetNodeRequest, GetServiceRequest, HostMetrics, KeyringOp, KeyringReply,
    KeyringRequest, LeaveReply, LeaveRequest, ListMembersReply, ListMembersRequest,
    ListServicesReply, ListServicesRequest, LogLine, MetricHistory, MetricHistoryRequest, NodeInfo,
    QueryEventsReply, QueryEventsRequest, RemoveServiceReply, RemoveServiceRequest, ServiceStatus,
    Signal, TailAccessLogRequest, TailLogsRequest, TopProcessesReply, TopProcessesRequest,
    WatchClusterRequest, WatchEventsRequest, WatchMetricsRequest, WhoAmIReply, WhoAmIRequest,
};
use strata_proto::v1::{
    CreateTokenReply, CreateTokenRequest, ListTokensReply, ListTokensRequest, RevokeTokenReply,
    RevokeTokenRequest,
};

/// What a change acts on, for scoped credentials: a service by name, a spec (whose name and
/// team are in its text), or the node or cluster as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touches<'a> {
    /// The service of this name.
    Service(&'a str),
    /// The service this spec text defines.
    Spec(&'a str),
    /// The node or the cluster.
    NodeWide,
}

/// One RPC of `strata.v1.Agent`, implemented on its request message by a row of the table.
pub trait Rpc: prost::Message + Default + Send + 'static {
    /// The reply message; of a streaming RPC, the message each item of the stream carries.
    type Reply: prost::Message + Default + Send + 'static;

    /// The method's name in the service, as the descriptor spells it: `GetNode`.
    const METHOD: &'static str;

    /// The call this request makes.
    fn call(&self) -> Call;

    /// The node a node-scoped request names (empty: the contacted agent), which serves it;
    /// `None` for a request the contacted agent always serves itself.
    fn node(&self) -> Option<&str>;

    /// What refusals and changes are recorded against; `None`: the contacted node.
    fn target(&self) -> Option<String> {
        None
    }

    /// Whether serving it writes an audit record: every change does.
    fn audited(&self) -> bool {
        self.call().is_change()
    }

    /// The arguments an audit record of it carries.
    fn audit_args(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// What a served reply adds to its audit record.
    fn audit_reply(_reply: &Self::Reply, _entry: &mut AuditEntry) {}

    /// What it changes, for scoped credentials: the node as a whole unless a row says.
    fn touches(&self) -> Touches<'_> {
        Touches::NodeWide
    }
}

/// The rows: `Method(Request) -> Reply, routed | here, call`, then, where a change records
/// more than its call and the contacted node, `target` (what it acts on) and `audit { items
/// of Rpc }`. `routed` requests are served by the node their `node` field names; `here`
/// requests by the contacted agent. `call` and `target` are functions of the request.
macro_rules! table {
    ($($method:ident($request:ty) -> $reply:ty, $scope:ident, $call:expr
        $(, target $target:expr)? $(, audit { $($audit:tt)* })?;)*) => {
        $(impl Rpc for $request {
            type Reply = $reply;
            const METHOD: &'static str = stringify!($method);

            fn call(&self) -> Call {
                let call: fn(&Self) -> Call = $call;
                call(self)
            }

            fn node(&self) -> Option<&str> {
                table!(@node $scope self)
            }

            $(fn target(&self) -> Option<String> {
                let target: fn(&Self) -> String = $target;
                Some(target(self))
            })?

            $($($audit)*)?
        })*

        /// Every method the table has a row for.
        pub const METHODS: &[&str] = &[$(stringify!($method)),*];
    };
    (@node routed $request:ident) => { Some($request.node.as_str()) };
    (@node here $request:ident) => { None };
}

table! {
    GetNode(GetNodeRequest) -> NodeInfo, routed, |_| Call::read("node");
    GetMetrics(GetMetricsRequest) -> HostMetrics, routed, |_| Call::read("metrics");
    GetMetricHistory(MetricHistoryRequest) -> MetricHistory, routed,
        |_| Call::read_heavy("metric history");
    WatchMetrics(WatchMetricsRequest) -> HostMetrics, routed,
        |_| Call::read_heavy("watch metrics");
    TopProcesses(TopProcessesRequest) -> TopProcessesReply, routed, |_| Call::read("top");
    QueryEvents(QueryEventsRequest) -> QueryEventsReply, routed, |_| Call::read_heavy("events");
    WatchEvents(WatchEventsRequest) -> Event, routed, |_| Call::read_heavy("watch events");
    ListServices(ListServicesRequest) -> ListServicesReply, routed, |_| Call::read("services");
    GetService(GetServiceRequest) -> ServiceStatus, routed, |_| Call::read("service");
    ApplySpec(ApplySpecRequest) -> ApplySpecReply, routed,
        |_| Call::change("apply", Role::Admin), target |r| format!("spec:{}", r.source), audit {
        fn audited(&self) -> bool {
            !self.dry_run
        }

        fn audit_args(&self) -> Vec<(String, String)> {
            vec![
                ("source".into(), self.source.clone()),
                ("spec_sha256".into(), fingerprint(&self.spec_toml)),
            ]
        }

        fn audit_reply(reply: &ApplySpecReply, entry: &mut AuditEntry) {
            entry.target = format!("service:{}", reply.service);
            entry.args.push(("action".into(), reply.action().label().into()));
        }

        fn touches(&self) -> Touches<'_> {
            Touches::Spec(&self.spec_toml)
        }
    };
    RemoveService(RemoveServiceRequest) -> RemoveServiceReply, routed,
        |_| Call::change("remove", Role::Admin), target |r| format!("service:{}", r.name), audit {
        fn touches(&self) -> Touches<'_> {
            Touches::Service(&self.name)
        }
    };
    ControlService(ControlServiceRequest) -> ControlServiceReply, routed, control_call,
        target control_target, audit {
        fn audit_args(&self) -> Vec<(String, String)> {
            match &self.action {
                Some(Action::Scale(scale)) => vec![("count".into(), scale.count.to_string())],
                Some(Action::Signal(send)) => {
                    vec![("signal".into(), Signal::from_wire(send.signal).label().into())]
                }
                Some(Action::Start(_) | Action::Stop(_) | Action::Restart(_)) | None => Vec::new(),
            }
        }

        fn touches(&self) -> Touches<'_> {
            Touches::Service(&self.service)
        }
    };
    TailLogs(TailLogsRequest) -> LogLine, routed, |_| Call::read_heavy("logs");
    ListMembers(ListMembersRequest) -> ListMembersReply, here, |_| Call::read("members");
    GetCatalog(GetCatalogRequest) -> GetCatalogReply, here, |_| Call::read_heavy("catalog");
    WatchCluster(WatchClusterRequest) -> ClusterUpdate, here,
        |_| Call::read_heavy("watch cluster");
    DrainNode(DrainNodeRequest) -> DrainNodeReply, routed,
        |r| Call::change(if r.drain { "drain" } else { "undrain" }, Role::Operate);
    Leave(LeaveRequest) -> LeaveReply, routed, |_| Call::change("leave", Role::Admin);
    ForceLeave(ForceLeaveRequest) -> ForceLeaveReply, here,
        |_| Call::change("force-leave", Role::Admin), target |r| format!("node:{}", r.member);
    Keyring(KeyringRequest) -> KeyringReply, routed, keyring_call,
        target |_| "keyring".into(), audit {
        fn audit_args(&self) -> Vec<(String, String)> {
            vec![("key_sha256".into(), fingerprint(&self.key))]
        }
    };
    GetBalancer(GetBalancerRequest) -> BalancerReply, routed, |_| Call::read("balancer");
    TailAccessLog(TailAccessLogRequest) -> AccessRecord, routed,
        |_| Call::read_heavy("access log");
    WhoAmI(WhoAmIRequest) -> WhoAmIReply, here, |_| Call::read("whoami");
    CreateToken(CreateTokenRequest) -> CreateTokenReply, here,
        |_| Call::change("token create", Role::Admin), target |r| format!("token:{}", r.name),
        audit {
        fn audit_args(&self) -> Vec<(String, String)> {
            let mut args = vec![
                ("role".into(), strata_proto::v1::Role::from_wire(self.role).label().into()),
                ("expires_in_secs".into(), self.expires_in_secs.to_string()),
            ];
            if let Some(scope) = &self.scope {
                args.push(("services".into(), scope.services.join(",")));
                args.push(("team".into(), scope.team.clone()));
            }
            args
        }

        fn audit_reply(reply: &CreateTokenReply, entry: &mut AuditEntry) {
            if let Some(token) = &reply.token {
                entry.args.push(("sha256".into(), token.sha256.chars().take(16).collect()));
            }
        }
    };
    ListTokens(ListTokensRequest) -> ListTokensReply, here, |_| Call::read("token list");
    RevokeToken(RevokeTokenRequest) -> RevokeTokenReply, here,
        |_| Call::change("token revoke", Role::Admin), target |r| format!("token:{}", r.name);
}

/// A control request is named by its action's verb (`restart needs the operate role`); one
/// without an action is a `control` the handler refuses.
fn control_call(request: &ControlServiceRequest) -> Call {
    let verb = request.action.as_ref().map_or("control", Action::verb);
    Call::change(verb, Role::Operate)
}

/// A control request acts on its service, or on one instance of it.
fn control_target(request: &ControlServiceRequest) -> String {
    match request.instance {
        0 => format!("service:{}", request.service),
        n => format!("service:{}/{n}", request.service),
    }
}

/// Listing the keyring is a read; changing it is for admins. A request without an operation
/// needs no role: the handler refuses it, once the caller is known.
fn keyring_call(request: &KeyringRequest) -> Call {
    match request.op() {
        KeyringOp::List => Call::read("keyring list"),
        KeyringOp::Install => Call::change("keyring install", Role::Admin),
        KeyringOp::Use => Call::change("keyring use", Role::Admin),
        KeyringOp::Remove => Call::change("keyring remove", Role::Admin),
        KeyringOp::Unspecified => Call::read("keyring"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::limits::Cost;
    use prost::Message;
    use strata_proto::v1::agent_server::SERVICE_NAME;

    /// The methods of `strata.v1.Agent`, from the descriptor the server is built from.
    fn service_methods() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(strata_proto::v1::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let service = set
            .file
            .iter()
            .flat_map(|file| file.service.iter().map(move |s| (file.package(), s)))
            .find(|(package, s)| format!("{package}.{}", s.name()) == SERVICE_NAME)
            .map(|(_, s)| s)
            .expect("the descriptor has strata.v1.Agent");
        service
            .method
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    }

    #[test]
    fn every_rpc_of_the_service_has_a_row_and_every_row_an_rpc() {
        let methods = service_methods();
        let missing: Vec<_> = methods
            .iter()
            .filter(|m| !METHODS.contains(&m.as_str()))
            .collect();
        assert!(missing.is_empty(), "no row in api/table.rs for {missing:?}");
        let stale: Vec<_> = METHODS
            .iter()
            .filter(|m| !methods.iter().any(|name| name == *m))
            .collect();
        assert!(stale.is_empty(), "rows for no RPC: {stale:?}");
        assert_eq!(methods.len(), METHODS.len(), "one row per RPC");
    }

    fn control(action: Action) -> ControlServiceRequest {
        ControlServiceRequest {
            service: "web".into(),
            action: Some(action),
            ..Default::default()
        }
    }

    #[test]
    fn a_control_request_is_named_by_its_action_and_needs_operate() {
        let cases = [
            (Action::start(), "start"),
            (Action::stop(), "stop"),
            (Action::restart(), "restart"),
            (Action::scale(3), "scale"),
            (Action::signal(Signal::Hup), "signal"),
        ];
        for (action, verb) in cases {
            let call = control(action).call();
            assert_eq!(call, Call::change(verb, Role::Operate));
            assert!(call.is_change());
        }
        let none = ControlServiceRequest::default();
        assert_eq!(none.call(), Call::change("control", Role::Operate));
        let scale = control(Action::scale(3));
        assert_eq!(scale.audit_args(), [("count".into(), "3".into())]);
        let signal = control(Action::signal(Signal::Hup));
        assert_eq!(signal.audit_args(), [("signal".into(), "SIGHUP".into())]);
        let one = ControlServiceRequest {
            instance: 2,
            ..control(Action::restart())
        };
        assert_eq!(one.target().as_deref(), Some("service:web/2"));
        assert_eq!(scale.target().as_deref(), Some("service:web"));
    }

    #[test]
    fn listing_the_keyring_is_a_read_and_changing_it_is_for_admins() {
        let keyring = |op: KeyringOp| KeyringRequest {
            op: op as i32,
            key: "k".into(),
            ..Default::default()
        };
        let list = keyring(KeyringOp::List);
        assert_eq!(list.call(), Call::read("keyring list"));
        assert!(!list.audited());
        for (op, what) in [
            (KeyringOp::Install, "keyring install"),
            (KeyringOp::Use, "keyring use"),
            (KeyringOp::Remove, "keyring remove"),
        ] {
            let request = keyring(op);
            assert_eq!(request.call(), Call::change(what, Role::Admin));
            assert!(request.audited());
            assert_eq!(request.audit_args()[0].0, "key_sha256");
            assert_ne!(request.audit_args()[0].1, "k", "never the key itself");
        }
        let unspecified = keyring(KeyringOp::Unspecified);
        assert_eq!(unspecified.call().role, Role::Read);
        assert_eq!(unspecified.target().as_deref(), Some("keyring"));
    }

    #[test]
    fn draining_and_undraining_are_told_apart() {
        let drain = DrainNodeRequest {
            drain: true,
            ..Default::default()
        };
        assert_eq!(drain.call(), Call::change("drain", Role::Operate));
        assert_eq!(
            DrainNodeRequest::default().call(),
            Call::change("undrain", Role::Operate)
        );
        assert_eq!(drain.target(), None, "the contacted node");
        assert_eq!(drain.node(), Some(""));
    }

    #[test]
    fn an_apply_is_audited_unless_it_is_a_dry_run_and_names_what_it_made() {
        let apply = ApplySpecRequest {
            source: "web.toml".into(),
            spec_toml: "name = \"web\"".into(),
            ..Default::default()
        };
        assert!(apply.audited());
        assert!(
            !ApplySpecRequest {
                dry_run: true,
                ..apply.clone()
            }
            .audited()
        );
        assert_eq!(apply.target().as_deref(), Some("spec:web.toml"));
        let mut entry = AuditEntry {
            who: crate::auth::Identity {
                name: "ci".into(),
                role: Role::Admin,
                via: crate::auth::Via::Token,
                remote: None,
                scope: crate::auth::Scope::default(),
            },
            what: "apply".into(),
            target: apply.target().unwrap_or_default(),
            args: apply.audit_args(),
        };
        let reply = ApplySpecReply {
            service: "web".into(),
            action: strata_proto::v1::ApplyAction::Created as i32,
            ..Default::default()
        };
        ApplySpecRequest::audit_reply(&reply, &mut entry);
        assert_eq!(entry.target, "service:web");
        let args: Vec<&str> = entry.args.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(args, ["source", "spec_sha256", "action"]);
        assert_eq!(entry.args[2].1, "created");
    }

    #[test]
    fn cluster_wide_views_are_served_here_and_node_views_are_routed() {
        let to_n2 = GetNodeRequest { node: "n2".into() };
        assert_eq!(to_n2.node(), Some("n2"));
        let members = ListMembersRequest { node: "n2".into() };
        assert_eq!(members.node(), None, "any agent answers for the cluster");
        assert_eq!(ForceLeaveRequest::default().node(), None);
        assert_eq!(WhoAmIRequest::default().node(), None);
        assert_eq!(
            TailLogsRequest::default().call(),
            Call {
                what: "logs",
                role: Role::Read,
                cost: Cost::Expensive
            }
        );
        assert!(!TailLogsRequest::default().audited());
    }
}
