//! One handler per Kafka API, and the one table that names them.
//!
//! [`kafka_apis!`] below is the only list of the APIs shardlog implements: each row gives the
//! API key, its supported version range and its handler. ApiVersions advertises exactly the rows
//! ([`SUPPORTED_APIS`]), the connection refuses a key or version outside them, and
//! [`dispatch`] routes by them, so adding an API is one new row and one handler.
//!
//! A handler is parse → apply → encode, as in mini-redis, with the parse and the encode done
//! here once for all: a plain row's handler is
//! `async fn(&Request<'_>, XRequest) -> Result<XResponse, ProtocolError>` and never sees bytes.
//! A `[raw]` row's handler gets the body bytes and builds its own frame; three APIs need that:
//! Produce (acks=0 has no response), Fetch (encoded around the record batches, zero-copy) and
//! ApiVersions (answers a too-new version in v0 format).

mod acls;
mod admin_topics;
mod api_versions;
mod client_quotas;
mod configs;
mod delete_records;
mod describe_topic_partitions;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod offsets;
mod produce;
mod sasl;
mod scram_credentials;
mod txn;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::response::Reply;
use crate::protocol::{decode_body, encode_response, ApiSpec, ProtocolError};
use crate::security::acl::{AclOperation, Authorizer, ResourceType};
use crate::security::credentials::CredentialStore;
use crate::security::dynamic::DynamicBrokerConfig;
use crate::security::quota::QuotaStore;
use crate::security::sasl::Authenticator;
use crate::security::{BrokerSecurity, ListenerSpec};
use crate::shard::{ProduceTurn, Shard};

/// What one connection knows of its security: the listener it came in on and, on a SASL
/// listener, its authentication state.
pub struct Session {
    /// The listener the client connected to.
    pub listener: Arc<ListenerSpec>,
    /// The SASL exchange; `None` on a listener without SASL.
    pub sasl: RefCell<Option<Authenticator>>,
    /// Why authentication failed (the connection is then closed after the answer).
    failure: RefCell<Option<String>>,
    /// The broker's SCRAM credentials (AlterUserScramCredentials changes them).
    pub credentials: Arc<CredentialStore>,
    /// The authorizer every request of the connection is checked by.
    pub authorizer: Arc<Authorizer>,
    /// The broker's client quotas (AlterClientQuotas changes them).
    pub quotas: Arc<QuotaStore>,
    /// The dynamic broker properties (AlterConfigs on the broker changes them).
    pub dynamic: Arc<DynamicBrokerConfig>,
    /// The client's address (ACLs name hosts by it).
    pub host: String,
    /// On an SSL listener, the user name mapped from the client certificate's subject
    /// (`ssl.principal.mapping.rules`); `None` without a certificate or on another protocol.
    pub ssl_user: Option<String>,
}

impl Session {
    /// A new connection's session on `listener`, not yet authenticated; `ssl_user` is the
    /// user name of its client certificate on an SSL listener.
    pub fn new(
        listener: Arc<ListenerSpec>,
        shared: &BrokerSecurity,
        host: String,
        ssl_user: Option<String>,
    ) -> Session {
        let sasl = listener.sasl.clone().map(Authenticator::new);
        Session {
            listener,
            sasl: RefCell::new(sasl),
            failure: RefCell::new(None),
            credentials: shared.credentials.clone(),
            authorizer: shared.authorizer.clone(),
            quotas: shared.quotas.clone(),
            dynamic: shared.dynamic.clone(),
            host,
            ssl_user,
        }
    }

    /// Kafka's principal of the connection: `User:<name>` after SASL, on an SSL listener
    /// `User:<mapped certificate subject>`, else `User:ANONYMOUS`.
    pub fn principal(&self) -> String {
        if let Some(user) = self.sasl.borrow().as_ref().and_then(|a| a.principal()) {
            return format!("User:{user}");
        }
        match &self.ssl_user {
            Some(user) => format!("User:{user}"),
            None => "User:ANONYMOUS".into(),
        }
    }

