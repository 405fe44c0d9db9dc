//! Building the application: one function for `main` and for the tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::KeepAlive;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_actix_web::TracingLogger;

use crate::app::{Services, Shared, policy_from};
use crate::config::{DialogflowSettings, GoogleCredentials, ServerLimits, Settings};
use crate::dialogflow::SessionSync;
use crate::dialogflow::api::DialogflowClient;
use crate::dialogflow::auth::{AuthError, TokenSource, TokenSourceConfig};
use crate::messenger::graph::{GraphClient, GraphSettings};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::routes::observe::{RequestSpan, record_latency};
use crate::routes::{admin, fulfillment, health, messenger, other_methods};
use crate::secret::Secret;
use crate::store::{Backend, Store};
use crate::telemetry::Pseudonyms;
use crate::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting turned out unusable at start (exit code 2).
    #[error("{0}")]
    Setting(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

pub fn http_client() -> reqwest::Client {
    crate::tls::install();
    reqwest::Client::builder()
        .user_agent(concat!("messenger-handover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The Graph API client of `settings`, calling with `page_token` (and `app_secret` for
/// `appsecret_proof`): the bot app's for the service; `doctor --fix` also uses the webhook app's.
pub fn graph_client(
    settings: &Settings,
    http: &reqwest::Client,
    page_token: &Secret,
    app_secret: &Secret,
) -> GraphClient {
    GraphClient::new(
        GraphSettings {
            base: settings.graph_api_base.clone(),
            version: settings.graph_api_version.clone(),
            page_id: settings.fb_page_id.clone(),
            page_token: page_token.clone(),
            app_secret: app_secret.clone(),
            timeout: Duration::from_millis(settings.http_timeout_ms),
        },
        http.clone(),
    )
}

/// The source of Dialogflow's Google access tokens for the configured credentials.
pub async fn token_source(credentials: &GoogleCredentials) -> Result<TokenSource, AuthError> {
    TokenSource::build(match credentials {
        GoogleCredentials::KeyFile(path) => TokenSourceConfig::ServiceAccountFile(path.clone()),
        GoogleCredentials::MetadataServer { url } => {
            TokenSourceConfig::MetadataServer { url: url.clone() }
        }
    })
    .await
}

/// The Dialogflow API client of `df`, with tokens from `auth`.
pub fn dialogflow_client(
    settings: &Settings,
    df: &DialogflowSettings,
    http: &reqwest::Client,
    auth: Arc<TokenSource>,
) -> DialogflowClient {
    let timeout = Duration::from_millis(settings.http_timeout_ms);
    DialogflowClient::new(http.clone(), df.api_base.clone(), auth, timeout)
        .with_explicit_base(df.api_base_explicit)
}

pub async fn build_services(settings: Settings, store: Store) -> Result<Shared, StartError> {
    let http = http_client();
    let metrics = Metrics::new();
    let graph = graph_client(
        &settings,
        &http,
        &settings.fb_page_access_token,
        &settings.fb_app_secret,
    )
    .with_metrics(metrics.clone());
    let dialogflow = match &settings.dialogflow {
        // `serve` says so at start, as a warning (`doctor::startup_warnings`).
        None => None,
        Some(df) => {
            let auth = token_source(&df.credentials).await.map_err(|e| {
                let variable = match df.credentials {
                    GoogleCredentials::KeyFile(_) => "GOOGLE_APPLICATION_CREDENTIALS",
                    GoogleCredentials::MetadataServer { .. } => "GOOGLE_METADATA_TOKEN_URL",
                };
                StartError::Setting(format!("{variable}: {e}"))
            })?;
            info!(
                project = df.project_id.as_str(),
                location = df.location.as_str(),
                credentials = auth.describe(),
                mode = settings.context_on_return.as_str(),
                "context sync is on"
            );
            let client = dialogflow_client(&settings, df, &http, Arc::new(auth))
                .with_metrics(metrics.clone());
            Some(Arc::new(client) as Arc<dyn SessionSync>)
        }
    };
    let notifier = settings.notify.as_ref().map(|n| {
        info!(
            waiting_secs = n.waiting_secs,
            "agent notifications are on (NOTIFY_WEBHOOK_URL)"
        );
        let timeout = Duration::from_millis(settings.http_timeout_ms);
        Notifier::new(n, &http, timeout)
    });
    Ok(Arc::new(Services {
        policy: Arc::new(policy_from(&settings)),
        notifier,
        pseudonyms: Pseudonyms::new(settings.fb_app_secret.expose().as_bytes()),
        settings,
        store,
        graph,
        dialogflow,
        metrics,
        wake: Notify::new(),
    }))
}

/// The routes and their middleware, for the server and for tests.
pub fn app(
    data: web::Data<Services>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // Each route answers its other methods with a JSON 405 and `Allow`. Bodies are read by the
    // handlers themselves, bounded in size and time (`routes::body`).
    let get = |path: &str, handler| {
        web::resource(path)
            .route(handler)
            .default_service(other_methods("GET"))
    };
    let admin_on = data.settings.admin_token.is_some();
    App::new()
        .app_data(data)
        .wrap(from_fn(crate::routes::body::hold_unread))
        .wrap(from_fn(crate::routes::conn::mark_busy))
        .wrap(from_fn(record_latency))
        .wrap(TracingLogger::<RequestSpan>::new())
        .service(
            web::resource("/fulfillment")
                .route(web::post().to(fulfillment::fulfillment))
                .default_service(other_methods("POST")),
        )
        .service(
            web::resource("/messenger")
                .route(web::get().to(messenger::verify))
                .route(web::post().to(messenger::receive))
                .default_service(other_methods("GET, POST")),
        )
        .service(get("/healthz", web::get().to(health::healthz)))
        .service(get("/readyz", web::get().to(health::readyz)))
        .service(get("/metrics", web::get().to(health::metrics)))
        .configure(|cfg| admin::configure(cfg, admin_on))
        .default_service(web::to(crate::routes::not_found))
}

/// The HTTP workers (one per CPU, fewer when the cap is smaller) and each one's share of
/// `MAX_CONNECTIONS`, so that at most that many connections are open at once. At its share a
/// worker takes no more; when every worker is at it, actix stops accepting and new
/// connections wait in the kernel's listen queue until one closes.
fn connection_split(limits: &ServerLimits) -> (usize, usize) {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = cpus.min(limits.max_connections).max(1);
    (workers, limits.max_connections / workers)
}

pub struct Application {
    port: u16,
    server: ServerHandle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    services: Shared,
    stop_worker: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
    /// Folds latency samples into their buckets between scrapes.
    metrics_upkeep: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Connects and migrates the store, binds the listener and starts the worker.
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        let store = Store::connect_with(&settings.database_url, settings.database_writers).await?;
        let applied = store.migrate().await?;
        if applied > 0 {
            info!(
                applied,
                backend = store.backend().as_str(),
                "migrations applied"
            );
        }
        if store.backend() == Backend::Sqlite {
            // Only this process uses the file: jobs it was running when it died run again now.
            let released = store.release_all_leases(now_ms()).await?;
            if released > 0 {
                warn!(
                    released,
                    "jobs interrupted by the last shutdown will run again"
                );
            }
        }
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))?;
        let services = build_services(settings, store).await?;
        Self::start(listener, services)
    }

    pub fn start(listener: TcpListener, services: Shared) -> Result<Application, StartError> {
        let port = listener.local_addr()?.port();
        let data = web::Data::from(services.clone());
        let grace = Duration::from_secs(services.settings.shutdown_grace_secs);
        // Signals are handled in `run_until_stopped`, which stops the server and the worker
        // together within the grace.
        let (workers, per_worker) = connection_split(&services.settings.server);
        let limits = services.settings.server;
        let keep_alive = match limits.keep_alive_secs {
            0 => KeepAlive::Disabled,
            secs => KeepAlive::Timeout(Duration::from_secs(secs)),
        };
        // Between two requests: time to start the next one, then to send its headers.
        let between_requests = Duration::from_secs(limits.keep_alive_secs)
            + Duration::from_millis(limits.header_timeout_ms);
        let server = HttpServer::new(move || app(data.clone()))
            .on_connect(crate::routes::conn::watch(between_requests))
            .workers(workers)
            .max_connections(per_worker)
            .client_request_timeout(Duration::from_millis(limits.header_timeout_ms))
            .client_disconnect_timeout(Duration::from_millis(limits.disconnect_timeout_ms))
            .keep_alive(keep_alive)
            .listen(listener)?
            .disable_signals()
            .shutdown_timeout(crate::shutdown::drain_time(grace).as_secs().max(1))
            .run();
        let handle = server.handle();
        let serving = tokio::spawn(server);
        let stop_worker = CancellationToken::new();
        let worker = tokio::spawn(crate::jobs::worker::run(
            services.clone(),
            stop_worker.clone(),
        ));
        let metrics_upkeep = tokio::spawn(services.metrics.clone().keep_up());
        info!(port, "listening");
        Ok(Application {
            port,
            server: handle,
            serving,
            services,
            stop_worker,
            worker,
            metrics_upkeep,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn services(&self) -> Shared {
        self.services.clone()
    }

    /// Serves until SIGTERM or SIGINT, then stops within `SHUTDOWN_GRACE_SECS`
    /// ([`crate::shutdown`]): no new connections, requests and jobs in flight finish (jobs
    /// still running at the end of the drain are released), the store is closed.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let grace = Duration::from_secs(self.services.settings.shutdown_grace_secs);
        let ended = tokio::select! {
            ended = &mut self.serving => Some(match ended {
                Ok(result) => result,
                Err(e) => Err(std::io::Error::other(e)),
            }),
            signal = crate::shutdown::signal() => {
                info!(
                    signal,
                    grace_secs = grace.as_secs(),
                    "stopping: no new connections; requests and jobs in flight may finish"
                );
                None
            }
        };
        let started = Instant::now();
        self.stop_worker.cancel();
        let drain = crate::shutdown::drain_time(grace);
        let http = async {
            if ended.is_none() {
                // Resolves once the in-flight requests are answered (or cut off at the drain).
                let _ = tokio::time::timeout(drain, self.server.stop(true)).await;
            }
        };
        let (_, _) = tokio::join!(http, &mut self.worker);
        self.metrics_upkeep.abort();
        let left = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, self.services.store.close())
            .await
            .is_err()
        {
            warn!("the store did not close within the shutdown grace");
        }
        info!(ms = started.elapsed().as_millis() as u64, "stopped");
        ended.unwrap_or(Ok(()))
    }

    /// Stops everything gracefully (used by tests and the demo).
    pub async fn stop(self) {
        self.server.stop(true).await;
        self.stop_worker.cancel();
        let _ = self.worker.await;
        self.metrics_upkeep.abort();
        self.services.store.close().await;
    }

    /// Stops as abruptly as a crash can be simulated in-process: the worker is aborted
    /// without finishing its jobs (their leases stay held) and the server stops at once.
    pub async fn kill(self) {
        self.worker.abort();
        let _ = self.worker.await;
        self.server.stop(false).await;
        self.metrics_upkeep.abort();
        self.services.store.close().await;
    }
}
