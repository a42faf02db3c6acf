//! The `hotline` command. Thin on purpose: parse flags, load configuration,
//! wire the layers, run.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

mod alloc;
mod backup;
mod office;
use hotline_service::config::Database;
use hotline_service::{Config, Services};
use hotline_store::{Durability, PostgresStore, SqliteStore, Store};

#[derive(Parser)]
#[command(
    name = "hotline",
    version,
    about = "Hotline: a Matrix homeserver for verified direct lines between leaders"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Settings shared by every subcommand. Flags win over environment
/// variables (`HOTLINE_DATA_DIR`, ...), which win over the file.
#[derive(Args, Clone)]
struct Common {
    /// TOML configuration file.
    #[arg(long, global = true, env = "HOTLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the database, media and keys.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The server name in user ids (`@user:NAME`).
    #[arg(long, global = true)]
    server_name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Administration: accounts and registration tokens.
    #[command(subcommand)]
    Admin(Admin),
    /// Write a coturn configuration sharing a secret with this server, and
    /// make `/voip/turnServer` hand out credentials for it.
    TurnConfig(TurnConfigArgs),
    /// The official record: keys, export of a line, verification.
    #[command(subcommand)]
    Records(Records),
    /// The records office's archiver: a Matrix client signed in as the
    /// account of `[records] archiver`, which joins every official line it
    /// is brought onto, decrypts its events and appends them to the
    /// official record (ARCHIVE), encrypted to the records office. Runs
    /// until SIGTERM or ctrl-c, then writes a last checkpoint.
    ///
    /// Files: PASSWORD_FILE holds the account's password on its first
    /// line and, optionally, the passphrase of the archiver's encrypted
    /// store on its second (else the password is used). KEYS is the
    /// directory `hotline records keygen` wrote, without the records
    /// office's secret key (records-office.key must not be there): the
    /// archiver reads records-office.pub and checkpoint-signing.key.
    /// STATE is the archiver's own (mode 0700): its device id, its session
    /// (session.json, 0600), the matrix-sdk store, its bookkeeping, and
    /// key-imports/, where a standard Matrix key export (NAME.keys) with
    /// its passphrase (NAME.passphrase, written last) is imported and
    /// deleted, to decrypt events archived as undecryptable.
    Archiver(ArchiverArgs),
    /// Trace leaked screenshots (PNG or JPEG) by the watermark the web app
    /// draws over every view of a line: prints the device, user, line and
    /// minute with a confidence, or "no watermark found". Every request is
    /// written to the trace log (`hotline admin trace-log`). Works beside
    /// the running server.
    Trace(TraceArgs),
    /// Test and measurement tooling for the watermark (not for operators).
    #[command(hide = true, subcommand)]
    TraceTool(TraceTool),
}

#[derive(Args)]
struct TraceArgs {
    /// The screenshots.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Who is tracing; must be listed in `[trace] operators` when that is set.
    #[arg(long)]
    by: Option<String>,
}

#[derive(Subcommand)]
enum TraceTool {
    /// Write IN transformed as a leak would be: cropped (X,Y,W,H), then
    /// scaled, then JPEG-compressed (else PNG), to OUT.
    Transform {
        input: PathBuf,
        output: PathBuf,
        /// `X,Y,W,H` in the input's pixels.
        #[arg(long)]
        crop: Option<String>,
        #[arg(long)]
        scale: Option<f64>,
        #[arg(long)]
        jpeg: Option<u8>,
    },
    /// Print the PSNR (dB) of B against A.
    Psnr { a: PathBuf, b: PathBuf },
}

/// `hotline archiver`: no server config, no database.
#[derive(Args)]
struct ArchiverArgs {
    /// The homeserver's client-server URL.
    #[arg(long)]
    homeserver: String,
    /// The archiver's account, as `[records] archiver` names it.
    #[arg(long)]
    user: String,
    /// The secret file: the password (first line), the store passphrase
    /// (optional second line).
    #[arg(long)]
    password_file: PathBuf,
    /// The archiver's state directory (created).
    #[arg(long)]
    state: PathBuf,
    /// The archive directory (created on first run).
    #[arg(long)]
    archive: PathBuf,
    /// The directory with records-office.pub and checkpoint-signing.key.
    #[arg(long)]
    keys: PathBuf,
    /// A signed checkpoint after this many entries.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// And at least this often (seconds) while entries come.
    #[arg(long, default_value_t = 60)]
    checkpoint_seconds: u64,
    /// How often (seconds) every line is caught up from its newest event.
    #[arg(long, default_value_t = 300)]
    catch_up_seconds: u64,
    /// How often (seconds) undecryptable events are tried again.
    #[arg(long, default_value_t = 30)]
    retry_seconds: u64,
}

