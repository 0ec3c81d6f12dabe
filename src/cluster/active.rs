//! The active controller: the quorum leader's handling of broker requests.
//!
//! Runs on the quorum thread of whichever member leads. It keeps what Kafka's controller keeps
//! in memory only, the time of each broker's last heartbeat, and turns requests and expired
//! sessions into records through [`super::control`]'s pure decisions. Every decision is made
//! on an image that is current (after `ensure_linearizable`) and under one lock, so two
//! requests never decide on the same image. A member that does not lead answers
//! `NotLeader` with the leader it knows; the broker asks that one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::watch;

use super::control::{self, ControlError, TopicRequest};
use super::image::{ClusterImage, Endpoint, MetadataRecord, NodeId, NO_LEADER};
use super::store::{Proposal, ProposalReply, RaftNodeId, TypeConfig};
use super::transport::{ControllerError, ControllerReply, RpcBody, RpcReply};
use crate::error_code::ErrorCode;

/// How often the leader looks for expired broker sessions.
pub const SESSION_CHECK_INTERVAL_MS: u64 = 100;

/// The longest a broker's image fetch (a long poll) is held open.
pub const FETCH_IMAGE_WAIT_MS_MAX: u64 = 800;

/// The controller settings (`broker.session.timeout.ms`, `default.replication.factor`).
#[derive(Clone, Copy, Debug)]
pub struct ControllerSettings {
    /// A broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// Replicas of a topic created without a replication factor.
    pub default_replication_factor: i16,
    /// Partitions may have more than one replica (`serve` sets it: followers fetch from
    /// leaders). False refuses a topic or partition with followers (INVALID_REPLICATION_FACTOR),
    /// for controller tests of one-replica placement.
    pub replicated_partitions: bool,
}

struct Sessions {
    /// The term these sessions were observed in; a new term starts them afresh.
    term: u64,
    /// When this member started leading in `term`: a broker not heard from since has until
    /// then plus the timeout (a new leader gives every broker a full session).
    since: Instant,
    last_seen: HashMap<NodeId, Instant>,
}

/// The active controller's state on one quorum member.
pub struct ActiveController {
    me: RaftNodeId,
    raft: Raft<TypeConfig>,
    images: watch::Receiver<Arc<ClusterImage>>,
    settings: ControllerSettings,
    sessions: Mutex<Sessions>,
    serial: tokio::sync::Mutex<()>,
}

type Answer = Result<ControllerReply, ControllerError>;

impl ActiveController {
    /// The controller of member `me`.
    pub fn new(
        me: RaftNodeId,
        raft: Raft<TypeConfig>,
        images: watch::Receiver<Arc<ClusterImage>>,
        settings: ControllerSettings,
    ) -> Self {
        ActiveController {
            me,
            raft,
            images,
            settings,
            sessions: Mutex::new(Sessions {
                term: 0,
                since: Instant::now(),
                last_seen: HashMap::new(),
            }),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// Answers a broker request (the transport's handler for the non-Raft requests).
    pub async fn handle(&self, body: RpcBody) -> RpcReply {
        let answer = match body {
            RpcBody::BrokerRegistration {
                id,
                incarnation,
                endpoints,
                rack,
            } => self.register(id, incarnation, endpoints, rack).await,
            RpcBody::BrokerHeartbeat {
                id,
                incarnation,
                applied_offset,
                want_shutdown,
            } => {
                self.heartbeat(id, incarnation, applied_offset, want_shutdown)
                    .await
            }
            RpcBody::CreateTopics(topics) => self.create_topics(topics).await,
            RpcBody::DeleteTopics(names) => {
                self.topic_changes(
                    "deletion",
                    names,
                    |n| n,
                    |image, n| control::delete_topic(image, n),
                )
                .await
            }
            RpcBody::CreatePartitions(growths) => {
                let replicated = self.settings.replicated_partitions;
                self.topic_changes(
                    "partition creation",
                    growths,
                    |g| &g.0,
                    |image, g| {
                        let records = control::create_partitions(image, &g.0, g.1, g.2.as_deref())?;
                        if !replicated {
                            control::refuse_unreplicated_followers(&records)?;
                        }
                        Ok(records)
                    },
                )
                .await
            }
            RpcBody::SetTopicConfigs(topics) => {
                self.topic_changes(
                    "config change",
                    topics,
                    |t| &t.0,
                    |image, t| control::set_topic_configs(image, &t.0, &t.1),
                )
                .await
            }
            RpcBody::FetchImage { after, wait_ms } => self.fetch_image(after, wait_ms).await,
            RpcBody::AllocateProducerIds { broker_id } => {
                self.allocate_producer_ids(broker_id).await
            }
            RpcBody::AlterPartition(req) => {
                self.topic_changes(
                    "ISR change",
                    vec![req],
                    |r| &r.topic,
                    control::alter_partition,
                )
                .await
            }
            other => Err(ControllerError::Unavailable(format!(
                "not a controller request: {other:?}"
            ))),
        };
        RpcReply::Controller(answer)
    }

    /// Leads, in the current term: `Ok(term)`, else `NotLeader`.
    fn check_leader(&self) -> Result<u64, ControllerError> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.me) {
            return Err(ControllerError::NotLeader {
                leader: m.current_leader,
            });
        }
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if s.term != m.current_term {
            tracing::info!(
                term = m.current_term,
                brokers_given_a_full_session = self.images.borrow().brokers.len(),
                "acting as the active controller"
            );
            *s = Sessions {
                term: m.current_term,
                since: Instant::now(),
                last_seen: HashMap::new(),
            };
        }
        Ok(m.current_term)
    }

