//! A member of the metadata quorum, on a dedicated thread with its own runtime.
//!
//! [`Quorum::start`] binds the CONTROLLER listener, opens the log and the state machine from
//! the quorum dir, and starts a thread named `quorum` running a current-thread tokio runtime:
//! openraft's core, the RPC server and proposals all run there, never on a shard's executor,
//! so neither quorum traffic nor a metadata fsync ever delays the data path. The rest of the
//! process sees only the handle: the image watch channel ([`Quorum::images`]), the current
//! leader, and [`Quorum::propose`], whose future may be awaited from any executor.
//!
//! Membership is the static `controller.quorum.voters`: every voter initializes with the same
//! set on first start (openraft allows that), later starts find it in the log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::sync::{oneshot, watch};

use super::active::{ActiveController, ControllerSettings, SESSION_CHECK_INTERVAL_MS};
use super::image::{ClusterImage, MetadataRecord};
use super::store::{LogStore, Proposal, ProposalReply, RaftNodeId, StateMachineStore, TypeConfig};
use super::transport::{self, LocalHandler, Network, PeerClient, ProposeError, RpcBody, RpcReply};
use crate::cluster::config::Voter;

/// The quorum's directory under a data dir (Kafka's name for the metadata log's partition).
pub fn quorum_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__cluster_metadata-0")
}

/// A proposal that finds no leader gives up after this long.
pub const PROPOSE_TIMEOUT_MS: u64 = 5000;

/// How one quorum member runs.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This member's `node.id` (one of the voters).
    pub node_id: i32,
    /// Where its log, vote and snapshot live ([`quorum_dir`]).
    pub dir: PathBuf,
    /// Its CONTROLLER listener.
    pub listen: SocketAddr,
    /// `controller.quorum.voters`.
    pub voters: Vec<Voter>,
    /// The cluster id from `meta.properties`.
    pub cluster_id: String,
    /// `controller.quorum.election.timeout.ms`: a follower that hears no leader for a random
    /// time between this and twice this starts an election. Kafka's default 1000.
    pub election_timeout_ms: u64,
    /// How often the leader heartbeats its followers.
    pub heartbeat_interval_ms: u64,
    /// A snapshot is taken every this many log entries; the log before it is purged.
    pub snapshot_interval_entries: u64,
    /// What the member does when it is the active controller.
    pub controller: ControllerSettings,
}

impl QuorumConfig {
    /// Kafka's timing defaults for `node_id` among `voters`.
    pub fn new(
        node_id: i32,
        dir: PathBuf,
        listen: SocketAddr,
        voters: Vec<Voter>,
        cluster_id: String,
    ) -> Self {
        QuorumConfig {
            node_id,
            dir,
            listen,
            voters,
            cluster_id,
            election_timeout_ms: 1000,
            heartbeat_interval_ms: 200,
            snapshot_interval_entries: 1000,
            controller: ControllerSettings {
                broker_session_timeout_ms: 9000,
                default_replication_factor: 1,
                replicated_partitions: false,
            },
        }
    }
}

/// Why a quorum member could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The CONTROLLER listener could not be bound.
    #[error("cannot listen for the quorum on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The log, vote or snapshot could not be read.
    #[error("quorum storage in {dir}: {source}")]
    Storage {
        /// The quorum dir.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// openraft refused the configuration or failed to start.
    #[error("quorum: {0}")]
    Raft(String),
}

