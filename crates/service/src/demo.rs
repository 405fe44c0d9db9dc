//! `messenger-handover demo`: the real service, on a fresh embedded store, against the
//! emulated Messenger Platform and Dialogflow (loopback only), playing a scripted
//! conversation and printing what happens. `demo --serve` keeps both running to try by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;

use crate::app::Shared;
use crate::config::{RawSettings, Settings};
use crate::startup::Application;
use crate::store::JobStatus;
use handover_core::State;
use handover_emulator::{Emulator, EmulatorConfig, PAGE_INBOX_APP_ID};

pub const ANA: &str = "7001000000000001";
pub const BEN: &str = "7001000000000002";
const WAIT: Duration = Duration::from_secs(15);

/// The service wired to an emulator: what the demo and the conversation tests run on.
pub struct World {
    pub emulator: Emulator,
    pub services: Shared,
    pub base: String,
    app: Option<Application>,
    dir: PathBuf,
    /// The settings the service was built from (for [`World::kill_and_restart`]).
    raw: RawSettings,
    /// How many times the service was killed and restarted.
    pub restarts: u32,
}

/// Settings that point the service at `emulator`; `overrides` win.
pub fn settings_for(
    emulator: &Emulator,
    database_url: &str,
    fulfillment_token: &str,
    overrides: &[(&str, &str)],
) -> RawSettings {
    let cfg = emulator.config();
    let base = emulator.base_url();
    let metadata = emulator.metadata_token_url();
    let mut raw = RawSettings::from_pairs([
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", database_url),
        ("FB_APP_ID", cfg.bot_app_id.as_str()),
        ("FB_APP_SECRET", cfg.bot_app_secret.as_str()),
        ("FB_PAGE_ACCESS_TOKEN", cfg.page_token.as_str()),
        ("FB_WEBHOOK_APP_ID", cfg.companion_app_id.as_str()),
        ("FB_WEBHOOK_APP_SECRET", cfg.companion_app_secret.as_str()),
        ("FB_VERIFY_TOKEN", "demo-verify-token"),
        ("FB_PAGE_ID", cfg.page_id.as_str()),
        ("GRAPH_API_BASE", base.as_str()),
        ("GRAPH_API_VERSION", cfg.graph_version.as_str()),
        ("DIALOGFLOW_PROJECT_ID", cfg.dialogflow_project.as_str()),
        ("DIALOGFLOW_API_BASE", base.as_str()),
        ("GOOGLE_METADATA_TOKEN_URL", metadata.as_str()),
        ("FULFILLMENT_TOKEN", fulfillment_token),
        ("HANDOVER_PASS_DELAY_MS", "300"),
        ("CONTEXT_ON_RETURN", "restore"),
        ("JOB_RETRY_BASE_MS", "100"),
    ]);
    for (k, v) in overrides {
        raw.set(*k, *v);
    }
    raw
}

