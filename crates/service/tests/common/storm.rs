//! The real binary against the emulator: started as a child process on a test database,
//! SIGKILLed and restarted (each start on a new port, the emulator re-pointed at it), and the
//! emulator's timelines checked with the chaos model's invariants (`common/chaos.rs`), effects
//! counted at the emulated Graph API.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use handover_emulator::Emulator;
use messenger_handover::config::Settings;
use messenger_handover::demo::settings_for;
use messenger_handover::store::Store;

use super::chaos::{self as model, Model, Violation};
use super::process::Process;

/// The binary wired to an emulator, on `db_url`.
pub struct Binary {
    process: Option<Process>,
    env: Vec<(String, String)>,
    emulator: Emulator,
    pub token: String,
    pub port: u16,
    pub restarts: u32,
    pub settings: Settings,
}

impl Binary {
    pub async fn start(emulator: &Emulator, db_url: &str, overrides: &[(&str, &str)]) -> Binary {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut raw = settings_for(emulator, db_url, &token, overrides);
        raw.set("RUST_LOG", "warn,messenger_handover=info");
        let settings = Settings::from_raw(&raw).expect("the storm's settings are valid");
        let env = raw
            .pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut b = Binary {
            process: None,
            env,
            emulator: emulator.clone(),
            token,
            port: 0,
            restarts: 0,
            settings,
        };
        b.launch().await;
        b
    }

    async fn launch(&mut self) {
        let (process, port) = Process::serve(&self.env).await;
        let base = format!("http://127.0.0.1:{port}");
        self.emulator
            .set_companion_webhook(&format!("{base}/messenger"));
        self.emulator.set_fulfillment(
            &format!("{base}/fulfillment"),
            Some(format!("Bearer {}", self.token)),
        );
        self.process = Some(process);
        self.port = port;
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no drain, leases left held), then a new process on the same database.
    pub async fn kill_and_restart(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal("KILL");
            p.wait_exit().await;
        }
        self.launch().await;
        self.restarts += 1;
    }

    /// SIGTERM and wait for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal("TERM");
            p.wait_exit().await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.id())
    }

    pub fn logs(&self) -> String {
        self.process.as_ref().map(|p| p.logs()).unwrap_or_default()
    }

    pub fn model(&self) -> Model {
        Model::from_settings(&self.settings, self.emulator.config().bot_app_id)
    }
}

/// The chaos model's settings for `seed`, without the idle timeout, and with a pass delay
/// that holds on a loaded machine: the emulated integration must send its handover reply
/// before the pass (else the Send API refuses it, an I5 violation that is the test's timing,
/// not the service's); with a few hundred users on 2 cores a fulfillment answer took 371 ms.
pub fn storm_settings(seed: u64) -> Vec<(&'static str, String)> {
    let mut settings = model::settings(seed);
    settings.retain(|(k, _)| !matches!(*k, "AGENT_IDLE_TIMEOUT_SECS" | "HANDOVER_PASS_DELAY_MS"));
    settings.push(("AGENT_IDLE_TIMEOUT_SECS", "0".into()));
    settings.push(("HANDOVER_PASS_DELAY_MS", "800".into()));
    settings
}

/// The test's own connection to the binary's store, retried for a while: on a PostgreSQL
/// server shared with other tests, connection slots can be briefly exhausted (the killed
/// processes' connections are closed by the server a moment later).
pub async fn connect_store(url: &str) -> Store {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::connect(url).await {
            Ok(store) => return store,
            Err(e) if Instant::now() < deadline => {
                println!("connecting to the store: {e:?}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the test cannot read the store: {e:?}"),
        }
    }
}

/// Quiesces (chaos must be off), giving the reconciler its window once if a thread is stuck
/// in PASSING/RETURNING; false if jobs or deliveries were still pending at the end.
pub async fn quiesce(emulator: &Emulator, store: &Store, psids: &[String]) -> bool {
    let mut quiet = model::quiesce_on(emulator, store, psids, Duration::from_secs(60)).await;
    let page = emulator.config().page_id;
    let mut stuck = false;
    for p in psids {
        if let Ok(Some(t)) = store.thread(&page, p).await {
            stuck |= matches!(t.state.as_str(), "PASSING" | "RETURNING");
        }
    }
    if quiet && stuck {
        let window = model::STUCK_AFTER_SECS + 2 * model::RECONCILE_INTERVAL_SECS + 1;
        tokio::time::sleep(Duration::from_secs(window)).await;
        quiet = model::quiesce_on(emulator, store, psids, Duration::from_secs(30)).await;
    }
    quiet
}

/// Every user's invariants (I1–I5): (psid, violation), and the emulator journal of the first
/// few failing users.
pub async fn check_users(
    emulator: &Emulator,
    store: &Store,
    model: &Model,
    psids: &[String],
) -> (Vec<(String, Violation)>, String) {
    let page = emulator.config().page_id;
    let mut all = Vec::new();
    let mut text = String::new();
    for p in psids {
        let state = store
            .thread(&page, p)
            .await
            .ok()
            .flatten()
            .map(|t| t.state.as_str().to_owned());
        let owner = emulator.owner(p);
        let timeline = emulator.timeline(p);
        let mut found = model::check_agreement(model, state.as_deref(), owner.as_deref());
        found.extend(model::check_timeline(model, &timeline));
        if found.is_empty() {
            continue;
        }
        if all.len() < 20 {
            text.push_str(&format!(
                "════ user {p}: service {state:?}, owner {owner:?}\n"
            ));
            for v in &found {
                text.push_str(&format!("✗ {}: {}\n", v.invariant, v.detail));
            }
            for line in emulator.journal(p) {
                text.push_str(&format!("  {line}\n"));
            }
        }
        all.extend(found.into_iter().map(|v| (p.clone(), v)));
    }
    (all, text)
}

/// Percentiles of `samples` (sorted in place): (p50, p99, max) in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99), at(1.0))
}

/// A number from the environment (the bench scripts' knobs), else `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Seconds since `t`, for the printed timings.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
