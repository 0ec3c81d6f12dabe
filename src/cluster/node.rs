//! One node's control plane, started as a whole: what `serve` calls in cluster mode.
//!
//! A controller (`process.roles` has `controller`) runs a [`Quorum`] member; a broker runs a
//! [`BrokerAgent`], on the quorum thread's runtime on a combined node, else on a thread
//! `cluster-agent` of its own. Either way nothing here runs on a shard's executor: the broker
//! reads [`ClusterNode::images`] (a watch channel, cheap to poll) and calls
//! [`ClusterNode::controlled_shutdown`] on SIGTERM before it stops serving.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::active::ControllerSettings;
use super::agent::{AgentConfig, AgentStatus, BrokerAgent, ControllerClient};
use super::image::{ClusterImage, Endpoint};
use super::interbroker::{InterBrokerError, PeerConnections};
use super::quorum::{quorum_dir, Quorum, QuorumConfig, QuorumError};
use super::store::RaftNodeId;
use super::transport::{peer_addr, ControllerError, ControllerReply, RpcBody};
use crate::cluster::config::{ClusterConfig, ProcessRole, ResolvedCluster};

/// Everything a node's control plane starts from.
#[derive(Clone, Debug)]
pub struct NodeParams {
    /// The checked cluster settings.
    pub resolved: ResolvedCluster,
    /// Timings and defaults (`broker.session.timeout.ms`, ...).
    pub settings: ClusterConfig,
    /// The cluster id from `meta.properties`.
    pub cluster_id: String,
    /// The data dir (the quorum keeps its files under it).
    pub data_dir: PathBuf,
    /// The host and port clients are given for this broker.
    pub advertised: (String, u16),
    /// `controller.quorum.election.timeout.ms`.
    pub election_timeout_ms: u64,
}

/// A node's running control plane; stopped when dropped.
pub struct ClusterNode {
    agent: Option<BrokerAgent>,
    quorum: Option<Quorum>,
    /// The runtime of a broker-only node's `cluster-agent` thread, and how to stop it.
    own_runtime: Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
    images: watch::Receiver<Arc<ClusterImage>>,
    link: Option<BrokerLink>,
}

/// A broker's line to the control plane, usable from any thread (a shard's executor
/// included): the images and status of its agent, and calls to the active controller, each
/// run on the control plane's runtime and answered over a channel.
#[derive(Clone)]
pub struct BrokerLink {
    node_id: i32,
    runtime: tokio::runtime::Handle,
    client: Arc<tokio::sync::Mutex<ControllerClient>>,
    nudge: Arc<tokio::sync::Notify>,
    images: watch::Receiver<Arc<ClusterImage>>,
    status: watch::Receiver<AgentStatus>,
    peers: Arc<PeerConnections>,
}

impl BrokerLink {
    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The images the agent receives (the newest first on subscribe).
    pub fn images(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.images.clone()
    }

    /// The agent's status (registration, fencing, a fatal refusal, the controller).
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// Sends `body` to the active controller (within the client's timeout); after an answer
    /// the agent heartbeats at once, so the image with the change arrives soon.
    pub async fn call(&self, body: RpcBody) -> Result<ControllerReply, ControllerError> {
        let (tx, rx) = oneshot::channel();
        let (client, nudge) = (self.client.clone(), self.nudge.clone());
        self.runtime.spawn(async move {
            let answer = client.lock().await.call(body).await;
            if answer.is_ok() {
                nudge.notify_one();
            }
            let _ = tx.send(answer);
        });
        rx.await.unwrap_or_else(|_| {
            Err(ControllerError::Unavailable(
                "the control plane has stopped".into(),
            ))
        })
    }
}

impl BrokerLink {
    /// Sends a Kafka request (version `version`) to the broker at `host:port` and returns its
    /// answer (see [`super::interbroker`]); runs on the control plane's runtime.
    pub async fn call_broker<R>(
        &self,
        host: String,
        port: u16,
        version: i16,
        req: R,
    ) -> Result<R::Response, InterBrokerError>
    where
        R: kafka_protocol::protocol::Request + Send + 'static,
        R::Response: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let (peers, node_id) = (self.peers.clone(), self.node_id);
        self.runtime.spawn(async move {
            let _ = tx.send(peers.call(node_id, &host, port, version, req).await);
        });
        rx.await.unwrap_or_else(|_| {
            Err(InterBrokerError::Io {
                addr: String::new(),
                reason: "the control plane has stopped".into(),
            })
        })
    }
}

