//! Controller-to-controller RPCs over TCP on the CONTROLLER listener.
//!
//! One request per frame, `u32` big-endian length then JSON of [`RpcFrame`]; the answer is one
//! frame of [`RpcReply`]. Each frame names the sender's cluster id: a frame of another cluster
//! is answered with [`RpcReply::InconsistentClusterId`] and nothing else (Kafka's
//! `INCONSISTENT_CLUSTER_ID`), so a node started on another cluster's data dir cannot vote or
//! replicate here. Connections are kept per peer and re-made after any error; every call is
//! bounded by openraft's timeout for it. This runs on the quorum thread only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::control::ControlError;
use super::image::{ClusterImage, Endpoint, NodeId};
use super::store::{Proposal, ProposalReply, RaftNodeId, TypeConfig};

/// Largest frame read from a peer; a larger length prefix closes the connection.
pub const QUORUM_FRAME_BYTES_MAX: u32 = 64 << 20;

/// Connections the quorum listener serves at once (peers and brokers); more wait in the
/// kernel's accept queue.
pub const QUORUM_CONNECTIONS_MAX: usize = 1024;

/// Connecting to a peer gives up after this long.
const CONNECT_TIMEOUT_MS: u64 = 1000;

/// A request from one quorum member (or a broker) to another.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcFrame {
    /// The sender's cluster id.
    pub cluster_id: String,
    /// The request.
    pub body: RpcBody,
}

/// The requests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RpcBody {
    /// Raft replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<RaftNodeId>),
    /// Raft snapshot transfer (one chunk).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Records for the leader to propose (a follower forwarding a write).
    Propose(Proposal),
    /// A broker registers with the active controller (Kafka's BrokerRegistration).
    BrokerRegistration {
        /// Its node id.
        id: NodeId,
        /// A random id of this process start.
        incarnation: [u8; 16],
        /// Where clients reach it.
        endpoints: Vec<Endpoint>,
        /// `broker.rack`.
        rack: Option<String>,
    },
    /// A registered broker's heartbeat (Kafka's BrokerHeartbeat).
    BrokerHeartbeat {
        /// Its node id.
        id: NodeId,
        /// The incarnation that registered.
        incarnation: [u8; 16],
        /// The offset of the newest image it holds.
        applied_offset: u64,
        /// It is shutting down: move its leaderships away (controlled shutdown).
        want_shutdown: bool,
    },
    /// Create topics with placement by the active controller.
    CreateTopics(Vec<super::control::TopicRequest>),
    /// Delete topics by name.
    DeleteTopics(Vec<String>),
    /// Grow topics.
    CreatePartitions(Vec<PartitionGrowth>),
    /// Replace topics' config overrides: (name, every override it is to have).
    SetTopicConfigs(Vec<(String, std::collections::BTreeMap<String, String>)>),
    /// A broker follows the metadata: answered with the image once it is newer than
    /// `after`, or with none after `wait_ms` (a long poll, as Kafka's brokers fetch the
    /// metadata log).
    FetchImage {
        /// The offset of the image the broker holds.
        after: u64,
        /// Longest wait for a newer one.
        wait_ms: u64,
    },
    /// Hand broker `broker_id` the next block of producer ids.
    AllocateProducerIds {
        /// The broker asking.
        broker_id: NodeId,
    },
    /// A partition leader asks for a new ISR (Kafka's AlterPartition).
    AlterPartition(super::control::AlterPartitionRequest),
}

/// One topic of a CreatePartitions: (name, new partition count, the replica lists of the
/// added partitions when the request assigns them).
pub type PartitionGrowth = (String, i32, Option<Vec<Vec<NodeId>>>);

