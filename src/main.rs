//! The `shardlog` command: `serve` runs the broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardlog::config::{parse_host_port, parse_listen, BrokerConfig};

/// mimalloc, surviving allocations sized by hostile counts in requests (see `shardlog::memory`).
#[global_allocator]
static ALLOCATOR: shardlog::memory::BrokerAllocator = shardlog::memory::BrokerAllocator;

#[derive(Parser)]
#[command(
    name = "shardlog",
    version,
    about = "A Kafka-compatible broker, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (defaults: 127.0.0.1:9092, ./shardlog-data, all cores).
    Serve(ServeArgs),
    /// Print the reference of every configuration property (Markdown).
    ConfigReference,
    /// Give a data dir its identity (`meta.properties`: cluster id, node id), as Kafka's
    /// `kafka-storage format`; every node of a cluster is formatted with the same cluster id.
    Format(FormatArgs),
    /// Print a fresh cluster id (Kafka's `kafka-storage random-uuid`).
    RandomUuid,
    /// Check the host settings the broker's speed depends on; as root, apply the safe ones.
    Tune(TuneArgs),
    /// Drive any Kafka-compatible broker with a workload file; record latency histograms.
    Load(shardlog_tools::load::LoadArgs),
    /// Show, compare (table and SVG) or merge the RUN.json files of load runs.
    Hist(shardlog_tools::hist::HistArgs),
}

#[derive(clap::Args)]
struct TuneArgs {
    /// Only print the table (setting, now, recommended, status, why); change nothing.
    #[arg(long)]
    check: bool,
    /// Data directory to check (file system, O_DIRECT, disk scheduler); default: from
    /// --config, else ./shardlog-data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Broker config file to take `log.dirs` from.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Shards the broker will run (sizes the memlock need); default: all cores.
    #[arg(long)]
    cores: Option<usize>,
}

#[derive(clap::Args)]
struct FormatArgs {
    /// The cluster id (22 characters of base64url, from `shardlog random-uuid`).
    #[arg(long, short = 't')]
    cluster_id: String,
    /// TOML file of Kafka properties to take `node.id` and `log.dirs` from.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Data directory (default: `log.dirs` from --config, else ./shardlog-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Set any property by its Kafka name, e.g. `--set node.id=2` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Leave an already formatted dir as it is instead of failing (it must be this node's
    /// and this cluster's).
    #[arg(long, short = 'g')]
    ignore_formatted: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HOST:PORT to listen on (every shard, SO_REUSEPORT).
    #[arg(long, value_parser = parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// HOST:PORT given to clients in Metadata (default: the listen address).
    #[arg(long, value_parser = parse_host_port)]
    advertised_listener: Option<(String, u16)>,
    /// Data directory (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of shards (pinned executors); default: all cores.
    #[arg(long)]
    cores: Option<usize>,
    /// TOML file of Kafka properties (`log.segment.bytes = ...`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HOST:PORT where shard 0 serves Prometheus metrics at /metrics (default: off).
    #[arg(long, value_parser = parse_listen)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Use buffered I/O instead of O_DIRECT (for file systems that refuse O_DIRECT).
    #[arg(long)]
    buffered_io: bool,
    /// Set any property by its Kafka name, e.g. `--set num.partitions=6` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// The defaults, then the `--config` file, then each `--set KEY=VALUE`.
fn load_properties(config: Option<&PathBuf>, set: &[String]) -> Result<BrokerConfig, String> {
    let mut c = BrokerConfig::default();
    if let Some(path) = config {
        c.load_file(path).map_err(|e| e.to_string())?;
    }
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set expects KEY=VALUE, got `{kv}`"))?;
        c.apply(k.trim(), v.trim()).map_err(|e| e.to_string())?;
    }
    Ok(c)
}

fn format_dir(args: FormatArgs) -> Result<String, String> {
    let c = load_properties(args.config.as_ref(), &args.set)?;
    let dir = args.data_dir.unwrap_or(c.data_dir);
    let m = shardlog::cluster::identity::format(
        &dir,
        &args.cluster_id,
        c.node_id,
        args.ignore_formatted,
    )
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "Formatted {} for cluster {} as node.id {}",
        dir.display(),
        m.cluster_id,
        m.node_id
    ))
}

fn build_config(args: ServeArgs) -> Result<BrokerConfig, String> {
    let mut c = load_properties(args.config.as_ref(), &args.set)?;
    // The cluster cross-checks run on the properties; the flags below override addresses.
    c.resolve_cluster().map_err(|e| e.to_string())?;
    if let Some(l) = args.listen {
        c.listen = l;
    }
    if let Some(a) = args.advertised_listener {
        c.advertised = Some(a);
    }
    if let Some(d) = args.data_dir {
        c.data_dir = d;
    }
    if let Some(n) = args.cores {
        if n == 0 {
            return Err("--cores must be at least 1".into());
        }
        c.cores = n;
    }
    c.buffered_io |= args.buffered_io;
    if let Some(m) = args.metrics_listen {
        c.metrics_listen = Some(m);
    }
    let (host, _) = c.advertised();
    if host == "0.0.0.0" || host == "::" {
        return Err("advertised listener cannot be a wildcard address; pass --advertised-listener HOST:PORT".into());
    }
    Ok(c)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // openraft narrates every election and shutdown step at INFO; its warnings suffice.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk under a redirect, a closed pipe) must not
        // stop the broker: by default tracing-subscriber reports the failure with eprintln!,
        // which panics when stderr itself is what failed.
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match build_config(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("shardlog: {e}");
                    return ExitCode::from(2);
                }
            };
            match shardlog::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shardlog: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ConfigReference => {
            print!(
                "{}{}",
                BrokerConfig::reference(),
                shardlog::config::topic_reference()
            );
            ExitCode::SUCCESS
        }
        Command::Format(args) => match format_dir(args) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shardlog format: {e}");
                ExitCode::from(2)
            }
        },
        Command::RandomUuid => {
            println!("{}", shardlog::cluster::identity::random_uuid());
            ExitCode::SUCCESS
        }
        Command::Load(args) => match shardlog_tools::load::run_cli(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shardlog load: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Hist(args) => match shardlog_tools::hist::run_cli(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shardlog hist: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Tune(args) => {
            let mut c = BrokerConfig::default();
            if let Some(path) = &args.config {
                if let Err(e) = c.load_file(path) {
                    eprintln!("shardlog: {e}");
                    return ExitCode::from(2);
                }
            }
            let host = shardlog_tools::tune::Host {
                root: PathBuf::from("/"),
                data_dir: args.data_dir.unwrap_or(c.data_dir),
                shards: args.cores.unwrap_or(c.cores).max(1),
                probe: true,
            };
            ExitCode::from(shardlog_tools::tune::run(&host, args.check))
        }
    }
}
