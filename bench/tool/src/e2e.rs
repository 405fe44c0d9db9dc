//! End-to-end take latency: from a user's signed "back to bot" `standby` delivery to the
//! arrival of that user's `take_thread_control` at the Graph API.
//!
//! This process is the Graph API of the service under test (the service is started with
//! `GRAPH_API_BASE` at `--graph-listen`), so both ends of each measurement are read from one
//! monotonic clock.
//!
//! 1. Hands over `users` distinct users (`input.handover` fulfillment requests, bounded
//!    concurrency), waits until every user's `pass_thread_control` reached the stub and the
//!    service's queue is empty (`/metrics`), then settles.
//! 2. Sends one signed `back to bot` delivery per user at a fixed `rate` per second, open loop:
//!    each at its scheduled time, without waiting for earlier answers; every `mid` distinct.
//! 3. Waits for every user's take (at most `take_timeout` after the last delivery), sampling the
//!    queue's pending jobs meanwhile.
//! 4. Waits for the queue to empty, and reports the latency of the welcome back too: from the
//!    same delivery to that user's first Send API message, the last thing the user sees.
//!
//! Prints `e2e_*=value` lines; fails (false) unless every take arrived and every delivery was
//! stored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::fixtures::{self, Intent};
use crate::probe;
use crate::stub::{self, Stub};

pub struct E2e {
    pub service: String,
    pub graph_listen: String,
    pub secret: String,
    pub token: String,
    pub users: u64,
    pub rate: f64,
    pub page_id: String,
    pub psid_base: u64,
    pub concurrency: u64,
    pub take_timeout: Duration,
    pub wait_timeout: Duration,
    pub settle: Duration,
    pub bot_app: String,
    pub inbox_app: String,
}

/// The text the service's default `RETURN_PHRASES` recognise.
const BACK_TO_BOT: &str = "back to bot";
/// How often the queue is sampled during the run.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(String::new, |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
}

