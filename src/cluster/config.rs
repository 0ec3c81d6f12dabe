//! The cluster's identity properties, by Kafka's names, and their cross-checks.
//!
//! Each key is parsed on its own by [`ClusterConfig::apply`]; the rules that relate keys
//! (a controller must be a voter, its listener must exist, ...) run once every key is read, in
//! [`ClusterConfig::resolve`], so a file may list them in any order. Every refusal names the
//! key and the value.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// A role of this process (`process.roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProcessRole {
    /// Serves clients and hosts partitions.
    Broker,
    /// A member of the metadata quorum.
    Controller,
}

/// One voter of the metadata quorum (`controller.quorum.voters` entry `id@host:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    /// The voter's `node.id`.
    pub id: i32,
    /// Host of its controller listener.
    pub host: String,
    /// Port of its controller listener.
    pub port: u16,
}

/// One entry of `listeners`: `NAME://HOST:PORT` (an empty host listens on every interface).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Listener name (`PLAINTEXT`, `CONTROLLER`, ...), upper case as Kafka compares them.
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
}

/// The cluster settings as given, before the cross-checks.
#[derive(Clone, Debug, Default)]
pub struct ClusterConfig {
    /// `process.roles`; empty: the embedded one-node default (no quorum, as before issue 17).
    pub roles: BTreeSet<ProcessRole>,
    /// `controller.quorum.voters`.
    pub voters: Vec<Voter>,
    /// `controller.quorum.bootstrap.servers` (KIP-853 dynamic quorum), as `(host, port)`.
    pub bootstrap_servers: Vec<(String, u16)>,
    /// `controller.listener.names`; empty: `CONTROLLER`.
    pub controller_listener_names: Vec<String>,
    /// `listeners` when given as a list of named listeners (resolved by [`Self::resolve`]).
    pub listeners: Vec<Listener>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `default.replication.factor`: replicas of a topic created without one. Kafka's default 1.
    pub default_replication_factor: i16,
    /// `min.insync.replicas`: in-sync replicas an acks=all write needs. Kafka's default 1.
    pub min_insync_replicas: i32,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced. Kafka's default 9000.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats. Kafka's default 2000.
    pub broker_heartbeat_interval_ms: u64,
    /// `initial.broker.registration.timeout.ms`: a broker not registered this long after its
    /// start gives up and exits. Kafka's default 60000.
    pub initial_broker_registration_timeout_ms: u64,
    /// `controller.quorum.election.timeout.ms`: a voter that hears no leader for a random
    /// time between this and twice this starts an election. Kafka's default 1000.
    pub election_timeout_ms: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up to its leader's log end for this
    /// long leaves the ISR. Kafka's default 30000.
    pub replica_lag_time_max_ms: u64,
}

/// The cluster settings after the cross-checks: what the node is and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCluster {
    /// This node's id.
    pub node_id: i32,
    /// Its roles (never empty).
    pub roles: BTreeSet<ProcessRole>,
    /// The quorum's voters (non-empty, ids unique).
    pub voters: Vec<Voter>,
    /// Where this node's quorum member listens; `Some` exactly when it is a controller.
    pub controller_listen: Option<SocketAddr>,
    /// Where clients connect (the first listener that is not a controller listener); `None`
    /// for a controller-only node.
    pub client_listen: Option<SocketAddr>,
    /// `broker.rack`.
    pub rack: Option<String>,
}

/// The property names this module owns, with their help text (for `config-reference`).
pub const CLUSTER_KEYS: &[(&str, &str)] = &[
    ("process.roles", "`broker`, `controller` or `broker,controller`. Unset: the embedded one-node cluster (no quorum)."),
    ("controller.quorum.voters", "The metadata quorum's voters, `id@host:port,...` (each voter's CONTROLLER listener)."),
    ("controller.quorum.bootstrap.servers", "`host:port,...` of controllers to discover a dynamic quorum (KIP-853); parsed, not yet supported: use controller.quorum.voters."),
    ("controller.listener.names", "Names in `listeners` that carry quorum traffic. Default CONTROLLER."),
    ("broker.rack", "This broker's rack; replicas of a partition are spread over racks first."),
    ("default.replication.factor", "Replicas of a topic created without a replication factor. Default 1."),
    ("min.insync.replicas", "In-sync replicas an acks=all write needs. Default 1."),
    ("broker.session.timeout.ms", "A broker that has not heartbeated for this long is fenced. Default 9000."),
    ("broker.heartbeat.interval.ms", "How often a broker heartbeats to the active controller. Default 2000."),
    ("initial.broker.registration.timeout.ms", "A broker that has not registered with the active controller this long after its start exits (it retries until then, e.g. while its previous incarnation's session is alive). Default 60000."),
    ("controller.quorum.election.timeout.ms", "A voter that hears from no leader for a random time between this and twice this starts an election. Default 1000."),
    ("replica.lag.time.max.ms", "A follower that has not caught up to its leader's log end for this long is removed from the ISR (AlterPartition); one that reaches the high watermark again is added back. Default 30000."),
];

