//! The broker process: one pinned glommio executor per shard, each with its own io_uring ring,
//! its own listener on the shared port (SO_REUSEPORT) and its share of the partitions.
//!
//! Start-up: every shard opens its storage and the partitions it owns from the metadata
//! snapshot, then all meet at a barrier; only then do listeners open, so no client can reach
//! a shard whose partitions are not ready. Shutdown (SIGTERM/SIGINT): listeners close,
//! connections finish the requests they hold, shards meet again, then each flushes its logs
//! and writes its clean-shutdown marker, and the process exits 0.

mod connection;
pub mod fd_budget;
mod handlers;
mod read;
mod refusal;
pub(crate) mod response;
pub mod startup;
mod throttle;
mod tls;
mod write;

pub use handlers::SUPPORTED_APIS;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};

use crate::config::BrokerConfig;
use crate::shard::Shard;
use crate::storage::{ShardStorage, StorageOptions};
use startup::Phase;

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data dir could not be created or used.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata snapshot could not be loaded.
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    /// The data dir belongs to another node or cluster, or a cluster node's is not formatted.
    #[error(transparent)]
    Identity(#[from] crate::cluster::identity::IdentityError),
    /// The quorum member could not start (its listener or its storage).
    #[error(transparent)]
    Quorum(#[from] crate::cluster::quorum::QuorumError),
    /// A setting the broker parses but cannot serve yet.
    #[error("{0}")]
    Unsupported(String),
    /// A listener's security settings are wrong (the message names the property), or the
    /// SCRAM credential file cannot be read.
    #[error("{0}")]
    Security(String),
    /// The cluster refused this broker (a duplicate node id, another cluster's controllers),
    /// or it stopped before it joined.
    #[error("{0}")]
    Cluster(String),
    /// A shard failed to start or run (the message names the shard and the cause).
    #[error("shard {shard}: {message}")]
    Shard {
        /// The shard index.
        shard: usize,
        /// What went wrong.
        message: String,
    },
}

/// Producer state is snapshotted every this many 100 ms ticks (one minute).
const PRODUCER_SNAPSHOT_TICKS: u64 = 600;

/// Set by the signal handler; every shard polls it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks a running broker in this process to shut down cleanly.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// A rendezvous of all shards: each arrives once; `wait` returns when all have, or false when
/// one of them failed.
struct Barrier {
    arrived: AtomicUsize,
    failed: AtomicBool,
    total: usize,
}

impl Barrier {
    fn new(total: usize) -> Self {
        Barrier {
            arrived: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            total,
        }
    }

    async fn wait(&self, ok: bool) -> bool {
        if !ok {
            self.failed.store(true, Ordering::SeqCst);
        }
        self.arrived.fetch_add(1, Ordering::SeqCst);
        loop {
            if self.failed.load(Ordering::SeqCst) {
                return false;
            }
            if self.arrived.load(Ordering::SeqCst) >= self.total {
                return true;
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The rendezvous points of start-up and shutdown.
struct Barriers {
    /// Every shard opened its partitions (and shard 0 created the internal topic).
    opened: Barrier,
    /// Every shard replayed its group state and bound its listener.
    ready: Barrier,
    /// Every shard finished its connections' in-flight requests.
    drained: Barrier,
    /// Where each shard is in start-up (read by the watchdog).
    progress: Arc<startup::StartupProgress>,
}

/// Threads of each shard's blocking pool, where small durable file writes (segment indexes,
/// recovery points, producer snapshots) wait for their fsyncs off the shard: several, so that
/// many partitions' fsyncs (at a segment roll, or a clean shutdown of thousands) share journal
/// commits instead of queueing behind one thread. They mostly sleep in fsync.
const BLOCKING_THREADS_PER_SHARD: usize = 8;

/// Set by SIGTERM/SIGINT on a broker of a multi-node cluster: its controlled shutdown runs
/// first (leaderships move away), then [`STOP`] is set.
static TERM_REQUESTED: AtomicBool = AtomicBool::new(false);

/// A controlled shutdown that has not completed after this long gives up and stops anyway.
pub const CONTROLLED_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

/// SIGTERM and SIGINT set [`STOP`] (through [`request_stop`]), or [`TERM_REQUESTED`] when
/// `controlled` (a cluster broker, whose shutdown moves its leaderships away first).
fn install_signal_handlers(controlled: bool) -> Result<(), ServerError> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // SAFETY-free: signal_hook's flag registration only stores to an atomic.
        let flag = Arc::new(AtomicBool::new(false));
        if signal_hook::flag::register(sig, flag.clone()).is_ok() {
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || loop {
                    if flag.load(Ordering::SeqCst) {
                        if controlled {
                            TERM_REQUESTED.store(true, Ordering::SeqCst);
                        } else {
                            request_stop();
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                })
                .map_err(|e| ServerError::Shard {
                    shard: 0,
                    message: format!("cannot start signal thread: {e}"),
                })?;
        }
    }
    Ok(())
}

/// A controller-only node (`process.roles=controller`, Kafka's dedicated controller): runs
/// its quorum member and the active controller's duties, serves no client, and stops on
/// SIGTERM/SIGINT.
fn run_controller_only(
    config: &BrokerConfig,
    resolved: crate::cluster::config::ResolvedCluster,
    cluster_id: String,
) -> Result<(), ServerError> {
    install_signal_handlers(false)?;
    STOP.store(false, Ordering::SeqCst);
    let node = crate::cluster::node::ClusterNode::start(crate::cluster::node::NodeParams {
        resolved: resolved.clone(),
        settings: config.cluster.clone(),
        cluster_id: cluster_id.clone(),
        data_dir: config.data_dir.clone(),
        advertised: config.advertised(),
        election_timeout_ms: config.cluster.election_timeout_ms,
    })?;
    tracing::info!(
        node_id = resolved.node_id,
        cluster_id = %cluster_id,
        listen = ?resolved.controller_listen,
        "controller serving"
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(node);
    tracing::info!("controller stopped cleanly");
    Ok(())
}

/// Runs the broker until SIGTERM/SIGINT; returns after a clean shutdown.
pub fn run(mut config: BrokerConfig) -> Result<(), ServerError> {
    // Checked before anything is written: a data dir of another node or cluster is refused.
    let identity = crate::cluster::identity::load_at_start(
        &config.data_dir,
        config.node_id,
        config.cluster.is_cluster_mode(),
    )?;
    if config.cluster.is_cluster_mode() {
        let resolved = config
            .cluster
            .resolve(config.node_id, config.listen)
            .map_err(|(key, value, why)| {
                ServerError::Unsupported(format!("bad value for `{key}`: {value} ({why})"))
            })?;
        if resolved
            .roles
            .contains(&crate::cluster::config::ProcessRole::Broker)
        {
            return run_cluster_broker(config, resolved, identity.cluster_id);
        }
        return run_controller_only(&config, resolved, identity.cluster_id);
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    config.cluster_id = identity.cluster_id.clone();
    let meta = Arc::new(crate::meta::load(&config.data_dir)?);
    install_signal_handlers(false)?;
    STOP.store(false, Ordering::SeqCst);
    run_shards(config, meta, None)
}

/// A broker of a multi-node cluster (`process.roles` has `broker`): starts its control plane
/// (and quorum member, when also a controller), waits until it is registered and holds an
/// image, then serves with the shards' metadata taken from the images. A fatal refusal (another
/// cluster's controllers; no registration within `initial.broker.registration.timeout.ms`,
/// e.g. a live broker with the same `node.id`) stops it with an error; SIGTERM/SIGINT first move
/// its leaderships away (Kafka's controlled shutdown), then close the listeners.
fn run_cluster_broker(
    mut config: BrokerConfig,
    resolved: crate::cluster::config::ResolvedCluster,
    cluster_id: String,
) -> Result<(), ServerError> {
    use crate::cluster::node::{ClusterNode, NodeParams};
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    config.cluster_id = cluster_id.clone();
    install_signal_handlers(true)?;
    STOP.store(false, Ordering::SeqCst);
    TERM_REQUESTED.store(false, Ordering::SeqCst);
    // Before registering: a broker that cannot listen must not join.
    refuse_if_port_taken(config.listen)?;
    let node = ClusterNode::start(NodeParams {
        resolved: resolved.clone(),
        settings: config.cluster.clone(),
        cluster_id: cluster_id.clone(),
        data_dir: config.data_dir.clone(),
        advertised: config.advertised(),
        election_timeout_ms: config.cluster.election_timeout_ms,
    })?;
    let Some(link) = node.broker_link() else {
        return Err(ServerError::Cluster("the broker role has no agent".into()));
    };
    let Some(image) = wait_for_first_image(&link)? else {
        tracing::info!("stopped before joining the cluster");
        return Ok(());
    };
    tracing::info!(
        node_id = resolved.node_id,
        image_offset = image.offset,
        brokers = image.brokers.len(),
        topics = image.topics.len(),
        "registered with the active controller"
    );
    let view = Arc::new(crate::shard::ClusterView {
        node_id: resolved.node_id,
        controller_id: link.status().controller.map(|c| c as i32),
        image,
    });
    let meta = Arc::new(crate::shard::cluster::metadata_of(&view.image));
    let fatal = std::sync::Mutex::new(None::<String>);
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let supervisor = std::thread::Builder::new()
            .name("cluster-supervisor".into())
            .spawn_scoped(scope, || supervise(&node, &link, &fatal, &done));
        if let Err(e) = supervisor {
            return Err(ServerError::Cluster(format!(
                "cannot start the supervisor thread: {e}"
            )));
        }
        let r = run_shards(config, meta, Some((link.clone(), view)));
        done.store(true, Ordering::SeqCst);
        r
    });
    drop(node);
    if let Some(f) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(ServerError::Cluster(f));
    }
    result
}

/// Waits until the agent has registered, holds an image with its registration and has been
/// unfenced, so that a broker listens only once it is a live broker (`None` when a stop
/// signal came first); a fatal refusal (or no registration within
/// `initial.broker.registration.timeout.ms`, as Kafka) ends the wait with an error. Logs every
/// [`STALL_REPORT_EVERY`] while no controller answers or the controller refuses (the agent
/// retries).
///
/// [`STALL_REPORT_EVERY`]: startup::STALL_REPORT_EVERY
fn wait_for_first_image(
    link: &crate::cluster::node::BrokerLink,
) -> Result<Option<Arc<crate::cluster::image::ClusterImage>>, ServerError> {
    let started = std::time::Instant::now();
    let mut report = started + startup::STALL_REPORT_EVERY;
    loop {
        let status = link.status();
        if let Some(f) = status.fatal {
            return Err(ServerError::Cluster(format!(
                "the active controller refused this broker: {f}"
            )));
        }
        if let (Some(epoch), false) = (status.epoch, status.fenced) {
            let image = link.images().borrow().clone();
            if image.offset >= epoch {
                return Ok(Some(image));
            }
        }
        if STOP.load(Ordering::SeqCst) || TERM_REQUESTED.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if std::time::Instant::now() >= report {
            report += startup::STALL_REPORT_EVERY;
            match &status.refused {
                Some(why) => tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    refused = %why,
                    "not registered yet: the active controller refuses; retrying"
                ),
                None => tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    "not registered yet: no active controller answers (controller.quorum.voters)"
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cluster broker's supervisor, until the shards stop (`done`): on SIGTERM runs the
/// controlled shutdown, then stops the shards; on a fatal refusal by the controller records
/// it in `fatal` and stops the shards.
fn supervise(
    node: &crate::cluster::node::ClusterNode,
    link: &crate::cluster::node::BrokerLink,
    fatal: &std::sync::Mutex<Option<String>>,
    done: &AtomicBool,
) {
    while !done.load(Ordering::SeqCst) {
        if TERM_REQUESTED.load(Ordering::SeqCst) {
            tracing::info!("controlled shutdown: moving this broker's leaderships away");
            let timeout = Duration::from_millis(CONTROLLED_SHUTDOWN_TIMEOUT_MS);
            if node.controlled_shutdown(timeout) {
                tracing::info!("controlled shutdown complete; closing the listeners");
            } else {
                tracing::warn!(
                    timeout_ms = CONTROLLED_SHUTDOWN_TIMEOUT_MS,
                    "controlled shutdown did not complete in time; stopping anyway"
                );
            }
            request_stop();
            return;
        }
        if let Some(f) = link.status().fatal {
            tracing::error!(error = %f, "the active controller refused this broker; stopping");
            *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
            request_stop();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts one executor per shard and serves until [`STOP`]; `cluster` is the line to the
/// control plane and the first image of a cluster broker (`None` on one node).
fn run_shards(
    mut config: BrokerConfig,
    meta: Arc<crate::meta::Metadata>,
    cluster: Option<(
        crate::cluster::node::BrokerLink,
        Arc<crate::shard::ClusterView>,
    )>,
) -> Result<(), ServerError> {
    let nr = config.cores.max(1);
    // Connections and partitions beyond what the fd limit allows would take descriptors the
    // logs need (a segment roll then fails with EMFILE): both are refused before that.
    if let Some(limit) = fd_budget::raise_open_files_limit() {
        let budget = fd_budget::FdBudget::split(limit, nr);
        if config.shard_connections_max > budget.connections_per_shard_max {
            tracing::info!(
                configured = config.shard_connections_max,
                allowed = budget.connections_per_shard_max,
                open_files_limit = limit,
                "shard.connections.max lowered to fit the open-file limit (ulimit -n)"
            );
            config.shard_connections_max = budget.connections_per_shard_max;
        }
        config.partitions_max = budget.partitions_max;
        tracing::info!(
            open_files_limit = limit,
            partitions_max = budget.partitions_max,
            "open-file budget"
        );
    }
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    tracing::info!(
        cores = nr,
        data_dir = %config.data_dir.display(),
        listen = %config.listen,
        advertised = %format!("{}:{}", config.advertised().0, config.advertised().1),
        topics = meta.topics.len(),
        cluster_id = %config.cluster_id,
        node_id = config.node_id,
        apis = %advertised_versions(),
        "shardlog starting"
    );
    let shared = crate::security::BrokerSecurity::open(&config.security, &config.data_dir)
        .map_err(ServerError::Security)?;
    let listeners = Arc::new(resolve_client_listeners(&config, &shared)?);
    shared.dynamic.attach(&listeners);
    if cluster.is_none() {
        for l in listeners.iter() {
            refuse_if_port_taken(l.addr)?;
        }
    }
    let security = Security { listeners, shared };

    let config = Arc::new(config);
    let mut mesh_ends = crate::shard::mesh::build(nr).into_iter();
    let barriers = Arc::new(Barriers {
        opened: Barrier::new(nr),
        ready: Barrier::new(nr),
        drained: Barrier::new(nr),
        progress: startup::StartupProgress::new(nr),
    });
    barriers.progress.spawn_watchdog();
    let mut handles = Vec::with_capacity(nr);
    for id in 0..nr {
        let cpu = cpus.get(id % cpus.len().max(1)).map(|c| c.id);
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        // The blocking pool's threads stay on the shard's cpu, like the shard itself.
        let blocking_pool = match cpu.and_then(|cpu| {
            CpuSet::online()
                .ok()
                .map(|set| set.filter(|l| l.cpu == cpu))
        }) {
            Some(set) if !set.is_empty() => PoolPlacement::Fenced(BLOCKING_THREADS_PER_SHARD, set),
            _ => PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD),
        };
        let (config, meta, mesh, barriers, cluster, security) = (
            config.clone(),
            meta.clone(),
            mesh_ends.next().expect("one set of mesh ends per shard"),
            barriers.clone(),
            cluster.clone(),
            security.clone(),
        );
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .blocking_thread_pool_placement(blocking_pool)
            .spawn(move || async move {
                shard_main(id, nr, config, meta, mesh, barriers, cluster, security).await
            })
            .map_err(|e| ServerError::Shard {
                shard: id,
                message: format!("glommio executor failed to start: {e}"),
            })?;
        handles.push(handle);
    }
    let mut first_error = None;
    let progress = barriers.progress.clone();
    for (id, h) in handles.into_iter().enumerate() {
        let outcome = match h.join() {
            Ok(r) => r,
            Err(e) => Err(format!("executor error: {e}")),
        };
        if let Err(message) = outcome {
            tracing::error!(shard = id, %message, "shard failed");
            first_error.get_or_insert(ServerError::Shard { shard: id, message });
        }
    }
    progress.finish();
    match first_error {
        Some(e) => Err(e),
        None => {
            tracing::info!("shardlog stopped cleanly");
            Ok(())
        }
    }
}

fn advertised_versions() -> String {
    handlers::SUPPORTED_APIS
        .iter()
        .map(|a| format!("{:?}:{}-{}", a.key, a.min_version, a.max_version))
        .collect::<Vec<_>>()
        .join(",")
}

/// SO_REUSEPORT would let a second broker of the same user bind a port already served and
/// silently take half its connections: refuse to start when something keeps answering there.
/// A broker killed a moment ago can leave its listener open for a short while (the kernel
/// releases io_uring-held sockets after the process is gone), so this waits up to 3 s for the
/// port to fall free before refusing.
fn refuse_if_port_taken(listen: SocketAddr) -> Result<(), ServerError> {
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip([127, 0, 0, 1].into());
    }
    for _ in 0..15 {
        match std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)) {
            // A loopback connect to a free port can connect the socket to itself.
            Ok(s) if s.local_addr().ok() != Some(probe) => {
                drop(s);
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => return Ok(()),
        }
    }
    Err(ServerError::Shard {
        shard: 0,
        message: format!("{listen} is already in use by another process"),
    })
}

/// The client listeners and what their connections share: resolved once at start, shared by
/// every shard.
#[derive(Clone)]
struct Security {
    listeners: Arc<Vec<crate::security::ListenerSpec>>,
    shared: crate::security::BrokerSecurity,
}

/// The client listeners: the named ones of `listeners` that are not controller listeners
/// (the first at `config.listen`, which `--listen` may have overridden), or one PLAINTEXT
/// listener at `config.listen`; with their protocols, TLS and SASL settings (the security
/// properties with the dynamic broker properties kept in the data dir over them).
fn resolve_client_listeners(
    config: &BrokerConfig,
    shared: &crate::security::BrokerSecurity,
) -> Result<Vec<crate::security::ListenerSpec>, ServerError> {
    let controllers = config.cluster.controller_names();
    let mut named: Vec<(String, SocketAddr)> = config
        .cluster
        .listeners
        .iter()
        .filter(|l| !controllers.contains(&l.name))
        .map(|l| (l.name.clone(), l.addr))
        .collect();
    match named.first_mut() {
        Some(first) => first.1 = config.listen,
        None => named.push(("PLAINTEXT".to_string(), config.listen)),
    }
    crate::security::resolve_listeners(
        &shared.dynamic.effective(),
        &named,
        config.advertised(),
        &shared.credentials,
    )
    .map_err(ServerError::Security)
}

/// Binds one shard's listener on the shared port with SO_REUSEPORT.
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the fd is a freshly bound, listening TCP socket that we own and hand over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    id: usize,
    nr: usize,
    config: Arc<BrokerConfig>,
    meta: Arc<crate::meta::Metadata>,
    mesh: crate::shard::mesh::MeshEnds,
    barriers: Arc<Barriers>,
    cluster: Option<(
        crate::cluster::node::BrokerLink,
        Arc<crate::shard::ClusterView>,
    )>,
    security: Security,
) -> Result<(), String> {
    let Barriers {
        opened,
        ready,
        drained,
        progress,
    } = &*barriers;
    let result = start_and_serve(
        id, nr, config, meta, mesh, opened, ready, drained, progress, cluster, security,
    )
    .await;
    if result.is_err() {
        progress.enter(id, Phase::Failed);
    }
    result
}

/// [`shard_main`]'s body: start-up phase by phase (recorded in `progress`), then serving.
#[allow(clippy::too_many_arguments)]
async fn start_and_serve(
    id: usize,
    nr: usize,
    config: Arc<BrokerConfig>,
    meta: Arc<crate::meta::Metadata>,
    mesh: crate::shard::mesh::MeshEnds,
    opened: &Barrier,
    ready: &Barrier,
    drained: &Barrier,
    progress: &startup::StartupProgress,
    cluster: Option<(
        crate::cluster::node::BrokerLink,
        Arc<crate::shard::ClusterView>,
    )>,
    security: Security,
) -> Result<(), String> {
    progress.enter(id, Phase::JoiningMesh);
    let (senders, receivers) = mesh.connect().await?;
    #[allow(clippy::needless_update)] // StorageOptions has more knobs, left at their defaults
    let options = StorageOptions {
        batch_cache_bytes_max: config.batch_cache_bytes_max / nr,
        buffered_io: config.buffered_io,
        preallocate_bytes: config.preallocate_bytes,
        cleaner_enable: config.cleaner_enable,
        cleaner_backoff_ms: config.cleaner_backoff_ms,
        cleaner_dedupe_buffer_bytes: (config.cleaner_dedupe_buffer_bytes / nr).max(1 << 20),
        retention_check_interval_ms: config.log_retention_check_interval_ms,
        ..Default::default()
    };
    progress.enter(id, Phase::OpeningStorage);
    let storage = match ShardStorage::open(&config.data_dir, options).await {
        Ok(s) => s,
        Err(e) => {
            // The other shards are at (or on their way to) `opened`: fail that barrier, or
            // they would wait there for this shard forever.
            opened.wait(false).await;
            return Err(format!("storage: {e}"));
        }
    };
    let link = cluster.as_ref().map(|(link, _)| link.clone());
    let shard = Shard::new(
        id,
        nr,
        config.clone(),
        storage.clone(),
        meta,
        senders,
        cluster,
    );
    for (_peer, rx) in receivers {
        glommio::spawn_local(shard.clone().serve_peer(rx)).detach();
    }
    progress.enter(id, Phase::OpeningPartitions);
    if let Err(e) = shard.open_owned_partitions().await {
        opened.wait(false).await;
        return Err(format!("opening partitions: {e}"));
    }
    storage.spawn_background_tasks();
    // In a cluster: leaders take their high-watermark floors, followers start fetching.
    shard.start_replication();
    // Shard 0 creates the internal offsets topic on first start; every shard then replays
    // the group state of the offsets partitions it owns.
    let created = if id == 0 {
        shard.ensure_offsets_topic().await
    } else {
        Ok(())
    };
    if let Err(e) = created {
        opened.wait(false).await;
        return Err(format!("creating __consumer_offsets: {e}"));
    }
    progress.enter(id, Phase::WaitingOpened);
    if !opened.wait(true).await {
        return Err("another shard failed to start".into());
    }
    progress.enter(id, Phase::ReplayingGroups);
    if let Err(e) = shard.replay_groups().await {
        ready.wait(false).await;
        return Err(e);
    }
    if let Err(e) = shard.replay_transactions().await {
        ready.wait(false).await;
        return Err(e);
    }
    let ticker = shard.clone();
    glommio::spawn_local(async move {
        let mut ticks = 0u64;
        loop {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            ticker.groups.tick();
            ticker.tick_transactions(ticks, 100).await;
            ticks += 1;
            if ticks % PRODUCER_SNAPSHOT_TICKS == 0 {
                ticker.snapshot_producers().await;
            }
        }
    })
    .detach();
    progress.enter(id, Phase::WaitingReady);
    let mut bound = Vec::with_capacity(security.listeners.len());
    for spec in security.listeners.iter() {
        match bind_listener(spec.addr) {
            Ok(l) => bound.push((l, Arc::new(spec.clone()))),
            Err(e) => {
                ready.wait(false).await;
                return Err(format!(
                    "cannot listen on {} ({}): {e}",
                    spec.addr, spec.name
                ));
            }
        }
    }
    let metrics_listener = match (id, config.metrics_listen) {
        (0, Some(addr)) => match TcpListener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                ready.wait(false).await;
                return Err(format!("cannot serve metrics on {addr}: {e}"));
            }
        },
        _ => None,
    };
    if !ready.wait(true).await {
        return Err("another shard failed to start".into());
    }
    // Every shard has replayed its groups and transactions: markers owed may go out.
    shard.resume_markers();
    let _metrics_server = metrics_listener.map(|listener| {
        tracing::info!(addr = ?config.metrics_listen, "serving Prometheus metrics at /metrics");
        let s = shard.clone();
        glommio::spawn_local(crate::metrics::serve_http(listener, move || {
            let s = s.clone();
            Box::pin(async move { s.gather_metrics().await })
        }))
    });
    progress.enter(id, Phase::Serving);
    let serving = security
        .listeners
        .iter()
        .map(|l| format!("{}://{} ({})", l.name, l.addr, l.protocol.name()))
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(shard = id, listeners = %serving, "shard serving");
    if let (0, Some(link)) = (id, link) {
        glommio::spawn_local(crate::shard::cluster::follow_images(shard.clone(), link)).detach();
    }

    let connections = Rc::new(connection::Registry::new(config.shard_connections_max));
    let acceptors: Vec<_> = bound
        .into_iter()
        .map(|(listener, spec)| {
            glommio::spawn_local(accept_loop(
                shard.clone(),
                listener,
                spec,
                security.shared.clone(),
                connections.clone(),
            ))
        })
        .collect();
    while !STOP.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    drop(acceptors); // cancels accept: the listeners close
    connections.drain(Duration::from_secs(10)).await;
    drained.wait(true).await;
    // Shutdown writes every partition's producer snapshot itself.
    if let Err(e) = storage.shutdown().await {
        return Err(format!("flush at shutdown: {e}"));
    }
    Ok(())
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    spec: Arc<crate::security::ListenerSpec>,
    shared: crate::security::BrokerSecurity,
    connections: Rc<connection::Registry>,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if !connections.try_admit() {
                    shard.metrics.connection_rejected();
                    tracing::warn!(
                        limit = shard.config.shard_connections_max,
                        "connection limit reached; closing new connection"
                    );
                    drop(stream);
                    continue;
                }
                let (shard, connections) = (shard.clone(), connections.clone());
                let (spec, shared) = (spec.clone(), shared.clone());
                shard.metrics.connection_opened();
                glommio::spawn_local(async move {
                    connection::serve(shard.clone(), stream, &connections, spec, &shared).await;
                    connections.leave();
                    shard.metrics.connection_closed();
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
