//! hotline-loadgen: drives a Matrix homeserver on loopback with a client
//! workload and reports throughput, latency and its own CPU use, so a
//! generator bottleneck is visible instead of silently capping the numbers.
//!
//! Output: a human summary on stderr, one JSON object on stdout.

mod abuse;
mod conn;
mod dm;
mod keys;
mod matrix;
mod roomlist;
mod scale;
mod stats;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hotline-loadgen",
    about = "Load generator for Matrix homeservers (bench/)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// Homeserver base URL. Only loopback targets are accepted. Several,
    /// comma-separated, for one server run as several processes (one
    /// database): the DM workload puts pair i's sender on URL i mod n and
    /// its receiver on URL i+1 mod n, so with two every message crosses
    /// from one process to the other; setup and the other workloads use
    /// the first.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8008",
        global = true,
        value_delimiter = ','
    )]
    pub base_url: Vec<String>,
    /// Registration token, sent as `m.login.registration_token`; without it
    /// users register with `m.login.dummy`.
    #[arg(long, global = true)]
    pub registration_token: Option<String>,
    #[arg(long, default_value = "bench-password-0", global = true)]
    pub password: String,
    /// Username prefix; defaults to one unique per run so runs can repeat
    /// against the same server.
    #[arg(long, global = true)]
    pub user_prefix: Option<String>,
    /// PID of the server process, to report its CPU and peak RSS (VmHWM).
    /// Several, comma-separated, for a server run as several processes: the
    /// DM workload reports their CPU and peak RSS summed.
    #[arg(long = "server-pid", global = true, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// PID of the database server the homeserver uses (PostgreSQL's
    /// postmaster): the DM workload reports the CPU of it and its children
    /// (the backends) separately, not as other processes' CPU.
    #[arg(long, global = true)]
    pub db_pid: Option<u32>,
    /// Generator worker threads (1 = a single-threaded runtime, the cheapest).
    #[arg(long, default_value_t = 1, global = true)]
    pub threads: usize,
    /// Name for this run in the output (e.g. "synapse", "hotline").
    #[arg(long, default_value = "server", global = true)]
    pub label: String,
    /// Hard limit on the whole run in seconds; the generator exits non-zero past it.
    #[arg(long, default_value_t = 600, global = true)]
    pub max_runtime: u64,
}

impl Common {
    /// The first server URL: setup and single-URL workloads use it.
    pub fn base(&self) -> &str {
        self.base_url.first().map(String::as_str).unwrap_or("")
    }

    /// The first server PID (single-process workloads).
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pids.first().copied()
    }

    pub fn user_prefix(&self) -> String {
        self.user_prefix.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            format!("lg{}x", t % 100_000_000)
        })
    }
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// N DM pairs: senders PUT messages, receivers long-poll /sync.
    Dm(dm::DmArgs),
    /// E2EE keys: /keys/query and /keys/claim over many devices, to-device fan-out.
    Keys(keys::KeysArgs),
    /// A store seeded with many users, rooms and events: sync and history costs as it grows.
    Scale(scale::ScaleArgs),
    /// A user in many rooms: time to the first room list over Simplified Sliding Sync (MSC4186).
    Roomlist(roomlist::RoomListArgs),
}

fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    host == "localhost" || host == "[::1]" || host.starts_with("127.")
}

fn main() {
    let cli = Cli::parse();
    if let Some(u) = cli.common.base_url.iter().find(|u| !is_loopback(u)) {
        eprintln!("hotline-loadgen: refusing non-loopback target {u}");
        std::process::exit(2);
    }
    stats::init_clock();
    let limit = cli.common.max_runtime;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        eprintln!("hotline-loadgen: exceeded --max-runtime {limit}s, aborting");
        std::process::exit(3);
    });
    let rt = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let res = rt.block_on(async {
        match &cli.mode {
            Mode::Dm(a) => {
                // Pool sized for every concurrent request the workload issues.
                let api = matrix::Api::new(cli.common.base(), a.pairs * (a.inflight + 2) + 16);
                dm::run(api, &cli.common, a)
                    .await
                    .map(|v| (dm::summary(&v), v))
            }
            Mode::Keys(a) => {
                // Every device long-polls at once during the fan-out.
                let api = matrix::Api::new(cli.common.base(), a.users * a.devices_per_user + 64);
                keys::run(api, &cli.common, a)
                    .await
                    .map(|v| (keys::summary(&v), v))
            }
            Mode::Roomlist(a) => {
                let api = matrix::Api::new(cli.common.base(), a.setup_concurrency + 16);
                roomlist::run(api, &cli.common, a)
                    .await
                    .map(|v| (roomlist::summary(&v), v))
            }
            Mode::Scale(a) => {
                let api =
                    matrix::Api::new(cli.common.base(), a.concurrency + a.setup_concurrency + 16);
                scale::run(api, &cli.common, a)
                    .await
                    .map(|v| (scale::summary(&v), v))
            }
        }
    });
    match res {
        Ok((human, v)) => {
            eprintln!("{human}");
            println!("{v}");
        }
        Err(e) => {
            eprintln!("hotline-loadgen: {e}");
            std::process::exit(1);
        }
    }
}