impl ClusterNode {
    /// Starts the quorum member and/or the broker agent the roles ask for.
    pub fn start(p: NodeParams) -> Result<ClusterNode, QuorumError> {
        let r = &p.resolved;
        let controllers: BTreeMap<RaftNodeId, String> = r
            .voters
            .iter()
            .map(|v| (v.id as RaftNodeId, peer_addr(&v.host, v.port)))
            .collect();
        let quorum = match r.controller_listen {
            Some(listen) if r.roles.contains(&ProcessRole::Controller) => {
                let mut cfg = QuorumConfig::new(
                    r.node_id,
                    quorum_dir(&p.data_dir),
                    listen,
                    r.voters.clone(),
                    p.cluster_id.clone(),
                );
                cfg.election_timeout_ms = p.election_timeout_ms;
                cfg.heartbeat_interval_ms = (p.election_timeout_ms / 5).max(10);
                cfg.controller = ControllerSettings {
                    broker_session_timeout_ms: p.settings.broker_session_timeout_ms,
                    default_replication_factor: p.settings.default_replication_factor,
                    // Followers fetch from leaders (issue 18): any replication factor.
                    replicated_partitions: true,
                };
                Some(Quorum::start(cfg)?)
            }
            _ => None,
        };
        let mut own_runtime = None;
        let mut link = None;
        let agent = if r.roles.contains(&ProcessRole::Broker) {
            let runtime = match &quorum {
                Some(q) => q.runtime().clone(),
                None => {
                    let (handle, stop, thread) = agent_thread()?;
                    own_runtime = Some((stop, thread));
                    handle
                }
            };
            let cluster_id: Arc<str> = p.cluster_id.clone().into();
            let agent = BrokerAgent::spawn(
                &runtime,
                AgentConfig {
                    id: r.node_id,
                    endpoints: vec![Endpoint {
                        name: "PLAINTEXT".into(),
                        host: p.advertised.0.clone(),
                        port: p.advertised.1,
                    }],
                    rack: r.rack.clone(),
                    controllers: controllers.clone(),
                    cluster_id: cluster_id.clone(),
                    heartbeat_interval_ms: p.settings.broker_heartbeat_interval_ms,
                    initial_registration_timeout_ms: p
                        .settings
                        .initial_broker_registration_timeout_ms,
                },
            );
            link = Some(BrokerLink {
                node_id: r.node_id,
                runtime: runtime.clone(),
                client: Arc::new(tokio::sync::Mutex::new(ControllerClient::new(
                    cluster_id,
                    &controllers,
                ))),
                nudge: agent.nudger(),
                images: agent.images(),
                status: agent.status(),
                peers: Arc::default(),
            });
            Some(agent)
        } else {
            None
        };
        let images = match (&agent, &quorum) {
            (Some(a), _) => a.images(),
            (None, Some(q)) => q.images(),
            (None, None) => {
                return Err(QuorumError::Raft(
                    "a node needs the broker or the controller role".into(),
                ))
            }
        };
        Ok(ClusterNode {
            agent,
            quorum,
            own_runtime,
            images,
            link,
        })
    }

    /// The broker's line to the control plane (`None` on a controller-only node).
    pub fn broker_link(&self) -> Option<BrokerLink> {
        self.link.clone()
    }

    /// The newest image this node holds (a broker's: as sent by the active controller).
    pub fn images(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.images.clone()
    }

    /// The broker agent's status (`None` on a controller-only node).
    pub fn agent_status(&self) -> Option<AgentStatus> {
        self.agent.as_ref().map(|a| a.status().borrow().clone())
    }

    /// The active controller's node id, as far as this node knows.
    pub fn controller_id(&self) -> Option<i32> {
        if let Some(q) = &self.quorum {
            return q.leader();
        }
        self.agent_status()
            .and_then(|s| s.controller)
            .map(|id| id as i32)
    }