/// A running quorum member; stopped when dropped.
pub struct Quorum {
    node_id: i32,
    raft: Raft<TypeConfig>,
    runtime: tokio::runtime::Handle,
    images: watch::Receiver<Arc<ClusterImage>>,
    peers: Arc<BTreeMap<RaftNodeId, String>>,
    cluster_id: Arc<str>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Quorum {
    /// Starts the member: binds its listener and opens its storage here (so those errors are
    /// returned), then runs it on the `quorum` thread.
    pub fn start(cfg: QuorumConfig) -> Result<Quorum, QuorumError> {
        assert!(
            cfg.voters.iter().any(|v| v.id == cfg.node_id),
            "a quorum member is one of the voters (checked by ClusterConfig::resolve)"
        );
        let listener = std::net::TcpListener::bind(cfg.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| QuorumError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let storage = |source| QuorumError::Storage {
            dir: cfg.dir.clone(),
            source,
        };
        let log = LogStore::open(&cfg.dir).map_err(storage)?;
        let sm = StateMachineStore::open(&cfg.dir).map_err(storage)?;
        let images = sm.subscribe();
        let raft_config = Config {
            cluster_name: cfg.cluster_id.clone(),
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            heartbeat_interval: cfg.heartbeat_interval_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_interval_entries),
            max_in_snapshot_log_to_keep: cfg.snapshot_interval_entries / 2,
            ..Default::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("quorum")
            .build()
            .map_err(|e| QuorumError::Raft(format!("runtime: {e}")))?;
        let cluster_id: Arc<str> = cfg.cluster_id.clone().into();
        let node_id = cfg.node_id as RaftNodeId;
        let raft = runtime
            .block_on(Raft::new(
                node_id,
                Arc::new(raft_config),
                Network::new(cluster_id.clone()),
                log,
                sm,
            ))
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let members: BTreeMap<RaftNodeId, BasicNode> = cfg
            .voters
            .iter()
            .map(|v| {
                (
                    v.id as RaftNodeId,
                    BasicNode::new(transport::peer_addr(&v.host, v.port)),
                )
            })
            .collect();
        let peers: Arc<BTreeMap<RaftNodeId, String>> = Arc::new(
            members
                .iter()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        );
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let handle = runtime.handle().clone();
        let controller = Arc::new(ActiveController::new(
            node_id,
            raft.clone(),
            images.clone(),
            cfg.controller,
        ));
        let (thread_raft, thread_cluster) = (raft.clone(), cluster_id.clone());
        let thread = std::thread::Builder::new()
            .name("quorum".into())
            .spawn(move || {
                runtime.block_on(run(
                    thread_raft,
                    controller,
                    listener,
                    thread_cluster,
                    members,
                    stop_rx,
                ));
            })
            .map_err(|e| QuorumError::Raft(format!("cannot start the quorum thread: {e}")))?;
        tracing::info!(node_id = cfg.node_id, listen = %cfg.listen, voters = cfg.voters.len(), "quorum member started");
        Ok(Quorum {
            node_id: cfg.node_id,
            raft,
            runtime: handle,
            images,
            peers,
            cluster_id,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Every new image as it is applied (the current one first).
    pub fn images(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.images.clone()
    }

    /// The active controller as this member knows it.
    pub fn leader(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|id| id as i32)
    }

    /// This member's node id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The quorum thread's runtime (for the broker agent of a combined node).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// The controllers' addresses by node id (`controller.quorum.voters`).
    pub fn controllers(&self) -> &BTreeMap<RaftNodeId, String> {
        &self.peers
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> Arc<str> {
        self.cluster_id.clone()
    }

    /// Proposes records (applied all or none at one log index), through the leader wherever
    /// it is. Resolves once committed and applied here or on the leader; the future may be
    /// awaited on any executor. Gives up after [`PROPOSE_TIMEOUT_MS`] without a leader.
    pub fn propose(
        &self,
        records: Vec<MetadataRecord>,
    ) -> impl std::future::Future<Output = Result<ProposalReply, ProposeError>> {
        let task = self.runtime.spawn(propose_anywhere(
            self.raft.clone(),
            self.node_id as RaftNodeId,
            self.peers.clone(),
            self.cluster_id.clone(),
            Proposal { records },
        ));
        async move {
            task.await
                .map_err(|e| ProposeError::Failed(format!("quorum task: {e}")))?
        }
    }

    /// Stops the member: openraft shuts down, the listener closes, the thread ends.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the quorum thread panicked");
            }
        }
    }
}

impl Drop for Quorum {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The quorum thread's body: serve peers, form the quorum on first start, run until stopped.
async fn run(
    raft: Raft<TypeConfig>,
    controller: Arc<ActiveController>,
    listener: std::net::TcpListener,
    cluster_id: Arc<str>,
    members: BTreeMap<RaftNodeId, BasicNode>,
    stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "quorum listener unusable");
            let _ = raft.shutdown().await;
            return;
        }
    };
    let local = raft.clone();
    let answering = controller.clone();
    let handler: LocalHandler = Arc::new(move |body| {
        let (raft, controller) = (local.clone(), answering.clone());
        Box::pin(async move {
            match body {
                RpcBody::Propose(p) => RpcReply::Propose(propose_local(&raft, p).await),
                other => controller.handle(other).await,
            }
        })
    });
    let server = tokio::spawn(transport::serve(
        listener,
        raft.clone(),
        cluster_id,
        handler,
    ));
    let sessions = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(SESSION_CHECK_INTERVAL_MS)).await;
            controller.fence_expired().await;
        }
    });
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("quorum formed from controller.quorum.voters"),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {} // formed before
        Err(e) => tracing::error!(error = %e, "quorum initialization failed"),
    }
    let _ = stop.await;
    server.abort();
    sessions.abort();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "quorum shutdown");
    }
}

