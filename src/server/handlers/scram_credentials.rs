//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM users managed
//! with Kafka's tools (`kafka-configs --alter --add-config 'SCRAM-SHA-256=[password=…]'
//! --entity-type users --entity-name alice`).
//!
//! The client sends the salt and the salted password (PBKDF2 is done client-side); the broker
//! keeps StoredKey and ServerKey only, in the one credential store every shard reads
//! (`security::credentials`), and answers after the store is durable. Errors per user, as
//! Kafka: an empty name or an iteration count outside 4096..=16384 is UNACCEPTABLE_CREDENTIAL,
//! an unknown mechanism UNSUPPORTED_SASL_MECHANISM, the same user and mechanism twice
//! DUPLICATE_RESOURCE, deleting or describing a credential that does not exist
//! RESOURCE_NOT_FOUND. A user's operations apply only if all of them are acceptable.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::sb;
use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::AclOperation;
use crate::security::scram::{check_iterations, ScramMechanism};

/// Answers DescribeUserScramCredentials: every user (a null or empty list) or the named ones.
pub async fn describe(
    rq: &Request<'_>,
    req: DescribeUserScramCredentialsRequest,
) -> Result<DescribeUserScramCredentialsResponse, ProtocolError> {
    if !rq.authorized_cluster(AclOperation::Describe) {
        return Ok(DescribeUserScramCredentialsResponse::default()
            .with_error_code(ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code())
            .with_error_message(Some(sb("Cluster authorization failed."))));
    }
    let store = &rq.session.credentials;
    let all = store.describe();
    let info = |creds: &Vec<(ScramMechanism, i32)>| -> Vec<CredentialInfo> {
        creds
            .iter()
            .map(|(m, i)| {
                CredentialInfo::default()
                    .with_mechanism(m.kafka_type())
                    .with_iterations(*i)
            })
            .collect()
    };
    let results = match req.users.as_ref().filter(|u| !u.is_empty()) {
        None => all
            .iter()
            .map(|(user, creds)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(sb(user))
                    .with_credential_infos(info(creds))
            })
            .collect(),
        Some(users) => {
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for u in users {
                *seen.entry(u.name.as_str()).or_default() += 1;
            }
            let mut out = Vec::new();
            for (name, count) in seen {
                let r = DescribeUserScramCredentialsResult::default().with_user(sb(name));
                out.push(if count > 1 {
                    r.with_error_code(ErrorCode::DUPLICATE_RESOURCE.code())
                        .with_error_message(Some(sb(&format!(
                            "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                        ))))
                } else {
                    match all.get(name) {
                        Some(creds) => r.with_credential_infos(info(creds)),
                        None => r
                            .with_error_code(ErrorCode::RESOURCE_NOT_FOUND.code())
                            .with_error_message(Some(sb(&format!(
                                "Attempt to describe a user credential that does not exist: {name}"
                            )))),
                    }
                });
            }
            out
        }
    };
    Ok(DescribeUserScramCredentialsResponse::default().with_results(results))
}

/// One requested change of a user's credentials.
enum Change {
    Delete(ScramMechanism),
    Upsert(
        ScramMechanism,
        crate::security::credentials::ScramCredential,
    ),
}

/// Answers AlterUserScramCredentials: applies each user's deletions and upsertions, then makes
/// the store durable before answering.
pub async fn alter(
    rq: &Request<'_>,
    req: AlterUserScramCredentialsRequest,
) -> Result<AlterUserScramCredentialsResponse, ProtocolError> {
    let store = &rq.session.credentials;
    if !rq.authorized_cluster(AclOperation::Alter) {
        let mut users: Vec<&str> = req.deletions.iter().map(|d| d.name.as_str()).collect();
        users.extend(req.upsertions.iter().map(|u| u.name.as_str()));
        users.sort_unstable();
        users.dedup();
        let results = users
            .into_iter()
            .map(|u| {
                AlterUserScramCredentialsResult::default()
                    .with_user(sb(u))
                    .with_error_code(ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code())
                    .with_error_message(Some(sb("Cluster authorization failed.")))
            })
            .collect();
        return Ok(AlterUserScramCredentialsResponse::default().with_results(results));
    }
    // Per user, in the order first named: its changes, or the first reason to refuse them.
    let mut order: Vec<String> = Vec::new();
    let mut per_user: BTreeMap<String, Result<Vec<Change>, (ErrorCode, String)>> = BTreeMap::new();
    let mut note = |user: &str, change: Result<Change, (ErrorCode, String)>| {
        if !per_user.contains_key(user) {
            order.push(user.to_string());
        }
        let entry = per_user.entry(user.to_string()).or_insert(Ok(Vec::new()));
        let Ok(changes) = entry else { return };
        let change = change.and_then(|c| {
            let m = match &c {
                Change::Delete(m) | Change::Upsert(m, _) => *m,
            };
            let twice = changes.iter().any(|o| match o {
                Change::Delete(x) | Change::Upsert(x, _) => *x == m,
            });
            if twice {
                Err((
                    ErrorCode::DUPLICATE_RESOURCE,
                    format!(
                        "A user credential cannot be altered twice in the same request: {user}"
                    ),
                ))
            } else {
                Ok(c)
            }
        });
        match change {
            Ok(c) => changes.push(c),
            Err(e) => *entry = Err(e),
        }
    };
    let mechanism = |t: i8| {
        ScramMechanism::from_kafka_type(t).ok_or_else(|| {
            (
                ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                format!("Unknown SCRAM mechanism type {t}"),
            )
        })
    };
    let empty_name = || {
        (
            ErrorCode::UNACCEPTABLE_CREDENTIAL,
            "Username must not be empty".to_string(),
        )
    };
    for d in &req.deletions {
        let name = d.name.as_str();
        let change = if name.is_empty() {
            Err(empty_name())
        } else {
            mechanism(d.mechanism).and_then(|m| {
                if store.get(name, m).is_some() {
                    Ok(Change::Delete(m))
                } else {
                    Err((
                        ErrorCode::RESOURCE_NOT_FOUND,
                        format!("Attempt to delete a user credential that does not exist: {name}"),
                    ))
                }
            })
        };
        note(name, change);
    }
    for u in &req.upsertions {
        let name = u.name.as_str();
        let change = if name.is_empty() {
            Err(empty_name())
        } else {
            mechanism(u.mechanism).and_then(|m| {
                check_iterations(u.iterations)
                    .map_err(|why| (ErrorCode::UNACCEPTABLE_CREDENTIAL, why))?;
                if u.salt.is_empty() || u.salted_password.is_empty() {
                    return Err((
                        ErrorCode::UNACCEPTABLE_CREDENTIAL,
                        "Salt and salted password must not be empty".to_string(),
                    ));
                }
                Ok(Change::Upsert(
                    m,
                    m.credential(&u.salted_password, &u.salt, u.iterations),
                ))
            })
        };
        note(name, change);
    }
    let mut results = Vec::new();
    let mut changed = Vec::new();
    for user in order {
        let r = AlterUserScramCredentialsResult::default().with_user(sb(&user));
        match per_user.remove(&user) {
            Some(Ok(changes)) => {
                for c in changes {
                    match c {
                        Change::Delete(m) => {
                            store.remove(&user, m);
                        }
                        Change::Upsert(m, cred) => store.put(&user, m, cred),
                    }
                }
                changed.push(results.len());
                results.push(r);
            }
            Some(Err((code, why))) => {
                super::super::refusal::log_refusal(rq.client_id, "AlterUserScramCredentials", &why);
                results.push(
                    r.with_error_code(code.code())
                        .with_error_message(Some(sb(&why))),
                );
            }
            None => results.push(r),
        }
    }
    if !changed.is_empty() {
        if let Err(e) = store.save().await {
            tracing::warn!(error = %e, "SCRAM credentials not saved");
            let why = format!("the credential store could not be written: {e}");
            for i in changed {
                let r = std::mem::take(&mut results[i]);
                results[i] = r
                    .with_error_code(ErrorCode::UNKNOWN_SERVER_ERROR.code())
                    .with_error_message(Some(sb(&why)));
            }
        } else {
            tracing::info!(
                client_id = rq.client_id,
                users = changed.len(),
                "SCRAM credentials changed"
            );
        }
    }
    Ok(AlterUserScramCredentialsResponse::default().with_results(results))
}