impl ClusterConfig {
    /// Kafka's defaults: no roles (the embedded default), replication factor 1, etc.
    pub fn new() -> Self {
        ClusterConfig {
            default_replication_factor: 1,
            min_insync_replicas: 1,
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            initial_broker_registration_timeout_ms: 60_000,
            election_timeout_ms: 1000,
            replica_lag_time_max_ms: 30_000,
            ..Default::default()
        }
    }

    /// Whether this node runs the quorum machinery at all (`process.roles` set).
    pub fn is_cluster_mode(&self) -> bool {
        !self.roles.is_empty()
    }

    /// Applies one of [`CLUSTER_KEYS`]; `None` when the key is not one of them.
    pub fn apply(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        let v = value.trim();
        Some(match key {
            "process.roles" => parse_roles(v).map(|r| self.roles = r),
            "controller.quorum.voters" => parse_voters(v).map(|x| self.voters = x),
            "controller.quorum.bootstrap.servers" => {
                parse_list(v, parse_host_port).map(|x| self.bootstrap_servers = x)
            }
            "controller.listener.names" => parse_list(v, |s| Ok(s.to_ascii_uppercase())).map(|x| {
                self.controller_listener_names = x;
            }),
            "broker.rack" => {
                if v.is_empty() {
                    Err("must not be empty".into())
                } else {
                    self.rack = Some(v.to_string());
                    Ok(())
                }
            }
            "default.replication.factor" => {
                positive::<i16>(v).map(|n| self.default_replication_factor = n)
            }
            "min.insync.replicas" => positive::<i32>(v).map(|n| self.min_insync_replicas = n),
            "broker.session.timeout.ms" => {
                positive::<u64>(v).map(|n| self.broker_session_timeout_ms = n)
            }
            "broker.heartbeat.interval.ms" => {
                positive::<u64>(v).map(|n| self.broker_heartbeat_interval_ms = n)
            }
            "initial.broker.registration.timeout.ms" => {
                positive::<u64>(v).map(|n| self.initial_broker_registration_timeout_ms = n)
            }
            "controller.quorum.election.timeout.ms" => {
                positive::<u64>(v).map(|n| self.election_timeout_ms = n)
            }
            "replica.lag.time.max.ms" => {
                positive::<u64>(v).map(|n| self.replica_lag_time_max_ms = n)
            }
            _ => return None,
        })
    }

    /// The names of the controller listeners (`CONTROLLER` when not configured).
    pub fn controller_names(&self) -> Vec<String> {
        if self.controller_listener_names.is_empty() {
            vec!["CONTROLLER".to_string()]
        } else {
            self.controller_listener_names.clone()
        }
    }