    /// Leads, and the local image holds every committed record.
    async fn current_image(&self) -> Result<Arc<ClusterImage>, ControllerError> {
        self.check_leader()?;
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(self.images.borrow().clone()),
            Err(RaftError::APIError(e)) => match e {
                openraft::error::CheckIsLeaderError::ForwardToLeader(f) => {
                    Err(ControllerError::NotLeader {
                        leader: f.leader_id,
                    })
                }
                other => Err(ControllerError::Unavailable(other.to_string())),
            },
            Err(e) => Err(ControllerError::Unavailable(e.to_string())),
        }
    }

    async fn propose(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<ProposalReply, ControllerError> {
        match self.raft.client_write(Proposal { records }).await {
            Ok(r) if r.data.error.is_none() => Ok(r.data),
            Ok(r) => Err(ControllerError::Refused(ControlError {
                code: ErrorCode::UNKNOWN_SERVER_ERROR,
                message: r.data.error.unwrap_or_default(),
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ControllerError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ControllerError::Unavailable(e.to_string())),
        }
    }

    fn session_alive(&self, id: NodeId, now: Instant) -> bool {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let last = s.last_seen.get(&id).copied().unwrap_or(s.since);
        now.duration_since(last) < Duration::from_millis(self.settings.broker_session_timeout_ms)
    }

    fn touch(&self, id: NodeId) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.last_seen.insert(id, Instant::now());
    }

    async fn register(
        &self,
        id: NodeId,
        incarnation: [u8; 16],
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    ) -> Answer {
        let _one = self.serial.lock().await;
        let image = self.current_image().await?;
        let holder_alive = self.session_alive(id, Instant::now());
        let records =
            control::register_broker(&image, id, incarnation, endpoints, rack, holder_alive)
                .inspect_err(
                    |e| tracing::info!(broker = id, error = %e, "broker registration refused"),
                )?;
        if records.is_empty() {
            // The same incarnation again (Kafka amends it): its epoch stands.
            let epoch = image.brokers.get(&id).map_or(0, |b| b.epoch);
            self.touch(id);
            tracing::info!(
                broker = id,
                epoch,
                "broker registration repeated; epoch unchanged"
            );
            return Ok(ControllerReply::Registered { epoch });
        }
        let replaced = records.len() > 1;
        let reply = self.propose(records).await?;
        self.touch(id);
        tracing::info!(
            broker = id,
            epoch = reply.index,
            previous_incarnation_fenced = replaced,
            "broker registered"
        );
        Ok(ControllerReply::Registered { epoch: reply.index })
    }

    async fn heartbeat(
        &self,
        id: NodeId,
        incarnation: [u8; 16],
        applied_offset: u64,
        want_shutdown: bool,
    ) -> Answer {
        self.check_leader()?;
        let image = self.images.borrow().clone();
        let Some(b) = image.brokers.get(&id) else {
            return Err(ControlError {
                code: ErrorCode::BROKER_ID_NOT_REGISTERED,
                message: format!("broker {id} is not registered"),
            }
            .into());
        };
        if b.incarnation != incarnation {
            return Err(ControlError {
                code: ErrorCode::STALE_BROKER_EPOCH,
                message: format!("broker {id} registered again since; register anew"),
            }
            .into());
        }
        self.touch(id);
        let mut shutdown_ready = false;
        let mut records = Vec::new();
        if want_shutdown {
            if b.fenced {
                shutdown_ready = true;
            } else {
                // Kafka's controlled shutdown: leaderships move away, then the broker is fenced.
                records = control::controlled_shutdown(&image, id);
                records.push(MetadataRecord::FenceBroker { id });
            }
        } else if b.fenced && applied_offset >= b.epoch {
            records = control::unfence_broker(&image, id);
        }
        if !records.is_empty() {
            let _one = self.serial.lock().await;
            // Decide again on the current image: another request may have changed it.
            let image = self.current_image().await?;
            let still = image
                .brokers
                .get(&id)
                .is_some_and(|b| b.incarnation == incarnation && (want_shutdown != b.fenced));
            if still {
                let records = if want_shutdown {
                    let mut r = control::controlled_shutdown(&image, id);
                    r.push(MetadataRecord::FenceBroker { id });
                    r
                } else {
                    control::unfence_broker(&image, id)
                };
                self.propose(records).await?;
                tracing::info!(
                    broker = id,
                    change = if want_shutdown {
                        "controlled shutdown"
                    } else {
                        "unfenced"
                    },
                    "broker state changed"
                );
            }
            shutdown_ready = want_shutdown;
        }
        let image = self.images.borrow().clone();
        let fenced = image.brokers.get(&id).is_none_or(|b| b.fenced);
        Ok(ControllerReply::Heartbeat {
            fenced,
            shutdown_ready,
            image: (applied_offset < image.offset).then(|| Box::new((*image).clone())),
        })
    }

    async fn create_topics(&self, topics: Vec<TopicRequest>) -> Answer {
        let (default_rf, replicated) = (
            self.settings.default_replication_factor,
            self.settings.replicated_partitions,
        );
        self.topic_changes(
            "creation",
            topics,
            |t| &t.name,
            |image, t| {
                crate::meta::validate_topic_name(&t.name).map_err(|why| ControlError {
                    code: ErrorCode::INVALID_TOPIC_EXCEPTION,
                    message: why,
                })?;
                let records = control::create_topic(image, t, default_rf)?;
                if !replicated {
                    control::refuse_unreplicated_followers(&records)?;
                }
                Ok(records)
            },
        )
        .await
    }

    /// Decides and proposes one change per item, one at a time, each on the current image:
    /// one result per item, and the offset of the last change made.
    async fn topic_changes<T>(
        &self,
        what: &str,
        items: Vec<T>,
        name: impl Fn(&T) -> &str,
        decide: impl Fn(&ClusterImage, &T) -> Result<Vec<MetadataRecord>, ControlError>,
    ) -> Answer {
        let _one = self.serial.lock().await;
        let mut results = Vec::with_capacity(items.len());
        let mut offset = 0;
        for item in &items {
            let image = self.current_image().await?;
            let result = match decide(&image, item) {
                Ok(records) if records.is_empty() => Ok(()),
                Ok(records) => match self.propose(records).await {
                    Ok(reply) => {
                        offset = reply.index;
                        Ok(())
                    }
                    Err(ControllerError::Refused(c)) => Err(c),
                    Err(other) => Err(ControlError {
                        code: ErrorCode::REQUEST_TIMED_OUT,
                        message: other.to_string(),
                    }),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::info!(topic = %name(item), error = %e, "topic {what} refused");
            }
            results.push(result);
        }
        Ok(ControllerReply::Applied { results, offset })
    }

    /// The image once it is newer than `after`, or none after `wait_ms` (at most
    /// [`FETCH_IMAGE_WAIT_MS_MAX`]).
    async fn fetch_image(&self, after: u64, wait_ms: u64) -> Answer {
        self.check_leader()?;
        let mut images = self.images.clone();
        let wait = Duration::from_millis(wait_ms.min(FETCH_IMAGE_WAIT_MS_MAX));
        let newer = tokio::time::timeout(wait, images.wait_for(|i| i.offset > after)).await;
        let image = match newer {
            Ok(Ok(image)) => Some(Box::new((**image).clone())),
            _ => None,
        };
        Ok(ControllerReply::Image(image))
    }

    /// Hands `broker_id` the next block of producer ids (KRaft's `ProducerIdsRecord`).
    async fn allocate_producer_ids(&self, broker_id: NodeId) -> Answer {
        let _one = self.serial.lock().await;
        let image = self.current_image().await?;
        let first = image.producer_id_next;
        self.propose(vec![control::allocate_producer_ids(&image, broker_id)])
            .await?;
        Ok(ControllerReply::ProducerIds {
            first,
            end: first + control::PRODUCER_ID_BLOCK_SIZE,
        })
    }

    /// Fences every unfenced broker whose session ran out (only while leading).
    pub async fn fence_expired(&self) {
        if self.check_leader().is_err() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<NodeId> = self
            .images
            .borrow()
            .brokers
            .values()
            .filter(|b| !b.fenced && !self.session_alive(b.id, now))
            .map(|b| b.id)
            .collect();
        for id in expired {
            let _one = self.serial.lock().await;
            let Ok(image) = self.current_image().await else {
                return;
            };
            if image.brokers.get(&id).is_none_or(|b| b.fenced) || self.session_alive(id, now) {
                continue;
            }
            let records = control::fence_broker(&image, id);
            let moved = records
                .iter()
                .filter(|r| matches!(r, MetadataRecord::PartitionChange { leader: Some(l), .. } if *l != NO_LEADER))
                .count();
            match self.propose(records).await {
                Ok(_) => tracing::info!(
                    broker = id,
                    timeout_ms = self.settings.broker_session_timeout_ms,
                    leaders_moved = moved,
                    "broker fenced: no heartbeat within the session timeout"
                ),
                Err(e) => tracing::warn!(broker = id, error = %e, "fencing failed; will retry"),
            }
        }
    }
}