    /// The listener has SASL and the client has not authenticated yet, or is
    /// re-authenticating.
    pub fn needs_authentication(&self) -> bool {
        self.sasl
            .borrow()
            .as_ref()
            .is_some_and(|a| !a.is_authenticated())
    }

    /// The SASL session has ended without a re-authentication (`connections.max.reauth.ms`).
    pub fn session_expired(&self) -> bool {
        self.sasl
            .borrow()
            .as_ref()
            .is_some_and(|a| a.session_expired(std::time::Instant::now()))
    }

    /// The largest request frame read before authentication.
    pub fn max_receive_bytes(&self) -> usize {
        self.sasl
            .borrow()
            .as_ref()
            .map_or(usize::MAX, Authenticator::max_receive_bytes)
    }

    /// Records that authentication failed: nothing more is served on the connection.
    pub fn fail(&self, why: String) {
        *self.failure.borrow_mut() = Some(why);
    }

    /// Why authentication failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }
}

/// What a handler may know of the connection its request came on.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// Every earlier response of the connection has been written to the socket: a Fetch may
    /// then overdraw the fetch memory budget by its first batch (see `shard::fetch_memory`).
    pub drained: bool,
    /// How long the client is throttled for this request by its produce quota, in ms (the
    /// Produce response's `throttle_time_ms`; 0 without a quota or within it).
    pub throttle_time_ms: i32,
    /// The most bytes a Fetch may return under the client's `consumer_byte_rate`
    /// (`usize::MAX` without one).
    pub fetch_quota_bytes: usize,
}

/// One request as a handler sees it, beside its decoded body.
pub struct Request<'a> {
    /// The shard the connection lives on.
    pub shard: &'a Rc<Shard>,
    /// What the connection knows of its earlier responses.
    pub conn: ConnInfo,
    /// The connection's listener and authentication.
    pub session: &'a Session,
    /// The request's API version (within the row's range).
    pub version: i16,
    /// The request's correlation id, echoed in the response.
    pub correlation_id: i32,
    /// The client's `client.id` ("" when it sent none).
    pub client_id: &'a str,
    /// A Produce's turn in its connection's append order; taken by the Produce handler.
    pub produce_turn: Cell<Option<ProduceTurn>>,
}

impl Request<'_> {
    /// May this connection's principal perform `op` on the resource? A denial is logged (at
    /// INFO, rate-limited, as Kafka's authorizer logger does) naming principal, operation and
    /// resource.
    pub fn authorized(&self, op: AclOperation, rt: ResourceType, name: &str) -> bool {
        let s = self.session;
        if !s.authorizer.enabled {
            return true;
        }
        let principal = s.principal();
        let ok = s.authorizer.authorize(&principal, &s.host, op, rt, name);
        if !ok {
            let why = format!(
                "Principal = {principal} is Denied operation = {} from host = {} on resource = {rt:?}:{name}",
                op.name(),
                s.host
            );
            super::refusal::log_refusal(self.client_id, "(authorizer)", &why);
        }
        ok
    }

    /// As [`Request::authorized`], without logging a denial (for a check with a fallback).
    pub fn authorized_quiet(&self, op: AclOperation, rt: ResourceType, name: &str) -> bool {
        let s = self.session;
        !s.authorizer.enabled
            || s.authorizer
                .authorize(&s.principal(), &s.host, op, rt, name)
    }

    /// May this connection's principal perform `op` on some resource of type `rt`
    /// ([`Authorizer::authorize_any`]); a denial is logged as [`Request::authorized`] does.
    pub fn authorized_any(&self, op: AclOperation, rt: ResourceType) -> bool {
        let s = self.session;
        if !s.authorizer.enabled {
            return true;
        }
        let principal = s.principal();
        let ok = s.authorizer.authorize_any(&principal, &s.host, op, rt);
        if !ok {
            let why = format!(
                "Principal = {principal} is Denied operation = {} from host = {} on any resource of type {rt:?}",
                op.name(),
                s.host
            );
            super::refusal::log_refusal(self.client_id, "(authorizer)", &why);
        }
        ok
    }

    /// `authorized` for the cluster resource.
    pub fn authorized_cluster(&self, op: AclOperation) -> bool {
        self.authorized(
            op,
            ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME,
        )
    }
}