    /// Runs the cross-key checks for a node in cluster mode; the error names the key.
    /// `plain_listen` is the listen address when `listeners` was one plain `HOST:PORT`.
    pub fn resolve(
        &self,
        node_id: i32,
        plain_listen: SocketAddr,
    ) -> Result<ResolvedCluster, (String, String, String)> {
        let bad = |key: &str, value: String, why: String| (key.to_string(), value, why);
        if self.roles.is_empty() {
            return Err(bad(
                "process.roles",
                String::new(),
                "not set: the node is the embedded one-node cluster".into(),
            ));
        }
        if node_id < 0 {
            return Err(bad(
                "node.id",
                node_id.to_string(),
                "must be 0 or more in a cluster".into(),
            ));
        }
        if self.voters.is_empty() {
            let why = if self.bootstrap_servers.is_empty() {
                "a cluster node needs controller.quorum.voters (id@host:port,...)"
            } else {
                "a dynamic quorum (controller.quorum.bootstrap.servers alone) is not supported \
                 yet: set controller.quorum.voters"
            };
            return Err(bad("controller.quorum.voters", String::new(), why.into()));
        }
        let is_controller = self.roles.contains(&ProcessRole::Controller);
        let is_broker = self.roles.contains(&ProcessRole::Broker);
        let names = self.controller_names();
        if is_controller && !self.voters.iter().any(|v| v.id == node_id) {
            return Err(bad(
                "controller.quorum.voters",
                voters_string(&self.voters),
                format!("node.id {node_id} has the controller role but is not one of the voters"),
            ));
        }
        if !is_controller && self.voters.iter().any(|v| v.id == node_id) {
            return Err(bad(
                "process.roles",
                "broker".into(),
                format!("node.id {node_id} is a voter, so it needs the controller role"),
            ));
        }
        let controller_listen = if is_controller {
            let found = self
                .listeners
                .iter()
                .find(|l| names.contains(&l.name))
                .ok_or_else(|| {
                    bad(
                        "listeners",
                        listeners_string(&self.listeners),
                        format!(
                            "a controller needs a listener named in controller.listener.names ({})",
                            names.join(",")
                        ),
                    )
                })?;
            Some(found.addr)
        } else {
            if let Some(l) = self.listeners.iter().find(|l| names.contains(&l.name)) {
                return Err(bad(
                    "listeners",
                    listeners_string(&self.listeners),
                    format!(
                        "{} is a controller listener, which a broker-only node must not have",
                        l.name
                    ),
                ));
            }
            None
        };
        let client = self.listeners.iter().find(|l| !names.contains(&l.name));
        let client_listen = match (is_broker, client) {
            (true, Some(l)) => Some(l.addr),
            (true, None) if self.listeners.is_empty() => Some(plain_listen),
            (true, None) => {
                return Err(bad(
                    "listeners",
                    listeners_string(&self.listeners),
                    "a broker needs a listener that is not a controller listener".into(),
                ))
            }
            (false, _) => None,
        };
        Ok(ResolvedCluster {
            node_id,
            roles: self.roles.clone(),
            voters: self.voters.clone(),
            controller_listen,
            client_listen,
            rack: self.rack.clone(),
        })
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Result<T, String> {
    let n: T = v.parse().map_err(|_| "expected a number".to_string())?;
    if n <= T::default() {
        return Err("must be greater than zero".into());
    }
    Ok(n)
}

fn parse_list<T>(v: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(item)
        .collect()
}

fn parse_host_port(v: &str) -> Result<(String, u16), String> {
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| format!("`{v}` is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{v}` has a bad port `{port}`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{v}` has an empty host"));
    }
    Ok((host.to_string(), port))
}

/// Parses `process.roles`: `broker`, `controller`, or both, each at most once.
pub fn parse_roles(v: &str) -> Result<BTreeSet<ProcessRole>, String> {
    let mut roles = BTreeSet::new();
    for r in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let role = match r {
            "broker" => ProcessRole::Broker,
            "controller" => ProcessRole::Controller,
            other => {
                return Err(format!(
                    "unknown role `{other}`: expected broker, controller or both"
                ))
            }
        };
        if !roles.insert(role) {
            return Err(format!("role `{r}` is listed twice"));
        }
    }
    if roles.is_empty() {
        return Err("expected broker, controller or both".into());
    }
    Ok(roles)
}

/// Parses `controller.quorum.voters`: `id@host:port,...`, ids non-negative and unique.
pub fn parse_voters(v: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("voter `{entry}` is not id@host:port"))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| format!("voter `{entry}` has a bad id `{id}`"))?;
        if id < 0 {
            return Err(format!("voter `{entry}` has a negative id"));
        }
        let (host, port) =
            parse_host_port(addr.trim()).map_err(|why| format!("voter `{entry}`: {why}"))?;
        if voters.iter().any(|x| x.id == id) {
            return Err(format!("voter id {id} is listed twice"));
        }
        voters.push(Voter { id, host, port });
    }
    if voters.is_empty() {
        return Err("expected id@host:port,...".into());
    }
    Ok(voters)
}

/// Parses `listeners` as Kafka writes it: `NAME://HOST:PORT,...`; an empty host binds every
/// interface, `localhost` is 127.0.0.1. Names are unique, as are ports.
pub fn parse_listeners(v: &str) -> Result<Vec<Listener>, String> {
    let mut out: Vec<Listener> = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = entry
            .split_once("://")
            .ok_or_else(|| format!("listener `{entry}` is not NAME://HOST:PORT"))?;
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty() {
            return Err(format!("listener `{entry}` has no name"));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("listener `{entry}` has no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("listener `{entry}` has a bad port `{port}`"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = match host {
            "" => [0, 0, 0, 0].into(),
            "localhost" => [127, 0, 0, 1].into(),
            h => h
                .parse()
                .map_err(|_| format!("listener `{entry}`: `{h}` is not an IP address"))?,
        };
        if out.iter().any(|l| l.name == name) {
            return Err(format!("listener name {name} is used twice"));
        }
        if out.iter().any(|l| l.addr.port() == port && port != 0) {
            return Err(format!("port {port} is used by two listeners"));
        }
        out.push(Listener {
            name,
            addr: SocketAddr::new(ip, port),
        });
    }
    if out.is_empty() {
        return Err("expected NAME://HOST:PORT,...".into());
    }
    Ok(out)
}