/// `hotline records ...`: no server, no database; files only.
#[derive(Subcommand)]
enum Records {
    /// Write the records office's age key pair (the archive is encrypted
    /// to it) and the archiver's Ed25519 checkpoint key pair into DIR.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Decrypt an archive and write a verifiable package of one line:
    /// entries.jsonl (with chain hashes), checkpoints.jsonl, manifest.json,
    /// transcript.html, attachments/.
    Export {
        /// The archive directory.
        #[arg(long)]
        archive: PathBuf,
        /// The line (room id).
        #[arg(long)]
        line: String,
        /// From this time on (milliseconds since the epoch, inclusive).
        #[arg(long)]
        from: Option<i64>,
        /// Before this time (milliseconds since the epoch).
        #[arg(long)]
        to: Option<i64>,
        /// The records office's secret key file (records-office.key).
        #[arg(long)]
        key: PathBuf,
        /// The package directory to create (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Prove a package complete and untampered, or say which entry fails
    /// and how; exits non-zero on failure.
    Verify {
        package: PathBuf,
        /// The archiver's checkpoint verifying key (base64, or the file
        /// checkpoint-verify.pub). Without it, the key the package names.
        #[arg(long)]
        checkpoint_key: Option<String>,
    },
}

#[derive(Args)]
struct TurnConfigArgs {
    /// Where to write the coturn configuration (mode 0600: it holds the secret).
    #[arg(long)]
    out: PathBuf,
    /// `IP:PORT` coturn listens on.
    #[arg(long, default_value = "127.0.0.1:3478")]
    listen: String,
    /// Address clients reach coturn at (default: the listen IP).
    #[arg(long)]
    external_host: Option<String>,
    /// Relay port range, `MIN-MAX`.
    #[arg(long, default_value = "49160-49260")]
    relay_ports: String,
    /// Let coturn relay to loopback peers (only for tests on one machine).
    #[arg(long)]
    allow_loopback_peers: bool,
}

/// Settings of `serve`, which is also what a bare `hotline` runs; given
/// before or after `serve`. Their environment variables (`HOTLINE_LISTEN`,
/// `HOTLINE_ALLOW_REGISTRATION`, `HOTLINE_WEB_DIR`) are read with every
/// other setting's in `Config::load`.
#[derive(Args)]
struct ServeArgs {
    /// `ADDR:PORT` to listen on.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Allow open registration (`m.login.dummy`).
    #[arg(long, global = true)]
    allow_registration: bool,
    /// Directory of the built web app, served at `/`.
    #[arg(long, global = true)]
    web_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum LineAide {
    /// Bring an aide this office enrolled onto a line of their principal.
    Add(LineAideArgs),
    /// Take an aide (of either side) off a line, through this office's
    /// principal on it.
    Remove(LineAideArgs),
}

#[derive(Args)]
struct LineAideArgs {
    /// The aide (localpart or full user id).
    aide: String,
    /// The line's room id.
    #[arg(long, conflicts_with = "with", required_unless_present = "with")]
    line: Option<String>,
    /// Or: the line between the aide's principal and this counterpart
    /// (full user id).
    #[arg(long)]
    with: Option<String>,
}

#[derive(Subcommand)]
enum Admin {
    /// Create an account.
    CreateUser {
        /// Localpart or full user id.
        username: String,
        /// The password. Without it, the first line of standard input is
        /// read, which keeps it out of `ps` and shell history.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        displayname: Option<String>,
    },
    /// Enrol an official: creates the pending account and prints a
    /// one-time enrolment code and link.
    Enroll {
        /// Localpart or full user id of the new account.
        username: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        country: String,
        #[arg(long)]
        office: String,
        /// `principal` or `aide`.
        #[arg(long)]
        role: String,
        /// For an aide: the principal served.
        #[arg(long)]
        principal: Option<String>,
        /// How long the enrolment code stays valid.
        #[arg(long, default_value_t = 72)]
        hours: i64,
        /// Base URL of the web app, for the printed link.
        #[arg(long, default_value = "http://127.0.0.1:8008")]
        base_url: String,
    },
    /// Vouch for an official after comparing their identity fingerprint in
    /// person: the server signs an attestation. Compare the 12 groups of 5
    /// digits the official's device shows with `hotline admin show-key
    /// USER`, then type them here, e.g.
    /// `--master-key "37387 05678 88433 13374 79125 81185 78117 34644 96669 84652 72533 29707"`.
    Vouch {
        user: String,
        /// The fingerprint as compared: the 60 digits (any spacing), or
        /// the master key's base64 (spaces allowed).
        #[arg(long)]
        master_key: String,
    },
    /// Print a user's current identity (cross-signing master) key: the
    /// fingerprint in 12 groups of 5 digits, as the official's device
    /// shows it, and the key's base64.
    ShowKey { user: String },
    /// Revoke an official's attestation, at once.
    Revoke { user: String },
    /// Bring an aide onto a line, or take one off it, for the office's
    /// principal on it: the line shows that the office did it. Talks to the
    /// running server (its `office.sock` in the data directory).
    #[command(subcommand)]
    LineAide(LineAide),
    /// Print the append-only audit log.
    Audit,
    /// Print every `hotline trace` request, allowed or refused: sequence,
    /// time, who, image hash, action, result.
    TraceLog,
    /// Print a principal's contact log: each text and call on their lines,
    /// with counterpart, direction, time and call duration (metadata only),
    /// as CSV.
    ContactLog {
        /// The principal (localpart or full user id).
        user: String,
        /// From this time on (milliseconds since the epoch).
        #[arg(long)]
        from: Option<i64>,
        /// Before this time (milliseconds since the epoch).
        #[arg(long)]
        to: Option<i64>,
    },
    /// Replace the server's signing key with a new one. The old key stays
    /// published as an old key (`old_verify_keys`), so what it signed
    /// (attestations, events) still verifies. Restart every server process
    /// on this data directory afterwards.
    RotateSigningKey,
    /// Show each federation peer on the allow-list: the events queued for
    /// it and whether it answers now.
    Federation,
    /// Copy the data directory while the server runs: the database as one
    /// consistent snapshot (SQLite's online backup), then the signing key
    /// and the media files. DEST must not exist or be empty. Restore by
    /// serving from the copy: `hotline serve --data-dir DEST`.
    Backup {
        /// Directory to create the copy in.
        dest: PathBuf,
    },
    /// Copy a SQLite deployment's database into an empty PostgreSQL
    /// database, every row as it was: one consistent snapshot, copied in
    /// one transaction, each table's row count checked. It reads beside a
    /// running server, but writes made after its snapshot are not copied:
    /// for a cutover, stop the server, migrate, set `database` (or
    /// `HOTLINE_DATABASE`) to the new URL and start it. Media files and
    /// signing.key stay in the data directory.
    Migrate {
        /// The source: `sqlite:PATH` (default: this data directory's hotline.db).
        #[arg(long)]
        from: Option<String>,
        /// The target: `postgres://USER@HOST:PORT/DB`; a new, empty database.
        #[arg(long)]
        to: String,
    },
    /// Create a registration token for `m.login.registration_token`.
    RegistrationToken {
        /// How many registrations it allows (default: unlimited).
        #[arg(long)]
        uses: Option<i64>,
        /// Lifetime in hours (default: no expiry).
        #[arg(long)]
        hours: Option<i64>,
    },
}

fn load_config(common: &Common) -> anyhow_lite::Result<Config> {
    let text = match &common.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut config = Config::load(text.as_deref(), |name| std::env::var(name).ok()).map_err(
        |e| match &common.config {
            Some(path) => format!("configuration ({}): {e}", path.display()),
            None => format!("configuration: {e}"),
        },
    )?;
    if let Some(d) = &common.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(n) = &common.server_name {
        config.server_name = n.clone();
    }
    Ok(config)
}

/// The store the configuration names, open; closed by [`Engine::close`].
enum Engine {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl Engine {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Engine::Sqlite(s) => s.clone(),
            Engine::Postgres(s) => s.clone(),
        }
    }