/// Proposes on this member if it leads; `NotLeader` (with the leader, if known) otherwise.
async fn propose_local(
    raft: &Raft<TypeConfig>,
    p: Proposal,
) -> Result<ProposalReply, ProposeError> {
    match raft.client_write(p).await {
        Ok(r) => Ok(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                leader: f.leader_id,
            })
        }
        Err(e) => Err(ProposeError::Failed(e.to_string())),
    }
}

/// Proposes here or forwards to the leader, retrying while the leadership is unknown or
/// moving, for at most [`PROPOSE_TIMEOUT_MS`].
async fn propose_anywhere(
    raft: Raft<TypeConfig>,
    me: RaftNodeId,
    peers: Arc<BTreeMap<RaftNodeId, String>>,
    cluster_id: Arc<str>,
    p: Proposal,
) -> Result<ProposalReply, ProposeError> {
    let deadline = Instant::now() + Duration::from_millis(PROPOSE_TIMEOUT_MS);
    let mut clients: BTreeMap<RaftNodeId, PeerClient> = BTreeMap::new();
    let mut last = String::from("no leader elected");
    while Instant::now() < deadline {
        let leader = match propose_local(&raft, p.clone()).await {
            Err(ProposeError::NotLeader { leader }) => leader,
            other => return other,
        };
        if let Some(leader) = leader.filter(|l| *l != me) {
            if let Some(addr) = peers.get(&leader) {
                let client = clients
                    .entry(leader)
                    .or_insert_with(|| PeerClient::new(cluster_id.clone(), addr.clone()));
                let left = deadline.saturating_duration_since(Instant::now());
                match client.call(RpcBody::Propose(p.clone()), left).await {
                    Ok(RpcReply::Propose(Err(ProposeError::NotLeader { .. }))) => {
                        last = format!("node {leader} is no longer the leader");
                    }
                    Ok(RpcReply::Propose(r)) => return r,
                    Ok(other) => last = format!("unexpected answer {other:?}"),
                    Err(e) => last = format!("leader {leader} unreachable: {e}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ProposeError::Unavailable(last))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::agent::{AgentConfig, BrokerAgent, ControllerClient};
    use crate::cluster::control::TopicRequest;
    use crate::cluster::image::{Endpoint, MetadataRecord, NO_LEADER};
    use crate::error_code::ErrorCode;

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn voters(ports: &[u16]) -> Vec<Voter> {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| Voter {
                id: i as i32 + 1,
                host: "127.0.0.1".into(),
                port: *p,
            })
            .collect()
    }

    fn member(root: &Path, id: i32, ports: &[u16], cluster: &str) -> Quorum {
        member_with(root, id, ports, cluster, 4)
    }

    fn member_with(
        root: &Path,
        id: i32,
        ports: &[u16],
        cluster: &str,
        snapshot_interval_entries: u64,
    ) -> Quorum {
        let mut cfg = QuorumConfig::new(
            id,
            quorum_dir(&root.join(format!("node{id}"))),
            SocketAddr::from(([127, 0, 0, 1], ports[id as usize - 1])),
            voters(ports),
            cluster.to_string(),
        );
        cfg.election_timeout_ms = 300;
        cfg.heartbeat_interval_ms = 50;
        cfg.snapshot_interval_entries = snapshot_interval_entries;
        cfg.controller.broker_session_timeout_ms = 1000;
        // These tests check placement and leader movement over replicas.
        cfg.controller.replicated_partitions = true;
        // The port may still be held by the member just stopped: retry a few times.
        for _ in 0..50 {
            match Quorum::start(cfg.clone()) {
                Ok(q) => return q,
                Err(QuorumError::Listen { .. }) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("start {id}: {e}"),
            }
        }
        panic!("member {id} could not bind its port");
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// Polls `ok` every 20 ms until it holds; panics naming `what` after `timeout_ms`.
    pub(crate) fn wait_for(what: &str, timeout_ms: u64, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        while Instant::now() < deadline {
            if ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}");
    }

    fn agreed_leader(members: &[&Quorum]) -> Option<i32> {
        let first = members.first()?.leader()?;
        members
            .iter()
            .all(|m| m.leader() == Some(first))
            .then_some(first)
    }

    fn register(id: i32) -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker {
                id,
                incarnation: [id as u8; 16],
                endpoints: Vec::new(),
                rack: None,
            },
            MetadataRecord::UnfenceBroker { id },
        ]
    }

    /// Three quorum members of a fresh cluster on free loopback ports, data under `root`.
    fn three_members(root: &Path) -> (String, [u16; 3], Vec<Option<Quorum>>) {
        let cluster = crate::cluster::identity::random_uuid();
        let ports = [free_port(), free_port(), free_port()];
        let members = (1..=3)
            .map(|id| Some(member(root, id, &ports, &cluster)))
            .collect();
        (cluster, ports, members)
    }

    fn live(members: &[Option<Quorum>]) -> Vec<&Quorum> {
        members.iter().flatten().collect()
    }

    fn brokers(q: &Quorum) -> Vec<i32> {
        q.images().borrow().brokers.keys().copied().collect()
    }

    /// Three members elect a leader, replicate through any member, survive the leader's loss,
    /// and the lost member re-joins from its own log (and the leader's snapshot) on restart.
    #[test]
    fn three_members_elect_replicate_survive_the_leader_and_rejoin() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (cluster, ports, mut members) = three_members(tmp.path());
        wait_for("a leader", 10_000, || {
            agreed_leader(&live(&members)).is_some()
        });
        let leader = agreed_leader(&live(&members)).expect("leader");

        // A write through a follower is forwarded to the leader.
        let follower = live(&members)
            .into_iter()
            .find(|m| m.node_id() != leader)
            .expect("a follower");
        let reply = block_on(follower.propose(register(101))).expect("proposed");
        assert_eq!(reply.error, None);
        for id in 102..=106 {
            let any = live(&members)[0];
            block_on(any.propose(register(id))).expect("proposed");
        }
        wait_for("all members to apply", 5000, || {
            live(&members).iter().all(|m| brokers(m).len() == 6)
        });

        // The leader is lost; the two others elect a new one and keep taking writes.
        let old = members[leader as usize - 1].take().expect("leader member");
        old.stop();
        wait_for("a new leader", 10_000, || {
            agreed_leader(&live(&members)).is_some_and(|l| l != leader)
        });
        for id in 107..=112 {
            let any = live(&members)[0];
            block_on(any.propose(register(id))).expect("proposed without the old leader");
        }
        // A refused batch changes nothing anywhere, and says why.
        let any = live(&members)[0];
        let reply = block_on(any.propose(vec![MetadataRecord::FenceBroker { id: 999 }]))
            .expect("committed");
        assert!(reply.error.is_some_and(|e| e.contains("999")));

        // The old leader restarts on its own data and catches up.
        members[leader as usize - 1] = Some(member(tmp.path(), leader, &ports, &cluster));
        wait_for("the restarted member to catch up", 10_000, || {
            live(&members).iter().all(|m| brokers(m).len() == 12)
        });
        let images: Vec<_> = live(&members)
            .iter()
            .map(|m| m.images().borrow().clone())
            .collect();
        assert!(images.windows(2).all(|w| w[0].brokers == w[1].brokers));
        // Snapshots bound the log: every member has taken one by now.
        for id in 1..=3 {
            let dir = quorum_dir(&tmp.path().join(format!("node{id}")));
            assert!(dir.join("snapshot").exists(), "node {id} has no snapshot");
        }
        for m in members.into_iter().flatten() {
            m.stop();
        }
    }

    fn agent(q: &Quorum, id: i32) -> BrokerAgent {
        agent_giving_up_after(q, id, 60_000)
    }

    fn agent_giving_up_after(q: &Quorum, id: i32, timeout_ms: u64) -> BrokerAgent {
        BrokerAgent::spawn(
            q.runtime(),
            AgentConfig {
                id,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + id as u16,
                }],
                rack: None,
                controllers: q.controllers().clone(),
                cluster_id: q.cluster_id(),
                heartbeat_interval_ms: 100,
                initial_registration_timeout_ms: timeout_ms,
            },
        )
    }

    fn live_ids(image: &ClusterImage) -> Vec<i32> {
        image.live_brokers().map(|b| b.id).collect()
    }

    fn topic(name: &str, partitions: i32, rf: i16) -> TopicRequest {
        TopicRequest {
            name: name.into(),
            id: crate::meta::new_topic_id(),
            partitions,
            replication_factor: rf,
            assignments: None,
            configs: Default::default(),
        }
    }

    /// Brokers register and heartbeat; topics are placed over them; a silent broker is fenced
    /// and its leaderships move, and it comes back on restart; a duplicate node id is refused;
    /// a controlled shutdown moves leadership away first; the controller's loss changes none
    /// of it.
    #[test]
    fn brokers_register_are_fenced_and_shut_down_through_the_active_controller() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (cluster, _, mut members) = three_members(tmp.path());
        let mut agents: Vec<Option<BrokerAgent>> = live(&members)
            .iter()
            .map(|q| Some(agent(q, q.node_id())))
            .collect();
        let image_of = |a: &BrokerAgent| a.images().borrow().clone();
        wait_for("three live brokers", 10_000, || {
            agents
                .iter()
                .flatten()
                .all(|a| live_ids(&image_of(a)) == vec![1, 2, 3])
        });

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut admin =
            ControllerClient::new(cluster.clone().into(), live(&members)[0].controllers());
        let results = rt
            .block_on(admin.create_topics(vec![
                topic("spread", 6, 1),
                topic("replicated", 3, 3),
                topic("too-wide", 1, 4),
                topic("bad/name", 1, 1),
            ]))
            .expect("answered");
        assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
        assert_eq!(
            results[2].as_ref().map_err(|e| e.code),
            Err(ErrorCode::INVALID_REPLICATION_FACTOR)
        );
        assert_eq!(
            results[3].as_ref().map_err(|e| e.code),
            Err(ErrorCode::INVALID_TOPIC_EXCEPTION)
        );
        let leaders_of = |img: &ClusterImage, t: &str| -> Vec<i32> {
            img.topics[t].partitions.iter().map(|p| p.leader).collect()
        };
        wait_for("the topics in every broker's image", 5000, || {
            agents
                .iter()
                .flatten()
                .all(|a| image_of(a).topics.len() == 2)
        });
        let img = image_of(agents[0].as_ref().expect("agent"));
        let mut spread = leaders_of(&img, "spread");
        spread.sort_unstable();
        assert_eq!(
            spread,
            vec![1, 1, 2, 2, 3, 3],
            "leaders balanced over the brokers"
        );

        // A second process with node id 2 is refused while broker 2 is alive: it retries (as
        // Kafka's broker does) and gives up after its initial registration timeout, naming
        // the refusal; broker 2 is untouched.
        let dup = agent_giving_up_after(live(&members)[0], 2, 1500);
        wait_for("the duplicate to be refused", 5000, || {
            dup.status().borrow().refused.is_some()
        });
        let refused = dup.status().borrow().refused.clone().unwrap_or_default();
        assert!(
            refused.contains("DUPLICATE_BROKER_REGISTRATION"),
            "{refused}"
        );
        assert!(dup.status().borrow().epoch.is_none(), "never registered");
        wait_for("the duplicate to give up", 5000, || {
            dup.status().borrow().fatal.is_some()
        });
        let fatal = dup.status().borrow().fatal.clone().unwrap_or_default();
        assert!(fatal.contains("DUPLICATE_BROKER_REGISTRATION"), "{fatal}");
        assert!(
            fatal.contains("initial.broker.registration.timeout.ms"),
            "{fatal}"
        );
        drop(dup);
        assert_eq!(
            live_ids(&image_of(agents[1].as_ref().expect("agent"))),
            vec![1, 2, 3]
        );

        // Broker 3 stops heartbeating: fenced, out of Metadata, its leaderships move.
        agents[2] = None;
        let watcher = agents[0].as_ref().expect("agent").images();
        wait_for("broker 3 fenced", 5000, || {
            live_ids(&watcher.borrow().clone()) == vec![1, 2]
        });
        let img = watcher.borrow().clone();
        assert!(
            !leaders_of(&img, "replicated").contains(&3),
            "leadership moved"
        );
        assert!(
            img.topics["replicated"]
                .partitions
                .iter()
                .all(|p| !p.isr.contains(&3)),
            "out of every ISR"
        );
        assert_eq!(
            leaders_of(&img, "spread")
                .iter()
                .filter(|l| **l == NO_LEADER)
                .count(),
            2,
            "its single-replica partitions are offline, not moved (no unclean election)"
        );
        // It comes back on restart, and leads its partitions again.
        agents[2] = Some(agent(live(&members)[2], 3));
        wait_for("broker 3 back", 5000, || {
            let img = watcher.borrow().clone();
            live_ids(&img) == vec![1, 2, 3] && !leaders_of(&img, "spread").contains(&NO_LEADER)
        });

        // The active controller is lost: a new one takes over, the brokers stay registered.
        let leader = agreed_leader(&live(&members)).expect("leader");
        agents[leader as usize - 1] = None;
        members[leader as usize - 1].take().expect("member").stop();
        let survivor = (1..=3).find(|i| *i != leader).expect("a survivor");
        let watcher = agents[survivor as usize - 1]
            .as_ref()
            .expect("agent")
            .images();
        wait_for("the lost controller's broker fenced", 10_000, || {
            live_ids(&watcher.borrow().clone()).len() == 2
        });
        let results = rt
            .block_on(admin.create_topics(vec![topic("after-failover", 2, 2)]))
            .expect("answered by the new controller");
        assert!(results[0].is_ok(), "{results:?}");

        // Controlled shutdown: leadership moves away first, then the broker is fenced.
        let stopping = agents[survivor as usize - 1].take().expect("agent");
        stopping.request_shutdown();
        wait_for("controlled shutdown", 5000, || {
            stopping.status().borrow().shut_down
        });
        let other = agents.iter().flatten().next().expect("one agent left");
        wait_for("its image to show it", 5000, || {
            !live_ids(&image_of(other)).contains(&survivor)
        });
        let img = image_of(other);
        for t in img.topics.values() {
            assert!(
                t.partitions.iter().all(|p| p.leader != survivor),
                "{}",
                t.name
            );
        }
        drop(stopping);
        drop(agents);
        for m in members.into_iter().flatten() {
            m.stop();
        }
    }

    /// Commit latency of one proposal through a 3-member quorum on loopback (each commit is
    /// an fdatasync on two of three members). A measurement, not a check: run it by name with
    /// `--ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_commit_latency() {
        let tmp = crate::cluster::identity::random_uuid();
        let dir = std::env::current_dir()
            .expect("cwd")
            .join("target")
            .join(format!("quorum-measure-{tmp}"));
        let ports = [free_port(), free_port(), free_port()];
        let members: Vec<Quorum> = (1..=3)
            .map(|id| member_with(&dir, id, &ports, &tmp, 1000))
            .collect();
        let refs: Vec<&Quorum> = members.iter().collect();
        wait_for("a leader", 10_000, || agreed_leader(&refs).is_some());
        let leader = agreed_leader(&refs).expect("leader");
        let q = &members[leader as usize - 1];
        let mut micros: Vec<u128> = Vec::new();
        for i in 0..300 {
            let t = Instant::now();
            block_on(q.propose(register(1000 + i))).expect("proposed");
            micros.push(t.elapsed().as_micros());
        }
        micros.sort_unstable();
        let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
        println!(
            "quorum commit latency over {} proposals: p50 {} us, p99 {} us, max {} us",
            micros.len(),
            at(0.5),
            at(0.99),
            micros[micros.len() - 1]
        );
        drop(members);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_member_of_another_cluster_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cluster = crate::cluster::identity::random_uuid();
        let ports = [free_port()];
        let q = member(tmp.path(), 1, &ports, &cluster);
        wait_for("a leader", 10_000, || q.leader() == Some(1));
        let mut stranger = PeerClient::new(
            crate::cluster::identity::random_uuid().into(),
            format!("127.0.0.1:{}", ports[0]),
        );
        let reply = block_on(stranger.call(
            RpcBody::Propose(Proposal {
                records: register(7),
            }),
            Duration::from_secs(2),
        ))
        .expect("answered");
        assert!(
            matches!(reply, RpcReply::InconsistentClusterId { ref expected } if *expected == cluster),
            "{reply:?}"
        );
        assert!(brokers(&q).is_empty(), "nothing applied");
        q.stop();
    }
}