/// The active controller's answers to brokers.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControllerReply {
    /// Registered; Kafka's broker epoch (the registration's log index).
    Registered {
        /// The broker epoch.
        epoch: u64,
    },
    /// Heartbeat taken.
    Heartbeat {
        /// The broker is fenced (not yet caught up, or its session ran out).
        fenced: bool,
        /// A controlled shutdown is complete: the broker leads nothing and may stop.
        shutdown_ready: bool,
        /// The current image, when the broker's is older.
        image: Option<Box<ClusterImage>>,
    },
    /// One result per item (topic), in request order, and the log offset at which the
    /// changes were applied: an image at this offset or later shows them.
    Applied {
        /// Per item.
        results: Vec<Result<(), ControlError>>,
        /// The offset of the last change (0 when nothing changed).
        offset: u64,
    },
    /// The image, when a newer one than asked for came within the wait.
    Image(Option<Box<ClusterImage>>),
    /// A block of producer ids: `first` up to, not including, `end`, for this broker only.
    ProducerIds {
        /// First id of the block.
        first: i64,
        /// One past the last id of the block.
        end: i64,
    },
}

/// Why a proposal was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// This member is not the leader; the leader, if known.
    #[error("not the active controller (leader: {leader:?})")]
    NotLeader {
        /// The current leader's node id, if known.
        leader: Option<RaftNodeId>,
    },
    /// No leader could be reached in time.
    #[error("no active controller reachable: {0}")]
    Unavailable(String),
    /// The quorum stopped or failed.
    #[error("quorum failed: {0}")]
    Failed(String),
}

/// Why the active controller did not answer a broker request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ControllerError {
    /// Not the active controller (the leader, if known): ask it instead.
    #[error("not the active controller (leader: {leader:?})")]
    NotLeader {
        /// The active controller's node id, if known.
        leader: Option<RaftNodeId>,
    },
    /// Refused, with Kafka's error code.
    #[error(transparent)]
    Refused(#[from] ControlError),
    /// The request could not be carried out now (quorum unavailable); retry.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

/// The answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    /// To [`RpcBody::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// To [`RpcBody::Vote`].
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// To [`RpcBody::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    ),
    /// To [`RpcBody::Propose`].
    Propose(Result<ProposalReply, ProposeError>),
    /// To the broker requests ([`RpcBody::BrokerRegistration`], ...).
    Controller(Result<ControllerReply, ControllerError>),
    /// The request came from another cluster; `expected` is this one's id.
    InconsistentClusterId {
        /// This cluster's id.
        expected: String,
    },
}

async fn write_frame<T: Serialize>(s: &mut TcpStream, v: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= QUORUM_FRAME_BYTES_MAX)
        .ok_or_else(|| std::io::Error::other("quorum frame too large"))?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    s.write_all(&buf).await
}

async fn read_frame<T: for<'a> Deserialize<'a>>(s: &mut TcpStream) -> std::io::Result<T> {
    let len = s.read_u32().await?;
    if len > QUORUM_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("quorum frame of {len} bytes is over the limit"),
        ));
    }
    let mut body = vec![0; len as usize];
    s.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// One connection to a peer, re-made after any error.
pub struct PeerClient {
    cluster_id: Arc<str>,
    addr: String,
    conn: Option<TcpStream>,
}

impl PeerClient {
    /// A client for the peer at `addr` (`host:port`); connects on first use.
    pub fn new(cluster_id: Arc<str>, addr: String) -> Self {
        PeerClient {
            cluster_id,
            addr,
            conn: None,
        }
    }

    /// Sends one request and reads its answer within `ttl`.
    pub async fn call(&mut self, body: RpcBody, ttl: Duration) -> std::io::Result<RpcReply> {
        let frame = RpcFrame {
            cluster_id: self.cluster_id.to_string(),
            body,
        };
        let result = tokio::time::timeout(ttl, self.call_inner(&frame)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from {} within {ttl:?}", self.addr),
            )),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn call_inner(&mut self, frame: &RpcFrame) -> std::io::Result<RpcReply> {
        if self.conn.is_none() {
            let connect = TcpStream::connect(self.addr.as_str());
            let s = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            s.set_nodelay(true)?;
            self.conn = Some(s);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(std::io::Error::other("not connected"));
        };
        write_frame(conn, frame).await?;
        let reply: RpcReply = read_frame(conn).await?;
        if let RpcReply::InconsistentClusterId { expected } = &reply {
            tracing::error!(peer = %self.addr, ours = %self.cluster_id, theirs = %expected, "INCONSISTENT_CLUSTER_ID: the peer belongs to another cluster");
        }
        Ok(reply)
    }
}

