//! DescribeClientQuotas and AlterClientQuotas (KIP-546): client quotas managed with Kafka's
//! tools (`kafka-configs --alter --add-config producer_byte_rate=1048576 --entity-type users
//! --entity-name alice`, `--entity-type clients`, `--entity-default`). What the quotas mean
//! and how they are enforced lives in `security::quota`; this file checks and answers.
//!
//! As Kafka: DescribeClientQuotas needs DESCRIBE_CONFIGS on the cluster, AlterClientQuotas
//! ALTER_CONFIGS (else CLUSTER_AUTHORIZATION_FAILED). Entities are `user` and `client-id`,
//! alone or together (`ip` quotas are refused with INVALID_REQUEST: not enforced here); an
//! entity type twice, an unknown key or a value that is not positive is INVALID_REQUEST for
//! that entity, whose changes are then not applied. Changes are durable before the answer.

use kafka_protocol::messages::describe_client_quotas_response::{
    EntityData as DescribedEntity, EntryData as DescribedEntry, ValueData,
};
use kafka_protocol::messages::{
    alter_client_quotas_response, AlterClientQuotasRequest, AlterClientQuotasResponse,
    DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};

use super::{sb, Request};
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::AclOperation;
use crate::security::quota::{
    check_op, EntityName, QuotaEntity, QuotaOp, ENTITY_CLIENT_ID, ENTITY_USER,
};

/// DescribeClientQuotas' match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

/// The part of `entity` of the type named `entity_type`: `None` when it has none.
fn part<'a>(entity: &'a QuotaEntity, entity_type: &str) -> Option<&'a EntityName> {
    match entity_type {
        ENTITY_USER => entity.user.as_ref(),
        ENTITY_CLIENT_ID => entity.client_id.as_ref(),
        _ => None,
    }
}

/// Answers DescribeClientQuotas: the entities the filter's components select (`strict`:
/// entities with no other type).
pub async fn describe(
    rq: &Request<'_>,
    req: DescribeClientQuotasRequest,
) -> Result<DescribeClientQuotasResponse, ProtocolError> {
    let refuse = |code: ErrorCode, message: &str| {
        Ok(DescribeClientQuotasResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(sb(message)))
            .with_entries(None))
    };
    if !rq.authorized_cluster(AclOperation::DescribeConfigs) {
        return refuse(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        );
    }
    let mut types = Vec::new();
    for c in &req.components {
        let t = c.entity_type.as_str();
        if types.contains(&t) {
            return refuse(
                ErrorCode::INVALID_REQUEST,
                &format!("Duplicate {t} filter component entity type"),
            );
        }
        types.push(t);
        if c.match_type == MATCH_EXACT && c._match.is_none() {
            return refuse(
                ErrorCode::INVALID_REQUEST,
                &format!("an exact match of {t} needs a name"),
            );
        }
        if !(MATCH_EXACT..=MATCH_ANY).contains(&c.match_type) {
            return refuse(
                ErrorCode::INVALID_REQUEST,
                &format!("unknown match type {}", c.match_type),
            );
        }
    }
    let selected = |e: &QuotaEntity| {
        let components_match =
            req.components
                .iter()
                .all(|c| match (part(e, c.entity_type.as_str()), c.match_type) {
                    (None, _) => false,
                    (Some(_), MATCH_ANY) => true,
                    (Some(name), MATCH_DEFAULT) => name.is_none(),
                    (Some(name), _) => name.as_deref() == c._match.as_deref(),
                });
        let only_those = !req.strict
            || [ENTITY_USER, ENTITY_CLIENT_ID]
                .iter()
                .all(|t| part(e, t).is_none() || types.contains(t));
        components_match && only_those
    };
    let entries = rq
        .session
        .quotas
        .entries()
        .into_iter()
        .filter(|(e, _)| selected(e))
        .map(|(e, values)| {
            let mut entity = Vec::new();
            for (t, name) in [(ENTITY_USER, &e.user), (ENTITY_CLIENT_ID, &e.client_id)] {
                if let Some(name) = name {
                    entity.push(
                        DescribedEntity::default()
                            .with_entity_type(sb(t))
                            .with_entity_name(name.as_deref().map(sb)),
                    );
                }
            }
            let values = values
                .iter()
                .map(|(k, v)| ValueData::default().with_key(sb(k)).with_value(*v))
                .collect();
            DescribedEntry::default()
                .with_entity(entity)
                .with_values(values)
        })
        .collect();
    Ok(DescribeClientQuotasResponse::default().with_entries(Some(entries)))
}