    /// Stops the writer once the queued writes are committed.
    fn close(&self) {
        match self {
            Engine::Sqlite(s) => s.close(),
            Engine::Postgres(s) => s.close(),
        }
    }
}

fn open(config: Config) -> anyhow_lite::Result<(Arc<Services>, Engine)> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("creating {}: {e}", config.data_dir.display()))?;
    let engine = match config.database()? {
        Database::Sqlite(path) => {
            let durability = match config.durability.as_str() {
                "normal" => Durability::Normal,
                "full" => Durability::Full,
                other => {
                    return Err(format!("durability must be full or normal, not {other}").into())
                }
            };
            Engine::Sqlite(SqliteStore::open(path, durability).map_err(|e| e.to_string())?)
        }
        // PostgreSQL commits are always durable (`synchronous_commit` on).
        Database::Postgres(url) => {
            Engine::Postgres(PostgresStore::open(&url).map_err(|e| e.to_string())?)
        }
    };
    let services = Services::new(config, engine.store()).map_err(|e| e.to_string())?;
    Ok((services, engine))
}

/// The first line of standard input, without its line ending.
fn read_password() -> anyhow_lite::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprint!("password (the input is shown; pipe it in to hide it): ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err("no password given (--password, or a line on standard input)".into());
    }
    Ok(password)
}