    /// Kafka's controlled shutdown: asks the controller to move this broker's leaderships
    /// away and waits (at most `timeout`) until it has. True when it completed.
    pub fn controlled_shutdown(&self, timeout: Duration) -> bool {
        let Some(agent) = &self.agent else {
            return true;
        };
        agent.request_shutdown();
        let status = agent.status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if status.borrow().shut_down {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.agent = None;
        if let Some(q) = self.quorum.take() {
            q.stop();
        }
        if let Some((stop, thread)) = self.own_runtime.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// A thread `cluster-agent` running a current-thread runtime until told to stop.
fn agent_thread() -> Result<
    (
        tokio::runtime::Handle,
        oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    ),
    QuorumError,
> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| QuorumError::Raft(format!("runtime: {e}")))?;
    let handle = runtime.handle().clone();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cluster-agent".into())
        .spawn(move || {
            let _ = runtime.block_on(stop_rx);
        })
        .map_err(|e| QuorumError::Raft(format!("cannot start the agent thread: {e}")))?;
    Ok((handle, stop, thread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::config::{parse_listeners, parse_roles, parse_voters};
    use crate::cluster::quorum::tests::wait_for;

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn params(root: &std::path::Path, id: i32, roles: &str, voters: &str) -> NodeParams {
        let mut c = ClusterConfig::new();
        c.roles = parse_roles(roles).expect("roles");
        c.voters = parse_voters(voters).expect("voters");
        c.broker_session_timeout_ms = 1000;
        c.broker_heartbeat_interval_ms = 100;
        let controller_port = c
            .voters
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.port)
            .unwrap_or(0);
        let mut listeners = format!("PLAINTEXT://127.0.0.1:{}", 9100 + id);
        if controller_port != 0 {
            listeners.push_str(&format!(",CONTROLLER://127.0.0.1:{controller_port}"));
        }
        c.listeners = parse_listeners(&listeners).expect("listeners");
        let resolved = c
            .resolve(id, ([127, 0, 0, 1], 9092).into())
            .expect("resolves");
        NodeParams {
            resolved,
            settings: c,
            cluster_id: String::new(),
            data_dir: root.join(format!("node{id}")),
            advertised: ("127.0.0.1".into(), 9100 + id as u16),
            election_timeout_ms: 300,
        }
    }

    /// Three combined nodes and one broker-only node form a cluster from their properties;
    /// the broker-only node's controlled shutdown takes it out of the live brokers.
    #[test]
    fn combined_and_broker_only_nodes_form_a_cluster() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cluster = crate::cluster::identity::random_uuid();
        let voters = (1..=3)
            .map(|id| format!("{id}@127.0.0.1:{}", free_port()))
            .collect::<Vec<_>>()
            .join(",");
        let start = |id: i32, roles: &str| {
            let mut p = params(tmp.path(), id, roles, &voters);
            p.cluster_id = cluster.clone();
            ClusterNode::start(p).expect("starts")
        };
        let nodes: Vec<ClusterNode> = (1..=3).map(|id| start(id, "broker,controller")).collect();
        let broker_only = start(4, "broker");
        let live = |n: &ClusterNode| -> Vec<i32> {
            n.images().borrow().live_brokers().map(|b| b.id).collect()
        };
        wait_for("four live brokers everywhere", 10_000, || {
            nodes
                .iter()
                .chain([&broker_only])
                .all(|n| live(n) == vec![1, 2, 3, 4])
        });
        let image = broker_only.images().borrow().clone();
        assert_eq!(image.brokers[&4].endpoints[0].port, 9104);
        wait_for("the controller known to the broker-only node", 5000, || {
            broker_only.controller_id().is_some()
        });
        assert_eq!(broker_only.controller_id(), nodes[0].controller_id());
        assert!(broker_only.controlled_shutdown(Duration::from_secs(5)));
        wait_for("broker 4 out of the live brokers", 5000, || {
            live(&nodes[0]) == vec![1, 2, 3]
        });
        drop(broker_only);
        drop(nodes);
    }
}