/// One entry of AlterClientQuotas, checked: the entity and its changes.
fn plan(
    entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
) -> Result<(QuotaEntity, Vec<QuotaOp>), String> {
    let mut entity = QuotaEntity::default();
    for part in &entry.entity {
        let name = part.entity_name.as_ref().map(|n| n.to_string());
        let slot = match part.entity_type.as_str() {
            ENTITY_USER => &mut entity.user,
            ENTITY_CLIENT_ID => &mut entity.client_id,
            "ip" => return Err("ip quotas are not supported by shardlog".into()),
            other => return Err(format!("Unknown entity type {other}")),
        };
        if slot.is_some() {
            return Err(format!(
                "Duplicate {} entity type",
                part.entity_type.as_str()
            ));
        }
        *slot = Some(name);
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("Invalid empty client quota entity".into());
    }
    let mut ops = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let key = op.key.to_string();
        let value = (!op.remove).then_some(op.value);
        check_op(&key, value)?;
        if ops.iter().any(|(k, _): &QuotaOp| *k == key) {
            return Err(format!("Duplicate quota key {key}"));
        }
        ops.push((key, value));
    }
    Ok((entity, ops))
}

/// Answers AlterClientQuotas: each entity's changes apply if all of them are acceptable; the
/// quotas are durable before the answer.
pub async fn alter(
    rq: &Request<'_>,
    req: AlterClientQuotasRequest,
) -> Result<AlterClientQuotasResponse, ProtocolError> {
    let allowed = rq.authorized_cluster(AclOperation::AlterConfigs);
    let store = &rq.session.quotas;
    let mut outcomes = Vec::with_capacity(req.entries.len());
    let mut changed = Vec::new();
    for (i, entry) in req.entries.iter().enumerate() {
        let outcome = if !allowed {
            Err((
                ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
                "Cluster authorization failed.".to_string(),
            ))
        } else {
            plan(entry).map_err(|why| (ErrorCode::INVALID_REQUEST, why))
        };
        match outcome {
            Ok((entity, ops)) => {
                if !req.validate_only {
                    store.alter(&entity, &ops);
                    changed.push(i);
                }
                outcomes.push((ErrorCode::NONE, None));
            }
            Err((code, why)) => {
                super::super::refusal::log_refusal(rq.client_id, "AlterClientQuotas", &why);
                outcomes.push((code, Some(why)));
            }
        }
    }
    if !changed.is_empty() {
        if let Err(e) = store.save().await {
            tracing::warn!(error = %e, "client quotas not saved");
            let why = format!("the quota file could not be written: {e}");
            for i in &changed {
                outcomes[*i] = (ErrorCode::UNKNOWN_SERVER_ERROR, Some(why.clone()));
            }
        } else {
            tracing::info!(
                client_id = rq.client_id,
                entities = changed.len(),
                "client quotas changed"
            );
        }
    }
    let entries = req
        .entries
        .iter()
        .zip(outcomes)
        .map(|(entry, (code, why))| {
            let entity = entry
                .entity
                .iter()
                .map(|p| {
                    alter_client_quotas_response::EntityData::default()
                        .with_entity_type(p.entity_type.clone())
                        .with_entity_name(p.entity_name.clone())
                })
                .collect();
            alter_client_quotas_response::EntryData::default()
                .with_error_code(code.code())
                .with_error_message(why.as_deref().map(sb))
                .with_entity(entity)
        })
        .collect();
    Ok(AlterClientQuotasResponse::default().with_entries(entries))
}