/// A tiny error type for the binary: messages for the operator.
mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

fn main() {
    alloc::return_large_allocations_to_the_system();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(async_main())
}

async fn async_main() {
    let cli = Cli::parse();
    let logging = tracing_subscriber::fmt()
        .with_env_filter(
            // ruma's auth checks log every event they allow at `info`, and
            // its push rule matching opens spans there for every event.
            tracing_subscriber::EnvFilter::try_from_env("HOTLINE_LOG")
                .unwrap_or_else(|_| "info,ruma_state_res=warn,ruma_common::push=warn".into()),
        )
        .with_target(false)
        // stdout is for what a command prints (`admin` answers, tokens).
        .with_writer(std::io::stderr)
        // Colours for a terminal, plain text for a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if matches!(cli.command, Some(Command::Archiver(_))) {
        // The archiver's Matrix client logs requests and events below
        // `info`; whatever HOTLINE_LOG asks, none of that is written, so
        // no message content, token or password reaches the log.
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        logging
            .finish()
            .with(tracing_subscriber::filter::filter_fn(|meta| {
                const CLIENT: &[&str] = &[
                    "matrix_sdk",
                    "ruma",
                    "reqwest",
                    "hyper",
                    "h2",
                    "vodozemac",
                    "eyeball",
                    "rusqlite",
                ];
                *meta.level() <= tracing::Level::INFO
                    || !CLIENT.iter().any(|c| meta.target().starts_with(c))
            }))
            .init();
    } else {
        logging.init();
    }
    if let Err(e) = run(cli).await {
        eprintln!("hotline: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow_lite::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Archiver(a) = command {
        let mut config = hotline_archiver::Config::new(
            a.homeserver,
            a.user,
            a.password_file,
            a.state,
            a.archive,
            a.keys,
        );
        config.checkpoint_every = a.checkpoint_every;
        config.checkpoint_interval = std::time::Duration::from_secs(a.checkpoint_seconds.max(1));
        config.catch_up_interval = std::time::Duration::from_secs(a.catch_up_seconds.max(1));
        config.retry_interval = std::time::Duration::from_secs(a.retry_seconds.max(1));
        return Ok(hotline_archiver::run(config).await?);
    }
    let mut config = load_config(&cli.common)?;
    match command {
        Command::Archiver(_) => unreachable!("handled above"),
        Command::Serve => {
            let args = cli.serve;
            if let Some(l) = args.listen {
                config.listen = l;
            }
            if args.allow_registration {
                config.allow_registration = true;
            }
            if let Some(w) = args.web_dir {
                config.web_dir = Some(w);
            }
            serve(config).await
        }
        Command::TurnConfig(args) => turn_config(config, args).await,
        Command::Records(cmd) => records(cmd),
        Command::Trace(args) => trace(config, args).await,
        Command::TraceTool(cmd) => trace_tool(cmd),
        Command::Admin(Admin::TraceLog) => {
            let (services, store) = open(config)?;
            let log = services.trace_log().map_err(|e| e.to_string());
            store.close();
            for e in log? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.seq,
                    iso_minute(e.ts),
                    e.actor,
                    e.subject,
                    e.action,
                    e.detail
                );
            }
            Ok(())
        }
        Command::Admin(Admin::CreateUser {
            username,
            password,
            displayname,
        }) => {
            let password = match password {
                Some(p) => p,
                None => read_password()?,
            };
            let (services, store) = open(config)?;
            let user_id = services
                .local_user_id(&username)
                .map_err(|e| e.to_string())?;
            services
                .create_user(&user_id, Some(password), displayname)
                .await
                .map_err(|e| e.to_string())?;
            println!("created {user_id}");
            store.close();
            Ok(())
        }
        Command::Admin(Admin::Enroll {
            username,
            name,
            title,
            country,
            office,
            role,
            principal,
            hours,
            base_url,
        }) => {
            let (services, store) = open(config)?;
            let (user_id, code) = services
                .enroll(hotline_service::identity::Enrolment {
                    username,
                    name,
                    title,
                    country,
                    office,
                    role,
                    principal,
                    valid_hours: hours,
                })
                .await
                .map_err(|e| e.to_string())?;
            store.close();
            println!("enrolled {user_id}");
            println!("code {code}");
            println!("link {}/#/enrol/{code}", base_url.trim_end_matches('/'));
            // What the office does next, once the official has set up keys.
            println!(
                "then compare the 12 groups of 5 digits the official's device shows with \
                 `hotline admin show-key {user_id}`, and vouch: \
                 `hotline admin vouch {user_id} --master-key 'DIGITS'`"
            );
            Ok(())
        }
        Command::Admin(Admin::Vouch { user, master_key }) => {
            let (services, store) = open(config)?;
            let att = services
                .vouch(&user, &master_key)
                .await
                .map_err(|e| e.to_string())?;
            store.close();
            println!("{}", serde_json::to_string_pretty(&att)?);
            Ok(())
        }
        Command::Admin(Admin::ShowKey { user }) => {
            let (services, store) = open(config)?;
            let key = services.current_key(&user).map_err(|e| e.to_string());
            store.close();
            let key = key?;
            println!("user {}", key.user_id);
            if let Some(o) = &key.official {
                println!(
                    "official {}, {} of {} ({})",
                    o.name, o.title, o.country, o.office
                );
            }
            match (&key.master_key, &key.digits) {
                (Some(master), Some(digits)) => {
                    println!("fingerprint {digits}");
                    println!("master_key {master}");
                    Ok(())
                }
                _ => Err(format!(
                    "{} has no identity key yet (cross-signing not set up)",
                    key.user_id
                )
                .into()),
            }
        }
        Command::Admin(Admin::Revoke { user }) => {
            let (services, store) = open(config)?;
            services.revoke(&user).await.map_err(|e| e.to_string())?;
            store.close();
            println!("revoked {user}");
            Ok(())
        }
        Command::Admin(Admin::LineAide(cmd)) => {
            let (path, args) = match &cmd {
                LineAide::Add(a) => ("/_hotline/office/v1/line_aides/add", a),
                LineAide::Remove(a) => ("/_hotline/office/v1/line_aides/remove", a),
            };
            let aide = if args.aide.starts_with('@') {
                args.aide.clone()
            } else {
                format!("@{}:{}", args.aide, config.server_name)
            };
            let body = serde_json::json!({"aide": aide, "room_id": args.line, "with": args.with});
            let answer = office::call(&config.data_dir, path, &body).await?;
            let room = answer["room_id"].as_str().unwrap_or_default();
            match cmd {
                LineAide::Add(_) => println!("{aide} is invited onto {room}, marked as aide"),
                LineAide::Remove(_) => println!("{aide} is off {room}"),
            }
            Ok(())
        }
        Command::Admin(Admin::Audit) => {
            let (services, store) = open(config)?;
            for e in services.audit_entries().map_err(|e| e.to_string())? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.seq, e.ts, e.actor, e.action, e.subject, e.detail
                );
            }
            store.close();
            Ok(())
        }
        Command::Admin(Admin::ContactLog { user, from, to }) => {
            let (services, store) = open(config)?;
            let log = (|| {
                let principal = services.local_user_id(&user)?;
                if services.principal_of(&principal)?.as_ref() != Some(&principal) {
                    return Err(hotline_service::Error::not_found("Not a principal"));
                }
                services.contact_log(
                    &principal,
                    hotline_service::contact_log::Window { from, to },
                )
            })()
            .map_err(|e| e.to_string())?;
            print!("{}", hotline_service::contact_log::to_csv(&log));
            store.close();
            Ok(())
        }
        Command::Admin(Admin::RotateSigningKey) => {
            let (old, new) = hotline_service::identity::ServerKey::rotate(&config.data_dir)
                .map_err(|e| e.to_string())?;
            println!("signing key {new} replaces {old}; restart the server to use it");
            Ok(())
        }
        Command::Admin(Admin::Federation) => {
            let (services, store) = open(config)?;
            let f = &services.config.federation;
            if !f.enabled {
                store.close();
                println!("federation is off ([federation] enabled = false)");
                return Ok(());
            }
            let client =
                hotline_api::federation::client::FederationClient::new(f.ca_file.as_deref())?;
            services
                .federation
                .set_transport(std::sync::Arc::new(client));
            let report = services.federation_report().await;
            store.close();
            if report.is_empty() {
                println!("no peers: [federation] allow is empty");
            }
            for (peer, queued, reached) in report {
                let state = match reached {
                    Ok(software) => format!("answers ({software})"),
                    Err(why) => format!("unreachable: {why}"),
                };
                println!("{peer}\tqueued {queued}\t{state}");
            }
            Ok(())
        }
        Command::Admin(Admin::Backup { dest }) => {
            match config.database()? {
                Database::Postgres(_) => return Err("admin backup copies a SQLite deployment; back a PostgreSQL one up with pg_dump or pg_basebackup, and copy the data directory (signing.key, media)".into()),
                Database::Sqlite(path) if path != config.data_dir.join("hotline.db") => {
                    return Err(format!("admin backup copies a data directory with its database in it; this one is at {}", path.display()).into())
                }
                Database::Sqlite(_) => {}
            }
            let report =
                tokio::task::spawn_blocking(move || backup::run(&config.data_dir, &dest)).await??;
            println!("{report}");
            Ok(())
        }
        Command::Admin(Admin::Migrate { from, to }) => {
            let source = match from.as_deref() {
                None => config.data_dir.join("hotline.db"),
                Some(f) => match f.strip_prefix("sqlite:") {
                    Some(path) if !path.is_empty() => PathBuf::from(path),
                    _ => return Err(format!("--from must be sqlite:PATH, not {f:?}").into()),
                },
            };
            if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
                return Err(
                    format!("--to must be postgres://USER@HOST:PORT/DB, not {to:?}").into(),
                );
            }
            if !source.is_file() {
                return Err(format!("no SQLite database at {}", source.display()).into());
            }
            let report = tokio::task::spawn_blocking(move || {
                hotline_store::migrate_sqlite_to_postgres(&source, &to)
            })
            .await?
            .map_err(|e| e.to_string())?;
            println!("{report}");
            Ok(())
        }
        Command::Admin(Admin::RegistrationToken { uses, hours }) => {
            let (services, store) = open(config)?;
            let expiry = hours.map(|h| hotline_service::now_ms() + h * 3_600_000);
            let token = services
                .create_registration_token(uses, expiry)
                .await
                .map_err(|e| e.to_string())?;
            println!("{token}");
            store.close();
            Ok(())
        }
    }
}

