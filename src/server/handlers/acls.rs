//! CreateAcls, DescribeAcls and DeleteAcls (`kafka-acls --add/--list/--remove`): the ACLs of
//! the broker's authorizer (`security::acl`), changed live and kept durably before the answer.
//!
//! As Kafka: without `authorizer.class.name` all three answer SECURITY_DISABLED; creating or
//! deleting needs ALTER on the cluster and describing DESCRIBE on it (else
//! CLUSTER_AUTHORIZATION_FAILED); a binding with an unknown or ANY type, pattern, operation
//! or permission, a principal that is not `Type:name`, an empty resource name or a cluster
//! resource not named `kafka-cluster` is INVALID_REQUEST.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::sb;
use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{
    AclBinding, AclFilter, AclOperation, PatternType, ResourceType, CLUSTER_NAME,
};

/// Wire values of the ANY / MATCH filters and the permissions.
const ANY: i8 = 1;
const MATCH: i8 = 2;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

fn refusal(code: ErrorCode, why: &str) -> (ErrorCode, String) {
    (code, why.to_string())
}

/// Why a request cannot be served at all: no authorizer, or not allowed `op` on the cluster.
fn gate(rq: &Request<'_>, op: AclOperation) -> Option<(ErrorCode, String)> {
    if !rq.session.authorizer.enabled {
        return Some(refusal(
            ErrorCode::SECURITY_DISABLED,
            "No Authorizer is configured (authorizer.class.name).",
        ));
    }
    if !rq.authorized_cluster(op) {
        return Some(refusal(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        ));
    }
    None
}

fn invalid(why: impl Into<String>) -> (ErrorCode, String) {
    (ErrorCode::INVALID_REQUEST, why.into())
}