/// Declares every supported API once: `Key min..=max => handler`, or `raw` before the handler
/// (`handler [raw]`) for one that takes the body bytes and encodes its own frame. Generates [`SUPPORTED_APIS`]
/// and the router used by [`dispatch`].
macro_rules! kafka_apis {
    ($($key:ident $min:literal ..= $max:literal => $handler:path $([$raw:ident])?,)*) => {
        /// Every API shardlog implements with its version range: what ApiVersions advertises
        /// and the connection accepts.
        pub const SUPPORTED_APIS: &[ApiSpec] = &[
            $(ApiSpec { key: ApiKey::$key, min_version: $min, max_version: $max },)*
        ];

        /// Runs the handler of the request's API (the key is one of the table's: the
        /// connection checked it against [`SUPPORTED_APIS`]).
        async fn route(key: ApiKey, rq: &Request<'_>, body: Bytes) -> Reply {
            $(
                if key == ApiKey::$key {
                    return kafka_apis!(@call $($raw)? $key, $handler, rq, body);
                }
            )*
            Err(ProtocolError::UnsupportedApi(key as i16))
        }
    };
    (@call raw $key:ident, $handler:path, $rq:ident, $body:ident) => {
        $handler($rq, $body).await
    };
    (@call $key:ident, $handler:path, $rq:ident, $body:ident) => {
        serve(ApiKey::$key, $rq, $body, $handler).await
    };
}

kafka_apis! {
    Produce                 3..=12 => produce::handle [raw],
    Fetch                   4..=16 => fetch::handle [raw],
    ListOffsets             1..=8  => list_offsets::handle,
    Metadata                0..=12 => metadata::handle,
    ApiVersions             0..=4  => api_versions::handle [raw],
    CreateTopics            2..=7  => admin_topics::create_topics,
    DeleteTopics            1..=6  => admin_topics::delete_topics,
    DeleteRecords           0..=2  => delete_records::handle,
    DescribeConfigs         1..=4  => configs::describe,
    CreatePartitions        0..=3  => admin_topics::create_partitions,
    IncrementalAlterConfigs 0..=1  => configs::incremental_alter,
    AlterConfigs            0..=2  => configs::alter,
    DescribeCluster         0..=1  => metadata::describe_cluster,
    DescribeTopicPartitions 0..=0  => describe_topic_partitions::handle,
    FindCoordinator         0..=4  => groups::find_coordinator,
    JoinGroup               0..=9  => groups::join,
    SyncGroup               0..=5  => groups::sync,
    Heartbeat               0..=4  => groups::heartbeat,
    LeaveGroup              0..=5  => groups::leave,
    ListGroups              0..=5  => groups::list,
    DescribeGroups          0..=5  => groups::describe,
    DeleteGroups            0..=2  => groups::delete,
    OffsetCommit            2..=9  => offsets::commit,
    OffsetFetch             1..=9  => offsets::fetch,
    OffsetDelete            0..=0  => offsets::delete,
    OffsetForLeaderEpoch    2..=4  => offset_for_leader_epoch::handle,
    InitProducerId          0..=5  => init_producer_id::handle,
    AddPartitionsToTxn      0..=5  => txn::add_partitions,
    AddOffsetsToTxn         0..=4  => txn::add_offsets,
    TxnOffsetCommit         0..=5  => txn::txn_offset_commit,
    EndTxn                  0..=5  => txn::end_txn,
    WriteTxnMarkers         1..=1  => txn::write_txn_markers,
    DescribeProducers       0..=0  => txn::describe_producers,
    DescribeTransactions    0..=0  => txn::describe_transactions,
    ListTransactions        0..=2  => txn::list_transactions,
    SaslHandshake           0..=1  => sasl::handshake,
    SaslAuthenticate        0..=2  => sasl::authenticate,
    DescribeUserScramCredentials 0..=0 => scram_credentials::describe,
    AlterUserScramCredentials    0..=0 => scram_credentials::alter,
    DescribeAcls            1..=3  => acls::describe,
    CreateAcls              1..=3  => acls::create,
    DeleteAcls              1..=3  => acls::delete,
    DescribeClientQuotas    0..=1  => client_quotas::describe,
    AlterClientQuotas       0..=1  => client_quotas::alter,
}