/// `hotline trace IMAGE...`: one paragraph per image.
async fn trace(config: Config, args: TraceArgs) -> anyhow_lite::Result<()> {
    use hotline_service::watermark::{TraceMethod, TraceOutcome};
    let (services, store) = open(config)?;
    let mut failed = None;
    for path in &args.images {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                failed = Some(format!("reading {}: {e}", path.display()));
                continue;
            }
        };
        let started = std::time::Instant::now();
        match services.trace_image(&bytes, args.by.as_deref()).await {
            Err(e) => {
                println!("{}: {e}", path.display());
                failed = Some(e.to_string());
            }
            Ok(TraceOutcome::NotFound) => println!("{}: no watermark found", path.display()),
            Ok(TraceOutcome::Found(t)) => {
                println!("{}: watermark found", path.display());
                println!("  user        {}", t.user_id);
                println!(
                    "  device      {}{}",
                    t.device_id,
                    if t.device_exists {
                        ""
                    } else {
                        " (since removed)"
                    }
                );
                match (&t.room_id, t.line_number) {
                    (Some(r), _) => println!("  line        {r}"),
                    (None, 0) => println!("  line        (a view without a line: the line list)"),
                    (None, n) => {
                        println!("  line        number {n:06x}, not one of the user's lines")
                    }
                }
                println!(
                    "  time        {} to {} UTC",
                    iso_minute(t.from_ms),
                    iso_minute(t.from_ms + 60_000)
                );
                match &t.how {
                    TraceMethod::Decoded(d) => println!(
                        "  confidence  {:.2} (decoded: {} of 200 bits agree, {} bytes corrected, {} erased, cell {:.1} px)",
                        t.confidence, d.bits_agreeing, d.corrected, d.erased, d.cell_px
                    ),
                    TraceMethod::Matched { found, candidates } => println!(
                        "  confidence  {:.2} (matched against {candidates} {}: score {:.1}, threshold {:.1}, {} of 200 bits agree, cell {:.1} px)",
                        t.confidence,
                        if *candidates == 1 { "issued tag and line" } else { "issued tags and lines" },
                        found.z,
                        found.threshold,
                        found.bits_agreeing,
                        found.cell_px
                    ),
                }
            }
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "traced");
    }
    store.close();
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of a time in milliseconds since the epoch.
fn iso_minute(ms: i64) -> String {
    let t = hotline_service::contact_log::iso8601(ms);
    format!("{} {}", &t[..10], &t[11..16])
}

