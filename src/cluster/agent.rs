//! The broker's side of the control plane: registration, heartbeats, controlled shutdown, and
//! the images it receives.
//!
//! A [`BrokerAgent`] runs as a task on a tokio runtime (the quorum thread's on a combined
//! node). It registers with the active controller (a new random incarnation per process
//! start), heartbeats every `broker.heartbeat.interval.ms` with the offset of the image it
//! holds, and publishes each newer image it is sent on a watch channel the broker reads. When
//! asked to shut down it heartbeats with `want_shutdown` until the controller has moved its
//! leaderships away (Kafka's controlled shutdown), then reports that it may stop. A refused or
//! unanswered registration is retried with backoff, as Kafka's `BrokerLifecycleManager` does
//! (`DUPLICATE_BROKER_REGISTRATION` while the session of this node id's previous incarnation
//! is still alive, e.g. right after a kill -9 and restart); only a broker that has never
//! registered within `initial.broker.registration.timeout.ms` of its start gives up, and an
//! `INCONSISTENT_CLUSTER_ID` is fatal at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::control::{ControlError, TopicRequest};
use super::image::{ClusterImage, Endpoint, NodeId};
use super::store::RaftNodeId;
use super::transport::{ControllerError, ControllerReply, PeerClient, RpcBody, RpcReply};
use crate::error_code::ErrorCode;

/// One request to the controllers gives up after this long.
pub const CONTROLLER_REQUEST_TIMEOUT_MS: u64 = 5000;

/// A fenced broker that has caught up heartbeats again after this long (not an interval)...
const UNFENCE_RETRY_MS: u64 = 10;
/// ... at most this many times per registration, then at its interval again.
const UNFENCE_RETRIES_MAX: u32 = 20;

/// A failed registration is retried after this long, doubling per failure (Kafka's 100 ms)
/// up to the heartbeat interval.
const REGISTRATION_BACKOFF_INITIAL_MS: u64 = 100;

/// The wait before registration attempt `failures + 1`: [`REGISTRATION_BACKOFF_INITIAL_MS`]
/// doubled per failure, at most `max_ms`. Kafka caps it at `broker.session.timeout.ms`; the
/// heartbeat interval is used here so that a broker waiting for its previous incarnation's
/// session to run out registers within one interval of it.
fn registration_backoff(failures: u32, max_ms: u64) -> Duration {
    let ms = REGISTRATION_BACKOFF_INITIAL_MS.saturating_mul(1u64 << failures.min(20));
    Duration::from_millis(ms.min(max_ms.max(REGISTRATION_BACKOFF_INITIAL_MS)))
}

/// A client of the active controller, wherever it is: asks the last known leader, follows
/// `NotLeader` hints, and tries every controller in turn when none is known.
pub struct ControllerClient {
    controllers: BTreeMap<RaftNodeId, PeerClient>,
    leader: Option<RaftNodeId>,
}

impl ControllerClient {
    /// A client of the controllers at `addrs` (node id → `host:port`) of cluster `cluster_id`.
    pub fn new(cluster_id: Arc<str>, addrs: &BTreeMap<RaftNodeId, String>) -> Self {
        ControllerClient {
            controllers: addrs
                .iter()
                .map(|(id, a)| (*id, PeerClient::new(cluster_id.clone(), a.clone())))
                .collect(),
            leader: None,
        }
    }

