//! Watching a running service from outside: `/readyz` (start-up time) and the job queue in
//! `/metrics` (`handover_jobs{kind,status}`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fixtures::Intent;

/// Job kinds that are timers rather than work: always pending, due later (the reconciler is
/// re-queued once per interval; idle checks wait for an agent's silence).
const TIMER_KINDS: &[&str] = &["reconcile", "idle_check"];

/// Jobs waiting and running, timers left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    pub pending: u64,
    pub running: u64,
}

impl Queue {
    pub fn is_empty(self) -> bool {
        self.pending == 0 && self.running == 0
    }
}

/// Reads `handover_jobs{kind="…",status="…"} N` lines of a Prometheus text exposition.
pub fn parse_queue(metrics: &str) -> Queue {
    let mut q = Queue::default();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("handover_jobs{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0).max(0.0) as u64;
        let label = |name: &str| {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if label("kind").is_some_and(|k| TIMER_KINDS.contains(&k.as_str())) {
            continue;
        }
        match label("status").as_deref() {
            Some("pending") => q.pending += n,
            Some("running") => q.running += n,
            _ => {}
        }
    }
    q
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text
/// exposition; 0 when absent (a counter never incremented is not exposed).
pub fn series_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

/// `GET url`'s body.
pub async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| format!("GET {url}: {e}"))
}

/// The service's queue, as its `/metrics` reports it.
pub async fn queue(client: &reqwest::Client, metrics_url: &str) -> Result<Queue, String> {
    Ok(parse_queue(&get_text(client, metrics_url).await?))
}

/// Polls `metrics_url` every 50 ms until the queue is empty (true) or `timeout` has passed.
pub async fn drain_quietly(client: &reqwest::Client, metrics_url: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if queue(client, metrics_url).await.is_ok_and(Queue::is_empty) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `metrics_url` until the queue is empty or `timeout` has passed. Prints
/// `drain_secs=…` and `queue_left=…`; Ok when drained.
pub async fn drain(client: &reqwest::Client, metrics_url: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    let mut last = Queue::default();
    let mut last_error: Option<String>;
    loop {
        match queue(client, metrics_url).await {
            Ok(q) => {
                last = q;
                last_error = None;
                if q.is_empty() {
                    break;
                }
            }
            Err(e) => last_error = Some(e),
        }
        if started.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("drain_secs={:.1}", started.elapsed().as_secs_f64());
    println!("queue_left={}", last.pending + last.running);
    if let Some(e) = last_error {
        eprintln!("drain: {e}");
        return false;
    }
    last.is_empty()
}

/// A wall-clock time given as seconds since the Unix epoch with a fraction, as bash's
/// `$EPOCHREALTIME` writes it (`1700000000.123456`, or with a comma in some locales).
pub fn parse_epoch(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (secs, frac) = match text.split_once(['.', ',']) {
        Some((s, f)) => (s, f),
        None => (text, ""),
    };
    let secs: u64 = secs.parse().ok()?;
    let mut nanos: u64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let digit = c.to_digit(10)? as u64;
        nanos += digit * 10u64.pow(8 - i as u32);
    }
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Whether process `pid` still exists (Linux: `/proc/PID`).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls `url` every `every` until it answers 200, then prints `ready_ms=…`: the wall-clock
/// time from `since` (taken by the caller just before it started the process) to the first
/// 200 answer. Fails when `timeout` passes first, or when process `pid` (if given) exits.
pub async fn ready(
    url: &str,
    since: SystemTime,
    every: Duration,
    timeout: Duration,
    pid: Option<u32>,
) -> bool {
    // A fresh connection per attempt: a refused connect fails at once.
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ready: cannot build an HTTP client: {e}");
            return false;
        }
    };
    let started = Instant::now();
    loop {
        let attempt = Instant::now();
        if let Ok(resp) = client.get(url).send().await
            && resp.status() == reqwest::StatusCode::OK
        {
            let now = SystemTime::now();
            let ms = now
                .duration_since(since)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            println!("ready_ms={ms:.1}");
            return true;
        }
        if let Some(pid) = pid
            && !alive(pid)
        {
            eprintln!("ready: process {pid} exited before {url} answered 200");
            return false;
        }
        if started.elapsed() >= timeout {
            eprintln!("ready: {url} did not answer 200 within {timeout:?}");
            return false;
        }
        tokio::time::sleep(every.saturating_sub(attempt.elapsed())).await;
    }
}

/// Sends one plain-intent fulfillment request for each of `users` users (8 in flight), so the
/// service has seen every user and session before a measurement. Fails on any non-200 answer.
pub async fn warm(
    url: &str,
    token: &str,
    users: u64,
    psid_base: u64,
    page_id: &str,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let psids = (0..users)
        .map(|i| crate::fixtures::psid(psid_base, i))
        .collect();
    let base = url.trim_end_matches('/');
    fulfill_all(&http, base, token, page_id, Intent::Plain, psids, 8).await
}

/// Sends one `intent` fulfillment request per user in `psids` to `base`/fulfillment, with
/// `concurrency` in flight. Fails on the first answer that is not a 200 (or, for a handover,
/// that lacks the `human_handover` context).
pub async fn fulfill_all(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    page_id: &str,
    intent: Intent,
    psids: Vec<String>,
    concurrency: usize,
) -> Result<(), String> {
    let url = format!("{base}/fulfillment");
    let psids = Arc::new(psids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (http, url, next, psids) = (http.clone(), url.clone(), next.clone(), psids.clone());
        let (token, page_id) = (token.to_owned(), page_id.to_owned());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(psid) = psids.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return Ok::<(), String>(());
                };
                let body = crate::fixtures::fulfillment_body(intent, psid, &page_id);
                let resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {}", e.without_url()))?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let handed = intent != Intent::Handover || text.contains("human_handover");
                if status != reqwest::StatusCode::OK || !handed {
                    let text: String = text.chars().take(200).collect();
                    return Err(format!("POST {url}: HTTP {status}: {text}"));
                }
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| format!("fulfillment worker: {e}"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_counts_work_and_leaves_timers_out() {
        let text = "\
# TYPE handover_jobs gauge
handover_jobs{kind=\"pass\",status=\"pending\"} 3
handover_jobs{kind=\"pass\",status=\"done\"} 40
handover_jobs{kind=\"process_event\",status=\"running\"} 2
handover_jobs{kind=\"reconcile\",status=\"pending\"} 1
handover_jobs{kind=\"take\",status=\"pending\"} 0
handover_threads{state=\"HUMAN\"} 7
";
        assert_eq!(
            parse_queue(text),
            Queue {
                pending: 3,
                running: 2
            }
        );
        assert!(parse_queue("handover_jobs{kind=\"reconcile\",status=\"pending\"} 1").is_empty());
    }

    #[test]
    fn a_series_is_found_by_its_exact_name_and_labels() {
        let text = "\
handover_webhook_events_total{outcome=\"stored\"} 120
handover_webhook_events_total{outcome=\"stored_x\"} 7
";
        let stored = "handover_webhook_events_total{outcome=\"stored\"}";
        assert_eq!(series_value(text, stored), 120.0);
        let duplicate = "handover_webhook_events_total{outcome=\"duplicate\"}";
        assert_eq!(series_value(text, duplicate), 0.0);
    }

    #[test]
    fn epoch_times_parse_with_either_separator() {
        let t = parse_epoch("1700000000.250000").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_700_000_000_250)
        );
        assert_eq!(parse_epoch("1700000000,25"), Some(t));
        assert_eq!(parse_epoch("x"), None);
    }
}
