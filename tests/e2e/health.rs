//! Health: checks, ejection, retries, the health gate, draining, the load balancer's endpoint,
//! client-side limits, and the metrics that count all of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnout_testkit::client::{admin, get, http_client};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::{eventually, within};

use crate::{BlueGreen, BIN, FAST_CHECKS};

async fn switch(bg: &BlueGreen, body: &str) -> (u16, serde_json::Value) {
    bg.post("/v1/switch", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_under_load_costs_no_request() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(&[("blue", &[a.server(), b.server()])], "blue", ""));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));

    const WORKERS: usize = 6;
    const MAX_PER_WORKER: usize = 20_000;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (url, stop) = (turnout.url("/"), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let client = http_client();
            let (mut ok, mut failures) = (0usize, Vec::new());
            for i in 0..MAX_PER_WORKER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Each request is bounded and named, so one that hangs fails the test with its
                // URL (one did, about once in 400 runs, while hyper-util's own retry could resend
                // an unsent request on another pooled connection to the killed server).
                let url = format!("{url}?w={w}&i={i}");
                match tokio::time::timeout(std::time::Duration::from_secs(10), get(&client, &url))
                    .await
                {
                    Ok(Ok(r)) if r.status == 200 && (r.body == "a\n" || r.body == "b\n") => ok += 1,
                    Ok(Ok(r)) => failures.push(format!("{} {:?}", r.status, r.body)),
                    Ok(Err(e)) => failures.push(e),
                    Err(_) => failures.push(format!("{url}: no answer within 10s")),
                }
            }
            (ok, failures)
        }));
    }
    eventually(10, "both servers take load", || async {
        a.requests() > 50 && b.requests() > 50
    })
    .await;
    a.kill();
    let b_before = b.requests();
    eventually(10, "load goes on on b", || async {
        b.requests() > b_before + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failures) = (0, Vec::new());
    for w in workers {
        let (o, f) = within(30, "workers", w).await.expect("worker");
        ok += o;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}\nturnout's log, but for 200s:\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)],
        turnout
            .logs()
            .lines()
            .filter(|l| !l.contains("status=200"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Ejections end by themselves after a while; the active checks then keep the dead server
    // out for good, within a couple of check intervals.
    eventually(15, "the killed server shows unhealthy", || async {
        let j = turnout.status().await;
        j["pools"]["blue"]["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .any(|s| s["addr"] == a.server() && s["healthy"] == false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_an_unhealthy_pool_is_refused_unless_forced() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    bg.green.set_healthy(false);
    let (s, j) = switch(&bg, r#"{"to":"green"}"#).await;
    assert_eq!(s, 409, "{j}");
    let msg = j["error"].as_str().expect("error");
    assert!(
        msg.contains(&bg.green.server()) && msg.contains("503"),
        "names the failing server and why: {msg}"
    );
    assert_eq!(bg.body("/").await, "blue\n", "traffic stays on blue");
    assert_eq!(bg.status().await["generation"], 0);

    // The CLI says the same and exits 1.
    let out = bg
        .sandbox
        .command(&["switch", "green", "--admin", &bg.admin_base()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));

    // Forced: green is live, and since its only server fails its checks, requests get a
    // quick 503 until it recovers; then green serves.
    let (s, j) = switch(&bg, r#"{"to":"green","force":true}"#).await;
    assert_eq!((s, j["active"].as_str()), (200, Some("green")), "{j}");
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(a.status, 503, "{}", a.body);
    bg.green.set_healthy(true);
    eventually(10, "green serves once healthy", || async {
        get(&http_client(), &bg.turnout.url("/"))
            .await
            .is_ok_and(|a| a.body == "green\n")
    })
    .await;

    // Rollback is gated the same way.
    bg.blue.set_healthy(false);
    let (s, j) = admin(&bg.admin_base(), Method::POST, "/v1/rollback", None, None).await;
    assert_eq!(s, 409, "{j}");
    let (s, j) = bg.post("/v1/rollback", r#"{"force":true}"#).await;
    assert_eq!((s, j["active"].as_str()), (200, Some("blue")), "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_standby_pool_is_refused_by_a_fresh_probe() {
    // Checks every minute: only the probe made at switch time can know green died.
    let bg = BlueGreen::start_with("\n[health]\ninterval = \"60s\"\n").await;
    bg.green.kill();
    let (s, j) = switch(&bg, r#"{"to":"green"}"#).await;
    assert_eq!(s, 409, "{j}");
    assert!(
        j["error"]
            .as_str()
            .expect("error")
            .contains(&bg.green.server()),
        "{j}"
    );
    assert_eq!(bg.body("/").await, "blue\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_balancer_endpoint_follows_the_active_pool() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    bg.blue.set_healthy(false);
    bg.turnout.wait_for_status("/health-check", 503, 10).await;
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(a.status, 503, "no healthy server: {}", a.body);
    assert!(a.headers.contains_key("retry-after"));
    let status = bg.status().await;
    assert_eq!(status["pools"]["blue"]["healthy_servers"], 0, "{status}");
    assert!(
        status["pools"]["blue"]["servers"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{status}"
    );

    bg.blue.set_healthy(true);
    bg.turnout.wait_for_status("/health-check", 200, 10).await;
    assert_eq!(bg.body("/").await, "blue\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_balancer_endpoint_can_ignore_the_pool() {
    let bg = BlueGreen::start_with(&format!("health_reflects_pool = false{FAST_CHECKS}")).await;
    bg.blue.set_healthy(false);
    eventually(10, "blue is seen unhealthy", || async {
        bg.status().await["pools"]["blue"]["healthy_servers"] == 0
    })
    .await;
    let a = get(&http_client(), &bg.turnout.url("/health-check"))
        .await
        .expect("health");
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_drained_returns_once_the_old_pool_is_idle() {
    let bg = BlueGreen::start().await;
    let url = bg.turnout.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { get(&http_client(), &url).await });
    eventually(10, "the slow request is on blue", || async {
        bg.status().await["pools"]["blue"]["in_flight"] == 1
    })
    .await;

    // Too short a wait: the switch happens, and the answer says blue is not drained.
    let (s, j) = switch(&bg, r#"{"to":"green","wait_drained":"50ms"}"#).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["drained"], false, "{j}");
    assert!(
        j["message"]
            .as_str()
            .expect("message")
            .contains("1 request(s)"),
        "{j}"
    );

    let (s, j) = switch(&bg, r#"{"to":"green","wait_drained":"20s"}"#).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["drained"], true, "{j}");
    assert_eq!(j["pools"]["blue"]["in_flight"], 0, "{j}");
    let slow = within(10, "slow request", slow)
        .await
        .expect("task")
        .expect("slow");
    assert_eq!(
        slow.body, "blue\n",
        "the slow request finished whole on blue"
    );

    let (s, j) = switch(&bg, r#"{"to":"blue","wait_drained":"soon"}"#).await;
    assert_eq!(s, 400, "{j}");
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_oversized_heads_get_431() {
    let bg =
        BlueGreen::start_with("client_header_timeout = \"300ms\"\nmax_header_count = 20").await;
    let mut slow = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = within(10, "the connection is closed", slow.read_to_end(&mut rest)).await;
    let read = read.map_err(|e| e.to_string());
    assert!(
        read.as_ref().is_ok_and(|n| *n == 0) || rest.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&rest)
    );
    // Bounded, and on failure shows what turnout did log (a CI run once missed this line).
    let logged = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !bg
            .turnout
            .find_log("408")
            .is_some_and(|l| l.contains("request head"))
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        logged.is_ok(),
        "no 408 line within 10 s; read: {read:?}; turnout logged:\n{}",
        bg.turnout.logs()
    );

    let mut big = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        head.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    big.write_all(head.as_bytes()).await.expect("write");
    let mut answer = String::new();
    within(10, "the 431", big.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    eventually(5, "the 431 is logged", || async {
        bg.turnout.find_log("status=431").is_some()
    })
    .await;

    let mut bad = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    bad.write_all(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    within(10, "the 400", bad.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    eventually(5, "the 400 is logged", || async {
        bg.turnout.find_log("status=400").is_some()
    })
    .await;
    assert_eq!(bg.blue.requests(), 0);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    let bg = BlueGreen::start().await;
    for _ in 0..5 {
        assert_eq!(bg.body("/").await, "blue\n");
    }
    bg.switch("green").await;
    for _ in 0..3 {
        assert_eq!(bg.body("/").await, "green\n");
    }
    let answer = get(&http_client(), &format!("{}/metrics", bg.admin_base()))
        .await
        .expect("metrics");
    assert_eq!(answer.status, 200);
    assert!(answer.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain; version=0.0.4"));
    let lines = answer.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", answer.body))
    };
    assert_eq!(
        value(
            "turnout_requests_total",
            &[("pool", "blue"), ("class", "2xx")]
        ),
        5.0
    );
    assert_eq!(
        value(
            "turnout_requests_total",
            &[("pool", "green"), ("class", "2xx")]
        ),
        3.0
    );
    assert_eq!(value("turnout_switches_total", &[]), 1.0);
    assert_eq!(value("turnout_rollbacks_total", &[]), 0.0);
    assert_eq!(value("turnout_active_pool", &[("pool", "green")]), 1.0);
    assert_eq!(value("turnout_active_pool", &[("pool", "blue")]), 0.0);
    assert_eq!(
        value("turnout_in_flight_requests", &[("pool", "blue")]),
        0.0
    );
    assert_eq!(
        value(
            "turnout_upstream_healthy",
            &[("pool", "green"), ("server", &bg.green.server())]
        ),
        1.0
    );
    assert_eq!(value("turnout_generation", &[]), 1.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "turnout_request_duration_seconds_count"
                && s.labels.get("pool") == Some("blue")),
        "histogram by pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_outlives_the_header_timeout_but_not_the_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    let bg = BlueGreen::start_with(
        "client_header_timeout = \"300ms\"\nclient_idle_timeout = \"1500ms\"",
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    for round in 0..2 {
        conn.write_all(request).await.expect("write");
        let n = within(5, "an answer", conn.read(&mut buf))
            .await
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("blue\n"),
            "round {round}: {text}"
        );
        // Idle for longer than the header timeout, shorter than the idle timeout.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    // Now idle past the idle timeout: turnout closes the connection.
    let n = within(10, "the idle close", conn.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));

    // A response that streams for longer than the idle timeout is not cut.
    let a = get(&http_client(), &bg.turnout.url("/stream?chunks=4&ms=700"))
        .await
        .expect("stream");
    assert_eq!(a.body, "blue 0\nblue 1\nblue 2\nblue 3\n");

    // Nor is a WebSocket that stays quiet for longer.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", bg.turnout.proxy))
        .await
        .expect("websocket");
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text("late"))
        .await
        .expect("send");
    let echo = within(5, "echo", ws.next())
        .await
        .expect("message")
        .expect("ok");
    assert_eq!(
        echo,
        tokio_tungstenite::tungstenite::Message::text("blue:late")
    );
}

/// A pool of a live server and `dead` (nothing listens there), with the given extra config.
async fn two_servers(
    second: &str,
    extra: &str,
) -> (TestUpstream, Sandbox, turnout_testkit::process::Turnout) {
    let a = TestUpstream::start("a").await;
    let sandbox = Sandbox::new(BIN);
    let text = sandbox.config(&[("blue", &[a.server(), second.to_owned()])], "blue", extra);
    sandbox.write_config(&text);
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    (a, sandbox, turnout)
}

#[tokio::test]
async fn failing_requests_eject_a_server_and_are_retried_elsewhere() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    // Active checks off: only the passive ones can find the dead server.
    let (a, _sandbox, turnout) = two_servers(
        &dead.to_string(),
        "\n[health]\nenabled = false\n[health.passive]\nfailures = 3\n",
    )
    .await;
    let client = http_client();
    for i in 0..20 {
        let answer = get(&client, &turnout.url("/")).await.expect("answer");
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (200, "a\n"),
            "request {i}"
        );
    }
    assert_eq!(a.requests(), 20);
    let j = turnout.status().await;
    let server = j["pools"]["blue"]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["addr"] == dead.to_string())
        .expect("listed")
        .clone();
    assert_eq!(
        (server["ejected"].as_bool(), server["healthy"].as_bool()),
        (Some(true), Some(false)),
        "{j}"
    );
    let metrics = turnout.metrics().await;
    assert!(
        metrics.contains(&format!(
            "turnout_ejections_total{{pool=\"blue\",server=\"{dead}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("turnout_retries_total{pool=\"blue\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The log is written by a buffered writer: the line may follow the counter by a moment.
    eventually(10, "the ejection logged", || async {
        turnout.find_log("server ejected").is_some()
    })
    .await;
}

#[tokio::test]
async fn only_idempotent_requests_are_retried_after_a_reset() {
    let b = TestUpstream::start("b").await;
    let (a, _sandbox, turnout) =
        two_servers(&b.server(), "\n[health.passive]\nenabled = false\n").await;
    let client = http_client();
    // "a" resets every /flaky?on=a; a GET that lands there is retried on "b".
    for i in 0..6 {
        let answer = get(&client, &turnout.url("/flaky?on=a"))
            .await
            .expect("answer");
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (200, "b\n"),
            "GET {i}"
        );
    }
    // A POST is not idempotent: when it lands on "a" it fails with 502, never resent.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let req = http::Request::post(turnout.url("/flaky?on=a"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        statuses.push(
            turnout_testkit::client::send(&client, req)
                .await
                .expect("answer")
                .status
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&502) && statuses.contains(&200),
        "round-robin sends some to each: {statuses:?}"
    );
    assert!(
        a.requests() >= 3 + 3,
        "a saw the GETs and the POSTs that failed there"
    );
}

#[tokio::test]
async fn the_checker_follows_pools_changed_at_runtime() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    let canary = TestUpstream::start("canary").await;
    canary.set_healthy(false);
    bg.put_pool("canary", &[canary.server()]).await;
    eventually(
        10,
        "the new pool is checked and found unhealthy",
        || async { bg.status().await["pools"]["canary"]["healthy_servers"] == 0 },
    )
    .await;
    assert!(canary.checks() > 0);
    canary.set_healthy(true);
    eventually(10, "and healthy again", || async {
        bg.status().await["pools"]["canary"]["healthy_servers"] == 1
    })
    .await;
    assert!(
        bg.turnout
            .find_log("server unhealthy")
            .is_some_and(|l| l.contains(&canary.server())),
        "{}",
        bg.turnout.logs()
    );
}

/// Starts turnout over `pools` (blue active) with `extra` appended to the config.
async fn start_pools(
    pools: &[(&str, &[String])],
    extra: &str,
) -> (Sandbox, turnout_testkit::process::Turnout) {
    let sandbox = Sandbox::new(BIN);
    let config = sandbox.config(pools, "blue", "") + extra;
    sandbox.write_config(&config);
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    (sandbox, turnout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_send_the_apps_host_and_headers_and_may_use_a_port_of_their_own() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    // The app's own port fails its checks; its check port (another listener) passes them.
    let app = TestUpstream::start("app").await;
    app.set_healthy(false);
    let check_port = TestUpstream::start("check-port").await;
    let port = check_port
        .server()
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let vhost = "/vhost-health?host=app.internal&header=x-check-token";
    let extra = format!(
        "\n[pools.green.health]\npath = \"{vhost}\"\nhost = \"app.internal\"\nheaders = {{ x-check-token = \"s3cret\" }}\ninterval = \"60s\"\n\
         \n[pools.purple]\nservers = [\"{}\"]\n[pools.purple.health]\npath = \"{vhost}\"\ninterval = \"60s\"\n\
         \n[pools.side]\nservers = [\"{}\"]\n[pools.side.health]\npath = \"/health\"\nport = {port}\ninterval = \"60s\"\n",
        green.server(),
        app.server(),
    );
    let (_sandbox, turnout) = start_pools(
        &[("blue", &[blue.server()]), ("green", &[green.server()])],
        &extra,
    )
    .await;
    let base = format!("http://{}", turnout.admin);
    let post = |to: &'static str| {
        let base = base.clone();
        async move {
            let body = format!("{{\"to\":\"{to}\"}}");
            admin(&base, Method::POST, "/v1/switch", Some(&body), None).await
        }
    };

    // Without the Host the app expects, the same server fails its check: 421 is named.
    let (s, j) = post("purple").await;
    assert_eq!(s, 409, "{j}");
    assert!(j["error"].as_str().expect("error").contains("421"), "{j}");

    // With it (and the header), it passes.
    let (s, j) = post("green").await;
    assert_eq!(
        (s.as_u16(), j["active"].as_str()),
        (200, Some("green")),
        "{j}"
    );
    assert_eq!(
        get(&http_client(), &turnout.url("/"))
            .await
            .expect("get")
            .body,
        "green\n"
    );

    // `port`: the checks go to the check port, not to the port that serves.
    let before = check_port.checks();
    let (s, j) = post("side").await;
    assert_eq!(
        (s.as_u16(), j["active"].as_str()),
        (200, Some("side")),
        "{j}"
    );
    assert!(check_port.checks() > before, "the check port was probed");
    assert_eq!(
        get(&http_client(), &turnout.url("/"))
            .await
            .expect("get")
            .body,
        "app\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_gate_can_ask_for_all_or_a_share_of_the_servers() {
    let blue = TestUpstream::start("blue").await;
    let good = TestUpstream::start("green").await;
    let bad = TestUpstream::start("green").await;
    bad.set_healthy(false);
    let servers = [good.server(), bad.server()];
    let extra = format!(
        "\n[pools.green.health]\ngate = \"all\"\npath = \"/health\"\ninterval = \"60s\"\n\
         \n[pools.half]\nservers = {servers:?}\n[pools.half.health]\ngate = \"50%\"\npath = \"/health\"\ninterval = \"60s\"\n\
         \n[pools.one]\nservers = {servers:?}\n[pools.one.health]\npath = \"/health\"\ninterval = \"60s\"\n",
    );
    let (_sandbox, turnout) =
        start_pools(&[("blue", &[blue.server()]), ("green", &servers)], &extra).await;
    let base = format!("http://{}", turnout.admin);
    let switch = |to: &'static str| {
        let base = base.clone();
        async move {
            let body = format!("{{\"to\":\"{to}\"}}");
            admin(&base, Method::POST, "/v1/switch", Some(&body), None).await
        }
    };
    let (s, j) = switch("green").await;
    assert_eq!(s, 409, "{j}");
    let msg = j["error"].as_str().expect("error");
    assert!(
        msg.contains("1 of 2 servers passed")
            && msg.contains("(all) needs 2")
            && msg.contains(&bad.server()),
        "{msg}"
    );
    let (s, j) = switch("half").await;
    assert_eq!(
        (s.as_u16(), j["active"].as_str()),
        (200, Some("half")),
        "{j}"
    );
    let (s, j) = switch("one").await;
    assert_eq!(
        (s.as_u16(), j["active"].as_str()),
        (200, Some("one")),
        "{j}"
    );
    // Forced past the gate.
    let (s, j) = admin(
        &base,
        Method::POST,
        "/v1/switch",
        Some(r#"{"to":"green","force":true}"#),
        None,
    )
    .await;
    assert_eq!(
        (s.as_u16(), j["active"].as_str()),
        (200, Some("green")),
        "{j}"
    );
}
