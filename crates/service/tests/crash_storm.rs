//! Crash storm (issue 11): a few hundred conversations against the emulator, with the chaos
//! model's Meta faults, while the real binary is SIGKILLed and restarted at random moments.
//! At the end (chaos off, quiet), every user's history at the emulated Graph API keeps the
//! chaos model's invariants: I4 no pass or take applied twice for one decision, I3 at most one
//! welcome back per return (at most once: the README's guarantee for a welcome whose outcome
//! is unknown), I2 every accepted handover reached the inbox or the user was told, I5 nothing
//! sent while not the owner, I1 the service agrees with the owner.
//!
//! `cargo test` runs 200 conversations and 6 kills per backend; `bench/crash_storm.sh` runs
//! more (`STORM_CONVERSATIONS`, `STORM_STEPS`, `STORM_KILLS`, `STORM_SEED`).

mod common;

use std::time::{Duration, Instant};

use common::chaos::{self as model};
use common::db::{Db, TestDb};
use common::storm::{Binary, check_users, connect_store, knob, quiesce, secs, storm_settings};
use handover_emulator::{Chaos, Emulator, EmulatorConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

async fn crash_storm(db: Db) {
    // A seed divisible by 3: the chaos model's seeds without the idle timeout.
    let seed = knob("STORM_SEED", 3);
    let users = knob("STORM_CONVERSATIONS", 200) as usize;
    let steps = knob("STORM_STEPS", 3) as usize;
    let kills = knob("STORM_KILLS", 6) as usize;
    let started = Instant::now();
    let test_db = TestDb::new(db).await;
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let owned = storm_settings(seed);
    let overrides: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut binary = Binary::start(&emulator, &test_db.url, &overrides).await;
    let psids: Vec<String> = (0..users).map(|u| model::psid(seed, u)).collect();
    emulator.set_chaos(model::chaos_for(seed));

    let scripts = psids
        .iter()
        .enumerate()
        .map(|(u, p)| model::user_script(emulator.clone(), p.clone(), seed, u, steps, 0));
    let users_done = futures_util::future::join_all(scripts);
    tokio::pin!(users_done);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7374_6f72);
    let mut tallies = None;
    for _ in 0..kills {
        let wait = Duration::from_millis(rng.random_range(300..1500));
        tokio::select! {
            t = &mut users_done => { tallies = Some(t); break; }
            () = tokio::time::sleep(wait) => binary.kill_and_restart().await,
        }
    }
    let tallies = match tallies {
        Some(t) => t,
        None => users_done.await,
    };
    let mut tally = model::Tally::default();
    for t in &tallies {
        tally.add(t);
    }
    let scripted = secs(started);

    emulator.set_chaos(Chaos::default());
    let store = connect_store(&test_db.url).await;
    let quiet = quiesce(&emulator, &store, &psids).await;
    let (violations, text) = check_users(&emulator, &store, &binary.model(), &psids).await;
    let (passes, passes_ok) = emulator.call_count("pass_thread_control");
    let (takes, takes_ok) = emulator.call_count("take_thread_control");
    println!(
        "crash storm {db:?}: {users} conversations × {steps} steps, {} SIGKILL+restart, \
         script {scripted:.1}s, total {:.1}s; actions {tally:?}; Graph: {passes} pass calls \
         ({passes_ok} applied), {takes} take calls ({takes_ok} applied); quiet: {quiet}; \
         violations: {}",
        binary.restarts,
        secs(started),
        violations.len()
    );
    binary.stop().await;
    store.close().await;
    emulator.stop().await;
    assert!(quiet, "jobs or deliveries still pending after the storm");
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{text}",
        violations.len()
    );
    assert!(
        binary.restarts > 0 || kills == 0,
        "the storm killed nothing"
    );
    test_db.close().await;
}
both_backends!(crash_storm);
