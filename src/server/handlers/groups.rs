//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups. Each request is routed to the shard that
//! coordinates its group (`shard.group`); the answer is encoded here for the request's version.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorOut;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::sb;
use super::Request;
use crate::error_code::ErrorCode;
use crate::group::{GroupOp, GroupReply};
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};

/// Answers FindCoordinator v0–v4 for groups (key type 0) and transactional ids (key type
/// 1). On one node this broker coordinates both (the shard inside it is chosen per request;
/// the first transactional lookup creates `__transaction_state`, as in Kafka). In a cluster a
/// group's coordinator is the leader of its `__consumer_offsets` partition (the topic is
/// created on the first lookup, as Kafka does); transactions are refused there until their
/// markers can reach partitions on other brokers.
pub async fn find_coordinator(
    rq: &Request<'_>,
    req: FindCoordinatorRequest,
) -> Result<FindCoordinatorResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let keys = if version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    // Kafka: DESCRIBE on the group or the transactional id, checked per key before anything
    // (an internal topic is created only for an authorized key).
    let denied: Vec<Option<ErrorCode>> = keys
        .iter()
        .map(|k| match req.key_type {
            0 => (!rq.authorized(AclOperation::Describe, ResourceType::Group, k.as_str()))
                .then_some(ErrorCode::GROUP_AUTHORIZATION_FAILED),
            1 => (!rq.authorized(
                AclOperation::Describe,
                ResourceType::TransactionalId,
                k.as_str(),
            ))
            .then_some(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
            _ => None,
        })
        .collect();
    let refused: Option<(ErrorCode, String)> = match req.key_type {
        0 | 1 if denied.iter().all(Option::is_some) => None,
        0 => {
            if shard.cluster.is_some() {
                crate::shard::cluster::ensure_offsets_topic(shard).await;
            }
            None
        }
        1 if shard.cluster.is_some() => {
            super::super::refusal::log_refusal(rq.client_id, "FindCoordinator", &NO_TXN_IN_CLUSTER);
            Some((
                ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                NO_TXN_IN_CLUSTER.to_string(),
            ))
        }
        1 => match shard.ensure_txn_topic().await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create __transaction_state");
                Some((ErrorCode::COORDINATOR_NOT_AVAILABLE, e))
            }
        },
        other => {
            let msg = format!("unknown coordinator key type {other}");
            super::super::refusal::log_refusal(rq.client_id, "FindCoordinator", &msg);
            Some((ErrorCode::INVALID_REQUEST, msg))
        }
    };
    let answers: Vec<Coordinated> = keys
        .iter()
        .zip(&denied)
        .map(|(k, denied)| match (denied, &refused) {
            (Some(code), _) => Coordinated::refused(*code, "not authorized for this key"),
            (None, Some((code, message))) => Coordinated::refused(*code, message),
            (None, None) => coordinator_of(shard, k.as_str(), &rq.session.listener.advertised),
        })
        .collect();
    let resp = if version >= 4 {
        let coordinators = keys
            .into_iter()
            .zip(answers)
            .map(|(k, a)| {
                CoordinatorOut::default()
                    .with_key(k)
                    .with_node_id(BrokerId(a.node))
                    .with_host(sb(&a.host))
                    .with_port(a.port)
                    .with_error_code(a.code.code())
                    .with_error_message(a.message.as_deref().map(sb))
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let a = answers
            .into_iter()
            .next()
            .unwrap_or_else(|| Coordinated::refused(ErrorCode::INVALID_REQUEST, "no key"));
        let mut r = FindCoordinatorResponse::default()
            .with_error_code(a.code.code())
            .with_node_id(BrokerId(a.node))
            .with_host(sb(&a.host))
            .with_port(a.port);
        if version >= 1 {
            r = r.with_error_message(a.message.as_deref().map(sb));
        }
        r
    };
    Ok(resp)
}

/// Why a transactional id finds no coordinator in a multi-node cluster. Sent with
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients treat as fatal (no endless lookups).
pub(crate) const NO_TXN_IN_CLUSTER: &str =
    "transactions are not supported in a multi-node cluster yet \
     (their markers cannot reach partitions led by other brokers); use an idempotent producer \
     without transactional.id";

/// One FindCoordinator answer.
struct Coordinated {
    code: ErrorCode,
    message: Option<String>,
    node: i32,
    host: String,
    port: i32,
}

impl Coordinated {
    fn refused(code: ErrorCode, message: &str) -> Self {
        Coordinated {
            code,
            message: Some(message.to_string()),
            node: -1,
            host: String::new(),
            port: -1,
        }
    }
}

/// The coordinator of `group` (or of a transactional id on one node): this broker on one
/// node (at `advertised`, the address of the listener the request came in on); in a cluster
/// the leader of the group's `__consumer_offsets` partition, or COORDINATOR_NOT_AVAILABLE
/// while it has none.
fn coordinator_of(
    shard: &crate::shard::Shard,
    group: &str,
    advertised: &(String, u16),
) -> Coordinated {
    let Some(view) = shard.cluster_view() else {
        let (host, port) = advertised.clone();
        return Coordinated {
            code: ErrorCode::NONE,
            message: None,
            node: shard.config.node_id,
            host,
            port: port as i32,
        };
    };
    let partition = shard.groups.partition_of(group);
    let leader = view
        .partition(crate::group::OFFSETS_TOPIC, partition)
        .map(|p| p.leader);
    match leader.and_then(|l| view.endpoint(l).map(|e| (l, e))) {
        Some((node, (host, port))) => Coordinated {
            code: ErrorCode::NONE,
            message: None,
            node,
            host,
            port: port as i32,
        },
        None => Coordinated::refused(
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
            "the group's coordinator partition has no leader now",
        ),
    }
}

/// READ on the group: what JoinGroup, SyncGroup, Heartbeat and LeaveGroup need.
fn may_read(rq: &Request<'_>, group: &str) -> bool {
    rq.authorized(AclOperation::Read, ResourceType::Group, group)
}

/// Answers JoinGroup v0–v9 (parks until the rebalance completes).
pub async fn join(
    rq: &Request<'_>,
    req: JoinGroupRequest,
) -> Result<JoinGroupResponse, ProtocolError> {
    let (shard, version, client_id) = (rq.shard, rq.version, rq.client_id.to_string());
    let group = req.group_id.to_string();
    if !may_read(rq, &group) {
        return Ok(JoinGroupResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code())
            .with_protocol_name((version < 7).then(Default::default)));
    }
    let op = GroupOp::Join(req, version, client_id, "/127.0.0.1".to_string());
    let mut resp = match shard.group(&group, op).await {
        Some(GroupReply::Join(r)) => r,
        _ => JoinGroupResponse::default()
            .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code()),
    };
    if version < 7 {
        resp.protocol_type = None;
        resp.protocol_name.get_or_insert_with(Default::default);
    }
    if version < 5 {
        for m in &mut resp.members {
            m.group_instance_id = None;
        }
    }
    Ok(resp)
}

