//! The dashboard on the admin port: its API (`/v1/events`, `/v1/stats`) over HTTP, and the page
//! itself in real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Screenshots go to `target/dashboard*.png`.

use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use http::Method;
use turnout_testkit::client::{admin, get, http_client};
use turnout_testkit::eventually;

use crate::BlueGreen;

const TOKEN: &str = "dashboard-test-token";

/// `/v1/stats` has a point a second per pool, from turnout's own counters; `/v1/events` lists
/// routing changes in order, numbered, and answers only the newer ones after `after`; both
/// refuse a malformed query with 400; the page and its files are served without the token
/// (they hold no data) under a strict Content-Security-Policy, the data with it only.
#[tokio::test]
async fn stats_and_events_feed_the_dashboard() {
    let bg = BlueGreen::start_with(&format!("admin_token = \"{TOKEN}\"\n")).await;
    let base = bg.admin_base();
    for _ in 0..20 {
        let a = get(&http_client(), &bg.turnout.url("/"))
            .await
            .expect("answer");
        assert_eq!(a.status, 200);
    }
    eventually(10, "a stats point with the 20 requests", || async {
        let (s, j) = admin(&base, Method::GET, "/v1/stats", None, Some(TOKEN)).await;
        assert_eq!(s, 200, "{j}");
        let points = j["pools"]["blue"].as_array().cloned().unwrap_or_default();
        let served: f64 = points
            .iter()
            .map(|p| p["rps"].as_f64().unwrap_or(0.0) * f64::from(1))
            .sum();
        j["interval_ms"] == 1000 && served >= 19.0 && j["pools"]["green"].is_array()
    })
    .await;
    let (_, j) = admin(&base, Method::GET, "/v1/stats", None, Some(TOKEN)).await;
    let last_t = j["pools"]["blue"]
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["t"].as_u64())
        .expect("a point");
    let (_, newer) = admin(
        &base,
        Method::GET,
        &format!("/v1/stats?since={last_t}"),
        None,
        Some(TOKEN),
    )
    .await;
    assert!(newer["pools"]["blue"]
        .as_array()
        .expect("points")
        .iter()
        .all(|p| p["t"].as_u64() > Some(last_t)));

    let body = r#"{"to":"green"}"#;
    let (s, _) = admin(&base, Method::POST, "/v1/switch", Some(body), Some(TOKEN)).await;
    assert_eq!(s, 200);
    let (s, _) = admin(&base, Method::POST, "/v1/rollback", None, Some(TOKEN)).await;
    assert_eq!(s, 200);
    let (s, j) = admin(&base, Method::GET, "/v1/events", None, Some(TOKEN)).await;
    assert_eq!(s, 200, "{j}");
    let events = j["events"].as_array().expect("events").clone();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["switch", "rollback"], "{j}");
    assert!(events[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("green live")));
    let first = events[0]["id"].as_u64().expect("id");
    let (_, j) = admin(
        &base,
        Method::GET,
        &format!("/v1/events?after={first}"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(j["events"].as_array().map(Vec::len), Some(1), "{j}");

    let (s, j) = admin(&base, Method::GET, "/v1/events?after=x", None, Some(TOKEN)).await;
    assert_eq!(s, 400, "{j}");
    let (s, _) = admin(&base, Method::GET, "/v1/stats", None, None).await;
    assert_eq!(s, 401);

    let client = http_client();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let a = get(&client, &format!("{base}{path}"))
            .await
            .expect("answer");
        assert_eq!(a.status, 200, "{path}");
        let headers = &a.headers;
        assert!(
            headers["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with(kind)),
            "{path}: {headers:?}"
        );
        assert!(
            headers["content-security-policy"]
                .to_str()
                .is_ok_and(|c| c.contains("script-src 'self'")),
            "{path}"
        );
    }
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver; .ci/run does)");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    eventually(20, "chromedriver answers", || async {
        get(&http_client(), &status).await.is_ok()
    })
    .await;
    driver
}

/// chromedriver's log call (beyond W3C WebDriver; chromedriver keeps Selenium's): the browser
/// console's messages since the last call, each with its level.
#[derive(Debug)]
struct ConsoleLog;

