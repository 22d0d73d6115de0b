//! The `eros-mcp` binary: parses the command line and the environment once,
//! sets up logging on stderr (stdout belongs to the stdio transport) and runs
//! the chosen command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use eros_mcp::budget::MemoryBudget;
use eros_mcp::config::{Config, DatabaseConfig, Transport};
use eros_mcp::database;
use eros_mcp::pool::worker::WORKER_ARG;
use eros_mcp::pool::NoObserver;
use eros_mcp::replication::restore::{self as restoring, Restored, Timestamp};
use eros_mcp::shutdown::Shutdown;
use eros_mcp::sqlite::migrations;
use eros_mcp::telemetry::{self, Telemetry};

/// A production SQLite database server for AI agents, over MCP.
///
/// Configuration comes from EROS_* environment variables (and a .env file in
/// the working directory); see .env.example for every variable.
#[derive(Debug, Parser)]
#[command(name = "eros-mcp", version, about, long_about)]
struct Cli {
    /// SQLite database file to serve (overrides EROS_DB_PATH).
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "EROS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `eros_mcp=debug`.
    #[arg(long, global = true, env = "EROS_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the database (the default).
    Serve,
    /// Validate configuration and database, print the effective settings
    /// and pool stats, and exit.
    Check,
    /// Apply pending migrations and exit.
    Migrate,
    /// Load the demo data set into a new, empty database and exit.
    DemoData,
    /// Restore the database from its Litestream replica (EROS_DB_REPLICA_URL)
    /// and exit. Without --output: the latest state into EROS_DB_PATH when
    /// that file is missing or empty (nothing is done when it has data or
    /// when no replica exists yet). With --output: into that new file,
    /// optionally as it was at --timestamp (point-in-time restore).
    Restore {
        /// Restore the state as it was at this time (RFC 3339, e.g.
        /// 2026-12-02T10:30:00Z); needs --output.
        #[arg(long, value_name = "RFC3339", requires = "output")]
        timestamp: Option<Timestamp>,
        /// A new file to restore into (never an existing file, never the
        /// live database).
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // A worker process holding one pooled connection (see
    // eros_mcp::pool::worker): it reads nothing else from its environment.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(WORKER_ARG)) {
        return eros_mcp::engine::host::serve(&eros_mcp::mcp::rows::FORMATS);
    }
    limit_malloc_arenas();
    // A missing .env is normal; a malformed one is reported below.
    let dotenv = dotenvy::dotenv();
    let cli = Cli::parse();
    let telemetry = match Telemetry::from_env() {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format, &cli.log, telemetry.as_ref());
    if let Err(err) = dotenv {
        if !err.not_found() {
            eprintln!("error: cannot read .env: {err}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(mut config) => {
            if let Some(path) = cli.db.clone() {
                if let Some(file) = &config.databases.file {
                    eprintln!(
                        "error: --db names one database, and {} declares them all; give one or \
                         the other",
                        file.display()
                    );
                    return ExitCode::from(2);
                }
                config.database.path = path;
            }
            config
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let one_database = matches!(
        command,
        Command::Migrate | Command::DemoData | Command::Restore { .. }
    );
    if let (true, Some(file)) = (one_database, &config.databases.file) {
        eprintln!(
            "error: this command acts on one database: run it with that database's \
             EROS_DB_PATH (and settings), without EROS_DATABASES_FILE ({})",
            file.display()
        );
        return ExitCode::from(2);
    }
    let outcome = match command {
        Command::Serve => serve(config, telemetry.as_ref()),
        Command::Check => check(config),
        Command::Migrate => migrate(config.database),
        Command::DemoData => demo_data(config.database),
        Command::Restore { timestamp, output } => {
            restore(&config.database, timestamp.as_ref(), output.as_deref())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = describe(&err);
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates its own arena, so a burst of
/// blocking threads leaves memory scattered over many arenas that are never
/// returned. Two arenas keep the server's footprint small at no measurable
/// cost in speed (see BENCHMARKS.md).
///
/// A page of rows arrives from its worker in one buffer of up to a few
/// hundred KB. glibc would map such a buffer fresh and unmap it on free (or
/// trim the heap after it), so every call paid page faults on the whole
/// page: freed memory up to 8 MiB stays in the heap for the next call (part
/// of the budget's allocator slack).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    }
}

/// The error and its causes on one line, each cause once: most of our
/// errors already name their cause in their own message.
fn describe(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

/// Logs on stderr as `filter` says, and with `telemetry` the call spans
/// to OpenTelemetry too (their trace id then shows in each log line of the
/// call). Without it, the spans' target is off: they are never created.
fn init_logging(format: LogFormat, filter: &str, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let mut filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if telemetry.is_none() {
        let off = format!("{}=off", telemetry::TARGET);
        filter = filter.add_directive(off.parse().expect("a valid directive"));
    }
    // Colours only for a person at a terminal, not for a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some(telemetry) = telemetry else {
        // No traces: one global filter, so a disabled callsite is never
        // asked again (a per-layer filter would be, on every event).
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        match format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
        return;
    };
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let spans = tracing_opentelemetry::layer()
        .with_tracer(telemetry.tracer())
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(telemetry::TARGET, tracing::Level::TRACE),
        );
    tracing_subscriber::registry().with(logs).with(spans).init();
}

fn serve(config: Config, telemetry: Option<&Telemetry>) -> anyhow::Result<()> {
    // Statements run in worker processes, so the runtime only moves
    // messages: one thread (stdio always, HTTP by default) serves them
    // without cross-thread wake-ups; EROS_MCP_HTTP_THREADS asks for more.
    let mcp = config.mcp.layers();
    let runtime = match (mcp.transport, mcp.http_threads) {
        (Transport::Stdio, _) | (Transport::Http, 1) => {
            tokio::runtime::Builder::new_current_thread()
        }
        (Transport::Http, 0) => tokio::runtime::Builder::new_multi_thread(),
        (Transport::Http, threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    }
    .enable_all()
    .build()
    .context("start the async runtime")?;
    let served = runtime.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown
            .trigger_on_signals()
            .context("install the signal handlers")?;
        let exports = telemetry.map(Telemetry::exports);
        eros_mcp::app::run(config, shutdown, exports)
            .await
            .map_err(anyhow::Error::from)
    });
    // The last calls' spans go to the collector before the process exits.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    // Dropping the runtime would wait for every blocking task; the database
    // is closed by now, so exit without waiting. (A statement abandoned
    // inside one long SQLite step runs on a thread of its own, which the
    // process exit does not wait for.)
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    served
}

/// How long `eros-mcp check` lets `PRAGMA quick_check` run: it reads the
/// whole file, about a second per few hundred MB.
const QUICK_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn check(config: Config) -> anyhow::Result<()> {
    let budget = MemoryBudget::of(&config);
    let specs = config.database_specs()?;
    println!("{budget}");
    for spec in specs {
        if config.databases.file.is_some() {
            println!("[database {}]", spec.name);
        }
        check_database(&spec.database)?;
    }
    Ok(())
}

/// `check` of one database: its settings, schema version, every page read,
/// and its pool.
fn check_database(config: &DatabaseConfig) -> anyhow::Result<()> {
    println!("{config}");
    let pool = database::open(config, Arc::new(NoObserver))?;
    let version = {
        let conn = pool.open_local()?;
        migrations::current_version(&conn)?
    };
    println!(
        "schema_version = {version} (this build knows {})",
        migrations::latest_version()
    );
    {
        // Every page is read: a corrupt table fails `check`, not a query later.
        let conn = pool.open_local()?;
        conn.with_access(eros_mcp::sqlite::access::Access::Trusted, |conn| {
            database::quick_check(conn, &config.path, QUICK_CHECK_TIMEOUT)
        })??;
        println!("quick_check = ok");
    }
    // Serving opens one before it answers and the rest in the background;
    // `check` opens them all, so one that cannot open fails here.
    pool.prewarm()?;
    println!("pool_stats = {}", serde_json::to_string(&pool.stats())?);
    pool.close()?;
    Ok(())
}

fn migrate(config: DatabaseConfig) -> anyhow::Result<()> {
    let mut conn = database::open_direct(&config)?;
    let before = migrations::current_version(&conn)?;
    let after = migrations::migrate(&mut conn)?;
    println!(
        "{}: schema version {before} -> {after}",
        config.path.display()
    );
    Ok(())
}

fn demo_data(config: DatabaseConfig) -> anyhow::Result<()> {
    database::prepare_schema(&DatabaseConfig {
        migrate: true,
        ..config.clone()
    })?;
    let mut conn = database::open_direct(&config)?;
    migrations::load_demo_data(&mut conn)?;
    println!("{}: demo data loaded", config.path.display());
    Ok(())
}

fn restore(
    config: &DatabaseConfig,
    timestamp: Option<&Timestamp>,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let settings = config.replication_settings();
    let url = settings.replica_url.clone().unwrap_or_default();
    let Some(output) = output else {
        let done = match restoring::restore_if_empty(&settings, &config.path)? {
            Restored::Restored { elapsed } => {
                format!("restored from {url} in {:.2} s", elapsed.as_secs_f64())
            }
            Restored::NoReplica => format!("no replica at {url} yet: nothing restored"),
            Restored::HasData => "the database has data: nothing restored".to_string(),
        };
        println!("{}: {done}", config.path.display());
        return Ok(());
    };
    let elapsed = restoring::restore_into(&settings, &config.path, output, timestamp)?;
    let at = timestamp.map_or("its latest state".to_string(), |t| {
        format!("its state at {t}")
    });
    println!(
        "{}: restored {url} as {at} in {:.2} s",
        output.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}
