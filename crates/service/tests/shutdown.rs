//! Graceful shutdown of the real binary: on SIGTERM (or SIGINT) it stops accepting, lets the
//! requests and jobs in flight finish, releases the jobs still running at the end of the
//! drain (so the next start runs them at once, not after their lease) and exits 0 within
//! `SHUTDOWN_GRACE_SECS`. A held Graph call stands for a job in flight; the calls counted at
//! the mock show the job is neither lost nor run twice.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::app::*;
use common::db::{Db, TestDb};
use common::mocks::{edge, mount_owner, success};
use common::process::{Process, env, message};
use handover_core::State;
use messenger_handover::store::{JobRow, JobStatus, Store};
use serde_json::Value;
use wiremock::MockServer;

/// The binary's settings on `db` against `graph`, with `overrides`.
fn service_env(
    db: &TestDb,
    graph: &MockServer,
    overrides: &[(&str, &str)],
) -> Vec<(String, String)> {
    let uri = graph.uri();
    let mut pairs = vec![
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", db.url.as_str()),
        ("FB_APP_ID", APP_ID),
        ("FB_APP_SECRET", APP_SECRET),
        ("FB_PAGE_ACCESS_TOKEN", PAGE_TOKEN),
        ("FB_VERIFY_TOKEN", VERIFY_TOKEN),
        ("FB_PAGE_ID", PAGE_ID),
        ("GRAPH_API_BASE", uri.as_str()),
        ("GRAPH_API_VERSION", GRAPH_VERSION),
        ("FULFILLMENT_TOKEN", FULFILLMENT_TOKEN),
        ("HANDOVER_PASS_DELAY_MS", "0"),
        ("RUST_LOG", "info"),
    ];
    pairs.retain(|(k, _)| !overrides.iter().any(|(o, _)| o == k));
    pairs.extend_from_slice(overrides);
    env(&pairs)
}

/// A handover intent for `PSID`, answered 200.
async fn hand_over(port: u16) {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/fulfillment"))
        .bearer_auth(FULFILLMENT_TOKEN)
        .header("content-type", "application/json")
        .body(fixture("dialogflow/handover.json"))
        .send()
        .await
        .expect("fulfillment answers");
    assert_eq!(resp.status(), 200);
}