/// Runs the whole measurement; prints its lines. True when every take arrived.
pub async fn main(cfg: E2e) -> bool {
    let stub = Arc::new(Stub::new(&cfg.bot_app, &cfg.inbox_app, true));
    let server = match stub::server(stub.clone(), &cfg.graph_listen) {
        Ok(s) => s,
        Err(e) => {
            println!("e2e_error=cannot listen on {}: {e}", cfg.graph_listen);
            return false;
        }
    };
    let handle = server.handle();
    tokio::spawn(server);
    let ok = match run(&cfg, &stub).await {
        Ok(ok) => ok,
        Err(e) => {
            println!("e2e_error={e}");
            false
        }
    };
    handle.stop(false).await;
    ok
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

async fn run(cfg: &E2e, stub: &Arc<Stub>) -> Result<bool, String> {
    let http = client()?;
    let base = cfg.service.trim_end_matches('/').to_owned();
    let metrics_url = format!("{base}/metrics");
    let psids: Vec<String> = (0..cfg.users)
        .map(|i| fixtures::psid(cfg.psid_base, i))
        .collect();

    // The service is up (run.sh waited for /readyz; this is a cheap second check).
    probe::queue(&http, &metrics_url).await?;

    // 1. Hand over every user.
    let started = Instant::now();
    handover_all(cfg, &http, &base, &psids).await?;
    let passes = wait_for(cfg.wait_timeout, || {
        stub.with_arrivals(|a| a.passes.len() as u64) >= cfg.users
    })
    .await;
    if !passes {
        let n = stub.with_arrivals(|a| a.passes.len());
        return Err(format!(
            "only {n} of {} pass_thread_control calls reached the stub within {:?}",
            cfg.users, cfg.wait_timeout
        ));
    }
    if !probe::drain_quietly(&http, &metrics_url, cfg.wait_timeout).await {
        let q = probe::queue(&http, &metrics_url).await?;
        return Err(format!(
            "the queue did not empty within {:?} after the handovers ({} pending, {} running)",
            cfg.wait_timeout, q.pending, q.running
        ));
    }
    println!("e2e_handover_secs={:.1}", started.elapsed().as_secs_f64());
    tokio::time::sleep(cfg.settle).await;

    // 2. One "back to bot" per user at a fixed rate, open loop.
    let now = fixtures::now_ms();
    let deliveries: Vec<(String, String)> = psids
        .iter()
        .enumerate()
        .map(|(i, psid)| {
            let mid = format!("m_e2e_{now}_{i}");
            let body = fixtures::standby_body(psid, &cfg.page_id, &mid, BACK_TO_BOT, now);
            (fixtures::sign(&cfg.secret, body.as_bytes()), body)
        })
        .collect();
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; deliveries.len()]));
    let failures = Arc::new(AtomicU64::new(0));
    let first_failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let lag_us = Arc::new(AtomicU64::new(0));
    let queue_max = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_queue(
        http.clone(),
        metrics_url.clone(),
        queue_max.clone(),
        sampling.clone(),
    ));

    let url = format!("{base}/messenger");
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(deliveries.len());
    for (i, (signature, body)) in deliveries.into_iter().enumerate() {
        let at = t0 + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        let (http, url) = (http.clone(), url.clone());
        let (sent, failures, first_failure, lag_us) = (
            sent.clone(),
            failures.clone(),
            first_failure.clone(),
            lag_us.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let now = Instant::now();
            lag_us.fetch_max(
                now.saturating_duration_since(at.into_std()).as_micros() as u64,
                Ordering::Relaxed,
            );
            sent.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(now);
            let result = http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(body)
                .send()
                .await;
            let problem = match result {
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_success() && text.contains("\"stored\":1") {
                        None
                    } else {
                        Some(format!(
                            "HTTP {status}: {}",
                            text.chars().take(200).collect::<String>()
                        ))
                    }
                }
                Err(e) => Some(e.without_url().to_string()),
            };
            if let Some(problem) = problem {
                failures.fetch_add(1, Ordering::Relaxed);
                first_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(problem);
            }
        }));
    }
    let last_sent = Instant::now();
    let send_secs = (last_sent - t0.into_std()).as_secs_f64();

    // 3. Wait for the takes.
    let want: std::collections::HashSet<&str> = psids.iter().map(String::as_str).collect();
    let count_takes = || {
        stub.with_arrivals(|a| a.takes.keys().filter(|k| want.contains(k.as_str())).count()) as u64
    };
    let all = wait_for(cfg.take_timeout, || count_takes() >= cfg.users).await;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    // The answers to the deliveries (they came long before the takes, normally).
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;

    let sent = sent.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let latencies = since_sent(stub, &psids, &sent, |a| &a.takes);
    let takes = count_takes();
    let failures = failures.load(Ordering::Relaxed);

    println!("e2e_users={}", cfg.users);
    println!("e2e_rate={}", cfg.rate);
    println!("e2e_send_secs={send_secs:.2}");
    println!(
        "e2e_send_lag_max_ms={:.1}",
        lag_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    println!("e2e_delivery_failures={failures}");
    println!("e2e_takes={takes}");
    println!("e2e_p50_ms={}", ms(percentile(&latencies, 0.50)));
    println!("e2e_p99_ms={}", ms(percentile(&latencies, 0.99)));
    println!("e2e_max_ms={}", ms(latencies.last().copied()));
    println!("e2e_queue_max={}", queue_max.load(Ordering::Relaxed));
    // The service still sends its welcome messages and syncs: keep the Graph API up until its
    // queue is empty, so it is not left retrying against a closed port.
    let drained = probe::drain_quietly(&http, &metrics_url, Duration::from_secs(30)).await;
    println!("e2e_drained={}", u8::from(drained));
    // What the user sees last: the welcome back, which follows the take, the context sync and
    // their store writes.
    let welcomes = since_sent(stub, &psids, &sent, |a| &a.messages);
    println!("e2e_welcomes={}", welcomes.len());
    println!("e2e_welcome_p50_ms={}", ms(percentile(&welcomes, 0.50)));
    println!("e2e_welcome_p99_ms={}", ms(percentile(&welcomes, 0.99)));
    let mut ok = true;
    if !all {
        ok = false;
        println!(
            "e2e_error=only {takes} of {} takes arrived within {} s of the last delivery",
            cfg.users,
            cfg.take_timeout.as_secs()
        );
    }
    if failures > 0 {
        ok = false;
        let first = first_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        println!("e2e_error={failures} deliveries were not stored; first: {first}");
    }
    Ok(ok)
}

/// For each user whose delivery was sent and whose call (`calls`) arrived, the time between,
/// sorted.
fn since_sent(
    stub: &Stub,
    psids: &[String],
    sent: &[Option<Instant>],
    calls: impl Fn(&stub::Arrivals) -> &std::collections::HashMap<String, Instant>,
) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = stub.with_arrivals(|a| {
        let calls = calls(a);
        psids
            .iter()
            .zip(sent)
            .filter_map(|(psid, sent)| Some(calls.get(psid)?.saturating_duration_since((*sent)?)))
            .collect()
    });
    latencies.sort_unstable();
    latencies
}

/// Hands over every user in `psids` with `cfg.concurrency` requests in flight.
async fn handover_all(
    cfg: &E2e,
    http: &reqwest::Client,
    base: &str,
    psids: &[String],
) -> Result<(), String> {
    let (token, page_id) = (&cfg.token, &cfg.page_id);
    probe::fulfill_all(
        http,
        base,
        token,
        page_id,
        Intent::Handover,
        psids.to_vec(),
        cfg.concurrency as usize,
    )
    .await
    .map_err(|e| format!("handover request: {e}"))
}

/// Polls `done` every 10 ms for at most `timeout`.
async fn wait_for(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sample_queue(
    http: reqwest::Client,
    metrics_url: String,
    max: Arc<AtomicU64>,
    go_on: Arc<AtomicBool>,
) {
    while go_on.load(Ordering::Relaxed) {
        if let Ok(q) = probe::queue(&http, &metrics_url).await {
            max.fetch_max(q.pending, Ordering::Relaxed);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&d, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