fn trace_tool(cmd: TraceTool) -> anyhow_lite::Result<()> {
    let load = |p: &PathBuf| image::open(p).map_err(|e| format!("{}: {e}", p.display()));
    match cmd {
        TraceTool::Transform {
            input,
            output,
            crop,
            scale,
            jpeg,
        } => {
            let crop = match crop {
                None => None,
                Some(c) => match c
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<u32>, _>>()
                {
                    Ok(v) if v.len() == 4 => Some((v[0], v[1], v[2], v[3])),
                    _ => return Err(format!("--crop must be X,Y,W,H, not {c:?}").into()),
                },
            };
            let t = hotline_trace::tools::Transform { crop, scale, jpeg };
            std::fs::write(
                &output,
                hotline_trace::tools::transform(&load(&input)?, &t)?,
            )?;
        }
        TraceTool::Psnr { a, b } => {
            let db = hotline_trace::tools::psnr(&load(&a)?, &load(&b)?)
                .ok_or("the images differ in size")?;
            println!("{db:.2}");
        }
    }
    Ok(())
}

fn records(cmd: Records) -> anyhow_lite::Result<()> {
    use hotline_records::cli;
    match cmd {
        Records::Keygen { out } => print!("{}", cli::keygen(&out)?),
        Records::Export {
            archive,
            line,
            from,
            to,
            key,
            out,
        } => print!("{}", cli::export(&archive, &line, from, to, &key, &out)?),
        Records::Verify {
            package,
            checkpoint_key,
        } => {
            let (report, ok) = cli::verify(&package, checkpoint_key.as_deref())?;
            print!("{report}");
            if !ok {
                return Err(format!("{} does not verify", package.display()).into());
            }
        }
    }
    Ok(())
}