/// Waits until the mock has received `n` requests on `suffix`.
async fn wait_requests(graph: &MockServer, suffix: &str, n: usize) {
    let deadline = std::time::Instant::now() + common::process::PATIENCE;
    while requests_to(graph, suffix).await.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{suffix} was not called {n} times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pass jobs of `PSID`, read from the store (the service is not running).
async fn pass_jobs(db: &TestDb) -> Vec<JobRow> {
    let store = Store::connect(&db.url).await.expect("store");
    let mut jobs = store.jobs_for(PAGE_ID, PSID).await.expect("jobs");
    store.close().await;
    jobs.retain(|j| j.kind == "pass");
    jobs
}

async fn thread_state(db: &TestDb) -> Option<State> {
    let store = Store::connect(&db.url).await.expect("store");
    let thread = store.thread(PAGE_ID, PSID).await.expect("thread");
    store.close().await;
    thread.map(|t| t.state)
}

/// Reads from `conn` until `end` has arrived.
fn read_until(conn: &mut TcpStream, end: &str) -> String {
    conn.set_read_timeout(Some(common::process::PATIENCE))
        .unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&got).ends_with(end) {
        match conn.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!("{other:?} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn stopping_line(line: &Value) -> bool {
    message(line).is_some_and(|m| m.starts_with("stopping"))
}

/// SIGTERM while the pass is held 1.5 s by Graph, with a grace long enough for it: the job
/// finishes, the thread is `HUMAN`, the pass was called once, and the exit code is 0.
async fn a_job_in_flight_at_sigterm_finishes_within_the_grace(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    edge("POST", "pass_thread_control")
        .respond_with(success().set_delay(Duration::from_millis(1500)))
        .mount(&graph)
        .await;
    let (mut service, port) =
        Process::serve(&service_env(&db, &graph, &[("SHUTDOWN_GRACE_SECS", "30")])).await;
    hand_over(port).await;
    wait_requests(&graph, "/pass_thread_control", 1).await;

    service.signal("TERM");
    let (status, took) = service.wait_exit().await;
    let logs = service.logs();
    println!("stopped in {took:?}\n{logs}");
    assert_eq!(status.code(), Some(0), "{logs}");
    let stopping = service.wait_for_line(stopping_line).await;
    assert_eq!(stopping["signal"], "SIGTERM");
    assert!(
        !logs.contains("released"),
        "nothing had to be released: {logs}"
    );

    let passes = pass_jobs(&db).await;
    assert_eq!(passes.len(), 1);
    assert_eq!(passes[0].status, JobStatus::Done, "{passes:?}");
    assert_eq!(thread_state(&db).await, Some(State::Human));
    assert_eq!(requests_to(&graph, "/pass_thread_control").await.len(), 1);
}
both_backends!(a_job_in_flight_at_sigterm_finishes_within_the_grace);

/// SIGTERM while Graph holds the pass far longer than a 2 s grace, with a 10-minute lease:
/// the process exits 0 by itself, having stopped and released the job; the next start runs it
/// at once (long before the lease would end). The pass may have reached Meta, so the job is in
/// doubt: it asks `thread_owner` (the inbox has the thread) and does not call pass again.
/// (On SQLite the next start also frees every lease; PostgreSQL, with several replicas, cannot,
/// so there only the release makes the job run before its lease ends.)
async fn a_job_still_running_at_the_end_of_the_grace_is_released_and_runs_once(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    edge("POST", "pass_thread_control")
        .respond_with(success().set_delay(Duration::from_secs(600)))
        .mount(&graph)
        .await;
    mount_owner(&graph, PSID, Some(INBOX)).await;
    let overrides = [
        ("SHUTDOWN_GRACE_SECS", "2"),
        ("JOB_LEASE_MS", "600000"),
        // Longer than the grace: only the shutdown stops the call.
        ("HTTP_TIMEOUT_MS", "120000"),
    ];
    let env = service_env(&db, &graph, &overrides);
    let (mut service, port) = Process::serve(&env).await;
    hand_over(port).await;
    wait_requests(&graph, "/pass_thread_control", 1).await;

    service.signal("TERM");
    let (status, took) = service.wait_exit().await;
    let logs = service.logs();
    println!("stopped in {took:?}\n{logs}");
    assert_eq!(status.code(), Some(0), "{logs}");
    let released = service.wait_for_line(|l| l.get("released").is_some()).await;
    assert_eq!(released["released"], 1, "{logs}");
    assert_eq!(thread_state(&db).await, Some(State::Passing));
    let passes = pass_jobs(&db).await;
    assert_eq!(passes.len(), 1);
    assert_eq!(passes[0].attempts, 1);
    assert_ne!(passes[0].status, JobStatus::Done, "{passes:?}");

    // The next start: the job runs again now, verifies, and is done without a second pass.
    let (mut again, _) = Process::serve(&env).await;
    again
        .wait_for_line(|l| message(l) == Some("settled by thread_owner: not called again"))
        .await;
    again.signal("TERM");
    let (status, _) = again.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", again.logs());
    // The lease had ended at the shutdown: SQLite's start found no job still leased.
    assert!(
        !again.logs().contains("interrupted by the last shutdown"),
        "{}",
        again.logs()
    );

    let passes = pass_jobs(&db).await;
    assert_eq!(passes.len(), 1);
    assert_eq!(passes[0].status, JobStatus::Done, "{passes:?}");
    assert_eq!(
        passes[0].attempts, 2,
        "run once more, not twice: {passes:?}"
    );
    assert_eq!(thread_state(&db).await, Some(State::Human));
    assert_eq!(
        requests_to(&graph, "/pass_thread_control").await.len(),
        1,
        "the pass was not repeated"
    );
    assert_eq!(requests_to(&graph, "/thread_owner").await.len(), 1);
}
both_backends!(a_job_still_running_at_the_end_of_the_grace_is_released_and_runs_once);

/// A request whose body is still arriving when SIGTERM comes is answered; new connections
/// are refused meanwhile. SIGINT (Ctrl-C) stops the service the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_is_answered_and_new_connections_are_refused() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = MockServer::start().await;
    let (mut service, port) =
        Process::serve(&service_env(&db, &graph, &[("SHUTDOWN_GRACE_SECS", "30")])).await;

    // The headers of a plain intent, before the signal. `Expect: 100-continue` makes the
    // server say when it has read them: from then on the request is in flight.
    let body = fixture("dialogflow/plain_intent.json");
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "POST /fulfillment HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {FULFILLMENT_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\
         Expect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.flush().unwrap();
    let continued = read_until(&mut conn, "\r\n\r\n");
    assert!(continued.starts_with("HTTP/1.1 100"), "{continued}");
    conn.write_all(first.as_bytes()).unwrap();

    service.signal("INT");
    let stopping = service.wait_for_line(stopping_line).await;
    assert_eq!(stopping["signal"], "SIGINT");
    let deadline = std::time::Instant::now() + common::process::PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "new connections are still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The rest of the body, after the listener closed: the answer still comes.
    conn.write_all(rest.as_bytes()).unwrap();
    conn.flush().unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("fulfillmentMessages"), "{answer}");

    let (status, _) = service.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", service.logs());
}