    /// Sends `body` to the active controller, within [`CONTROLLER_REQUEST_TIMEOUT_MS`].
    pub async fn call(&mut self, body: RpcBody) -> Result<ControllerReply, ControllerError> {
        let deadline = Instant::now() + Duration::from_millis(CONTROLLER_REQUEST_TIMEOUT_MS);
        let ids: Vec<RaftNodeId> = self.controllers.keys().copied().collect();
        let mut next = 0usize;
        let mut last = ControllerError::Unavailable("no controller answered".into());
        while Instant::now() < deadline {
            let target = match self.leader {
                Some(l) if self.controllers.contains_key(&l) => l,
                _ => {
                    let Some(id) = ids.get(next % ids.len().max(1)) else {
                        return Err(last);
                    };
                    next += 1;
                    *id
                }
            };
            let Some(client) = self.controllers.get_mut(&target) else {
                return Err(last);
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let ttl = left.min(Duration::from_millis(1000));
            match client.call(body.clone(), ttl).await {
                Ok(RpcReply::Controller(Err(ControllerError::NotLeader { leader }))) => {
                    self.leader = leader.filter(|l| *l != target);
                    last = ControllerError::NotLeader { leader };
                    if self.leader.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(RpcReply::Controller(Err(ControllerError::Unavailable(why)))) => {
                    self.leader = None;
                    last = ControllerError::Unavailable(why);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(RpcReply::Controller(answer)) => {
                    self.leader = Some(target);
                    return answer;
                }
                Ok(RpcReply::InconsistentClusterId { expected }) => {
                    return Err(ControlError {
                        code: ErrorCode::INCONSISTENT_CLUSTER_ID,
                        message: format!("the controllers belong to cluster {expected}"),
                    }
                    .into())
                }
                Ok(other) => last = ControllerError::Unavailable(format!("unexpected {other:?}")),
                Err(e) => {
                    self.leader = None;
                    last = ControllerError::Unavailable(format!("controller {target}: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Err(last)
    }

    /// The active controller as last seen.
    pub fn leader(&self) -> Option<RaftNodeId> {
        self.leader
    }

    /// CreateTopics through the active controller: one result per topic.
    pub async fn create_topics(
        &mut self,
        topics: Vec<TopicRequest>,
    ) -> Result<Vec<Result<(), ControlError>>, ControllerError> {
        match self.call(RpcBody::CreateTopics(topics)).await? {
            ControllerReply::Applied { results, .. } => Ok(results),
            other => Err(ControllerError::Unavailable(format!(
                "unexpected {other:?}"
            ))),
        }
    }
}

/// What a broker agent is to run with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The broker's node id.
    pub id: NodeId,
    /// Where clients reach it.
    pub endpoints: Vec<Endpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// The controllers (node id → `host:port` of their CONTROLLER listener).
    pub controllers: BTreeMap<RaftNodeId, String>,
    /// The cluster id.
    pub cluster_id: Arc<str>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `initial.broker.registration.timeout.ms`: not registered this long after the start,
    /// the agent gives up ([`AgentStatus::fatal`]).
    pub initial_registration_timeout_ms: u64,
}

/// Where the agent stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// The broker epoch of the current registration.
    pub epoch: Option<u64>,
    /// Fenced as of the last heartbeat.
    pub fenced: bool,
    /// Why the broker must stop: `INCONSISTENT_CLUSTER_ID`, or no registration within
    /// `initial.broker.registration.timeout.ms` (naming the last refusal, e.g.
    /// `DUPLICATE_BROKER_REGISTRATION`).
    pub fatal: Option<String>,
    /// The last refusal of a registration still being retried; `None` once registered.
    pub refused: Option<String>,
    /// The controlled shutdown is complete.
    pub shut_down: bool,
    /// The active controller as last seen.
    pub controller: Option<RaftNodeId>,
}

/// A running broker agent; its task ends when dropped.
pub struct BrokerAgent {
    images: watch::Receiver<Arc<ClusterImage>>,
    status: watch::Receiver<AgentStatus>,
    shutdown: watch::Sender<bool>,
    nudge: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
    follower: tokio::task::JoinHandle<()>,
}

impl BrokerAgent {
    /// Starts the agent on `runtime`.
    pub fn spawn(runtime: &tokio::runtime::Handle, cfg: AgentConfig) -> BrokerAgent {
        let (images_tx, images) = watch::channel(Arc::new(ClusterImage::default()));
        let (status_tx, status) = watch::channel(AgentStatus::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let nudge = Arc::new(tokio::sync::Notify::new());
        let images_tx = Arc::new(images_tx);
        let follower = runtime.spawn(follow(cfg.clone(), images_tx.clone()));
        let task = runtime.spawn(run(cfg, images_tx, status_tx, shutdown_rx, nudge.clone()));
        BrokerAgent {
            images,
            status,
            shutdown,
            nudge,
            task,
            follower,
        }
    }

    /// Wakes the agent to heartbeat now (after a change through the controller, so the new
    /// image arrives without waiting for the next interval).
    pub fn nudger(&self) -> Arc<tokio::sync::Notify> {
        self.nudge.clone()
    }

    /// The images received (the newest first on subscribe).
    pub fn images(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.images.clone()
    }

    /// The agent's status.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Starts the controlled shutdown; [`AgentStatus::shut_down`] tells when it is complete.
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for BrokerAgent {
    fn drop(&mut self) {
        self.task.abort();
        self.follower.abort();
    }
}

/// Publishes `image` unless the one published is as new or newer.
fn publish(images: &watch::Sender<Arc<ClusterImage>>, image: ClusterImage) {
    images.send_if_modified(|current| {
        if image.offset > current.offset {
            *current = Arc::new(image);
            true
        } else {
            false
        }
    });
}

/// Follows the metadata between heartbeats: long polls of the active controller for an image
/// newer than the one held, so a change reaches this broker within milliseconds.
async fn follow(cfg: AgentConfig, images: Arc<watch::Sender<Arc<ClusterImage>>>) {
    let mut client = ControllerClient::new(cfg.cluster_id.clone(), &cfg.controllers);
    loop {
        let after = images.borrow().offset;
        let req = RpcBody::FetchImage {
            after,
            wait_ms: super::active::FETCH_IMAGE_WAIT_MS_MAX,
        };
        match client.call(req).await {
            Ok(ControllerReply::Image(Some(image))) => publish(&images, *image),
            Ok(ControllerReply::Image(None)) => {}
            Ok(other) => {
                tracing::warn!(?other, "unexpected answer to an image fetch");
                tokio::time::sleep(Duration::from_millis(cfg.heartbeat_interval_ms)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "image fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn run(
    cfg: AgentConfig,
    images: Arc<watch::Sender<Arc<ClusterImage>>>,
    status: watch::Sender<AgentStatus>,
    mut shutdown: watch::Receiver<bool>,
    nudge: Arc<tokio::sync::Notify>,
) {
    let mut client = ControllerClient::new(cfg.cluster_id.clone(), &cfg.controllers);
    let incarnation = *uuid::Uuid::new_v4().as_bytes();
    let interval = Duration::from_millis(cfg.heartbeat_interval_ms);
    let started = Instant::now();
    let initial_timeout = Duration::from_millis(cfg.initial_registration_timeout_ms);
    let mut registered = false;
    let mut ever_registered = false;
    let mut failures = 0u32;
    let mut last_failure = String::from("no controller answered");
    let mut quick_retries = 0u32;
    loop {
        if !registered {
            let req = RpcBody::BrokerRegistration {
                id: cfg.id,
                incarnation,
                endpoints: cfg.endpoints.clone(),
                rack: cfg.rack.clone(),
            };
            match client.call(req).await {
                Ok(ControllerReply::Registered { epoch }) => {
                    registered = true;
                    ever_registered = true;
                    failures = 0;
                    quick_retries = 0;
                    tracing::info!(
                        broker = cfg.id,
                        epoch,
                        "registered with the active controller"
                    );
                    status.send_modify(|s| {
                        s.epoch = Some(epoch);
                        s.fenced = true;
                        s.refused = None;
                    });
                }
                Err(ControllerError::Refused(e))
                    if e.code == ErrorCode::INCONSISTENT_CLUSTER_ID =>
                {
                    tracing::error!(broker = cfg.id, error = %e, "registration refused");
                    status.send_modify(|s| s.fatal = Some(e.to_string()));
                    return;
                }
                Err(ControllerError::Refused(e)) => {
                    // Kafka's broker retries every refusal; DUPLICATE_BROKER_REGISTRATION ends
                    // once the previous incarnation's session runs out (or never, for a second
                    // live process with this id: the timeout below ends that one).
                    tracing::info!(
                        broker = cfg.id,
                        error = %e,
                        "unable to register: the active controller refused; retrying"
                    );
                    last_failure = e.to_string();
                    status.send_modify(|s| s.refused = Some(e.to_string()));
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to a registration");
                    last_failure = format!("unexpected answer {other:?}");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "registration not done yet; retrying");
                    last_failure = e.to_string();
                }
            }
            if !registered {
                if !ever_registered && started.elapsed() >= initial_timeout {
                    let why = format!(
                        "not registered within initial.broker.registration.timeout.ms \
                         ({} ms): {last_failure}",
                        cfg.initial_registration_timeout_ms
                    );
                    tracing::error!(broker = cfg.id, "{why}");
                    status.send_modify(|s| s.fatal = Some(why));
                    return;
                }
                let backoff = registration_backoff(failures, cfg.heartbeat_interval_ms);
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        }
        if registered {
            let want_shutdown = *shutdown.borrow();
            let req = RpcBody::BrokerHeartbeat {
                id: cfg.id,
                incarnation,
                applied_offset: images.borrow().offset,
                want_shutdown,
            };
            match client.call(req).await {
                Ok(ControllerReply::Heartbeat {
                    fenced,
                    shutdown_ready,
                    image,
                }) => {
                    if let Some(image) = image {
                        publish(&images, *image);
                    }
                    let controller = client.leader();
                    status.send_modify(|s| {
                        s.fenced = fenced;
                        s.controller = controller;
                    });
                    if want_shutdown && shutdown_ready {
                        tracing::info!(broker = cfg.id, "controlled shutdown complete");
                        status.send_modify(|s| s.shut_down = true);
                        return;
                    }
                    // Fenced but now holding its registration's image: heartbeat again at
                    // once, which unfences it, instead of an interval later.
                    let epoch = status.borrow().epoch.unwrap_or(u64::MAX);
                    if fenced
                        && !want_shutdown
                        && images.borrow().offset >= epoch
                        && quick_retries < UNFENCE_RETRIES_MAX
                    {
                        quick_retries += 1;
                        tokio::time::sleep(Duration::from_millis(UNFENCE_RETRY_MS)).await;
                        continue;
                    }
                }
                Err(ControllerError::Refused(e))
                    if e.code == ErrorCode::BROKER_ID_NOT_REGISTERED
                        || e.code == ErrorCode::STALE_BROKER_EPOCH =>
                {
                    tracing::info!(broker = cfg.id, error = %e, "registering again");
                    registered = false;
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to a heartbeat"),
                Err(e) => tracing::debug!(error = %e, "heartbeat not taken; retrying"),
            }
        }
        // Sleep one interval, or less when a shutdown is asked for or a change was made.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
            _ = nudge.notified() => {}
        }
    }
}