async fn turn_config(config: Config, args: TurnConfigArgs) -> anyhow_lite::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (ip, port) = args
        .listen
        .rsplit_once(':')
        .ok_or("--listen must be IP:PORT")?;
    let (min_port, max_port) = args
        .relay_ports
        .split_once('-')
        .ok_or("--relay-ports must be MIN-MAX")?;
    let host = args.external_host.clone().unwrap_or_else(|| ip.to_owned());
    let server_name = config.server_name.clone();
    let (services, store) = open(config)?;
    let uris = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    let secret = services
        .configure_turn(&uris)
        .await
        .map_err(|e| e.to_string())?;
    store.close();
    let mut conf = format!(
        "# Written by `hotline turn-config`. Shares its secret with the Hotline server.\n\
         listening-ip={ip}\nlistening-port={port}\nrelay-ip={ip}\n\
         min-port={min_port}\nmax-port={max_port}\n\
         use-auth-secret\nstatic-auth-secret={secret}\nrealm={server_name}\n\
         fingerprint\nno-tls\nno-dtls\nno-cli\nno-multicast-peers\n\
         total-quota=100\nstale-nonce=600\nlog-file=stdout\nsimple-log\n"
    );
    if args.allow_loopback_peers {
        conf.push_str("allow-loopback-peers\n");
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(|e| format!("writing {}: {e}", args.out.display()))?;
    f.write_all(conf.as_bytes())?;
    println!(
        "wrote {}; TURN URIs: {}",
        args.out.display(),
        uris.join(" ")
    );
    Ok(())
}

