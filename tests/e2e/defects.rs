//! The defects that outside testing and a new user found (issue 25): each test drives the real
//! binary the way the report did, and failed before its fix.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnout_testkit::client::{admin, get, http_client};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::{eventually, within};

use crate::hardening::{raw, read_all, status_of};
use crate::{BlueGreen, BIN};

/// Runs the CLI with `args` (and `--admin` for `bg`) off the test's threads: exit code, stdout,
/// stderr.
async fn cli(bg: &BlueGreen, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let admin = bg.admin_base();
    let mut cmd = bg.sandbox.command(&[args, &["--admin", &admin]].concat());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = within(120, "the CLI", async {
        tokio::process::Command::from(cmd)
            .output()
            .await
            .expect("run the CLI")
    })
    .await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GETs `url` every `every_ms` for at most 20 s (abort it when done), for a rollout to judge.
fn load(url: String, every_ms: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let _ = get(&client, &url).await;
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
        }
    })
}

/// A shell script at `path` that, if ever run, leaves `marker` behind.
fn marker_script(path: &std::path::Path, marker: &std::path::Path, mode: u32) {
    std::fs::write(
        path,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display()),
    )
    .expect("write the script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

// ---- 1. The upgrade API runs only turnout's own binary or a listed one ----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_runs_no_program_but_turnout_or_a_listed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let evil = dir.path().join("evil.sh");
    marker_script(&evil, &marker, 0o755);
    // Owned by nobody, as in the report.
    std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).expect("chown to nobody");
    let link = dir.path().join("turnout-next");
    std::os::unix::fs::symlink(&evil, &link).expect("symlink");

    // No token (the loopback default): nothing but the running executable.
    let bg = BlueGreen::start().await;
    for binary in [
        evil.display().to_string(),
        link.display().to_string(),
        "evil.sh".to_owned(),
        "/bin/sh".to_owned(),
        format!("{}/../../{}", dir.path().display(), evil.display()),
    ] {
        let body = serde_json::json!({ "binary": binary }).to_string();
        let (status, json) = bg.turnout.upgrade(Some(&body)).await;
        assert_eq!(status.as_u16(), 403, "{binary}: {json}");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("[server] upgrade_binaries")),
            "{binary}: {json}"
        );
    }
    let (code, _, err) = cli(
        &bg,
        &["upgrade", "--binary", &evil.display().to_string()],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("403") && err.contains("upgrade_binaries"),
        "{err}"
    );
    // Its own executable, named, is still allowed (and no token is needed for it).
    let (status, json) = bg
        .turnout
        .upgrade(Some(&serde_json::json!({ "binary": BIN }).to_string()))
        .await;
    assert_eq!(status.as_u16(), 200, "{json}");
    assert!(!marker.exists(), "a refused binary ran");
    drop(bg);

    // Listed, but without a token: refused too (naming the token).
    let listed = dir.path().join("listed.sh");
    marker_script(&listed, &marker, 0o755);
    let lenient = BlueGreen::start_with(&format!(
        "upgrade_binaries = [{:?}, {:?}]\n",
        listed.display().to_string(),
        evil.display().to_string()
    ))
    .await;
    let (status, json) = lenient
        .turnout
        .upgrade(Some(&serde_json::json!({ "binary": listed }).to_string()))
        .await;
    assert_eq!(status.as_u16(), 403, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("admin_token")),
        "{json}"
    );
    assert!(!marker.exists(), "a binary ran without a token");
    drop(lenient);

    // With a token: a listed file that someone else owns, or that others may write, is still
    // refused; a listed root-owned 0755 file runs (it is no turnout, so the upgrade fails and
    // the old process serves on).
    let writable = dir.path().join("writable.sh");
    marker_script(&writable, &marker, 0o777);
    let strict = BlueGreen::start_with(&format!(
        "admin_token = \"s3cret\"\nupgrade_binaries = [{:?}, {:?}, {:?}]\n",
        listed.display().to_string(),
        evil.display().to_string(),
        writable.display().to_string()
    ))
    .await;
    let call = |binary: &std::path::Path| {
        let base = strict.admin_base();
        let body = serde_json::json!({ "binary": binary }).to_string();
        async move {
            admin(
                &base,
                Method::POST,
                "/v1/upgrade",
                Some(&body),
                Some("s3cret"),
            )
            .await
        }
    };
    let (status, json) = call(&evil).await;
    assert_eq!(status.as_u16(), 403, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("uid 65534")),
        "{json}"
    );
    let (status, json) = call(&writable).await;
    assert_eq!(status.as_u16(), 403, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("group or by others")),
        "{json}"
    );
    assert!(!marker.exists(), "a refused binary ran");
    let (status, json) = call(&listed).await;
    assert_eq!(status.as_u16(), 500, "{json}");
    assert!(marker.exists(), "the listed binary was started");
    assert_eq!(
        get(&http_client(), &strict.turnout.url("/"))
            .await
            .expect("answer")
            .body,
        "blue\n"
    );
}