/// Parse → apply → encode for a plain row: decodes the body as the handler's request type at
/// the request's version, runs it, and encodes its response as one frame.
async fn serve<'a, Req, Resp, Fut>(
    key: ApiKey,
    rq: &'a Request<'a>,
    mut body: Bytes,
    handler: impl FnOnce(&'a Request<'a>, Req) -> Fut,
) -> Reply
where
    Req: Decodable,
    Resp: Encodable,
    Fut: Future<Output = Result<Resp, ProtocolError>>,
{
    let req: Req = decode_body(&mut body, rq.version)?;
    let resp = handler(rq, req).await?;
    let frame = encode_response(key, rq.version, rq.correlation_id, &resp)?;
    Ok(Some(vec![frame].into()))
}

/// Routes one decoded request to the handler of its API, and records its count and latency
/// per API. A Produce appends in its connection's order (`turn`).
pub async fn dispatch(
    shard: &Rc<Shard>,
    conn: ConnInfo,
    session: &Session,
    header: RequestHeader,
    body: Bytes,
    turn: Option<ProduceTurn>,
) -> Reply {
    let started = std::time::Instant::now();
    let key = header.request_api_key;
    let client_id = header.client_id.as_deref().unwrap_or("");
    let rq = Request {
        shard,
        conn,
        session,
        version: header.request_api_version,
        correlation_id: header.correlation_id,
        client_id,
        produce_turn: Cell::new(turn),
    };
    let reply = match ApiKey::try_from(key) {
        Ok(api) => route(api, &rq, body).await,
        Err(_) => Err(ProtocolError::UnsupportedApi(key)),
    };
    shard
        .metrics
        .observe_request(key, started.elapsed(), reply.is_err());
    reply
}

/// Kafka's check of a request's `current_leader_epoch` against the partition's leader
/// epoch (`Partition.checkCurrentLeaderEpoch`): -1 checks nothing; an older epoch is
/// FENCED_LEADER_EPOCH (the client's metadata is stale), a newer one UNKNOWN_LEADER_EPOCH (this
/// broker's is). On one node the leader epoch is always 0.
pub(super) fn leader_epoch_error(
    requested: i32,
    current: i32,
) -> Option<crate::error_code::ErrorCode> {
    use crate::error_code::ErrorCode;
    match requested {
        -1 => None,
        r if r < current => Some(ErrorCode::FENCED_LEADER_EPOCH),
        r if r > current => Some(ErrorCode::UNKNOWN_LEADER_EPOCH),
        _ => None,
    }
}

/// A protocol string from a Rust string.
pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::SUPPORTED_APIS;
    use std::collections::HashSet;

    #[test]
    fn leader_epochs_are_checked_as_kafka_does() {
        use crate::error_code::ErrorCode;
        assert_eq!(super::leader_epoch_error(-1, 4), None);
        assert_eq!(super::leader_epoch_error(4, 4), None);
        assert_eq!(
            super::leader_epoch_error(3, 4),
            Some(ErrorCode::FENCED_LEADER_EPOCH)
        );
        assert_eq!(
            super::leader_epoch_error(5, 4),
            Some(ErrorCode::UNKNOWN_LEADER_EPOCH)
        );
    }

    #[test]
    fn each_api_is_listed_once_with_a_sane_range() {
        let keys: HashSet<i16> = SUPPORTED_APIS.iter().map(|a| a.key as i16).collect();
        assert_eq!(keys.len(), SUPPORTED_APIS.len(), "an API listed twice");
        for api in SUPPORTED_APIS {
            assert!(
                0 <= api.min_version && api.min_version <= api.max_version,
                "{api:?}"
            );
        }
    }
}