/// The federation listener's TLS: the configured certificate chain and
/// key (PKCS#8, SEC1 or PKCS#1; ECDSA, Ed25519 or RSA). One certificate
/// whatever the client asks for, so a peer that sends no SNI (an
/// IP-literal server name) is served too.
fn federation_tls(
    f: &hotline_service::config::Federation,
) -> anyhow_lite::Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&f.tls_certificate, &f.tls_private_key) else {
        return Err("federation is enabled but federation.tls_certificate and federation.tls_private_key are not both set".into());
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("federation.tls_certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "federation.tls_certificate {}: no certificate in it",
            cert.display()
        )
        .into());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("federation.tls_private_key {}: {e}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("federation TLS certificate and key: {e}"))?;
    Ok(std::sync::Arc::new(config))
}

async fn serve(config: Config) -> anyhow_lite::Result<()> {
    let listen = config.listen.clone();
    let metrics_listen = config.metrics_listen.clone();
    let limits = hotline_api::server::ServeLimits {
        max_connections: config.max_connections,
        header_read_timeout: std::time::Duration::from_secs(config.header_read_timeout_seconds),
        body_read_timeout: std::time::Duration::from_secs(config.body_read_timeout_seconds),
    };
    let (services, store) = open(config)?;
    // `hotline admin vouch|revoke` write beside the running server.
    services.watch_other_processes(std::time::Duration::from_secs(1));
    services.time_out_presence()?;
    services.flush_seen_devices_regularly();
    services.start_line_recorders();
    services.pushers.set_gateway(std::sync::Arc::new(
        hotline_api::push_gateway::PushGatewayClient::new(
            services.config.federation.ca_file.as_deref(),
        )?,
    ));
    services.start_pushers();
    let hotline_api::Apps {
        main: app,
        metrics_only: metrics_app,
        federation: federation_app,
        office: office_app,
    } = hotline_api::apps(services.clone());
    let office_listener = office::bind(&services.config.data_dir).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    let federation = if services.config.federation.enabled {
        let f = &services.config.federation;
        let tls = federation_tls(f)?;
        let client = hotline_api::federation::client::FederationClient::new(f.ca_file.as_deref())?;
        services
            .federation
            .set_transport(std::sync::Arc::new(client));
        let listener = tokio::net::TcpListener::bind(&f.listen)
            .await
            .map_err(|e| format!("listening on {} (federation.listen): {e}", f.listen))?;
        tracing::info!(address = %listener.local_addr()?, peers = f.allow.len(), "federation is serving");
        services.start_federation_sender();
        services.start_peer_directory_refresh();
        Some((listener, tls))
    } else {
        None
    };
    let metrics_listener = match &metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listening on {addr} (metrics_listen): {e}"))?,
        ),
        None => None,
    };
    tracing::info!(
        address = %listener.local_addr()?,
        server_name = %services.server_name(),
        data_dir = %services.config.data_dir.display(),
        metrics = %metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "hotline is serving"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let metrics_server = metrics_listener.map(|l| {
        // A scraper or two: a small cap.
        let metrics_limits = hotline_api::server::ServeLimits {
            max_connections: 16,
            ..limits
        };
        tokio::spawn(hotline_api::server::serve(
            l,
            metrics_app,
            metrics_limits,
            stop_signal(stopped.clone()),
        ))
    });
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let office_server = office_listener.map(|l| {
        let stopping = stop_signal(stopped.clone());
        tokio::spawn(async move {
            axum::serve(l, office_app)
                .with_graceful_shutdown(stopping)
                .await
        })
    });
    let federation_server = federation.map(|(l, tls)| {
        tokio::spawn(hotline_api::server::serve_tls(
            l,
            federation_app,
            limits,
            tls,
            stop_signal(stopped.clone()),
        ))
    });
    hotline_api::server::serve(listener, app, limits, stop_signal(stopped)).await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    if let Some(f) = federation_server {
        let _ = f.await;
    }
    if let Some(o) = office_server {
        let _ = o.await;
        office::unbind(&services.config.data_dir);
    }
    // What was noted since the last round, so a restart loses none of it.
    if let Err(e) = services.flush_seen_devices().await {
        tracing::warn!(error = %e, "recording when devices were last seen");
    }
    store.close();
    Ok(())
}
