//! What keeps a deploy free of user-visible errors around the switch itself: request ids, the
//! body limit, maintenance mode, pause and hold.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use turnout_testkit::client::{get, h2c_client, http_client, send};
use turnout_testkit::eventually;

use crate::hardening::{raw, read_all, status_of};
use crate::BlueGreen;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_an_id_the_app_the_client_and_the_log_share() {
    let bg = BlueGreen::start_full("", "trusted_proxies = [\"127.0.0.2/32\"]\n").await;
    let a = get(&http_client(), &bg.turnout.url("/headers"))
        .await
        .expect("answer");
    let id = a.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let seen: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(
        seen["x-request-id"],
        serde_json::json!([id]),
        "the app got the same id"
    );
    eventually(10, "the id in the access line", || async {
        bg.turnout
            .find_log(&format!("request_id=\"{id}\""))
            .is_some_and(|l| l.contains("path=/headers"))
    })
    .await;

    // A client's own id is replaced (127.0.0.1 is not a trusted proxy here)...
    let req = Request::get(bg.turnout.url("/headers"))
        .header("x-request-id", "made-up")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send(&http_client(), req).await.expect("answer");
    assert_ne!(a.headers["x-request-id"], "made-up");
    assert!(!a.body.contains("made-up"), "{}", a.body);

    // ...and kept from a trusted one (the same request from 127.0.0.2).
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind");
    let mut conn = sock.connect(bg.turnout.proxy).await.expect("connect");
    conn.write_all(b"GET /headers HTTP/1.1\r\nHost: app\r\nX-Request-Id: alb-1-2-3\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_all(&mut conn).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: alb-1-2-3\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("\"x-request-id\":[\"alb-1-2-3\"]"),
        "{answer}"
    );

    // Answers turnout makes itself carry one too (a 404 of the admin-less path is the app's;
    // a refused CONNECT is turnout's, before any id: a 503 from an empty pool is used instead).
    bg.blue.kill();
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert!(a.status.is_server_error(), "{}", a.status);
    assert_eq!(a.headers["x-request-id"].len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let bg = BlueGreen::start_with("max_request_body = \"1KiB\"\n").await;
    let before = bg.blue.requests();

    // Declared too long: refused before a byte of it is read, and the connection closed.
    let answer = raw(
        bg.turnout.proxy,
        b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 4096\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(bg.blue.requests(), before, "the app never saw it");

    // Within the limit: through.
    let body = vec![b'x'; 1024];
    let req = Request::post(bg.turnout.url("/upload"))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let a = send(&http_client(), req).await.expect("answer");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"bytes\":1024"), "{}", a.body);

    // Streamed without a length (chunked): cut off once it passes the limit.
    let mut conn = TcpStream::connect(bg.turnout.proxy).await.expect("connect");
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    for _ in 0..3 {
        let chunk = format!("200\r\n{}\r\n", "y".repeat(512));
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let answer = read_all(&mut conn).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    eventually(10, "the cut-off counted and logged", || async {
        bg.turnout
            .metrics()
            .await
            .contains("turnout_client_cutoffs_total{reason=\"body_too_large\"} 1")
            && bg
                .turnout
                .logs()
                .lines()
                .any(|l| l.contains("status=413") && l.contains("max_request_body"))
    })
    .await;

    // HTTP/2: the same limit.
    let req = Request::builder()
        .method(Method::POST)
        .uri(bg.turnout.url("/upload"))
        .body(Full::new(Bytes::from(vec![b'z'; 2048])))
        .expect("request");
    let a = send(&h2c_client(), req).await.expect("answer");
    assert_eq!(a.status, 413, "{}", a.body);
    // The server is fine for everyone else.
    assert_eq!(bg.body("/").await, "blue\n");
}