// ---- 2. A slow upload at the response timeout is the client's fault --------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_past_the_response_timeout_eject_no_server() {
    let bg = BlueGreen::start_with(
        "[upstream]\nresponse_timeout = \"300ms\"\n[health.passive]\nfailures = 2\nejection = \"60s\"\n",
    )
    .await;
    let addr = bg.turnout.proxy;
    // Twelve uploads, each still dribbling in when the 300 ms are up.
    let uploads = (0..12).map(|_| {
        tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            conn.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n")
                .await
                .expect("head");
            for _ in 0..8 {
                if conn.write_all(b"0123456789").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            read_all(&mut conn).await
        })
    });
    for upload in uploads {
        let answer = within(20, "a slow upload's answer", upload)
            .await
            .expect("join");
        assert_eq!(status_of(&answer), 408, "{answer}");
    }
    let s = bg.status().await;
    let server = &s["pools"]["blue"]["servers"][0];
    assert_eq!(server["healthy"], true, "{s}");
    assert_eq!(server["ejected"], false, "{s}");
    assert_eq!(bg.body("/").await, "blue\n");
    let metrics = bg.turnout.metrics().await;
    assert!(
        metrics.contains("turnout_client_cutoffs_total{reason=\"slow_upload\"} 12"),
        "{metrics}"
    );
}

// ---- 3. Connection: Host ----------------------------------------------------------------------

#[tokio::test]
async fn connection_cannot_take_away_the_headers_turnout_needs() {
    let bg = BlueGreen::start_with("[cache]\nprefixes = [\"/\"]\n").await;
    let addr = bg.turnout.proxy;
    for connection in ["Host", "host", "close, Host", "keep-alive,HOST"] {
        let answer = raw(
            addr,
            format!("GET /headers HTTP/1.1\r\nHost: app\r\nConnection: {connection}\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(
            status_of(&answer),
            400,
            "Connection: {connection}: {answer}"
        );
        assert!(answer.contains("names Host"), "{answer}");
    }
    assert_eq!(
        bg.blue.requests(),
        0,
        "no request without a Host reached the app"
    );
    let answer = raw(
        addr,
        b"GET /headers HTTP/1.1\r\nHost: app\r\nConnection: close, X-Forwarded-Proto, X-Forwarded-For, X-Request-Id, X-Forwarded-Host\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let seen: serde_json::Value = serde_json::from_str(body).expect("json");
    for name in [
        "host",
        "x-forwarded-proto",
        "x-forwarded-for",
        "x-request-id",
        "x-forwarded-host",
    ] {
        assert!(seen.get(name).is_some(), "{name} missing: {seen}");
    }
    // And Python's http.client, as a real client sends it.
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {})\nc.request('GET', '/headers', headers={{'Connection': 'Host'}})\nprint(c.getresponse().status)\n",
        addr.port()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "400",
        "{out:?}"
    );
}

// ---- 4. Forged version cookies --------------------------------------------------------------

