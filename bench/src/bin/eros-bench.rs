//! `eros-bench`: the load generator. Drives any MCP server over stdio or
//! streamable HTTP and reports throughput, latency, response size, and the
//! server's CPU per call and peak memory; `paced` makes one call at a time,
//! as an agent does; `replicas` measures replication lag and replica read
//! throughput. See BENCHMARKS.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use eros_bench::{
    dataset, floor, keepalive, load, neighbours, paced, replicas, soak, Target, ToolSpec, Workload,
};

#[derive(Debug, Parser)]
#[command(
    name = "eros-bench",
    version,
    about = "Load generator for MCP database servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the deterministic benchmark database (bench_items and posts).
    CreateDb {
        #[arg(long)]
        path: PathBuf,
        /// Rows in each table.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
    },
    /// Run workloads and report calls/s, latency, bytes, server CPU and RSS.
    Run {
        #[command(flatten)]
        target: TargetArgs,
        /// Workloads to run, in order.
        #[arg(long, value_enum, num_args = 1.., default_values_t = [Workload::Point])]
        workload: Vec<Workload>,
        /// Calls in flight (over one stdio session, or as many HTTP clients), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1])]
        concurrency: Vec<usize>,
        /// Seconds each measurement runs.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Unmeasured calls before each measurement.
        #[arg(long, default_value_t = 200)]
        warmup: u64,
        /// Print one JSON object per measurement instead of a table row.
        #[arg(long)]
        json: bool,
    },
    /// One call in flight, each answer read and checked before the next:
    /// server CPU per call, latency, answer bytes against the raw values and
    /// SQLite's own cost (with --db), peak RSS, time to the first answer.
    Paced {
        #[command(flatten)]
        target: TargetArgs,
        /// Workloads to run, in order.
        #[arg(long, value_enum, num_args = 1.., default_values_t = [Workload::PostPoint, Workload::Posts1000, Workload::Aggregate])]
        workload: Vec<Workload>,
        /// Measured calls of each workload.
        #[arg(long, default_value_t = 2000)]
        calls: u64,
        /// Unmeasured calls before each workload.
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        /// Milliseconds between an answer and the next call.
        #[arg(long, default_value_t = 0.0)]
        think_ms: f64,
        /// The benchmark file the server serves, to measure SQLite's own
        /// cost on the same SQL in this process.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print only the JSON line, not the table.
        #[arg(long)]
        json: bool,
    },
    /// Median milliseconds from starting the server to its first verified answer.
    Startup {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// The first query (default: a point lookup in the benchmark table).
        #[arg(long)]
        sql: Option<String>,
        /// Text its answer must contain.
        #[arg(long, requires = "sql")]
        expect: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sequential calls over ONE HTTP keep-alive connection, one at a time:
    /// p50/p99 show any per-request floor (HTTP targets only).
    Keepalive {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_enum, default_value_t = Workload::Point)]
        workload: Workload,
        /// Measured calls.
        #[arg(long, default_value_t = 2000)]
        calls: u64,
        /// Unmeasured calls first.
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        #[arg(long)]
        json: bool,
    },
    /// Replication (eros-mcp with Litestream only): starts a primary under
    /// `litestream replicate`, N followers and replicas, measures how long a
    /// write takes to show on each replica (p50/p99) under a steady write
    /// load, then the read throughput of one replica against all of them,
    /// then RPO and restore time: the primary and Litestream SIGKILLed
    /// together under steady writes, `eros-mcp restore --output` from the
    /// replica, what the restored file holds.
    Replicas {
        /// The eros-mcp binary.
        #[arg(long)]
        eros_mcp: PathBuf,
        /// The litestream binary.
        #[arg(long)]
        litestream: PathBuf,
        /// An empty directory for the databases, the replica and the logs.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// First loopback port (the primary: it and the next; replica N:
        /// PORT + 10N and the next).
        #[arg(long, default_value_t = 18700)]
        base_port: u16,
        /// Milliseconds between writes on the primary.
        #[arg(long, default_value_t = 100.0)]
        write_interval_ms: f64,
        /// Writes measured.
        #[arg(long, default_value_t = 600)]
        writes: u64,
        /// Milliseconds between two polls of a replica for the newest write.
        #[arg(long, default_value_t = 10.0)]
        poll_interval_ms: f64,
        /// Paced read clients (one call in flight each).
        #[arg(long, default_value_t = 8)]
        read_clients: usize,
        /// Seconds each read measurement runs.
        #[arg(long, default_value_t = 10.0)]
        read_duration: f64,
        /// Rows of the table the reads look up.
        #[arg(long, default_value_t = 10_000)]
        read_rows: u64,
        /// Write intervals of steady writes before the primary's node is
        /// killed (the last phase).
        #[arg(long, default_value_t = 100)]
        kill_after_writes: u64,
        #[arg(long)]
        json: bool,
    },
    /// eros-mcp against the floor of its stack (eros-floor: a bare rmcp
    /// server running SQLite inline), interleaved rounds, same clients:
    /// server CPU per call over stdio and HTTP, the ratio to the floor
    /// and whether each target holds (BENCHMARKS.md).
    Floor {
        /// The eros-mcp binary (default: beside eros-bench).
        #[arg(long)]
        eros_mcp: Option<PathBuf>,
        /// The eros-floor binary (default: beside eros-bench).
        #[arg(long)]
        floor: Option<PathBuf>,
        /// The benchmark file (create-db).
        #[arg(long)]
        db: PathBuf,
        /// Rows in its tables.
        #[arg(long, default_value_t = 60_000)]
        rows: u64,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Measured calls of each paced point lookup run (stdio and HTTP).
        #[arg(long, default_value_t = 5000)]
        point_calls: u64,
        /// Measured calls of 1,000 text rows.
        #[arg(long, default_value_t = 500)]
        page_calls: u64,
        /// Measured aggregates.
        #[arg(long, default_value_t = 60)]
        aggregate_calls: u64,
        /// Seconds of each concurrent HTTP measurement.
        #[arg(long, default_value_t = 10.0)]
        concurrent_seconds: f64,
        /// The HTTP servers' port (eros-mcp's metrics on the next one).
        #[arg(long, default_value_t = 18600)]
        port: u16,
        /// Exit with failure unless every target holds.
        #[arg(long)]
        check: bool,
        #[arg(long)]
        json: bool,
    },
    /// A mixed run looking for leaks (eros-mcp only: uses pool_stats and execute).
    Soak {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Include writes (the server needs EROS_DB_READ_ONLY=false).
        #[arg(long)]
        writes: bool,
    },
    /// The noisy neighbour (an HTTP server with two static tokens): a quiet
    /// principal's paced point lookups alone, then while a noisy principal
    /// keeps --noisy heavy reads in flight; run it with fair shares on and
    /// off (EROS_DB_FAIR_SHARES) to see what they buy.
    Neighbours {
        #[arg(long)]
        url: String,
        #[arg(long)]
        noisy_token: String,
        #[arg(long)]
        quiet_token: String,
        #[arg(long, default_value_t = 16)]
        noisy: usize,
        #[arg(
            long,
            default_value = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                             WHERE i < 2000000) SELECT count(*) FROM n"
        )]
        heavy_sql: String,
        #[arg(long, default_value = "SELECT 1")]
        point_sql: String,
        /// The quiet principal's think time between calls.
        #[arg(long, default_value_t = 50.0)]
        think_ms: f64,
        /// Seconds of each measured run (solo, then contended).
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Command line of a stdio server, e.g. "eros-mcp --db bench.db".
    #[arg(long, conflicts_with = "url")]
    stdio: Option<String>,
    /// URL of a streamable HTTP server, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    url: Option<String>,
    /// Bearer token for --url.
    #[arg(long)]
    token: Option<String>,
    /// PID of the HTTP server, to read its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Tool that runs SQL.
    #[arg(long, default_value = "query")]
    tool: String,
    /// Name of the tool's SQL argument.
    #[arg(long, default_value = "sql")]
    sql_arg: String,
    /// An argument sent with every call beside the SQL, as KEY=VALUE
    /// (repeatable), e.g. database=shop for a server of several databases.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = key_value)]
    args: Vec<(String, String)>,
    /// Rows in each benchmark table (as created by create-db).
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
}