/// Answers SyncGroup v0–v5 (parks until the leader's assignment arrives).
pub async fn sync(
    rq: &Request<'_>,
    req: SyncGroupRequest,
) -> Result<SyncGroupResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let group = req.group_id.to_string();
    if !may_read(rq, &group) {
        return Ok(SyncGroupResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code()));
    }
    let mut resp = match shard.group(&group, GroupOp::Sync(req)).await {
        Some(GroupReply::Sync(r)) => r,
        _ => SyncGroupResponse::default()
            .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code()),
    };
    if version < 5 {
        resp.protocol_type = None;
        resp.protocol_name = None;
    }
    Ok(resp)
}

/// Answers Heartbeat v0–v4.
pub async fn heartbeat(
    rq: &Request<'_>,
    req: HeartbeatRequest,
) -> Result<HeartbeatResponse, ProtocolError> {
    let shard = rq.shard;
    let group = req.group_id.to_string();
    if !may_read(rq, &group) {
        return Ok(HeartbeatResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code()));
    }
    let code = match shard.group(&group, GroupOp::Heartbeat(req)).await {
        Some(GroupReply::Heartbeat(c)) => c,
        _ => ErrorCode::COORDINATOR_NOT_AVAILABLE,
    };
    let resp = HeartbeatResponse::default().with_error_code(code.code());
    Ok(resp)
}