impl fantoccini::wd::WebDriverCompatibleCommand for ConsoleLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// The console's errors since the last look (`SEVERE`: script errors, failed loads, refused
/// by the Content-Security-Policy).
async fn console_errors(c: &fantoccini::Client) -> Vec<String> {
    let log = c
        .issue_cmd(ConsoleLog)
        .await
        .expect("the browser's console log");
    log.as_array()
        .expect("log entries")
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn browser(driver: &Driver, width: u32, height: u32) -> fantoccini::Client {
    browser_with(driver, width, height, &[]).await
}

/// A headless Chromium session with `extra` command-line switches.
async fn browser_with(
    driver: &Driver,
    width: u32,
    height: u32,
    extra: &[&str],
) -> fantoccini::Client {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(String::from)
    .collect();
    args.push(format!("--window-size={width},{height}"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:loggingPrefs".into(),
        serde_json::json!({ "browser": "ALL" }),
    );
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": args }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Clicks button `id` and accepts the confirmation it asks for.
async fn click_and_confirm(c: &fantoccini::Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .expect("the button")
        .click()
        .await
        .expect("click");
    c.accept_alert().await.expect("the confirmation");
}

/// Waits (at most `within`) until element `id` reads `want`; how long it took.
async fn until_text(
    c: &fantoccini::Client,
    id: &str,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        if let Ok(e) = c.find(Locator::Id(id)).await {
            last = e.text().await.unwrap_or_default();
            if want(&last) {
                return Ok(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("#{id} still reads {last:?} after {within:?}"))
}

/// The page in Chromium: it asks for the token, shows the API's 401 for a wrong one, loads
/// with no console error, shows blue live, its own switch button (with the token, after the
/// confirmation) moves the traffic to green, and a switch made with curl shows within 2 s. Also laid out on
/// a phone's width without sideways scrolling, and dark when the system is. Screenshots:
/// target/dashboard.png, dashboard-phone.png and dashboard-dark.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium_shows_the_state_and_switches() {
    let bg = BlueGreen::start_with(&format!("admin_token = \"{TOKEN}\"\n")).await;
    let base = bg.admin_base();
    let driver = chromedriver().await;
    let c = browser(&driver, 1280, 1100).await;
    c.goto(&format!("{base}/")).await.expect("open the page");
    until_text(&c, "conn", Duration::from_secs(10), |t| {
        t.contains("needs a token")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // A wrong token: the action shows the API's own 401 message.
    let token = c.find(Locator::Id("token")).await.expect("token field");
    token.send_keys("wrong").await.expect("type");
    click_and_confirm(&c, "switch").await;
    until_text(&c, "message", Duration::from_secs(10), |t| {
        t.starts_with("401: missing or wrong admin token")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The right one: blue is live. Loaded afresh with it (the tab keeps it), the page makes
    // no console error from here on (the 401s above were logged as failed loads).
    token.clear().await.expect("clear");
    token.send_keys(TOKEN).await.expect("type");
    until_text(&c, "active", Duration::from_secs(10), |t| t == "blue")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The console check sees errors: the 401s so far are there.
    let before = console_errors(&c).await;
    assert!(before.iter().any(|m| m.contains("401")), "{before:?}");
    c.refresh().await.expect("reload the page");
    until_text(&c, "active", Duration::from_secs(10), |t| t == "blue")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The page's own switch to green: confirmed, then the traffic moves.
    c.find(Locator::Id("switch-to"))
        .await
        .expect("pool select")
        .select_by_value("green")
        .await
        .expect("choose green");
    click_and_confirm(&c, "switch").await;
    until_text(&c, "message", Duration::from_secs(10), |t| {
        t.starts_with("switched: green is live")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "green\n"));
    until_text(&c, "active", Duration::from_secs(5), |t| t == "green")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A switch made with curl (back to blue) shows within 2 s (the page polls every second).
    let (s, j) = admin(
        &base,
        Method::POST,
        "/v1/switch",
        Some(r#"{"to":"blue"}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 200, "{j}");
    let shown = until_text(&c, "active", Duration::from_secs(2), |t| t == "blue")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("a switch made with curl showed on the page after {shown:?}");
    until_text(&c, "events", Duration::from_secs(5), |t| {
        t.contains("switch to blue: blue live")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // A rollout under way: the card shows its bake with the figures so far; the page's Abort
    // button ends it; the card stays with the outcome and why, and the events say who.
    let (s, j) = admin(
        &base,
        Method::POST,
        "/v1/rollout",
        Some(r#"{"to":"green","steps":[50,100],"bake":"60s","min_requests":0}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 202, "{j}");
    until_text(&c, "rollout", Duration::from_secs(10), |t| {
        t.contains("step 50% baking") && t.contains("target:") && t.contains("baseline:")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    click_and_confirm(&c, "rollout-abort").await;
    until_text(&c, "rollout", Duration::from_secs(10), |t| {
        t.contains("aborted") && t.contains("why: aborted at 50% by an admin call")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    until_text(&c, "events", Duration::from_secs(5), |t| {
        t.contains("started by API") && t.contains("aborted") && t.contains("by dashboard")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Maintenance on and off from the page.
    click_and_confirm(&c, "maintenance").await;
    until_text(&c, "banners", Duration::from_secs(5), |t| {
        t.contains("Maintenance mode")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    click_and_confirm(&c, "maintenance").await;
    until_text(&c, "banners", Duration::from_secs(5), |t| {
        !t.contains("Maintenance mode")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Nothing reads "null" or "undefined"; a server's address and state never break mid-word.
    let shown = c
        .execute("return document.body.innerText;", vec![])
        .await
        .expect("the page's text");
    let shown = shown.as_str().unwrap_or_default();
    assert!(
        !shown.contains("null") && !shown.contains("undefined"),
        "{shown}"
    );
    let wraps = c
        .execute(
            "return [...document.querySelectorAll('.pool td:nth-child(1), .pool td:nth-child(2)')].map((td) => getComputedStyle(td).whiteSpace);",
            vec![],
        )
        .await
        .expect("the cells' style");
    assert!(
        wraps
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|w| w == "nowrap")),
        "{wraps}"
    );

    // A canary with some traffic for the picture: the split bar and the charts move.
    let (s, j) = admin(
        &base,
        Method::PUT,
        "/v1/split",
        Some(r#"{"weights":{"blue":80,"green":20}}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 200, "{j}");
    let client = http_client();
    for _ in 0..60 {
        let a = get(&client, &bg.turnout.url("/")).await.expect("answer");
        assert_eq!(a.status, 200);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    until_text(&c, "split", Duration::from_secs(5), |t| {
        t.contains("green 20%")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let errors = c
        .execute("return window.turnoutErrors;", vec![])
        .await
        .expect("read the page's errors");
    assert_eq!(errors, serde_json::json!([]), "script errors on the page");
    let console = console_errors(&c).await;
    assert!(console.is_empty(), "console errors: {console:?}");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("target/");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(target.join("dashboard.png"), png).expect("write the screenshot");

    // A phone's width: no sideways scrolling.
    c.set_window_size(390, 844).await.expect("resize");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .expect("measure");
    assert_eq!(
        fits,
        serde_json::json!(true),
        "the page scrolls sideways on a phone"
    );
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(target.join("dashboard-phone.png"), png).expect("write the screenshot");
    let light = c
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .expect("read the background");
    c.close().await.expect("close the session");

    // The system's dark setting gives the dark colours.
    let dark = browser_with(&driver, 1280, 1100, &["--force-dark-mode"]).await;
    dark.goto(&format!("{base}/")).await.expect("open the page");
    let (prefers, background) = (
        dark.execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches;",
            vec![],
        )
        .await
        .expect("media query"),
        dark.execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .expect("read the background"),
    );
    assert_eq!(prefers, serde_json::json!(true));
    assert_ne!(background, light, "the same background in dark mode");
    let png = dark.screenshot().await.expect("screenshot");
    std::fs::write(target.join("dashboard-dark.png"), png).expect("write the screenshot");
    dark.close().await.expect("close the session");
}

/// A fleet member's page shows its fleet: whose member it is, the generation it serves, etcd
/// connected, every member in a row; its own switch button is refused, naming the fleet
/// command; a fleet switch made with the command line shows within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_members_page_shows_the_fleet() {
    let etcd = tokio::task::spawn_blocking(turnout_testkit::etcd::Etcd::start)
        .await
        .expect("etcd");
    let fleet = |name: &str| {
        format!(
            "{}\n[fleet]\nname = \"shop\"\ninstance = \"{name}\"\netcd = {}\n",
            crate::FAST_CHECKS,
            etcd.toml_endpoints()
        )
    };
    let bg = BlueGreen::start_with(&fleet("web-a")).await;
    let _other = BlueGreen::start_with(&fleet("web-b")).await;
    let driver = chromedriver().await;
    let c = browser(&driver, 1280, 900).await;
    c.goto(&format!("{}/", bg.admin_base()))
        .await
        .expect("open the page");
    until_text(&c, "fleet-summary", Duration::from_secs(10), |t| {
        t.starts_with("fleet shop: this is web-a, serving generation 1")
            && t.contains("etcd connected")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    until_text(&c, "fleet-members", Duration::from_secs(10), |t| {
        t.contains("web-a") && t.contains("web-b") && t.contains("current")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The page redraws the pool list at every refresh: a redraw between the find and the
    // choice makes the element stale, and the choice is made again.
    let mut chosen = false;
    for _ in 0..20 {
        if let Ok(select) = c.find(Locator::Id("switch-to")).await {
            if select.select_by_value("green").await.is_ok() {
                chosen = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(chosen, "green chosen in the pool list");
    click_and_confirm(&c, "switch").await;
    until_text(&c, "message", Duration::from_secs(10), |t| {
        t.contains("follows fleet shop") && t.contains("turnout fleet switch")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        bg.body("/").await,
        "blue\n",
        "the page's switch changed nothing"
    );

    let mut cmd = bg
        .sandbox
        .command(&["fleet", "switch", "--to", "green", "--fleet", "shop"]);
    cmd.arg("--etcd").arg(etcd.endpoint(0));
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_text(&c, "fleet-summary", Duration::from_secs(10), |t| {
        t.contains("serving generation 2") && t.contains("by every member within")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    until_text(&c, "active", Duration::from_secs(10), |t| t == "green")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.screenshot()
        .await
        .map(|png| std::fs::write("target/dashboard-fleet.png", png))
        .ok();
    let errors = console_errors(&c).await;
    assert!(
        errors
            .iter()
            .all(|m| m.contains("409") || m.contains("/favicon.ico")),
        "only the refused switch (and the browser's own favicon request): {errors:?}"
    );
    c.close().await.expect("close");
}
