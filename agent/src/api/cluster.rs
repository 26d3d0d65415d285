//! The cluster in the API's terms: members, the catalog and a watch on both, draining this
//! node, leaving, force-leave, and the gossip keyring.

use crate::auth::Identity;
use crate::events::journal::EventDraft;
use crate::state::{AgentState, unix_now_ms};
use strata_proto::v1::{
    ClusterUpdate, ClusterUpdateKind, DrainNodeReply, DrainNodeRequest, ForceLeaveReply,
    ForceLeaveRequest, GetCatalogReply, KeyringOp, KeyringReply, KeyringRequest, LeaveReply,
    ListMembersReply, Severity,
};
use strata_registry::cluster::{Cluster, ClusterError};
use strata_registry::events::ClusterEvent;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Updates queued for a slow watcher.
const WATCH_QUEUE: usize = 64;

/// The members as this agent's gossip sees them.
pub fn members(state: &AgentState) -> ListMembersReply {
    let cluster = &state.cluster;
    ListMembersReply {
        members: cluster.members(),
        dropped_packets: cluster.stats().dropped_total(),
    }
}

/// Every node's catalog record.
pub fn catalog(state: &AgentState) -> GetCatalogReply {
    GetCatalogReply {
        records: state.cluster.records(),
    }
}

/// A snapshot of members and records, then each change as it happens (a new snapshot after
/// the watcher fell behind).
pub fn watch(state: &AgentState) -> impl Stream<Item = Result<ClusterUpdate, Status>> + use<> {
    let cluster = state.cluster.clone();
    let mut events = cluster.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE);
    tokio::spawn(async move {
        if tx.send(Ok(snapshot(&cluster))).await.is_err() {
            return;
        }
        loop {
            let update = match events.recv().await {
                Ok(event) => cluster_update(&cluster, &event),
                Err(RecvError::Lagged(_)) => Some(snapshot(&cluster)),
                Err(RecvError::Closed) => return,
            };
            if let Some(update) = update
                && tx.send(Ok(update)).await.is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

fn snapshot(cluster: &Cluster) -> ClusterUpdate {
    ClusterUpdate {
        kind: ClusterUpdateKind::Snapshot as i32,
        members: cluster.members(),
        records: cluster.records(),
        node: String::new(),
        time_unix_ms: unix_now_ms(),
    }
}

/// What a cluster event means for a watching console; catalog changes carry the new record.
fn cluster_update(cluster: &Cluster, event: &ClusterEvent) -> Option<ClusterUpdate> {
    let now = unix_now_ms();
    match event {
        ClusterEvent::RecordChanged { node } => Some(ClusterUpdate {
            kind: ClusterUpdateKind::Record as i32,
            records: cluster
                .records()
                .into_iter()
                .filter(|r| &r.name == node || &r.id == node)
                .collect(),
            node: node.clone(),
            time_unix_ms: now,
            ..Default::default()
        }),
        ClusterEvent::Reaped { name } => Some(ClusterUpdate {
            kind: ClusterUpdateKind::Removed as i32,
            node: name.clone(),
            time_unix_ms: now,
            ..Default::default()
        }),
        ClusterEvent::SelfRejoined | ClusterEvent::Rejected { .. } => None,
        ClusterEvent::Joined { name }
        | ClusterEvent::Alive { name }
        | ClusterEvent::Rejoined { name }
        | ClusterEvent::Suspect { name }
        | ClusterEvent::Down { name }
        | ClusterEvent::Left { name }
        | ClusterEvent::Conflict { name, .. } => Some(ClusterUpdate {
            kind: ClusterUpdateKind::Member as i32,
            members: cluster
                .members()
                .into_iter()
                .filter(|m| &m.name == name)
                .collect(),
            node: name.clone(),
            time_unix_ms: now,
            ..Default::default()
        }),
    }
}

/// Drains (or undrains) this node: its instances leave (or rejoin) every balancer.
pub fn drain(state: &AgentState, who: &Identity, req: DrainNodeRequest) -> DrainNodeReply {
    state.cluster.set_draining(req.drain);
    let (kind, word) = if req.drain {
        ("node.drained", "drained")
    } else {
        ("node.undrained", "undrained")
    };
    let node = &state.node_name;
    let draft = EventDraft::new(
        kind,
        Severity::Info,
        format!("node:{node}"),
        format!("node {node} {word} by {}", who.name),
    );
    if let Err(e) = state.journal.append(draft) {
        tracing::warn!(error = %e, "cannot record the drain event");
    }
    DrainNodeReply {
        node: node.clone(),
        draining: req.drain,
    }
}

/// Withdraws this node: the agent drains, leaves gossip and stops once this reply is sent
/// (see [`crate::leave`]).
pub fn leave(state: &AgentState, who: &Identity) -> LeaveReply {
    let first = state.leave.request(&who.describe());
    LeaveReply {
        node: state.node_name.clone(),
        drain_ms: u64::try_from(state.leave.drain().as_millis()).unwrap_or(u64::MAX),
        already_leaving: !first,
    }
}

/// Removes a member that will not come back from the cluster.
pub fn force_leave(state: &AgentState, req: ForceLeaveRequest) -> Result<ForceLeaveReply, Status> {
    state
        .cluster
        .force_leave(&req.member)
        .map_err(|e| match e {
            ClusterError::UnknownMember(_) => Status::not_found(e.to_string()),
            _ => Status::failed_precondition(e.to_string()),
        })?;
    let draft = EventDraft::new(
        "member.force_left",
        Severity::Info,
        format!("node:{}", req.member),
        format!("{} was removed from the cluster by force-leave", req.member),
    );
    if let Err(e) = state.journal.append(draft) {
        tracing::warn!(error = %e, "cannot record the force-leave event");
    }
    Ok(ForceLeaveReply { member: req.member })
}

/// Lists the gossip keys, or installs, makes primary or removes one (and stores the keyring).
pub fn keyring(state: &AgentState, req: KeyringRequest) -> Result<KeyringReply, Status> {
    let cluster = &state.cluster;
    let change = match req.op() {
        KeyringOp::List => None,
        KeyringOp::Install => Some(cluster.install_key(&req.key)),
        KeyringOp::Use => Some(cluster.use_key(&req.key)),
        KeyringOp::Remove => Some(cluster.remove_key(&req.key)),
        KeyringOp::Unspecified => {
            return Err(Status::invalid_argument(
                "op: none given; one of list, install, use, remove",
            ));
        }
    };
    if let Some(changed) = change {
        changed.map_err(|e| Status::invalid_argument(e.to_string()))?;
        crate::keyring_store::save(&state.data_dir, cluster).map_err(|e| {
            Status::internal(format!("the keyring changed but was not stored: {e}"))
        })?;
    }
    let info = cluster.keyring().ok_or_else(|| {
        Status::failed_precondition("this agent gossips without a key (--insecure-gossip or --dev)")
    })?;
    Ok(KeyringReply {
        keys: info.keys,
        primary: info.primary,
        dropped_packets: cluster.stats().dropped_total(),
    })
}