/// Answers LeaveGroup v0–v5.
pub async fn leave(
    rq: &Request<'_>,
    req: LeaveGroupRequest,
) -> Result<LeaveGroupResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let group = req.group_id.to_string();
    if !may_read(rq, &group) {
        return Ok(LeaveGroupResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code()));
    }
    let resp = match shard.group(&group, GroupOp::Leave(req, version)).await {
        Some(GroupReply::Leave(r)) => r,
        _ => LeaveGroupResponse::default()
            .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code()),
    };
    Ok(resp)
}

/// Answers ListGroups v0–v5 from every shard's coordinator.
pub async fn list(
    rq: &Request<'_>,
    req: ListGroupsRequest,
) -> Result<ListGroupsResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let mut groups = Vec::new();
    for reply in shard.group_everywhere(|| GroupOp::List).await {
        if let GroupReply::List(list) = reply {
            groups.extend(list);
        }
    }
    groups.sort();
    // Kafka: every group with DESCRIBE on the cluster, else those with DESCRIBE on the group.
    if !rq.authorized_quiet(
        AclOperation::Describe,
        ResourceType::Cluster,
        crate::security::acl::CLUSTER_NAME,
    ) {
        groups.retain(|(id, _, _)| {
            rq.authorized_quiet(AclOperation::Describe, ResourceType::Group, id)
        });
    }
    let listed = groups
        .into_iter()
        .filter(|(_, _, state)| {
            version < 4
                || req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(state))
        })
        .filter(|(_, ptype, _)| {
            version < 5
                || req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case("classic") || t.as_str() == ptype)
        })
        .map(|(id, ptype, state)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(sb(&id)))
                .with_protocol_type(sb(&ptype));
            if version >= 4 {
                g = g.with_group_state(sb(&state));
            }
            if version >= 5 {
                g = g.with_group_type(sb("classic"));
            }
            g
        })
        .collect();
    let resp = ListGroupsResponse::default().with_groups(listed);
    Ok(resp)
}

/// Answers DescribeGroups v0–v5.
pub async fn describe(
    rq: &Request<'_>,
    req: DescribeGroupsRequest,
) -> Result<DescribeGroupsResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        let id = g.to_string();
        if !rq.authorized(AclOperation::Describe, ResourceType::Group, &id) {
            groups.push(
                kafka_protocol::messages::describe_groups_response::DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code())
                    .with_authorized_operations(i32::MIN),
            );
            continue;
        }
        let mut d = match shard.group(&id, GroupOp::Describe(id.clone())).await {
            Some(GroupReply::Describe(d)) => d,
            _ => kafka_protocol::messages::describe_groups_response::DescribedGroup::default()
                .with_group_id(g.clone())
                .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code()),
        };
        if version < 4 {
            for m in &mut d.members {
                m.group_instance_id = None;
            }
        }
        if version < 3 {
            d.authorized_operations = i32::MIN;
        }
        groups.push(d);
    }
    let resp = DescribeGroupsResponse::default().with_groups(groups);
    Ok(resp)
}

/// Answers DeleteGroups v0–v2 (only empty groups can be deleted).
pub async fn delete(
    rq: &Request<'_>,
    req: DeleteGroupsRequest,
) -> Result<DeleteGroupsResponse, ProtocolError> {
    let shard = rq.shard;
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let id = g.to_string();
        // Kafka: DELETE on the group.
        let code = if !rq.authorized(AclOperation::Delete, ResourceType::Group, &id) {
            ErrorCode::GROUP_AUTHORIZATION_FAILED.code()
        } else {
            match shard.group(&id, GroupOp::Delete(id.clone())).await {
                Some(GroupReply::Codes(c)) => c.first().copied().unwrap_or(0),
                _ => ErrorCode::COORDINATOR_NOT_AVAILABLE.code(),
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code),
        );
    }
    let resp = DeleteGroupsResponse::default().with_results(results);
    Ok(resp)
}