impl TargetArgs {
    fn target(&self) -> Target {
        match (&self.stdio, &self.url) {
            (Some(command), _) => Target::Stdio {
                command: command.split_whitespace().map(str::to_string).collect(),
                env: Vec::new(),
            },
            (None, Some(url)) => Target::Http {
                url: url.clone(),
                token: self.token.clone(),
                pid: self.server_pid,
            },
            (None, None) => {
                eprintln!("error: give --stdio COMMAND or --url URL");
                std::process::exit(2);
            }
        }
    }

    /// The target with the eros-mcp caps raised for a stdio child, so a
    /// page of 1,000 text-heavy rows is answered whole (peers ignore them).
    fn paced_target(&self) -> Target {
        match self.target() {
            Target::Stdio { command, mut env } => {
                env.push(("EROS_DB_MAX_ROWS".into(), "10000".into()));
                env.push(("EROS_DB_MAX_BYTES".into(), "16777216".into()));
                Target::Stdio { command, env }
            }
            http => http,
        }
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            tool: self.tool.clone(),
            sql_argument: self.sql_arg.clone(),
            extra: self.args.clone(),
        }
    }
}

/// `KEY=VALUE` of `--arg`.
/// Prints a report: as text unless `json`, then always as one JSON line.
fn emit(
    report: &(impl std::fmt::Display + serde::Serialize),
    json: bool,
) -> Result<(), serde_json::Error> {
    if !json {
        print!("{report}");
    }
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::CreateDb { path, rows } => {
            dataset::create(&path, rows)?;
            println!(
                "{}: {rows} rows in {} and in {}",
                path.display(),
                dataset::TABLE,
                dataset::POSTS
            );
        }
        Command::Run {
            target,
            workload,
            concurrency,
            duration,
            warmup,
            json,
        } => {
            let most = concurrency.iter().copied().max().unwrap_or(1);
            let (sessions, pid) = load::connect(&target.target(), most).await?;
            for workload in workload {
                for &c in &concurrency {
                    let plan = load::Plan {
                        workload,
                        rows: target.rows,
                        concurrency: c,
                        warmup,
                        duration: Duration::from_secs_f64(duration),
                    };
                    let report = load::run(&sessions, pid, &target.spec(), plan).await?;
                    if json {
                        println!("{}", serde_json::to_string(&report)?);
                    } else {
                        println!("{report}");
                    }
                }
            }
            for session in sessions {
                let _ = session.cancel().await;
            }
        }
        Command::Paced {
            target,
            workload,
            calls,
            warmup,
            think_ms,
            db,
            json,
        } => {
            if !think_ms.is_finite() || think_ms < 0.0 {
                return Err(format!("--think-ms must be 0 or more, got {think_ms}").into());
            }
            let plan = paced::PacedPlan {
                workloads: workload,
                rows: target.rows,
                warmup,
                calls,
                think: Duration::from_secs_f64(think_ms / 1000.0),
                db,
            };
            let report = paced::run(&target.paced_target(), &target.spec(), &plan).await?;
            emit(&report, json)?;
        }
        Command::Floor {
            eros_mcp,
            floor,
            db,
            rows,
            rounds,
            point_calls,
            page_calls,
            aggregate_calls,
            concurrent_seconds,
            port,
            check,
            json,
        } => {
            let beside = |name: &str| -> Result<PathBuf, std::io::Error> {
                Ok(std::env::current_exe()?.with_file_name(name))
            };
            let plan = floor::FloorPlan {
                eros_mcp: eros_mcp.map_or_else(|| beside("eros-mcp"), Ok)?,
                floor: floor.map_or_else(|| beside("eros-floor"), Ok)?,
                db,
                rows,
                rounds,
                point_calls,
                page_calls,
                aggregate_calls,
                concurrent_seconds,
                port,
            };
            let report = floor::run(&plan).await?;
            emit(&report, json)?;
            if check && !report.all_met {
                return Err("not every target holds".into());
            }
        }
        Command::Startup {
            target,
            runs,
            sql,
            expect,
            json,
        } => {
            let probe = match sql {
                Some(sql) => eros_bench::workload::Call {
                    sql,
                    expect: expect.into_iter().collect(),
                },
                None => Workload::Point.call(1, target.rows),
            };
            let ms = load::startup_ms(&target.target(), &target.spec(), &probe, runs).await?;
            if json {
                println!("{}", serde_json::json!({"startup_ms": ms}));
            } else {
                println!("ready after {ms:.1} ms (median of {runs})");
            }
        }
        Command::Keepalive {
            target,
            workload,
            calls,
            warmup,
            json,
        } => {
            let url = target
                .url
                .as_deref()
                .ok_or("keepalive measures an HTTP server: give --url")?;
            let plan = keepalive::KeepAlivePlan {
                workload,
                rows: target.rows,
                warmup,
                calls,
            };
            let report = keepalive::run(url, target.token.as_deref(), &target.spec(), plan).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
        }
        Command::Replicas {
            eros_mcp,
            litestream,
            dir,
            replicas,
            base_port,
            write_interval_ms,
            writes,
            poll_interval_ms,
            read_clients,
            read_duration,
            read_rows,
            kill_after_writes,
            json,
        } => {
            for (name, value) in [
                ("--write-interval-ms", write_interval_ms),
                ("--poll-interval-ms", poll_interval_ms),
                ("--read-duration", read_duration * 1000.0),
            ] {
                if !value.is_finite() || value <= 0.0 {
                    return Err(format!("{name} must be more than 0").into());
                }
            }
            let plan = replicas::ReplicasPlan {
                eros_mcp,
                litestream,
                dir,
                replicas,
                base_port,
                write_interval: Duration::from_secs_f64(write_interval_ms / 1000.0),
                writes,
                poll_interval: Duration::from_secs_f64(poll_interval_ms / 1000.0),
                read_clients,
                read_duration: Duration::from_secs_f64(read_duration),
                read_rows,
                kill_after_writes,
            };
            let report = replicas::run(&plan).await?;
            emit(&report, json)?;
        }
        Command::Soak {
            target,
            duration,
            concurrency,
            writes,
        } => {
            let (sessions, pid) = load::connect(&target.target(), concurrency).await?;
            let pid =
                pid.ok_or("soak needs the server's pid: use --stdio, or --server-pid with --url")?;
            let report = soak::run(
                &sessions,
                pid,
                target.rows,
                concurrency,
                Duration::from_secs_f64(duration),
                writes,
            )
            .await?;
            println!("{report}");
            for session in sessions {
                let _ = session.cancel().await;
            }
            if !report.problems.is_empty() {
                return Err("the soak found problems".into());
            }
        }
        Command::Neighbours {
            url,
            noisy_token,
            quiet_token,
            noisy,
            heavy_sql,
            point_sql,
            think_ms,
            seconds,
            json,
        } => {
            let plan = neighbours::NeighboursPlan {
                url,
                noisy_token,
                quiet_token,
                noisy,
                heavy_sql,
                point_sql,
                think: Duration::from_secs_f64(think_ms / 1000.0),
                duration: Duration::from_secs_f64(seconds),
            };
            let report = neighbours::run(&plan).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
    }
    Ok(())
}