#[tokio::test]
async fn a_forged_version_cookie_reaches_no_dark_pool() {
    let bg = BlueGreen::start_full(
        "",
        "skew_protection = \"1h\"\nskew_prefixes = [\"/assets/\"]\n",
    )
    .await;
    bg.wait_healthy("green").await;
    let asset = |cookie: String| {
        let url = bg.turnout.url("/assets/app.js");
        async move {
            let req = http::Request::get(url)
                .header(http::header::COOKIE, cookie)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            turnout_testkit::client::send(&http_client(), req)
                .await
                .expect("answer")
                .body
        }
    };
    // green is staged (no share): every guess of its version is ignored.
    for generation in 0..10 {
        let body = asset(format!("turnout-version=green.{generation}")).await;
        assert!(body.starts_with("blue "), "green.{generation}: {body}");
    }
    // blue, which serves page loads, is honoured (and routes where the split would anyway);
    // `guards::a_page_from_blue_keeps_its_assets_after_the_switch_while_blue_is_up` follows a
    // handed-out version across a switch.
    assert!(asset("turnout-version=blue.0".into())
        .await
        .starts_with("blue "));
}

// ---- 5. Maintenance allow_paths on the normalised path ---------------------------------------

#[tokio::test]
async fn maintenance_allow_paths_match_the_normalised_path() {
    let bg = BlueGreen::start_with(
        "[maintenance]\nallow_paths = [\"/api/health\"]\n[cache]\nprefixes = [\"/assets/\"]\n",
    )
    .await;
    let (status, json) = bg.post("/v1/maintenance", "{}").await;
    assert_eq!(status, 200, "{json}");
    let addr = bg.turnout.proxy;
    let status = |target: &'static str| async move {
        status_of(
            &raw(
                addr,
                format!("GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await,
        )
    };
    // The allowed path reaches the app (its answer: the test app's 200 for any other path).
    assert_eq!(status("/api/health").await, 200);
    assert_eq!(status("/api/health/status").await, 200);
    assert_eq!(status("/api/./health").await, 200);
    for tricky in [
        "/api/health/../../admin",
        "/api/health/%2e%2e/%2e%2e/admin",
        "/api/health/%2E%2E/%2E%2E/admin",
        "/api/health%2f..%2f..%2fadmin",
        "/api/health/..%2f..%2fadmin",
        "/api/health%5c..%5cadmin",
        "/api/healthz",
        "/api/health-admin",
        "http://app/api/health/../../admin",
        "/api/health/../../../../etc/passwd",
    ] {
        assert_eq!(
            status(tricky).await,
            503,
            "{tricky} reached the app during maintenance"
        );
    }
    // A path that cannot be normalised safely is under no prefix.
    let before = bg.blue.requests();
    assert_eq!(status("/api/health\\..\\admin").await, 503, "a backslash");
    assert_eq!(bg.blue.requests(), before);

    // The cache's prefixes match the same way: `/assets/../headers` is no asset.
    let (code, _) = turnout_testkit::client::admin(
        &bg.admin_base(),
        Method::DELETE,
        "/v1/maintenance",
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    let answer = raw(
        addr,
        b"GET /assets/../headers HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("x-cache:"),
        "went through the cache: {answer}"
    );
    let answer = raw(
        addr,
        b"GET /assets/x.js HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.to_ascii_lowercase().contains("x-cache:"), "{answer}");
}

// ---- 6. Mirror copies are bounded -----------------------------------------------------------

/// A server that accepts and never answers; counts the connections that carried a request
/// other than a health check and are still open.
async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let open = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&open);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let Ok(n @ 1..) = conn.read(&mut buf).await else {
                    return;
                };
                if String::from_utf8_lossy(&buf[..n]).contains("turnout-health-check") {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                while let Ok(1..) = conn.read(&mut buf).await {}
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_are_bounded_and_end_with_the_mirror() {
    let blue = TestUpstream::start("blue").await;
    let (hole, open) = black_hole().await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(
        &[("blue", &[blue.server()]), ("green", &[hole.to_string()])],
        "blue",
        "",
    ));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let body = serde_json::json!({
        "to": "green", "mirror_percent": 100, "steps": [100], "bake": "60s",
        "min_requests": 1000000, "force": true
    })
    .to_string();
    let (status, json) = admin(
        &format!("http://{}", turnout.admin),
        Method::POST,
        "/v1/rollout",
        Some(&body),
        None,
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{json}");
    let client = http_client();
    for _ in 0..300 {
        let a = get(&client, &turnout.url("/")).await.expect("answer");
        assert_eq!(a.body, "blue\n");
    }
    eventually(10, "the copies reach the bound", || async {
        open.load(Ordering::SeqCst) >= 60
    })
    .await;
    let held = open.load(Ordering::SeqCst);
    assert!(held <= 64, "{held} copies in flight");
    let metrics = turnout.metrics().await;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("turnout_mirror_dropped_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped >= 200, "dropped {dropped}: {metrics}");
    // Aborted (or already failed on the copies' timeouts): the mirror ends either way.
    let (status, json) = admin(
        &format!("http://{}", turnout.admin),
        Method::POST,
        "/v1/rollout/abort",
        None,
        None,
    )
    .await;
    assert!(matches!(status.as_u16(), 200 | 404 | 409), "{json}");
    eventually(10, "the copies end with the mirror", || async {
        open.load(Ordering::SeqCst) == 0
    })
    .await;
}

// ---- 7. One client during a pause ------------------------------------------------------------

/// A GET from the loopback address `from`, on its own connection: the status, or 0.
async fn get_from(from: &str, to: SocketAddr) -> u16 {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind a loopback source address");
    let mut conn = sock.connect(to).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    status_of(&read_all(&mut conn).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_shed_the_other_clients_held_requests() {
    let bg = BlueGreen::start_with("[pause]\nmax_requests = 20\n").await;
    let (status, json) = bg.post("/v1/pause", "{}").await;
    assert_eq!(status, 200, "{json}");
    let addr = bg.turnout.proxy;
    let others: Vec<_> = (2..12)
        .map(|i| tokio::spawn(async move { get_from(&format!("127.0.0.{i}"), addr).await }))
        .collect();
    eventually(10, "ten held", || async {
        bg.status().await["paused"]["held"] == 10
    })
    .await;
    let flood: Vec<_> = (0..60)
        .map(|_| tokio::spawn(async move { get_from("127.0.0.99", addr).await }))
        .collect();
    eventually(10, "the flood is held or shed", || async {
        let p = &bg.status().await["paused"];
        p["held_total"] == 70
    })
    .await;
    let (status, json) = bg.post("/v1/resume", "{}").await;
    assert_eq!(status, 200, "{json}");
    for other in others {
        assert_eq!(
            within(10, "a held request", other).await.expect("join"),
            200
        );
    }
    let mut answered = 0;
    for one in flood {
        if within(10, "a flood request", one).await.expect("join") == 200 {
            answered += 1;
        }
    }
    // 20 held at most, 10 of them the others': the flood keeps what they leave.
    assert_eq!(answered, 10, "the flood keeps what the others leave");
}

// ---- 8. A tunnel closed by close_tunnels_after ends its TCP connection -----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_closed_for_a_switch_ends_its_connection_after_the_handshake() {
    use futures_util::{SinkExt, StreamExt};
    let bg = BlueGreen::start().await;
    bg.wait_healthy("green").await;
    let url = format!("ws://{}/ws", bg.turnout.proxy);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .expect("send");
    let _echo = ws.next().await;
    let (status, json) = bg
        .post(
            "/v1/switch",
            r#"{"to":"green","close_tunnels_after":"100ms"}"#,
        )
        .await;
    assert_eq!(status, 200, "{json}");
    // The 1001 close frame; tungstenite answers it with its own close, and then waits for the
    // server to end the TCP connection (RFC 6455 7.1.1).
    let closed_at = within(10, "the close frame", async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    assert_eq!(code, Some(1001));
                    return Instant::now();
                }
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await;
    // Then the stream ends: the server closed it, well before the 5 s grace a client that
    // never closes gets.
    let end = within(10, "the end of the stream", async {
        while let Some(Ok(_)) = ws.next().await {}
        Instant::now()
    })
    .await;
    let took = end - closed_at;
    assert!(
        took < Duration::from_secs(4),
        "the connection stayed {took:?} after the close handshake"
    );
    eventually(10, "the app saw the close", || async {
        bg.blue.ws_close_code() == 1001
    })
    .await;
}

// ---- 9. Keep-alive requests across in-place upgrades, with a client like Python's -----------

/// Four threads of Python's http.client, each on a keep-alive connection, sending the next
/// request the moment a response is read (reconnecting after `Connection: close`, as
/// http.client does by itself), until `stop` exists or `secs` pass. Prints
/// `{"ok": N, "failed": N, "errors": [the first 20]}`.
const KEEP_ALIVE_CLIENTS: &str = r#"
import http.client, json, os, sys, threading, time
port, stop, secs, path = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
deadline = time.time() + secs
lock = threading.Lock()
tally = {"ok": 0, "failed": 0, "errors": []}
def run():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = ok = 0
    while not os.path.exists(stop) and time.time() < deadline:
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or not body.startswith(b"blue 0"):
                raise RuntimeError("status %d %r" % (r.status, body[:40]))
            n += 1
            ok += 1
        except Exception as e:
            with lock:
                tally["failed"] += 1
                if len(tally["errors"]) < 20:
                    tally["errors"].append("%r on request %d of its connection" % (e, n + 1))
            c.close()
            n = 0
            time.sleep(0.01)
        if c.sock is None:
            n = 0
    with lock:
        tally["ok"] += ok
threads = [threading.Thread(target=run) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(tally))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_like_pythons_lose_nothing_across_upgrades() {
    let bg = BlueGreen::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = dir.path().join("stop");
    let mut clients = tokio::process::Command::new("python3")
        .args([
            "-c",
            KEEP_ALIVE_CLIENTS,
            &bg.turnout.proxy.port().to_string(),
            &stop.display().to_string(),
            "120",
            // The app sends the head at once and the rest of the body 2 ms later: a response
            // is under way for a while after its head has gone, as with any real app.
            "/stream?chunks=2&ms=2",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    // Let the clients get going, then upgrade again and again under them.
    eventually(10, "the clients are going", || async {
        bg.blue.requests() >= 20
    })
    .await;
    let started = Instant::now();
    let mut upgrades = 0;
    while upgrades < 60 && started.elapsed() < Duration::from_secs(90) {
        let (status, json) = bg.turnout.upgrade(None).await;
        assert_eq!(status, 200, "upgrade {upgrades}: {json}");
        upgrades += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&stop, b"").expect("stop file");
    let mut out = String::new();
    within(30, "the clients' tally", async {
        clients
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .await
            .expect("read")
    })
    .await;
    let tally: serde_json::Value = serde_json::from_str(out.trim()).expect("tally");
    let ok = tally["ok"].as_u64().unwrap_or(0);
    eprintln!(
        "{upgrades} upgrades in {:?} under 4 http.client keep-alive clients: {ok} requests, {} failed {}",
        started.elapsed(),
        tally["failed"],
        tally["errors"]
    );
    assert_eq!(tally["failed"], 0, "{ok} answered; {tally}");
    assert!(ok > 1000, "the clients ran: {tally}");
}

// ---- 10. SIGHUP never stops turnout ----------------------------------------------------------

/// SIGHUP reloads (an in-place upgrade to the same binary, issue 30) and never stops turnout:
/// three in a row give one reload (the others reach the process that handed over, which
/// reloads nothing), and the routing is what it was.
#[tokio::test]
async fn sighup_reloads_and_keeps_turnout_serving() {
    let bg = BlueGreen::start().await;
    let pid = bg.turnout.pid();
    for _ in 0..3 {
        bg.turnout.signal("HUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        // The hand-over's own line: the old process, with nothing in flight, may exit
        // before it logs anything after it.
        if let Some(line) = bg.turnout.find_log("upgrade: handed over") {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged within 30 s:\n{}",
            bg.turnout.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let successor: u32 = line
        .split("pid=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"));
    bg.turnout.adopt(successor);
    assert_ne!(successor, pid);
    assert_eq!(bg.body("/").await, "blue\n");
    assert_eq!(bg.status().await["process"]["pid"], successor);
}

// ---- 11. A failed cache fill is answered as a failed forward ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cache_fill_sets_no_cookie_shows_the_error_page_and_logs_why() {
    let pages = tempfile::tempdir().expect("tempdir");
    std::fs::write(pages.path().join("504.html"), "<p>our own 504 page</p>\n").expect("page");
    let bg = BlueGreen::start_with(&format!(
        "[upstream]\nresponse_timeout = \"300ms\"\n[cache]\nprefixes = [\"/assets/\"]\n[errors]\ndir = {:?}\n",
        pages.path().display().to_string()
    ))
    .await;
    bg.wait_healthy("green").await;
    // A split, so that a route sets a sticky cookie.
    let (code, json) = turnout_testkit::client::admin(
        &bg.admin_base(),
        Method::PUT,
        "/v1/split",
        Some(r#"{"weights":{"blue":50,"green":50}}"#),
        None,
    )
    .await;
    assert_eq!(code, 200, "{json}");
    let ok = get(&http_client(), &bg.turnout.url("/assets/x.js"))
        .await
        .expect("answer");
    assert!(
        ok.headers.contains_key(http::header::SET_COOKIE),
        "{:?}",
        ok.headers
    );
    // Both apps now take longer than the response timeout (health checks aside): the fill of
    // an asset fails.
    bg.blue.set_delay_ms(2000);
    bg.green.set_delay_ms(2000);
    let a = get(&http_client(), &bg.turnout.url("/assets/late.js"))
        .await
        .expect("answer");
    assert_eq!(a.status.as_u16(), 504, "{}", a.body);
    assert!(a.body.contains("our own 504 page"), "{}", a.body);
    assert!(
        !a.headers.contains_key(http::header::SET_COOKIE),
        "{:?}",
        a.headers
    );
    eventually(
        10,
        "the access line with the error and the server",
        || async {
            bg.turnout.logs().lines().any(|l| {
                l.contains("path=/assets/late.js")
                    && l.contains("status=504")
                    && l.contains("error=")
                    && l.contains("upstream=")
            })
        },
    )
    .await;
}

// ---- 12 and 16. switch --wait-drained waits as long as it asks, and says for what ------------
// The wait past the CLI's own 30 s bound, and the progress lines, are tested in paused time in
// tests/inprocess/switching.rs (the CLI's call, in-process); here the binary's own output.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_wait_drained_prints_the_drain_once_the_tunnel_closes() {
    use futures_util::StreamExt;
    let bg = BlueGreen::start().await;
    bg.wait_healthy("green").await;
    let url = format!("ws://{}/ws", bg.turnout.proxy);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let reader = tokio::spawn(async move {
        let mut ws = ws;
        while let Some(Ok(_)) = ws.next().await {}
    });
    let (code, out, err) = cli(
        &bg,
        &[
            "switch",
            "green",
            "--wait-drained",
            "20s",
            "--close-tunnels-after",
            "300ms",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("active: green (previous: blue)"), "{out}");
    assert!(
        out.contains("drained: nothing in flight on the old pool"),
        "{out}"
    );
    // The WebSocket was closed for the drain, so the reader ends.
    turnout_testkit::within(10, "the WebSocket closed", reader)
        .await
        .expect("reader");
    // Without a tunnel left the wait is not reached: the drain is said and the exit is 0; a
    // drain that does not come by the wait is exit 3.
    let bg2 = BlueGreen::start().await;
    bg2.wait_healthy("green").await;
    let url = format!("ws://{}/ws", bg2.turnout.proxy);
    let (_ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let (code, out, err) = cli(&bg2, &["switch", "green", "--wait-drained", "300ms"], &[]).await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains("not drained: "), "{out}");
}

// ---- 14. The compose file's turnout answers Prometheus ---------------------------------------

#[tokio::test]
async fn the_compose_config_passes_check_and_answers_prometheus_scrapes() {
    let shipped = std::fs::read_to_string(format!(
        "{}/docker/turnout.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("docker/turnout.toml");
    let sandbox = Sandbox::new(BIN);
    let text = shipped
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("0.0.0.0:9901", "127.0.0.1:0")
        .replace(
            "/var/lib/turnout/state.json",
            &sandbox.state_path().display().to_string(),
        );
    assert_ne!(
        text, shipped,
        "the addresses and the state file are where this test expects"
    );
    sandbox.write_config(&text);
    let out = sandbox
        .command(&[
            "check",
            "--config",
            &sandbox.config_path().display().to_string(),
        ])
        .output()
        .expect("turnout check");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    // As Prometheus in the compose network asks: Host is the service name.
    let mut conn = TcpStream::connect(turnout.admin).await.expect("connect");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: turnout:9901\r\nUser-Agent: Prometheus/2.53.0\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_all(&mut conn).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("turnout_generation"), "{answer}");
    // Any other name is still refused without a token (DNS rebinding).
    let answer = raw(
        turnout.admin,
        b"GET /metrics HTTP/1.1\r\nHost: evil.example:9901\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 403, "{answer}");
}

// ---- 15. A missing state directory -----------------------------------------------------------

#[tokio::test]
async fn check_and_serve_name_a_missing_state_directory() {
    let sandbox = Sandbox::new(BIN);
    let text = sandbox
        .config(&[("blue", &["127.0.0.1:1".to_owned()])], "blue", "")
        .replace(
            &sandbox.state_path().display().to_string(),
            "/nonexistent-turnout-dir/state.json",
        );
    sandbox.write_config(&text);
    for verb in ["check", "serve"] {
        let out = sandbox
            .command(&[
                verb,
                "--config",
                &sandbox.config_path().display().to_string(),
            ])
            .output()
            .expect("turnout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(73), "{verb}: {err}");
        assert!(
            err.contains("the directory /nonexistent-turnout-dir of [state] file")
                && err.contains("does not exist")
                && err.contains("StateDirectory"),
            "{verb}: {err}"
        );
    }
}

// ---- 16 and 18. The CLI: pool set/show/probe, rollout progress and flags, the instance --------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_servers_follows_a_bake_and_says_which_instance_it_drives() {
    let bg = BlueGreen::start_with(&format!("name = \"edge-1\"\n{}", crate::FAST_CHECKS)).await;
    let spare = TestUpstream::start("spare").await;

    let (code, out, err) = cli(&bg, &["pool", "set", "green", &spare.server()], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&spare.server()), "{out}");
    bg.wait_healthy("green").await;
    let (code, out, err) = cli(&bg, &["pool", "show", "green"], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("{}  up", spare.server())), "{out}");
    let (code, out, err) = cli(&bg, &["pool", "probe", "green"], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    for bad in [
        vec!["pool", "set", "green", "not an address"],
        vec!["pool", "set", "../v1/switch", "127.0.0.1:1"],
        vec!["pool", "show", "purple"],
        vec!["pool", "probe", "purple"],
    ] {
        let (code, out, err) = cli(&bg, &bad, &[]).await;
        assert_eq!(code, Some(1), "{bad:?}: {out}{err}");
    }
    spare.set_healthy(false);
    eventually(10, "green down", || async {
        bg.status().await["pools"]["green"]["servers"][0]["healthy"] == false
    })
    .await;
    let (code, out, err) = cli(&bg, &["pool", "probe", "green"], &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    spare.set_healthy(true);
    bg.wait_healthy("green").await;

    // Which instance: its name and addresses; a token it does not need is warned about.
    let (code, out, err) = cli(&bg, &["status"], &[("TURNOUT_ADMIN_TOKEN", "stale")]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!(
            "instance edge-1: proxy on {}, admin on {}",
            bg.turnout.proxy, bg.turnout.admin
        )),
        "{out}"
    );
    assert!(err.contains("has no admin token"), "{err}");

    // A rollout with the judging flags the README promises, followed with its bake's progress
    // (a line every 10 s when not at a terminal: the first one at once).
    let load = load(bg.turnout.url("/"), 20);
    let (code, out, err) = cli(
        &bg,
        &[
            "rollout",
            "green",
            "--steps",
            "50,100",
            "--bake",
            "2s",
            "--min-requests",
            "0",
            "--max-error-ratio",
            "3",
            "--error-floor",
            "0.02",
            "--max-p99-ratio",
            "4",
        ],
        &[],
    )
    .await;
    load.abort();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("step 50%: baking"), "{err}");
    assert!(out.contains("step 50%: pass"), "{out}");
    let (_, json) =
        turnout_testkit::client::admin(&bg.admin_base(), Method::GET, "/v1/rollout", None, None)
            .await;
    let policy = &json["history"][0]["policy"];
    assert_eq!(policy["max_error_ratio"], 3.0, "{json}");
    assert_eq!(policy["error_floor"], 0.02, "{json}");
    assert_eq!(policy["max_p99_ratio"], 4.0, "{json}");
}

// ---- 17. Events say who, what and why ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_the_story_of_a_deploy() {
    let bg = BlueGreen::start().await;
    bg.wait_healthy("green").await;
    let (code, out, err) = cli(&bg, &["switch", "green"], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    bg.switch("blue").await;
    // A rollout whose target fails: rolled back by the guard.
    bg.green.set_fail_percent(100);
    let load = load(bg.turnout.url("/"), 5);
    let (code, out, err) = cli(
        &bg,
        &[
            "rollout",
            "green",
            "--steps",
            "50,100",
            "--bake",
            "5s",
            "--min-requests",
            "5",
        ],
        &[],
    )
    .await;
    load.abort();
    assert_eq!(code, Some(1), "{out}{err}");
    let (_, json) =
        turnout_testkit::client::admin(&bg.admin_base(), Method::GET, "/v1/events", None, None)
            .await;
    let events = json["events"].as_array().expect("events").clone();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().find(|e| pred(e)).cloned();
    let by_cli = find(&|e| e["kind"] == "switch" && e["by"] == "CLI");
    assert!(by_cli.is_some(), "{json}");
    let by_api =
        find(&|e| e["kind"] == "switch" && e["by"].as_str().is_some_and(|b| b.starts_with("API")));
    assert!(by_api.is_some(), "{json}");
    let started = find(&|e| {
        e["kind"] == "rollout"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("started by CLI"))
    });
    assert!(started.is_some(), "{json}");
    let failed = find(&|e| {
        e["kind"] == "rollout"
            && e["by"] == "rollout guard"
            && e["message"].as_str().is_some_and(|m| {
                m.contains("failed") && m.contains("back on blue") && m.contains("5xx")
            })
    });
    assert!(failed.is_some(), "{json}");
    let rollback = find(&|e| e["kind"] == "switch" && e["by"] == "rollout guard");
    assert!(
        rollback.is_some(),
        "the guard's switch back is its own: {json}"
    );
}

// ---- 19. The demo's tour prints commands that work as printed ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_cli_commands_that_work_as_printed() {
    use tokio::io::AsyncBufReadExt;
    // As after `cargo run -- demo`: no turnout on PATH.
    let path = "/usr/local/bin:/usr/bin:/bin";
    let mut demo = tokio::process::Command::new(BIN)
        .arg("demo")
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnout demo");
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let tour = within(
        30,
        "the tour (the demo needs ports 3000, 4000, 8080, 9901)",
        async {
            let mut tour = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let done = line.contains("or in a browser");
                tour.push(line);
                if done {
                    break;
                }
            }
            tour
        },
    )
    .await;
    let printed: Vec<&str> = tour
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.ends_with(" status") || l.ends_with(" switch green"))
        .collect();
    assert_eq!(printed.len(), 2, "{tour:#?}");
    for line in &printed {
        assert!(!line.starts_with("turnout "), "not on PATH here: {line}");
    }
    let run = |line: &str| {
        let line = line.to_owned();
        async move {
            tokio::process::Command::new("sh")
                .args(["-c", &line])
                .env("PATH", path)
                .output()
                .await
                .expect("sh")
        }
    };
    let status = run(printed[0]).await;
    assert!(status.status.success(), "{}: {status:?}", printed[0]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("active: blue"),
        "{status:?}"
    );
    let switch = run(printed[1]).await;
    assert!(switch.status.success(), "{}: {switch:?}", printed[1]);
    let a = get(&http_client(), "http://127.0.0.1:8080/")
        .await
        .expect("answer");
    assert_eq!(a.body, "Hello from green\n");
}
