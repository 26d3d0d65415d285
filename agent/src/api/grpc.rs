//! The `strata.v1.Agent` gRPC service: each RPC goes through the API layer ([`Layer`]), which
//! admits, routes, forwards and audits it, to its handler in the module of its area.

use super::forward::Peers;
use super::gate::{Gate, ReplyStream};
use super::layer::Layer;
use super::{balancer, cluster, events, host, services, tokens};
use crate::auth::cluster_tokens::ClusterTokens;
use crate::state::AgentState;
use std::future::ready;
use std::sync::Arc;
use strata_proto::v1::agent_server::Agent;
use strata_proto::v1::{
    AccessRecord, ApplySpecReply, ApplySpecRequest, BalancerReply, ClusterUpdate,
    ControlServiceReply, ControlServiceRequest, DrainNodeReply, DrainNodeRequest, Event,
    ForceLeaveReply, ForceLeaveRequest, GetBalancerRequest, GetCatalogReply, GetCatalogRequest,
    GetMetricsRequest, GetNodeRequest, GetServiceRequest, HostMetrics, KeyringReply,
    KeyringRequest, LeaveReply, LeaveRequest, ListMembersReply, ListMembersRequest,
    ListServicesReply, ListServicesRequest, LogLine, MetricHistory, MetricHistoryRequest, NodeInfo,
    QueryEventsReply, QueryEventsRequest, RemoveServiceReply, RemoveServiceRequest,
    Role as WireRole, ServiceStatus, TailAccessLogRequest, TailLogsRequest, TopProcessesReply,
    TopProcessesRequest, Via as WireVia, WatchClusterRequest, WatchEventsRequest,
    WatchMetricsRequest, WhoAmIReply, WhoAmIRequest,
};
use strata_proto::v1::{
    CreateTokenReply, CreateTokenRequest, ListTokensReply, ListTokensRequest, RevokeTokenReply,
    RevokeTokenRequest,
};
use tonic::{Request, Response, Status};

/// Serves the Agent API from the shared state.
pub struct AgentService {
    state: Arc<AgentState>,
    layer: Layer,
    cluster_tokens: Arc<ClusterTokens>,
}

impl AgentService {
    /// A service reading `state`, with every call passing through `gate`.
    pub fn new(state: Arc<AgentState>, gate: Arc<Gate>) -> Self {
        let cluster_tokens = Arc::clone(gate.cluster_tokens());
        let layer = Layer::new(gate, Peers::new(Arc::clone(&state)));
        AgentService {
            state,
            layer,
            cluster_tokens,
        }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, _| ready(Ok(state.node_info())))
            .await
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<HostMetrics>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, _| ready(host::metrics(state)))
            .await
    }

    async fn get_metric_history(
        &self,
        request: Request<MetricHistoryRequest>,
    ) -> Result<Response<MetricHistory>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| ready(host::history(state, req)))
            .await
    }

    type WatchMetricsStream = ReplyStream<HostMetrics>;

    async fn watch_metrics(
        &self,
        request: Request<WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        let state = &self.state;
        self.layer
            .stream(request, |_, _| ready(Ok(host::watch(state))))
            .await
    }

    async fn top_processes(
        &self,
        request: Request<TopProcessesRequest>,
    ) -> Result<Response<TopProcessesReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| ready(Ok(host::top_processes(state, req))))
            .await
    }

    async fn query_events(
        &self,
        request: Request<QueryEventsRequest>,
    ) -> Result<Response<QueryEventsReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| events::query(state, req))
            .await
    }

    type WatchEventsStream = ReplyStream<Event>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let state = &self.state;
        self.layer
            .stream(request, |_, req| ready(events::watch(state, req)))
            .await
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, _| ready(Ok(services::list(state))))
            .await
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<ServiceStatus>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| ready(services::get(state, req)))
            .await
    }

    async fn apply_spec(
        &self,
        request: Request<ApplySpecRequest>,
    ) -> Result<Response<ApplySpecReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| services::apply(state, req))
            .await
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| services::remove(state, req))
            .await
    }

    async fn control_service(
        &self,
        request: Request<ControlServiceRequest>,
    ) -> Result<Response<ControlServiceReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| services::control(state, req))
            .await
    }

    type TailLogsStream = ReplyStream<LogLine>;

    async fn tail_logs(
        &self,
        request: Request<TailLogsRequest>,
    ) -> Result<Response<Self::TailLogsStream>, Status> {
        let state = &self.state;
        self.layer
            .stream(request, |_, req| services::tail_logs(state, req))
            .await
    }

    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, _| ready(Ok(cluster::members(state))))
            .await
    }

    async fn get_catalog(
        &self,
        request: Request<GetCatalogRequest>,
    ) -> Result<Response<GetCatalogReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, _| ready(Ok(cluster::catalog(state))))
            .await
    }

    type WatchClusterStream = ReplyStream<ClusterUpdate>;

    async fn watch_cluster(
        &self,
        request: Request<WatchClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        let state = &self.state;
        self.layer
            .stream(request, |_, _| ready(Ok(cluster::watch(state))))
            .await
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |who, req| {
                ready(Ok(cluster::drain(state, &who, req)))
            })
            .await
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |who, _| ready(Ok(cluster::leave(state, &who))))
            .await
    }

    async fn force_leave(
        &self,
        request: Request<ForceLeaveRequest>,
    ) -> Result<Response<ForceLeaveReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| ready(cluster::force_leave(state, req)))
            .await
    }

    async fn keyring(
        &self,
        request: Request<KeyringRequest>,
    ) -> Result<Response<KeyringReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, req| ready(cluster::keyring(state, req)))
            .await
    }

    async fn get_balancer(
        &self,
        request: Request<GetBalancerRequest>,
    ) -> Result<Response<BalancerReply>, Status> {
        let state = &self.state;
        self.layer
            .unary(request, |_, _| {
                ready(Ok(balancer::balancer_reply(&state.balancer.stats())))
            })
            .await
    }

    type TailAccessLogStream = ReplyStream<AccessRecord>;

    async fn tail_access_log(
        &self,
        request: Request<TailAccessLogRequest>,
    ) -> Result<Response<Self::TailAccessLogStream>, Status> {
        let state = &self.state;
        self.layer
            .stream(request, |_, req| async move {
                let table = state.cluster.table().borrow().clone();
                balancer::tail_access_log(&state.balancer, &table, req).await
            })
            .await
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIReply>, Status> {
        let (state, layer) = (&self.state, &self.layer);
        layer
            .unary(request, |who, _| {
                ready(Ok(WhoAmIReply {
                    name: who.name,
                    role: WireRole::from(who.role) as i32,
                    via: WireVia::from(who.via) as i32,
                    credentials_required: layer.credentials_required(),
                    node: state.node_name.clone(),
                }))
            })
            .await
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenReply>, Status> {
        let (store, state) = (&self.cluster_tokens, &self.state);
        self.layer
            .unary(request, |who, req| {
                ready(tokens::create(store, &state.data_dir, &who, req))
            })
            .await
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensReply>, Status> {
        let store = &self.cluster_tokens;
        self.layer
            .unary(request, |_, _| ready(Ok(tokens::list(store))))
            .await
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenReply>, Status> {
        let store = &self.cluster_tokens;
        self.layer
            .unary(request, |who, req| ready(tokens::revoke(store, &who, req)))
            .await
    }
}