fn voters_string(voters: &[Voter]) -> String {
    voters
        .iter()
        .map(|v| format!("{}@{}:{}", v.id, v.host, v.port))
        .collect::<Vec<_>>()
        .join(",")
}

fn listeners_string(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, l.addr))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> ClusterConfig {
        let mut c = ClusterConfig::new();
        for (k, v) in pairs {
            c.apply(k, v).expect("known key").expect("valid value");
        }
        c
    }

    fn plain() -> SocketAddr {
        ([127, 0, 0, 1], 9092).into()
    }

    #[test]
    fn voters_parse_and_bad_ones_are_named() {
        let v = parse_voters("1@a:9093, 2@10.0.0.2:9093,3@[::1]:9093").expect("valid");
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].host, "::1");
        let e = parse_voters("1@a:9093,1@b:9093").expect_err("duplicate");
        assert!(e.contains("voter id 1 is listed twice"), "{e}");
        let e = parse_voters("1@a:9093,x@b:1").expect_err("bad id");
        assert!(e.contains("x@b:1"), "{e}");
        assert!(parse_voters("1a:9093").is_err());
        assert!(parse_voters("1@a:notaport").is_err());
        assert!(parse_voters("-1@a:1").is_err());
        assert!(parse_voters("").is_err());
    }

    #[test]
    fn roles_and_listeners() {
        assert_eq!(parse_roles("broker,controller").expect("ok").len(), 2);
        assert!(parse_roles("broker,broker").is_err());
        assert!(parse_roles("leader").is_err());
        let l = parse_listeners("PLAINTEXT://:9092,controller://127.0.0.1:9093").expect("ok");
        assert_eq!(l[0].addr, SocketAddr::from(([0, 0, 0, 0], 9092)));
        assert_eq!(l[1].name, "CONTROLLER");
        assert!(parse_listeners("A://:1,A://:2").is_err());
        assert!(parse_listeners("A://:1,B://:1").is_err());
        assert!(parse_listeners("127.0.0.1:9092").is_err());
    }

    #[test]
    fn combined_node_resolves() {
        let mut c = config(&[
            ("process.roles", "broker,controller"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9095",
            ),
            ("broker.rack", "r1"),
        ]);
        c.listeners =
            parse_listeners("PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093").expect("ok");
        let r = c.resolve(1, plain()).expect("valid");
        assert_eq!(r.controller_listen, Some(([127, 0, 0, 1], 9093).into()));
        assert_eq!(r.client_listen, Some(([127, 0, 0, 1], 9092).into()));
        assert_eq!(r.rack.as_deref(), Some("r1"));
    }

    #[test]
    fn cross_checks_name_the_key() {
        let mut c = config(&[
            ("process.roles", "controller"),
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
        ]);
        c.listeners = parse_listeners("CONTROLLER://127.0.0.1:9093").expect("ok");
        let (key, _, why) = c.resolve(2, plain()).expect_err("not a voter");
        assert_eq!(key, "controller.quorum.voters");
        assert!(why.contains("node.id 2"), "{why}");
        c.listeners = parse_listeners("PLAINTEXT://127.0.0.1:9092").expect("ok");
        let (key, _, _) = c.resolve(1, plain()).expect_err("no controller listener");
        assert_eq!(key, "listeners");

        let mut b = config(&[
            ("process.roles", "broker"),
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
        ]);
        b.listeners = parse_listeners("PLAINTEXT://:9092,CONTROLLER://:9093").expect("ok");
        let (key, _, why) = b
            .resolve(5, plain())
            .expect_err("broker with controller listener");
        assert_eq!(key, "listeners");
        assert!(why.contains("CONTROLLER"), "{why}");
        b.listeners.clear();
        let r = b.resolve(5, plain()).expect("plain listen");
        assert_eq!(r.client_listen, Some(plain()));
        let (key, _, _) = b
            .resolve(1, plain())
            .expect_err("voter without controller role");
        assert_eq!(key, "process.roles");

        let only_bootstrap = config(&[
            ("process.roles", "broker"),
            ("controller.quorum.bootstrap.servers", "a:9093"),
        ]);
        let (key, _, why) = only_bootstrap.resolve(5, plain()).expect_err("dynamic");
        assert_eq!(key, "controller.quorum.voters");
        assert!(why.contains("not supported"), "{why}");
    }

    #[test]
    fn bad_values_refused() {
        let mut c = ClusterConfig::new();
        assert!(c
            .apply("default.replication.factor", "0")
            .expect("key")
            .is_err());
        assert!(c.apply("min.insync.replicas", "x").expect("key").is_err());
        assert!(c.apply("broker.rack", " ").expect("key").is_err());
        assert!(c.apply("not.a.cluster.key", "1").is_none());
    }
}