/// Runs the `turnout` CLI against `bg`'s admin API: the exit code and stdout.
fn cli(bg: &BlueGreen, args: &[&str]) -> (Option<i32>, String) {
    let admin = bg.admin_base();
    let out = bg
        .sandbox
        .command(&[args, &["--admin", &admin]].concat())
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Sends `raw` from 127.0.0.2 (an address `allow_ips` may list) and reads the whole answer.
async fn from_second_address(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind");
    let mut conn = sock.connect(addr).await.expect("connect");
    conn.write_all(raw).await.expect("write");
    read_all(&mut conn).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_serves_the_page_lets_the_allowed_through_and_survives_a_restart() {
    let pages = tempfile::tempdir().expect("dir");
    std::fs::write(
        pages.path().join("maintenance.html"),
        "<h1>Custom maintenance</h1><p>{{message}}</p>",
    )
    .expect("write");
    std::fs::write(pages.path().join("502.html"), "<h1>Our own 502</h1>").expect("write");
    let mut bg = BlueGreen::start_full(
        &format!(
            "\n[maintenance]\nallow_paths = [\"/headers\"]\nallow_ips = [\"127.0.0.2\"]\nretry_after = \"2m\"\n\
             [errors]\ndir = {:?}\n",
            pages.path().display().to_string()
        ),
        "preview_header = \"x-preview\"\n",
    )
    .await;
    let client = http_client();
    let (code, out) = cli(&bg, &["maintenance", "on", "--message", "Back at 5 <soon>"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("maintenance ON"), "{out}");

    let a = get(&client, &bg.turnout.url("/")).await.expect("answer");
    assert_eq!(a.status, 503);
    assert_eq!(a.headers["retry-after"], "120");
    assert!(a.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    assert!(
        a.body.contains("Custom maintenance") && a.body.contains("Back at 5 &lt;soon&gt;"),
        "{}",
        a.body
    );
    assert!(a.headers.contains_key("x-request-id"));
    let req = Request::get(bg.turnout.url("/"))
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send(&client, req).await.expect("answer");
    let j: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(
        (a.status.as_u16(), j["message"].as_str()),
        (503, Some("Back at 5 <soon>"))
    );

    // Through: the health path, an allowed path, an allowed client, a preview request.
    let health = get(&client, &bg.turnout.url("/health-check"))
        .await
        .expect("answer");
    assert_eq!(health.status, 200, "the load balancer keeps the instance");
    assert_eq!(
        get(&client, &bg.turnout.url("/headers"))
            .await
            .expect("answer")
            .status,
        200
    );
    let answer = from_second_address(
        bg.turnout.proxy,
        b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let req = Request::get(bg.turnout.url("/"))
        .header("x-preview", "green")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send(&client, req).await.expect("answer");
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "green\n"));
    let status = bg.status().await;
    assert_eq!(
        status["maintenance"]["message"], "Back at 5 <soon>",
        "{status}"
    );

    // Kept across a restart (the state file).
    bg.turnout.signal("TERM");
    assert!(bg.turnout.wait_exit(20).await.success());
    bg.turnout = bg.sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(a.status, 503, "still in maintenance after the restart");

    let (code, out) = cli(&bg, &["maintenance", "off"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("serving"), "{out}");
    assert_eq!(bg.body("/").await, "blue\n");

    // turnout's own errors use the directory's pages too.
    bg.blue.kill();
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body, "<h1>Our own 502</h1>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_can_fail_the_health_path_when_asked() {
    let bg = BlueGreen::start_with("\n[maintenance]\nhealth = \"fail\"\n").await;
    let health = bg.turnout.url("/health-check");
    assert_eq!(
        get(&http_client(), &health).await.expect("answer").status,
        200
    );
    let (s, j) = bg.post("/v1/maintenance", "{}").await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        get(&http_client(), &health).await.expect("answer").status,
        503
    );
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert!(
        a.body.contains("Down for maintenance"),
        "the built-in page: {}",
        a.body
    );
}

/// A GET of `path` sent in the background: its status and body (status 0 if it failed).
fn spawn_get(url: String) -> tokio::task::JoinHandle<(u16, String, std::time::Instant)> {
    tokio::spawn(async move {
        let a = get(&http_client(), &url).await;
        let done = std::time::Instant::now();
        a.map_or((0, String::new(), done), |a| {
            (a.status.as_u16(), a.body, done)
        })
    })
}

/// Every one of `held` ends with a 200 and `body`.
async fn all_answered(
    held: Vec<tokio::task::JoinHandle<(u16, String, std::time::Instant)>>,
    body: &str,
) {
    for h in held {
        let (status, got, _) = turnout_testkit::within(10, "a held request", h)
            .await
            .expect("task");
        assert_eq!((status, got.as_str()), (200, body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_holds_requests_through_an_app_restart_and_a_switch_and_loses_none() {
    let bg = BlueGreen::start_with(crate::FAST_CHECKS).await;
    // In flight when the pause begins: it finishes where it started.
    let slow = spawn_get(bg.turnout.url("/slow?ms=800"));
    turnout_testkit::eventually(10, "the slow request is at blue", || async {
        bg.blue.requests() >= 1
    })
    .await;
    let (code, out) = cli(&bg, &["pause"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PAUSED"), "{out}");

    let held: Vec<_> = (0..20).map(|_| spawn_get(bg.turnout.url("/"))).collect();
    eventually(10, "20 requests held", || async {
        bg.status().await["paused"]["held"] == 20
    })
    .await;
    // The health path is never held.
    let health = get(&http_client(), &bg.turnout.url("/health-check"))
        .await
        .expect("health");
    assert_eq!(health.status, 200);
    let (status, body, _) = slow.await.expect("slow");
    assert_eq!(
        (status, body.as_str()),
        (200, "blue\n"),
        "the request in flight finished"
    );

    // While they wait: the old app goes away and the switch to green is made.
    let before = bg.green.requests();
    bg.blue.kill();
    bg.switch("green").await;
    assert_eq!(bg.green.requests(), before, "nothing was sent while paused");
    let (code, out) = cli(&bg, &["resume"]);
    assert_eq!(code, Some(0), "{out}");
    all_answered(held, "green\n").await;
    let status = bg.status().await;
    assert!(status.get("paused").is_none(), "{status}");
    assert_eq!(bg.body("/").await, "green\n");

    // The app restarted in place (same pool, same port) during a pause: held, then answered
    // by the restarted app.
    let (code, out) = cli(&bg, &["pause"]);
    assert_eq!(code, Some(0), "{out}");
    let held: Vec<_> = (0..10).map(|_| spawn_get(bg.turnout.url("/"))).collect();
    eventually(10, "10 requests held", || async {
        bg.status().await["paused"]["held"] == 10
    })
    .await;
    let addr = bg.green.addr;
    bg.green.kill();
    let restarted = turnout_testkit::upstream::TestUpstream::start_at("green", addr).await;
    // A check may have seen the app down in between: resume once it is seen up.
    bg.wait_healthy("green").await;
    let (code, out) = cli(&bg, &["resume"]);
    assert_eq!(code, Some(0), "{out}");
    all_answered(held, "green\n").await;
    assert_eq!(
        restarted.requests(),
        10,
        "all ten reached the restarted app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_sheds_the_oldest_past_its_bounds_and_each_request_after_max_hold() {
    let bg = BlueGreen::start_with("\n[pause]\nmax_requests = 3\n").await;
    let (s, j) = bg.post("/v1/pause", "{}").await;
    assert_eq!(s, 200, "{j}");
    let mut reqs = Vec::new();
    for n in 1..=5u64 {
        reqs.push(spawn_get(bg.turnout.url(&format!("/?n={n}"))));
        // One at a time, so their order is known.
        eventually(10, "the request queued", || async {
            bg.status().await["paused"]["held_total"] == n
        })
        .await;
    }
    let mut reqs = reqs.into_iter();
    let (first, second) = (reqs.next().expect("1"), reqs.next().expect("2"));
    let (s1, _, t1) = turnout_testkit::within(10, "the oldest shed", first)
        .await
        .expect("1");
    let (s2, _, t2) = turnout_testkit::within(10, "the next shed", second)
        .await
        .expect("2");
    assert_eq!((s1, s2), (503, 503), "past 3 held, the oldest are shed");
    assert!(t1 <= t2, "oldest first");
    let (s, j) = bg.post("/v1/resume", "{}").await;
    assert_eq!(s, 200, "{j}");
    for r in reqs {
        let (status, body, _) = turnout_testkit::within(10, "released", r).await.expect("r");
        assert_eq!((status, body.as_str()), (200, "blue\n"));
    }
    let m = bg.status().await;
    assert!(m.get("paused").is_none());

    // max_hold: a request held longer gets 503 with Retry-After.
    let (s, j) = bg.post("/v1/pause", r#"{"max_hold":"300ms"}"#).await;
    assert_eq!(
        (s, j["paused"]["max_hold_ms"].as_u64()),
        (200, Some(300)),
        "{j}"
    );
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.headers["retry-after"], "1");
    let metrics = bg.turnout.metrics().await;
    for line in [
        "turnout_paused 1",
        "turnout_pause_shed_requests 1",
        "turnout_held_requests 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    let (s, j) = bg.post("/v1/pause", r#"{"max_hold":"soon"}"#).await;
    assert_eq!(s, 400, "{j}");
    assert!(
        j["error"].as_str().expect("error").contains("max_hold"),
        "{j}"
    );
    let (s, j) = bg.post("/v1/pause", r#"{"max_hold":"5s"}"#).await;
    assert_eq!(
        (s, j["paused"]["max_hold_ms"].as_u64()),
        (200, Some(300)),
        "a second pause changes nothing: {j}"
    );
    let (s, _) = bg.post("/v1/resume", "").await;
    assert_eq!(s, 200);
    assert_eq!(bg.body("/").await, "blue\n");
}

/// A GET with `cookie` (if any): status, body, and the `turnout-version` cookie it set.
async fn get_with_cookie(url: &str, cookie: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = Request::get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let a = send(
        &http_client(),
        req.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
    .expect("answer");
    let version = a
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("turnout-version="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
    (a.status.as_u16(), a.body, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_blue_keeps_its_assets_after_the_switch_while_blue_is_up() {
    let bg = BlueGreen::start_full(
        &format!(
            "\n[cache]\nprefixes = [\"/assets/\"]\n{}",
            crate::FAST_CHECKS
        ),
        "skew_protection = \"1h\"\n",
    )
    .await;
    let url = |p: &str| bg.turnout.url(p);
    // The page load names its version.
    let (s, body, cookie) = get_with_cookie(&url("/page"), None).await;
    assert_eq!((s, body.as_str()), (200, "<html>blue</html>\n"));
    let cookie = cookie.expect("a version cookie on the page");
    assert_eq!(cookie, "turnout-version=blue.0");
    // Assets do not set it; a page with the same version does not set it again.
    assert_eq!(
        get_with_cookie(&url("/assets/a.js"), Some(&cookie)).await.2,
        None
    );
    assert_eq!(get_with_cookie(&url("/page"), Some(&cookie)).await.2, None);

    bg.switch("green").await;
    // The old page's chunks: from blue, even the ones green has too.
    let (s, body, _) = get_with_cookie(&url("/assets/chunk-1.js?only=blue"), Some(&cookie)).await;
    assert_eq!((s, body.as_str()), (200, "blue /assets/chunk-1.js\n"));
    let (s, body, _) = get_with_cookie(&url("/assets/common.js"), Some(&cookie)).await;
    assert_eq!((s, body.as_str()), (200, "blue /assets/common.js\n"));
    // Without the cookie, a chunk only blue's build has: green's 404, then blue's copy.
    let (s, body, _) = get_with_cookie(&url("/assets/chunk-2.js?only=blue"), None).await;
    assert_eq!((s, body.as_str()), (200, "blue /assets/chunk-2.js\n"));
    // A new page load is green's, and says so.
    let (s, body, green) = get_with_cookie(&url("/page"), Some(&cookie)).await;
    assert_eq!((s, body.as_str()), (200, "<html>green</html>\n"));
    assert_eq!(green.as_deref(), Some("turnout-version=green.0"));
    let green = green.expect("cookie");
    let (_, body, _) = get_with_cookie(&url("/assets/common.js"), Some(&green)).await;
    assert_eq!(body, "green /assets/common.js\n");

    // Blue gone: the old page's requests get green's answers, its 404 included.
    bg.blue.kill();
    eventually(10, "blue seen down", || async {
        bg.status().await["pools"]["blue"]["healthy_servers"] == 0
    })
    .await;
    let (s, body, _) = get_with_cookie(&url("/assets/chunk-3.js?only=blue"), Some(&cookie)).await;
    assert_eq!(s, 404, "{body}");
    assert!(body.starts_with("green:"), "{body}");
    let (s, body, _) = get_with_cookie(&url("/assets/other.js"), Some(&cookie)).await;
    assert_eq!((s, body.as_str()), (200, "green /assets/other.js\n"));
}
