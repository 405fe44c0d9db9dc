//! The `messenger-handover` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use messenger_handover::config::{self, MessengerMode, RawSettings, Settings};
use messenger_handover::startup::{Application, StartError};
use messenger_handover::store::Store;
use messenger_handover::telemetry;

#[derive(Parser)]
#[command(
    name = "messenger-handover",
    version,
    about = "Hands a Dialogflow Messenger bot's conversation to the Facebook Page Inbox and reliably takes it back"
)]
struct Cli {
    /// A TOML file with settings (same names as the environment variables; the environment wins).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: /fulfillment, /messenger, the job worker (the default).
    Serve,
    /// Apply the store's migrations and exit.
    Migrate,
    /// Exit 0 if the service on HOST:PORT answers /healthz (for container health checks).
    Healthcheck,
    /// Check a real setup (Page token, webhook fields, Conversation Routing, Dialogflow,
    /// store, permissions, Graph API version) and explain every problem.
    Doctor {
        /// Subscribe the webhook fields that are missing.
        #[arg(long)]
        fix: bool,
    },
    /// Run a scripted conversation against an emulated Messenger Platform and Dialogflow,
    /// with no Meta app and no Google project, and print what happens.
    Demo {
        /// Keep the service and the emulator running and print how to try them by hand.
        #[arg(long)]
        serve: bool,
    },
}

fn problems_exit(problems: &[String]) -> ExitCode {
    for p in problems {
        eprintln!("{p}");
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    messenger_handover::allocator::tune();
    messenger_handover::tls::install();
    let cli = Cli::parse();
    let raw = match RawSettings::load(cli.config.as_deref()) {
        Ok(raw) => raw,
        Err(problems) => return problems_exit(&problems),
    };
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
    let code = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(&raw).await,
            Command::Migrate => migrate(&raw).await,
            Command::Healthcheck => healthcheck(&raw).await,
            Command::Doctor { fix } => messenger_handover::doctor::main(&raw, fix).await,
            Command::Demo { serve } => messenger_handover::demo::main(serve).await,
        }
    });
    // The spans still buffered are sent before the process ends.
    #[cfg(feature = "otel")]
    messenger_handover::otel::shutdown();
    code
}

async fn serve(raw: &RawSettings) -> ExitCode {
    let settings = match Settings::from_raw(raw) {
        Ok(s) => s,
        Err(problems) => return problems_exit(&problems),
    };
    if settings.messenger_mode == MessengerMode::Bridge {
        return problems_exit(&[
            "MESSENGER_MODE: bridge is not available in this version yet; use companion".into(),
        ]);
    }
    telemetry::init(
        settings.log_format,
        &settings.rust_log,
        settings.google_cloud_project.as_deref(),
        settings.otel_exporter_otlp_endpoint.as_deref(),
    );
    // What doctor reports as ✗ from the settings alone, said once at start.
    for warning in messenger_handover::doctor::startup_warnings(&settings) {
        let fix = warning.fix.as_deref().unwrap_or_default();
        tracing::warn!(fix, "{}", warning.text);
    }
    match Application::build(settings).await {
        Ok(app) => match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        },
        Err(StartError::Setting(problem)) => problems_exit(&[problem]),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(raw: &RawSettings) -> ExitCode {
    let url = match config::database_url_only(raw) {
        Ok(url) => url,
        Err(problems) => return problems_exit(&problems),
    };
    let result = async {
        let store = Store::connect(&url).await?;
        let applied = store.migrate().await?;
        store.close().await;
        Ok::<_, messenger_handover::store::StoreError>(applied)
    }
    .await;
    match result {
        Ok(applied) => {
            println!("migrations applied: {applied}; the store is up to date");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(raw: &RawSettings) -> ExitCode {
    let port = raw.get("PORT").unwrap_or("8080");
    let Ok(port) = port.trim().parse::<u16>() else {
        return problems_exit(&[format!("PORT: {port:?} is not a port number")]);
    };
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = messenger_handover::startup::http_client();
    match client
        .get(&url)
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await
    {
        Ok(resp) if resp.status().is_success() => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!("unhealthy: /healthz answered {}", resp.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {}", e.without_url());
            ExitCode::FAILURE
        }
    }
}