/// openraft's view of the peers: one [`PeerClient`] per target.
#[derive(Clone)]
pub struct Network {
    cluster_id: Arc<str>,
}

impl Network {
    /// The network of a member of cluster `cluster_id`.
    pub fn new(cluster_id: Arc<str>) -> Self {
        Network { cluster_id }
    }
}

/// A connection to one peer for openraft's replication and election.
pub struct PeerNetwork {
    target: RaftNodeId,
    client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            client: PeerClient::new(self.cluster_id.clone(), node.addr.clone()),
        }
    }
}

fn unreachable<E: std::error::Error>(e: std::io::Error) -> RPCError<RaftNodeId, BasicNode, E> {
    if e.kind() == std::io::ErrorKind::InvalidData {
        RPCError::Network(NetworkError::new(&e))
    } else {
        RPCError::Unreachable(Unreachable::new(&e))
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RPCError<RaftNodeId, BasicNode, E> {
    let e = std::io::Error::other(format!("unexpected answer: {what}"));
    RPCError::Unreachable(Unreachable::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>,
    > {
        match self
            .client
            .call(RpcBody::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcReply::AppendEntries(r)) => {
                r.map_err(|e| RemoteError::new(self.target, e).into())
            }
            Ok(other) => Err(unexpected(&format!("{other:?}"))),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        match self
            .client
            .call(RpcBody::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcReply::InstallSnapshot(r)) => {
                r.map_err(|e| RemoteError::new(self.target, e).into())
            }
            Ok(other) => Err(unexpected(&format!("{other:?}"))),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>>
    {
        match self
            .client
            .call(RpcBody::Vote(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcReply::Vote(r)) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            Ok(other) => Err(unexpected(&format!("{other:?}"))),
            Err(e) => Err(unreachable(e)),
        }
    }
}

/// How the server answers the requests that are not Raft's own (proposals, broker requests).
pub type LocalHandler = Arc<
    dyn Fn(RpcBody) -> std::pin::Pin<Box<dyn std::future::Future<Output = RpcReply> + Send>>
        + Send
        + Sync,
>;

/// Serves peers' RPCs on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    cluster_id: Arc<str>,
    handler: LocalHandler,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(QUORUM_CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (raft, cluster_id, handler) =
                    (raft.clone(), cluster_id.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_peer(stream, raft, &cluster_id, handler).await {
                        tracing::debug!(%peer, error = %e, "quorum peer connection closed");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "quorum accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_peer(
    mut stream: TcpStream,
    raft: Raft<TypeConfig>,
    cluster_id: &str,
    handler: LocalHandler,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let frame: RpcFrame = match read_frame(&mut stream).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if frame.cluster_id != cluster_id {
            tracing::info!(theirs = %frame.cluster_id, ours = %cluster_id, "INCONSISTENT_CLUSTER_ID: refused a quorum request from another cluster");
            let reply = RpcReply::InconsistentClusterId {
                expected: cluster_id.to_string(),
            };
            write_frame(&mut stream, &reply).await?;
            continue;
        }
        let reply = match frame.body {
            RpcBody::AppendEntries(r) => RpcReply::AppendEntries(raft.append_entries(r).await),
            RpcBody::Vote(r) => RpcReply::Vote(raft.vote(r).await),
            RpcBody::InstallSnapshot(r) => {
                RpcReply::InstallSnapshot(raft.install_snapshot(r).await)
            }
            other => handler(other).await,
        };
        write_frame(&mut stream, &reply).await?;
    }
}

/// The address of a peer as a `host:port` string.
pub fn peer_addr(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}
