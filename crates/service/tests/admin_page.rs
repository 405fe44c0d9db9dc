//! The admin page in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver) by fantoccini, against the service wired to the emulator. The operator types
//! the token once; the page lists the conversation that is with the inbox; "Give back to bot"
//! returns it (the emulator's owner becomes the bot app, the thread BOT) and the list follows.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the test is
//! skipped with a loud message, except in CI (`CI` set), where it fails.

mod common;

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::db::Db;
use common::emulated::Emulated;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use handover_core::State;
use messenger_handover::demo::ANA;
use serde_json::{Value, json};

const TOKEN: &str = "admin-page-token-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(20);

/// The first of `names` found on `PATH` (or at `/usr/bin`).
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/bin"));
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// chromedriver, started by this test on a free port and stopped (by its handle) at the end.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(program: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{url}/status")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` gives a value (or panics with `what` after [`WAIT`]).
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rows of `psid` in the page's list of conversations, as their `data-state`.
async fn rows_of(browser: &Client, psid: &str) -> Vec<String> {
    let css = format!("#threads tbody tr[data-psid='{psid}']");
    let rows = browser
        .find_all(Locator::Css(&css))
        .await
        .unwrap_or_default();
    let mut states = Vec::new();
    for row in rows {
        states.push(
            row.attr("data-state")
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
        );
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_a_human_thread_and_gives_it_back_to_the_bot() {
    let (true, Some(chromedriver)) = (
        Path::new(CHROMIUM).is_file(),
        find_program(&["chromedriver"]),
    ) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI: {CHROMIUM} and chromedriver are required for the admin page test \
                 (apt-get install -y chromium chromium-driver; .ci/run does it)"
            );
        }
        eprintln!(
            "\n\n!!!!!!!!!! SKIPPED: the admin page test needs {CHROMIUM} and chromedriver \
             (apt-get install -y chromium chromium-driver). It is NOT skipped in CI. !!!!!!!!!!\n"
        );
        return;
    };
    let world = Emulated::start(Db::Sqlite, &[("ADMIN_TOKEN", TOKEN)]).await;
    world.handed_over(ANA).await;
    let driver = Driver::start(&chromedriver).await;
    let browser = driver.browser().await;
    // The session is closed (and Chromium with it) whether the steps pass or panic.
    let steps = AssertUnwindSafe(give_back_in_the_browser(&browser, &world))
        .catch_unwind()
        .await;
    let closed = browser.close().await;
    drop(driver);
    world.stop().await;
    if let Err(panic) = steps {
        std::panic::resume_unwind(panic);
    }
    closed.expect("the browser session closes");
}

async fn give_back_in_the_browser(browser: &Client, world: &Emulated) {
    browser
        .goto(&format!("{}/admin", world.base))
        .await
        .expect("the page loads");
    // The token, typed once.
    let input = browser.find(Locator::Id("token")).await.unwrap();
    input.send_keys(TOKEN).await.unwrap();
    browser
        .find(Locator::Id("token-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The script ran (its hash is in the Content-Security-Policy) and listed the thread.
    let states = until("the thread in the list", || async {
        Some(rows_of(browser, ANA).await).filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(states, vec!["HUMAN".to_owned()]);
    // Kept in the tab's session storage only: not in the address, not in a cookie.
    let kept = browser
        .execute(
            "return [location.href, document.cookie, \
             sessionStorage.getItem('messenger-handover.admin-token')];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        kept,
        json!([format!("{}/admin", world.base), "", TOKEN]),
        "{kept}"
    );

    // Give it back to the bot.
    let css = format!("#threads tbody tr[data-psid='{ANA}'] button.give-back");
    browser
        .find(Locator::Css(&css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    world.settled_in(ANA, State::Bot).await;
    assert_eq!(world.emulator.owner(ANA), Some(world.bot()));
    assert_eq!(world.welcomes(ANA), 1);
    // The list follows: the thread is no longer with a person.
    until("the list to drop the thread", || async {
        rows_of(browser, ANA).await.is_empty().then_some(())
    })
    .await;
    let empty = browser.find(Locator::Id("threads-empty")).await.unwrap();
    assert!(empty.is_displayed().await.unwrap());
    let status = browser.find(Locator::Id("status")).await.unwrap();
    let said = status.text().await.unwrap();
    assert!(said.starts_with("admin: back to the bot"), "{said}");

    // A reload keeps the token for this tab: no second prompt.
    browser.refresh().await.unwrap();
    until("the board after a reload", || async {
        let board = browser.find(Locator::Id("board")).await.ok()?;
        board.is_displayed().await.ok()?.then_some(())
    })
    .await;
    let login = browser.find(Locator::Id("login")).await.unwrap();
    assert!(!login.is_displayed().await.unwrap());

    let answer: Value = browser
        .execute("return document.title;", vec![])
        .await
        .unwrap();
    assert!(answer.as_str().unwrap().contains("messenger-handover"));
}