impl World {
    /// Starts an emulator and the service on a new SQLite file in a temporary directory.
    pub async fn start(overrides: &[(&str, &str)]) -> Result<World, String> {
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .map_err(|e| format!("emulator: {e}"))?;
        let dir = std::env::temp_dir().join(format!(
            "messenger-handover-demo-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let url = format!("sqlite://{}", dir.join("handover.db").display());
        let token = format!("{:032x}", rand::random::<u128>());
        let raw = settings_for(&emulator, &url, &token, overrides);
        let settings = Settings::from_raw(&raw).map_err(|p| p.join("; "))?;
        let app = Application::build(settings)
            .await
            .map_err(|e| format!("service: {e}"))?;
        let base = format!("http://127.0.0.1:{}", app.port());
        emulator.set_companion_webhook(&format!("{base}/messenger"));
        emulator.set_fulfillment(
            &format!("{base}/fulfillment"),
            Some(format!("Bearer {token}")),
        );
        Ok(World {
            services: app.services(),
            emulator,
            base,
            app: Some(app),
            dir,
            raw,
            restarts: 0,
        })
    }

    /// Simulates a crash and a restart: kills the service ([`Application::kill`]: the worker
    /// is aborted mid-job, leases stay held), builds a new one from the same settings on the
    /// same `DATABASE_URL` (on a new port), and points the emulator's companion webhook and
    /// fulfillment URL at it. While it is down, the emulator's deliveries and fulfillment
    /// calls fail as they would against a crashed service.
    pub async fn kill_and_restart(&mut self) -> Result<(), String> {
        if let Some(app) = self.app.take() {
            app.kill().await;
        }
        let settings = Settings::from_raw(&self.raw).map_err(|p| p.join("; "))?;
        let app = Application::build(settings)
            .await
            .map_err(|e| format!("service restart: {e}"))?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let token = self.raw.get("FULFILLMENT_TOKEN").unwrap_or_default();
        self.emulator
            .set_companion_webhook(&format!("{base}/messenger"));
        self.emulator.set_fulfillment(
            &format!("{base}/fulfillment"),
            Some(format!("Bearer {token}")),
        );
        self.services = app.services();
        self.base = base;
        self.app = Some(app);
        self.restarts += 1;
        Ok(())
    }

    pub fn page_id(&self) -> String {
        self.emulator.config().page_id
    }

    /// The service's view of a user's thread.
    pub async fn state(&self, psid: &str) -> Option<State> {
        let page = self.page_id();
        self.services
            .store
            .thread(&page, psid)
            .await
            .ok()
            .flatten()
            .map(|t| t.state)
    }

    /// Waits until the service has nothing left to do for `psid` and the emulator has
    /// delivered everything.
    pub async fn settle(&self, psid: &str) -> bool {
        let page = self.page_id();
        for _ in 0..(WAIT.as_millis() / 25) {
            self.emulator.flush().await;
            let jobs = self
                .services
                .store
                .jobs_for(&page, psid)
                .await
                .unwrap_or_default();
            let busy = jobs.iter().any(|j| {
                // Timers are not work left to do.
                matches!(j.status, JobStatus::Pending | JobStatus::Running)
                    && j.kind != "idle_check"
                    && j.kind != "waiting_check"
            });
            if !busy {
                self.emulator.flush().await;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub async fn wait_for_state(&self, psid: &str, state: State) -> bool {
        for _ in 0..(WAIT.as_millis() / 25) {
            if self.state(psid).await == Some(state) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        self.emulator.clone().stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A step of the script: what happened, and whether it was what should happen.
struct Transcript {
    failures: Vec<String>,
}

impl Transcript {
    fn heading(&self, n: usize, title: &str) {
        println!("\n── {n}. {title}");
    }

    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            println!("   ✓ {what}");
        } else {
            println!("   ✗ {what}");
            self.failures.push(what.to_owned());
        }
    }

    fn calls(&self, world: &World) {
        for entry in world.emulator.take_log() {
            println!("   {entry}");
        }
    }

    async fn owner(&self, world: &World, psid: &str) {
        let owner = match world.emulator.owner(psid) {
            None => "nobody (idle)".to_owned(),
            Some(app) => world.emulator.app_name(&app),
        };
        let state = world
            .state(psid)
            .await
            .map(|s| s.as_str())
            .unwrap_or("unknown");
        println!("   thread owner: {owner}; the service's state: {state}");
    }

    fn contexts(&self, world: &World, psid: &str, when: &str) {
        println!(
            "   Dialogflow contexts {when}: {}",
            contexts_with_lifespans(world, psid).join(", ")
        );
    }
}

/// `id(lifespan)` for each of the user's Dialogflow contexts in the emulator.
fn contexts_with_lifespans(world: &World, psid: &str) -> Vec<String> {
    world
        .emulator
        .contexts(psid)
        .into_iter()
        .map(|(id, lifespan, _)| format!("{id}({lifespan})"))
        .collect()
}

fn context_ids(world: &World, psid: &str) -> Vec<String> {
    world
        .emulator
        .contexts(psid)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

fn last_text(world: &World, psid: &str) -> String {
    world
        .emulator
        .messages_to_user(psid)
        .last()
        .map(|m| m.text.clone())
        .unwrap_or_default()
}

async fn script(world: &World, t: &mut Transcript) {
    let bot = world.emulator.config().bot_app_id;
    let settings = &world.services.settings;
    let e = &world.emulator;

    t.heading(1, "Ana asks the bot about her order");
    e.user_says(ANA, "Hi!").await;
    e.user_says(ANA, "Where is my order 1042?").await;
    world.settle(ANA).await;
    t.calls(world);
    t.owner(world, ANA).await;
    t.check(
        e.owner(ANA).as_deref() == Some(bot.as_str()),
        "the bot owns the thread",
    );
    t.check(
        context_ids(world, ANA)
            .iter()
            .any(|c| c == "order-followup"),
        "Dialogflow keeps the order in a context",
    );

    t.heading(
        2,
        "Ana asks for a human: the fulfillment hands the thread to the Page Inbox",
    );
    e.user_says(ANA, "I want to talk to a human").await;
    t.contexts(world, ANA, "at handover");
    let passed = world.wait_for_state(ANA, State::Human).await;
    world.settle(ANA).await;
    t.calls(world);
    t.owner(world, ANA).await;
    t.check(
        passed,
        "pass_thread_control to the Page Inbox after HANDOVER_PASS_DELAY_MS",
    );
    t.check(
        e.owner(ANA).as_deref() == Some(PAGE_INBOX_APP_ID),
        "the Page Inbox owns the thread",
    );
    t.check(
        last_text(world, ANA).contains("person"),
        "the bot's handover reply reached Ana before the pass",
    );

    t.heading(3, "An agent answers in the Page Inbox");
    e.agent_replies(
        ANA,
        "Hi Ana, I'm Sam. Your parcel left our warehouse this morning.",
    )
    .await;
    world.settle(ANA).await;
    t.calls(world);
    t.owner(world, ANA).await;
    t.check(
        world.state(ANA).await == Some(State::Human),
        "the service knows a human has the thread",
    );

    t.heading(
        4,
        "Ana writes \"Back to bot!\": only the service hears it (a standby event)",
    );
    e.user_says(ANA, "Back to bot!").await;
    let back = world.wait_for_state(ANA, State::Bot).await;
    world.settle(ANA).await;
    t.calls(world);
    t.owner(world, ANA).await;
    t.contexts(world, ANA, "after the return");
    t.check(back, "take_thread_control: the bot has the thread again");
    t.check(
        e.owner(ANA).as_deref() == Some(bot.as_str()),
        "Meta agrees: the bot owns the thread",
    );
    let ids = context_ids(world, ANA);
    t.check(
        ids.iter().any(|c| c == "order-followup") && !ids.iter().any(|c| c == "human_handover"),
        "contexts restored as they were at handover (CONTEXT_ON_RETURN=restore)",
    );
    t.check(
        last_text(world, ANA) == settings.welcome_back_message,
        "the welcome-back message was sent",
    );

    t.heading(5, "Ben is handed back by the agent (\"Done\" in the inbox)");
    e.user_says(BEN, "Hello").await;
    e.user_says(BEN, "Can I speak to a person please?").await;
    let passed = world.wait_for_state(BEN, State::Human).await;
    world.settle(BEN).await;
    e.agent_replies(BEN, "Hi Ben, I've updated your address. Anything else?")
        .await;
    e.agent_marks_done(BEN).await;
    let back = world.wait_for_state(BEN, State::Bot).await;
    world.settle(BEN).await;
    t.calls(world);
    t.owner(world, BEN).await;
    t.check(passed, "Ben's thread went to the Page Inbox");
    t.check(
        back,
        "pass_thread_control back to the bot: the service synced and welcomed Ben",
    );
    t.check(
        last_text(world, BEN) == settings.welcome_back_message,
        "Ben got the welcome-back message",
    );

    let errors = e.errors();
    t.check(
        errors.is_empty(),
        &format!(
            "no call broke the platform's rules{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {errors:?}")
            }
        ),
    );
}

pub async fn main(serve: bool) -> ExitCode {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        crate::telemetry::init(crate::config::LogFormat::Pretty, &filter, None, None);
    }
    let world = match World::start(&[]).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("demo: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if serve {
        return serve_by_hand(world).await;
    }
    println!(
        "messenger-handover demo: the real service against an emulated Messenger Platform and"
    );
    println!(
        "Dialogflow agent, on loopback, with a fresh SQLite store. No Meta app, no Google project."
    );
    println!(
        "   service  {}   emulator {}",
        world.base,
        world.emulator.base_url()
    );
    let mut t = Transcript {
        failures: Vec::new(),
    };
    script(&world, &mut t).await;
    world.stop().await;
    if t.failures.is_empty() {
        println!("\nEvery step behaved as expected.");
        ExitCode::SUCCESS
    } else {
        println!("\n{} step(s) did not behave as expected:", t.failures.len());
        for f in &t.failures {
            println!("   ✗ {f}");
        }
        ExitCode::FAILURE
    }
}

async fn serve_by_hand(world: World) -> ExitCode {
    let world = web::Data::new(world);
    let data = world.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/users/{psid}/says", web::post().to(user_says))
            .route("/agent/{psid}/replies", web::post().to(agent_replies))
            .route("/agent/{psid}/done", web::post().to(agent_done))
            .route("/threads/{psid}", web::get().to(thread))
    })
    .workers(1)
    .bind(("127.0.0.1", 0));
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = format!("http://127.0.0.1:{}", server.addrs()[0].port());
    println!("messenger-handover is running against the emulator (Ctrl-C to stop).");
    println!(
        "   service   {}  (/fulfillment, /messenger, /healthz, /readyz, /metrics)",
        world.base
    );
    println!(
        "   emulator  {}  (Graph API, Dialogflow API, OAuth)",
        world.emulator.base_url()
    );
    println!("   control   {control}  (plays the user and the agent)");
    println!("\nTry:");
    println!("   curl -s -XPOST {control}/users/42/says -d 'I want to talk to a human'");
    println!("   curl -s {control}/threads/42");
    println!("   curl -s -XPOST {control}/agent/42/replies -d 'Hi, I am Sam from support'");
    println!("   curl -s -XPOST {control}/users/42/says -d 'back to bot'");
    println!("   curl -s -XPOST {control}/agent/42/replies -d '#bot'");
    println!("   curl -s -XPOST {control}/agent/42/done");
    println!("   curl -s {}/metrics", world.base);
    print_doctor_command(&world);
    let result = server.run().await;
    if let Ok(w) = std::sync::Arc::try_unwrap(world.into_inner()) {
        w.stop().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The settings `doctor` reads, as the demo's service runs with them, plus the companion app's
/// Page token (only `doctor --fix` uses it). They are the emulator's own credentials, valid on
/// loopback only: showing them is the point.
fn doctor_settings(world: &World) -> Vec<(&'static str, String)> {
    const FROM_THE_SERVICE: &[&str] = &[
        "DATABASE_URL",
        "FB_APP_ID",
        "FB_APP_SECRET",
        "FB_PAGE_ACCESS_TOKEN",
        "FB_VERIFY_TOKEN",
        "FB_PAGE_ID",
        "FB_WEBHOOK_APP_ID",
        "FB_WEBHOOK_APP_SECRET",
        "GRAPH_API_BASE",
        "GRAPH_API_VERSION",
        "DIALOGFLOW_PROJECT_ID",
        "DIALOGFLOW_API_BASE",
        "GOOGLE_METADATA_TOKEN_URL",
        "FULFILLMENT_TOKEN",
        "CONTEXT_ON_RETURN",
    ];
    let mut out: Vec<(&'static str, String)> = FROM_THE_SERVICE
        .iter()
        .filter_map(|&name| Some((name, world.raw.get(name)?.to_owned())))
        .collect();
    out.push((
        "FB_WEBHOOK_PAGE_ACCESS_TOKEN",
        world.emulator.config().companion_page_token,
    ));
    out
}

/// `export` lines and the command that run `doctor` against this demo from another shell.
fn print_doctor_command(world: &World) {
    println!("\nCheck this setup with doctor, from another shell:");
    for (name, value) in doctor_settings(world) {
        println!("   export {name}={}", shell_word(&value));
    }
    let exe = std::env::current_exe()
        .map(|path| shell_word(&path.to_string_lossy()))
        .unwrap_or_else(|_| "messenger-handover".to_owned());
    println!("   {exe} doctor");
}

/// `text` quoted for a POSIX shell only when it needs it, so URLs and ids stay readable.
fn shell_word(text: &str) -> String {
    // try_quote refuses only a NUL byte, which no setting or path here holds.
    shlex::try_quote(text).map_or_else(|_| text.to_owned(), String::from)
}

async fn after_action(world: &World, psid: &str) -> HttpResponse {
    world.settle(psid).await;
    let log: Vec<String> = world
        .emulator
        .take_log()
        .iter()
        .map(|e| e.to_string())
        .collect();
    let mut body = thread_json(world, psid).await;
    body["calls"] = json!(log);
    HttpResponse::Ok().json(body)
}

async fn thread_json(world: &World, psid: &str) -> serde_json::Value {
    let owner = world
        .emulator
        .owner(psid)
        .map(|a| world.emulator.app_name(&a));
    let messages: Vec<String> = world
        .emulator
        .messages_to_user(psid)
        .iter()
        .map(|m| format!("{}: {}", world.emulator.app_name(&m.from_app_id), m.text))
        .collect();
    let contexts = contexts_with_lifespans(world, psid);
    json!({
        "psid": psid,
        "owner": owner,
        "state": world.state(psid).await.map(|s| s.as_str()),
        "messages_to_user": messages,
        "contexts": contexts,
    })
}

async fn user_says(world: web::Data<World>, psid: web::Path<String>, text: String) -> HttpResponse {
    world.emulator.user_says(&psid, text.trim()).await;
    after_action(&world, &psid).await
}

async fn agent_replies(
    world: web::Data<World>,
    psid: web::Path<String>,
    text: String,
) -> HttpResponse {
    world.emulator.agent_replies(&psid, text.trim()).await;
    after_action(&world, &psid).await
}

async fn agent_done(world: web::Data<World>, psid: web::Path<String>) -> HttpResponse {
    world.emulator.agent_marks_done(&psid).await;
    after_action(&world, &psid).await
}

async fn thread(world: web::Data<World>, psid: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(thread_json(&world, &psid).await)
}
