//! Soak (issue 11): a steady load against the real binary for a minute (`SOAK_SECS`; longer
//! in `bench/soak.sh`): a fixed set of users cycling through handovers and returns with the
//! emulator, and a stream of plain messages, while the process's RSS, the store's size and
//! its row counts are sampled every few seconds.
//!
//! The leak check compares the second half with the first, with bounds generous enough for
//! noise (allocator arenas, SQLite's page cache and WAL, PostgreSQL's lazy vacuum):
//! - RSS: the second half's peak at most 1.5 × the first half's peak + 16 MiB. A leak of a
//!   few bytes per request would double RSS over the run; the allocator keeping freed
//!   buffers does not grow it steadily.
//! - Rows: retention works in days (finished jobs 7, threads 30), so within minutes the
//!   events and jobs tables grow with the traffic, never faster: the rows added per
//!   acknowledged delivery in the second half at most 1.5 × (+1) those of the first half (a
//!   job that queued jobs for ever, or a table written on every poll, would break this), and
//!   threads never more than the users there are.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::chaos::{self as model};
use common::db::{Db, TestDb, with_conn};
use common::storm::{Binary, knob, secs, storm_settings};
use handover_emulator::{Emulator, EmulatorConfig};
use messenger_handover::messenger::signature::sign;
use serde_json::json;

const USERS: usize = 20;
const TALKERS: u64 = 50;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    store_kib: u64,
    acks: u64,
    events: i64,
    jobs: i64,
    threads: i64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The store's size: the SQLite file and its WAL, or the PostgreSQL database.
async fn store_kib(url: &str) -> u64 {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        return (size(path.to_owned()) + size(format!("{path}-wal"))) / 1024;
    }
    with_conn(url, |c| {
        c.scalar("SELECT pg_database_size(current_database())", &[])
            .map(|n| n.unwrap_or(0))
    })
    .await
    .unwrap_or(0) as u64
        / 1024
}

async fn rows(url: &str) -> (i64, i64, i64) {
    with_conn(url, |c| {
        let mut count = |t: &str| {
            c.scalar(&format!("SELECT COUNT(*) FROM {t}"), &[])
                .map(|n| n.unwrap_or(0))
        };
        Ok((count("events")?, count("jobs")?, count("threads")?))
    })
    .await
    .unwrap()
}

/// Plain messages from `TALKERS` users, one every 20 ms, until `stop`; counts the acks.
async fn talk(
    base: String,
    secret: String,
    page: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) {
    let client = reqwest::Client::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = json!({ "object": "page", "entry": [{ "id": page, "time": 1, "messaging": [{
            "sender": { "id": format!("7013{:012}", n % TALKERS) }, "recipient": { "id": page },
            "timestamp": 1_900_000_000_000i64 + n as i64,
            "message": { "mid": format!("m.soak.{n}"), "text": "what are your opening hours?" },
        }]}]})
        .to_string();
        let r = client
            .post(format!("{base}/messenger"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(&secret, body.as_bytes()))
            .body(body)
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            acks.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn steady_load_stays_bounded(db: Db) {
    let seconds = knob("SOAK_SECS", 60);
    let seed = 9;
    let test_db = TestDb::new(db).await;
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let owned = storm_settings(seed);
    let overrides: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut binary = Binary::start(&emulator, &test_db.url, &overrides).await;
    let cfg = emulator.config();
    let pid = binary.pid().expect("running");
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let talker = tokio::spawn(talk(
        binary.base(),
        cfg.companion_app_secret.clone(),
        cfg.page_id.clone(),
        stop.clone(),
        acks.clone(),
    ));
    let conversations = {
        let (emulator, stop) = (emulator.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                let scripts = (0..USERS).map(|u| {
                    model::user_script(
                        emulator.clone(),
                        model::psid(seed, u),
                        seed + round,
                        u,
                        3,
                        0,
                    )
                });
                futures_util::future::join_all(scripts).await;
                round += 1;
            }
            round
        })
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (events, jobs, threads) = rows(&test_db.url).await;
        let s = Sample {
            at_s: secs(started),
            rss_kib: rss_kib(pid),
            store_kib: store_kib(&test_db.url).await,
            acks: acks.load(Ordering::SeqCst),
            events,
            jobs,
            threads,
        };
        println!("{s:?}");
        samples.push(s);
    }
    stop.store(true, Ordering::SeqCst);
    talker.await.unwrap();
    let rounds = conversations.await.unwrap();
    binary.stop().await;
    emulator.stop().await;
    test_db.close().await;

    assert!(samples.len() >= 4, "too few samples: {samples:?}");
    let half = samples.len() / 2;
    let (first, second) = samples.split_at(half);
    let peak = |s: &[Sample]| s.iter().map(|x| x.rss_kib).max().unwrap_or(0);
    // Rows added per ack between a half's first and last sample.
    let per_ack = |s: &[Sample], f: fn(&Sample) -> i64| {
        let (a, b) = (s.first().unwrap(), s.last().unwrap());
        (f(b) - f(a)) as f64 / (b.acks - a.acks).max(1) as f64
    };
    let last = samples.last().unwrap();
    println!(
        "soak {db:?}: {:.0}s, {} acks, {rounds} conversation rounds of {USERS} users; RSS \
         {} → {} KiB (peaks {} / {}); store {} → {} KiB; events {}, jobs {}, threads {}",
        last.at_s,
        last.acks,
        samples[0].rss_kib,
        last.rss_kib,
        peak(first),
        peak(second),
        samples[0].store_kib,
        last.store_kib,
        last.events,
        last.jobs,
        last.threads
    );
    assert!(
        peak(second) as f64 <= peak(first) as f64 * 1.5 + 16.0 * 1024.0,
        "RSS kept growing: {samples:?}"
    );
    for (name, f) in [
        ("events", (|s: &Sample| s.events) as fn(&Sample) -> i64),
        ("jobs", |s: &Sample| s.jobs),
    ] {
        let (a, b) = (per_ack(first, f), per_ack(second, f));
        assert!(
            b <= a * 1.5 + 1.0,
            "{name} grew faster than the traffic: {a:.2} then {b:.2} rows per ack"
        );
    }
    assert!(
        last.threads <= (USERS as u64 + TALKERS) as i64,
        "more threads than users: {}",
        last.threads
    );
}
both_backends!(steady_load_stays_bounded);