#[allow(clippy::too_many_arguments)]
fn new_binding(
    resource_type: i8,
    name: &str,
    pattern: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, (ErrorCode, String)> {
    let rt =
        ResourceType::from_code(resource_type).ok_or_else(|| invalid("Invalid resourceType"))?;
    let pattern_type =
        PatternType::from_code(pattern).ok_or_else(|| invalid("Invalid patternType"))?;
    let operation =
        AclOperation::from_code(operation).ok_or_else(|| invalid("Invalid operation"))?;
    let allow = match permission {
        ALLOW => true,
        DENY => false,
        _ => return Err(invalid("Invalid permissionType")),
    };
    if name.is_empty() {
        return Err(invalid("Resource name should not be empty"));
    }
    if rt == ResourceType::Cluster && name != CLUSTER_NAME {
        return Err(invalid(format!(
            "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        )));
    }
    if principal
        .split_once(':')
        .is_none_or(|(t, n)| t.is_empty() || n.is_empty())
    {
        return Err(invalid(format!(
            "Could not parse principal from `{principal}`"
        )));
    }
    if host.is_empty() {
        return Err(invalid("Invalid host: empty"));
    }
    Ok(AclBinding {
        resource_type: rt,
        resource_name: name.to_string(),
        pattern_type,
        principal: principal.to_string(),
        host: host.to_string(),
        operation,
        allow,
    })
}

#[allow(clippy::too_many_arguments)]
fn new_filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, (ErrorCode, String)> {
    let resource_type = match resource_type {
        ANY => None,
        c => {
            Some(ResourceType::from_code(c).ok_or_else(|| invalid("Invalid resourceType filter"))?)
        }
    };
    let pattern = match pattern {
        ANY => None,
        MATCH => Some(None),
        c => Some(Some(
            PatternType::from_code(c).ok_or_else(|| invalid("Invalid patternType filter"))?,
        )),
    };
    let operation = match operation {
        ANY => None,
        c => Some(AclOperation::from_code(c).ok_or_else(|| invalid("Invalid operation filter"))?),
    };
    let allow = match permission {
        ANY => None,
        ALLOW => Some(true),
        DENY => Some(false),
        _ => return Err(invalid("Invalid permissionType filter")),
    };
    Ok(AclFilter {
        resource_type,
        resource_name: name.map(|n| n.to_string()),
        pattern,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation,
        allow,
    })
}

fn permission_code(allow: bool) -> i8 {
    if allow {
        ALLOW
    } else {
        DENY
    }
}

/// Answers CreateAcls: one result per creation, in order.
pub async fn create(
    rq: &Request<'_>,
    req: CreateAclsRequest,
) -> Result<CreateAclsResponse, ProtocolError> {
    let refused = gate(rq, AclOperation::Alter);
    let mut results = Vec::with_capacity(req.creations.len());
    let mut added = Vec::new();
    for c in &req.creations {
        let outcome = match &refused {
            Some(r) => Err(r.clone()),
            None => new_binding(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            ),
        };
        results.push(match outcome {
            Ok(b) => {
                added.push(b);
                AclCreationResult::default()
            }
            Err((code, why)) => {
                super::super::refusal::log_refusal(rq.client_id, "CreateAcls", &why);
                AclCreationResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(sb(&why)))
            }
        });
    }
    if !added.is_empty() {
        let n = added.len();
        rq.session.authorizer.add(added);
        if let Err(e) = rq.session.authorizer.save().await {
            tracing::warn!(error = %e, "ACLs not saved");
            let why = format!("the ACL file could not be written: {e}");
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = ErrorCode::UNKNOWN_SERVER_ERROR.code();
                r.error_message = Some(sb(&why));
            }
        } else {
            tracing::info!(client_id = rq.client_id, acls = n, "ACLs created");
        }
    }
    Ok(CreateAclsResponse::default().with_results(results))
}

fn descriptions(bindings: Vec<AclBinding>) -> Vec<DescribeAclsResource> {
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in bindings {
        by_resource
            .entry((
                b.resource_type.code(),
                b.resource_name.clone(),
                b.pattern_type.code(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(sb(&b.principal))
                    .with_host(sb(&b.host))
                    .with_operation(b.operation.code())
                    .with_permission_type(permission_code(b.allow)),
            );
    }
    by_resource
        .into_iter()
        .map(|((rt, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt)
                .with_resource_name(sb(&name))
                .with_pattern_type(pattern)
                .with_acls(acls)
        })
        .collect()
}

/// Answers DescribeAcls: the bindings the filter selects, grouped by resource pattern.
pub async fn describe(
    rq: &Request<'_>,
    req: DescribeAclsRequest,
) -> Result<DescribeAclsResponse, ProtocolError> {
    let filter = gate(rq, AclOperation::Describe).map_or_else(
        || {
            new_filter(
                req.resource_type_filter,
                req.resource_name_filter.as_ref(),
                req.pattern_type_filter,
                req.principal_filter.as_ref(),
                req.host_filter.as_ref(),
                req.operation,
                req.permission_type,
            )
        },
        Err,
    );
    match filter {
        Ok(f) => Ok(DescribeAclsResponse::default()
            .with_resources(descriptions(rq.session.authorizer.describe(&f)))),
        Err((code, why)) => Ok(DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(sb(&why)))),
    }
}

/// Answers DeleteAcls: per filter, the bindings it removed.
pub async fn delete(
    rq: &Request<'_>,
    req: DeleteAclsRequest,
) -> Result<DeleteAclsResponse, ProtocolError> {
    let refused = gate(rq, AclOperation::Alter);
    let mut results = Vec::with_capacity(req.filters.len());
    let mut removed = 0usize;
    for f in &req.filters {
        let filter = match &refused {
            Some(r) => Err(r.clone()),
            None => new_filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            ),
        };
        results.push(match filter {
            Ok(filter) => {
                let gone = rq.session.authorizer.remove(&filter);
                removed += gone.len();
                DeleteAclsFilterResult::default().with_matching_acls(
                    gone.into_iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.resource_type.code())
                                .with_resource_name(sb(&b.resource_name))
                                .with_pattern_type(b.pattern_type.code())
                                .with_principal(sb(&b.principal))
                                .with_host(sb(&b.host))
                                .with_operation(b.operation.code())
                                .with_permission_type(permission_code(b.allow))
                        })
                        .collect(),
                )
            }
            Err((code, why)) => {
                super::super::refusal::log_refusal(rq.client_id, "DeleteAcls", &why);
                DeleteAclsFilterResult::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(sb(&why)))
            }
        });
    }
    if removed > 0 {
        if let Err(e) = rq.session.authorizer.save().await {
            tracing::warn!(error = %e, "ACLs not saved");
            let why = format!("the ACL file could not be written: {e}");
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = ErrorCode::UNKNOWN_SERVER_ERROR.code();
                r.error_message = Some(sb(&why));
            }
        } else {
            tracing::info!(client_id = rq.client_id, acls = removed, "ACLs deleted");
        }
    }
    Ok(DeleteAclsResponse::default().with_filter_results(results))
}
