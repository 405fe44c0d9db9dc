//! `handover-bench`: the tools `bench/run.sh` uses to benchmark messenger-handover.
//!
//! - `floor`: a minimal server doing the least the service's routes must do (the reference).
//! - `stub`: a Graph API stub that answers every call at once.
//! - `e2e`: end-to-end take latency, with its own Graph API stub.
//! - `deliveries`, `template`: the request files wrk's script (`bench/load.lua`) replays.
//! - `warm`: one plain-intent request per user before a measurement.
//! - `ready`, `drain`, `metric`: start-up time to `/readyz`, waiting for the job queue to empty,
//!   one series of `/metrics`.

mod deliveries;
mod e2e;
mod fixtures;
mod floor;
mod probe;
mod stub;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use fixtures::Intent;

#[derive(Parser)]
#[command(
    name = "handover-bench",
    about = "Benchmark tools for messenger-handover (see bench/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The floor: POST /fulfillment (inline pass_thread_control for input.handover) and
    /// POST /messenger (signature check), nothing stored.
    Floor {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// Graph API base URL (the stub), e.g. http://127.0.0.1:8091.
        #[arg(long)]
        graph: String,
        /// Secret of the webhook signatures (FB_APP_SECRET).
        #[arg(long)]
        secret: String,
        /// Bearer token /fulfillment requires (FULFILLMENT_TOKEN); none: no check.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, default_value = stub::INBOX_APP_ID)]
        inbox_app_id: String,
    },
    /// A Graph API stub answering every call at once.
    Stub {
        #[arg(long, default_value = "127.0.0.1:8091")]
        listen: String,
        /// The bot app's id (thread_owner's answer when the inbox does not have the thread).
        #[arg(long, default_value = stub::BOT_APP_ID)]
        app_id: String,
        #[arg(long, default_value = stub::INBOX_APP_ID)]
        inbox_app_id: String,
    },
    /// End-to-end take latency: hands over USERS users, then sends one signed "back to bot"
    /// delivery per user at RATE per second and times each until its take_thread_control
    /// reaches this process's Graph API stub. Prints e2e_*=value lines.
    E2e {
        /// The service's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        service: String,
        /// Where this process serves the Graph API (the service's GRAPH_API_BASE).
        #[arg(long)]
        graph_listen: String,
        /// Secret of the webhook signatures (FB_APP_SECRET).
        #[arg(long)]
        secret: String,
        /// FULFILLMENT_TOKEN.
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 5000)]
        users: u64,
        /// Deliveries per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value = fixtures::PAGE_ID)]
        page_id: String,
        #[arg(long, default_value_t = 9_300_000_000_000_000)]
        psid_base: u64,
        /// Handover requests in flight while setting up.
        #[arg(long, default_value_t = 16)]
        concurrency: u64,
        /// Seconds to wait for the last take after the last delivery.
        #[arg(long, default_value_t = 60)]
        take_timeout: u64,
        /// Seconds to wait for the passes and for the queue to empty after the handovers.
        #[arg(long, default_value_t = 120)]
        wait_timeout: u64,
        /// Milliseconds of quiet between the setup and the measurement.
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
        #[arg(long, default_value = stub::BOT_APP_ID)]
        app_id: String,
        #[arg(long, default_value = stub::INBOX_APP_ID)]
        inbox_app_id: String,
    },
    /// Writes COUNT signed standby user-message deliveries, one `<signature>\t<body>` a line.
    Deliveries {
        #[arg(long)]
        count: u64,
        #[arg(long)]
        secret: String,
        #[arg(long)]
        out: PathBuf,
        /// Distinct senders, cycled over.
        #[arg(long, default_value_t = 1000)]
        users: u64,
        #[arg(long, default_value_t = 9_100_000_000_000_000)]
        psid_base: u64,
        #[arg(long, default_value = fixtures::PAGE_ID)]
        page_id: String,
        /// The message text (not a return phrase).
        #[arg(long, default_value = "thanks")]
        text: String,
    },
    /// Writes a fulfillment request body on one line, `@PSID@` where the user goes.
    Template {
        #[arg(long, value_enum)]
        kind: Intent,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = fixtures::PAGE_ID)]
        page_id: String,
    },
    /// Sends one fulfillment request (plain intent) for each of USERS users, so the service
    /// knows their sessions before the measurement.
    Warm {
        /// The base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 1000)]
        users: u64,
        #[arg(long, default_value_t = 9_100_000_000_000_000)]
        psid_base: u64,
        #[arg(long, default_value = fixtures::PAGE_ID)]
        page_id: String,
    },
    /// Polls URL until it answers 200 and prints ready_ms: milliseconds since SINCE.
    Ready {
        #[arg(long)]
        url: String,
        /// When the process was started: seconds since the Unix epoch with a fraction (bash:
        /// `$EPOCHREALTIME`, taken just before starting it).
        #[arg(long)]
        since: String,
        /// The process; if it exits first, fail at once.
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Milliseconds between attempts.
        #[arg(long, default_value_t = 1)]
        every_ms: u64,
    },
    /// Prints the value of one series of the service's /metrics (0 when absent), e.g.
    /// 'handover_webhook_events_total{outcome="duplicate"}'.
    Metric {
        /// The base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        #[arg(long)]
        series: String,
    },
    /// Waits until the service's job queue (timers left out) is empty; prints drain_secs and
    /// queue_left. Exit 1 if it is not empty after TIMEOUT seconds.
    Drain {
        /// The base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn io_exit(what: &str, result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An HTTP client with a 10 s timeout, or None (said on stderr).
fn plain_client(what: &str) -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("{what}: cannot build an HTTP client: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    // reqwest is built without a TLS provider of its own (workspace-wide choice): install ring
    // before any client is built. An error means one is installed already, which works too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Floor {
                listen,
                graph,
                secret,
                token,
                inbox_app_id,
            } => {
                let floor = floor::Floor {
                    secret,
                    token,
                    graph,
                    inbox_app: inbox_app_id,
                };
                io_exit("floor", floor::main(&listen, floor).await)
            }
            Command::Stub {
                listen,
                app_id,
                inbox_app_id,
            } => io_exit("stub", stub::main(&listen, &app_id, &inbox_app_id).await),
            Command::E2e {
                service,
                graph_listen,
                secret,
                token,
                users,
                rate,
                page_id,
                psid_base,
                concurrency,
                take_timeout,
                wait_timeout,
                settle_ms,
                app_id,
                inbox_app_id,
            } => {
                if users == 0 || !rate.is_finite() || rate <= 0.0 {
                    eprintln!("e2e: --users and --rate must be positive");
                    return ExitCode::from(2);
                }
                exit(
                    e2e::main(e2e::E2e {
                        service,
                        graph_listen,
                        secret,
                        token,
                        users,
                        rate,
                        page_id,
                        psid_base,
                        concurrency,
                        take_timeout: Duration::from_secs(take_timeout),
                        wait_timeout: Duration::from_secs(wait_timeout),
                        settle: Duration::from_millis(settle_ms),
                        bot_app: app_id,
                        inbox_app: inbox_app_id,
                    })
                    .await,
                )
            }
            Command::Deliveries {
                count,
                secret,
                out,
                users,
                psid_base,
                page_id,
                text,
            } => {
                let spec = deliveries::Deliveries {
                    count,
                    secret: &secret,
                    users,
                    psid_base,
                    page_id: &page_id,
                    text: &text,
                };
                io_exit("deliveries", deliveries::write_deliveries(&spec, &out))
            }
            Command::Template { kind, out, page_id } => {
                io_exit("template", deliveries::write_template(kind, &page_id, &out))
            }
            Command::Warm {
                url,
                token,
                users,
                psid_base,
                page_id,
            } => match probe::warm(&url, &token, users, psid_base, &page_id).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("warm: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Ready {
                url,
                since,
                pid,
                timeout,
                every_ms,
            } => {
                let Some(since) = probe::parse_epoch(&since) else {
                    eprintln!("ready: --since {since:?} is not seconds since the epoch");
                    return ExitCode::from(2);
                };
                exit(
                    probe::ready(
                        &url,
                        since,
                        Duration::from_millis(every_ms.max(1)),
                        Duration::from_secs(timeout),
                        pid,
                    )
                    .await,
                )
            }
            Command::Metric { url, series } => {
                let Some(http) = plain_client("metric") else {
                    return ExitCode::FAILURE;
                };
                let url = format!("{}/metrics", url.trim_end_matches('/'));
                match probe::get_text(&http, &url).await {
                    Ok(text) => {
                        println!("{}", probe::series_value(&text, &series));
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("metric: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Drain { url, timeout } => {
                let Some(http) = plain_client("drain") else {
                    return ExitCode::FAILURE;
                };
                let url = format!("{}/metrics", url.trim_end_matches('/'));
                exit(probe::drain(&http, &url, Duration::from_secs(timeout)).await)
            }
        }
    })
}
