//! turnout upgrading itself in place: a new process takes the listening sockets and the state
//! file over from the running one, which drains and exits; under load, with WebSockets and
//! slow downloads open, with a new binary that fails, and with switches arriving meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use turnout_testkit::client::{get, http_client};
use turnout_testkit::eventually;

use crate::BlueGreen;

/// What one load client saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    /// Requests that got no complete 200 answer, with why.
    failed: Vec<String>,
    /// Connections refused (or otherwise not opened).
    refused: Vec<String>,
    /// Keep-alive connections turnout ended after a response carrying `Connection: close`.
    closed_with_header: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.failed.extend(other.failed);
        self.refused.extend(other.refused);
        self.closed_with_header += other.closed_with_header;
    }
}

/// One keep-alive client (hyper's HTTP/1 connection, no pool and no retries: every error
/// shows), sending `GET /` back to back until `stop`, on a new connection whenever turnout
/// closes one. Bounded by `deadline` and a request count.
async fn keep_alive_client(addr: SocketAddr, stop: Arc<AtomicBool>, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    'connections: while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                t.refused.push(format!("keep-alive connect: {e}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            {
                Ok(pair) => pair,
                Err(e) => {
                    t.failed.push(format!("handshake: {e}"));
                    continue;
                }
            };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) && t.requests < 1_000_000 {
            if let Err(e) = sender.ready().await {
                // Closed between requests with no response saying so: a request sent now
                // would have met a closing socket.
                t.failed
                    .push(format!("a keep-alive connection closed while idle: {e}"));
                continue 'connections;
            }
            let req = http::Request::get("/")
                .header(http::header::HOST, "upgrade.test")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    t.failed.push(format!("request: {e}"));
                    continue 'connections;
                }
            };
            let status = resp.status();
            let close = resp
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            match resp.into_body().collect().await.map(|b| b.to_bytes()) {
                Ok(body) if status == 200 && body == "blue\n" => t.requests += 1,
                Ok(body) => t.failed.push(format!("answer {status}: {body:?}")),
                Err(e) => t.failed.push(format!("body: {e}")),
            }
            if close {
                t.closed_with_header += 1;
                continue 'connections;
            }
        }
        break;
    }
    t
}

/// A new connection every few ms, one request each (`Connection: close`), until `stop`.
async fn new_connections(addr: SocketAddr, stop: Arc<AtomicBool>, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) => t.refused.push(format!("connect: {e}")),
            Ok(mut conn) => {
                let mut answer = Vec::new();
                let sent = conn
                    .write_all(b"GET / HTTP/1.1\r\nHost: upgrade.test\r\nConnection: close\r\n\r\n")
                    .await;
                let read = conn.read_to_end(&mut answer).await;
                let text = String::from_utf8_lossy(&answer);
                match (sent, read) {
                    (Ok(()), Ok(_))
                        if text.starts_with("HTTP/1.1 200") && text.ends_with("blue\n") =>
                    {
                        t.requests += 1
                    }
                    (sent, read) => t
                        .failed
                        .push(format!("new connection: {sent:?} {read:?} {text:?}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    t
}

/// The target of the issue: keep-alive load and a new connection every few ms while turnout
/// upgrades itself 20 times in a row: not one failed request, not one refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_upgrades_under_load_fail_no_request_and_refuse_no_connection() {
    let bg = BlueGreen::start().await;
    let addr = bg.turnout.proxy;
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(keep_alive_client(
            addr,
            Arc::clone(&stop),
            deadline,
        )));
    }
    clients.push(tokio::spawn(new_connections(
        addr,
        Arc::clone(&stop),
        deadline,
    )));
    eventually(10, "the load is flowing", || async {
        bg.blue.requests() >= 50
    })
    .await;

    let started = Instant::now();
    let mut pids = vec![bg.turnout.pid()];
    for i in 0..20u64 {
        let (status, json) = bg.turnout.upgrade(None).await;
        assert_eq!(status, 200, "upgrade {i}: {json}\n{}", bg.turnout.logs());
        assert_eq!(json["generation"], i + 2, "{json}");
        assert_eq!(json["from_pid"], *pids.last().expect("a pid"), "{json}");
        pids.push(u32::try_from(json["pid"].as_u64().expect("pid")).expect("pid"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut keep_alive = Tally::default();
    let mut fresh = Tally::default();
    let last = clients.pop().expect("the new-connection client");
    for c in clients {
        keep_alive.add(c.await.expect("client"));
    }
    fresh.add(last.await.expect("client"));

    eprintln!(
        "20 upgrades in {took:?}: keep-alive requests {} (connections closed with Connection: close: {}), new-connection requests {}; failed {}, refused {}",
        keep_alive.requests,
        keep_alive.closed_with_header,
        fresh.requests,
        keep_alive.failed.len() + fresh.failed.len(),
        keep_alive.refused.len() + fresh.refused.len()
    );
    assert!(
        keep_alive.failed.is_empty() && fresh.failed.is_empty(),
        "failed: {:?} {:?}",
        keep_alive.failed,
        fresh.failed
    );
    assert!(
        keep_alive.refused.is_empty() && fresh.refused.is_empty(),
        "refused: {:?} {:?}",
        keep_alive.refused,
        fresh.refused
    );
    assert!(keep_alive.requests > 0 && fresh.requests > 0);
    // Every keep-alive connection of an old process was ended by a response saying so.
    assert!(keep_alive.closed_with_header > 0);
    let status = bg.turnout.status().await;
    assert_eq!(status["process"]["generation"], 21, "{status}");
    assert_eq!(
        status["process"]["pid"],
        *pids.last().expect("pid"),
        "{status}"
    );
    assert!(bg
        .turnout
        .metrics()
        .await
        .contains("turnout_process_generation 21"));
    // Each old process drained and exited.
    for pid in &pids[..pids.len() - 1] {
        eventually(30, &format!("pid {pid} exits"), || async {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        })
        .await;
    }
}

/// A WebSocket and a slow download opened before an upgrade finish on the process they
/// started on; new requests go to the new one; the old exits 0 once they are done.
#[tokio::test]
async fn a_websocket_and_a_slow_download_opened_before_an_upgrade_finish() {
    let mut bg = BlueGreen::start().await;
    let proxy = bg.turnout.proxy;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{proxy}/ws"))
        .await
        .expect("websocket");
    ws.send(tokio_tungstenite::tungstenite::Message::text("before"))
        .await
        .expect("send");
    let echo = ws.next().await.expect("echo").expect("echo");
    assert_eq!(echo.to_text().expect("text"), "blue:before");
    let url = bg.turnout.url("/stream?chunks=20&ms=100");
    let before = bg.blue.requests();
    let download = tokio::spawn(async move { get(&http_client(), &url).await });
    eventually(10, "the download is under way", || async {
        bg.blue.requests() > before
    })
    .await;

    let old = bg.turnout.pid();
    let (status, json) = bg.turnout.upgrade(None).await;
    assert_eq!(status, 200, "{json}");
    let new = json["pid"].as_u64().expect("pid");
    assert_eq!(bg.turnout.status().await["process"]["pid"], new);

    // The tunnel still runs through the old process.
    ws.send(tokio_tungstenite::tungstenite::Message::text("after"))
        .await
        .expect("send after the upgrade");
    let echo = ws.next().await.expect("echo").expect("echo");
    assert_eq!(echo.to_text().expect("text"), "blue:after");
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));

    let done = download.await.expect("task").expect("download");
    assert_eq!(done.status, 200);
    let lines: Vec<&str> = done.body.lines().collect();
    assert_eq!(lines.len(), 20, "{:?}", done.body);
    assert_eq!(lines[19], "blue 19");

    // With its last tunnel closed, the old process exits 0.
    ws.close(None).await.expect("close");
    let exit = bg.turnout.wait_exit(20).await;
    assert!(
        exit.success(),
        "old pid {old}: {exit}\n{}",
        bg.turnout.logs()
    );
    assert!(bg
        .turnout
        .find_log("handed over to the new process")
        .is_some());
}

/// Runs the turnout CLI against `bg` off the test's threads: the exit code and its output.
async fn cli(bg: &BlueGreen, args: &[&str]) -> (Option<i32>, String) {
    let admin = bg.admin_base();
    let cmd = bg.sandbox.command(&[args, &["--admin", &admin]].concat());
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("run the CLI");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A new process that fails to start (a binary it may not start, a config it refuses, a port
/// it cannot bind, a state file it cannot read) leaves
/// the old one serving, untouched, and `turnout upgrade` exits 1 saying why; so does an upgrade
/// refused while a pause holds requests. Fixed, the upgrade goes through.
#[tokio::test]
async fn a_new_process_that_fails_leaves_the_old_one_serving() {
    let bg = BlueGreen::start().await;
    let first = bg.turnout.pid();
    let still_serving = || async {
        let a = get(&http_client(), &bg.turnout.url("/"))
            .await
            .expect("answer");
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));
        let s = bg.turnout.status().await;
        assert_eq!(s["process"]["pid"], first, "{s}");
        assert_eq!(s["process"]["generation"], 1, "{s}");
    };

    // A binary that is neither this turnout nor listed in upgrade_binaries is not even started
    // (see `defects::an_upgrade_runs_no_program_but_turnout_or_a_listed_one`).
    let (code, out) = cli(&bg, &["upgrade", "--binary", "/bin/false"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("/bin/false") && out.contains("403") && out.contains("nothing was run"),
        "{out}"
    );
    still_serving().await;

    let good = std::fs::read_to_string(bg.sandbox.config_path()).expect("config");
    bg.sandbox.write_config(&format!("{good}nonsense = true\n"));
    let (code, out) = cli(&bg, &["upgrade"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("unknown field `nonsense`"), "{out}");
    still_serving().await;
    // Routing changes were refused only while the new process tried; they land again.
    bg.switch("green").await;
    bg.switch("blue").await;

    // A port the new config asks for that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    bg.sandbox.write_config(&good.replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"127.0.0.1:{port}\""),
    ));
    let (code, out) = cli(&bg, &["upgrade"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "cannot listen on 127.0.0.1:{port} ([server] admin)"
        )),
        "{out}"
    );
    still_serving().await;
    bg.sandbox.write_config(&good);

    // A state file the new process cannot read.
    let state = std::fs::read_to_string(bg.sandbox.state_path()).expect("state");
    std::fs::write(bg.sandbox.state_path(), "{ not json").expect("write");
    let (code, out) = cli(&bg, &["upgrade"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("state.json"), "{out}");
    still_serving().await;
    std::fs::write(bg.sandbox.state_path(), state).expect("write");

    let (status, _) = bg.post("/v1/pause", "{}").await;
    assert_eq!(status, 200);
    let (code, out) = cli(&bg, &["upgrade"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("409") && out.contains("resume first"), "{out}");
    let (status, _) = bg.post("/v1/resume", "{}").await;
    assert_eq!(status, 200);
    still_serving().await;

    bg.sandbox.write_config(&good);
    let (code, out) = cli(&bg, &["upgrade"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("process generation 2"), "{out}");
    let s = bg.turnout.status().await;
    let pid = u32::try_from(s["process"]["pid"].as_u64().expect("pid")).expect("pid");
    bg.turnout.adopt(pid);
    assert_ne!(pid, first);
    assert_eq!(s["process"]["generation"], 2, "{s}");
}

/// While a new process takes over, the old one refuses every routing change with 409 and
/// `Retry-After` (exactly one process writes the state file); `turnout switch` retries by
/// itself and its switch lands once. The new process here is the test, speaking the hand-over
/// protocol, so the window is as long as the test wants; it gives up, and the switch lands in
/// the old process. Then real upgrades and switches, issued together, each land once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_issued_during_an_upgrade_lands_once() {
    let bg = BlueGreen::start().await;
    let mut socket_path = bg.sandbox.state_path().into_os_string();
    socket_path.push(".upgrade.sock");
    let stream = tokio::net::UnixStream::connect(&socket_path)
        .await
        .expect("the upgrade socket");
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    write
        .write_all(b"{\"msg\":\"hello\",\"pid\":1,\"version\":\"test\"}\n")
        .await
        .expect("hello");
    let mut line = String::new();
    read.read_line(&mut line).await.expect("the sockets");
    assert!(line.contains("\"msg\":\"sockets\""), "{line}");
    assert!(line.contains("\"generation\":2"), "{line}");

    let before = bg.turnout.status().await["generation"]
        .as_u64()
        .expect("generation");
    let (status, json) = bg.post("/v1/switch", r#"{"to":"green"}"#).await;
    assert_eq!(status, 409, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("upgrading")),
        "{json}"
    );
    let switch = {
        let admin = bg.admin_base();
        let cmd = bg.sandbox.command(&["switch", "green", "--admin", &admin]);
        tokio::spawn(async move { tokio::process::Command::from(cmd).output().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !switch.is_finished(),
        "the switch waits while the hand-over is under way"
    );
    assert_eq!(bg.turnout.status().await["active"], "blue");
    write
        .write_all(b"{\"msg\":\"failed\",\"error\":\"the test gave up\"}\n")
        .await
        .expect("failed");
    let out = switch.await.expect("task").expect("run");
    assert!(out.status.success(), "{out:?}");
    let s = bg.turnout.status().await;
    assert_eq!(s["active"], "green");
    assert_eq!(s["generation"], before + 1, "the switch landed once: {s}");
    assert!(bg
        .turnout
        .find_log("the test gave up")
        .is_some_and(|l| l.contains("serves on")));

    // Real upgrades, each with a switch sent at the same moment.
    for (i, to) in ["blue", "green", "blue", "green", "blue"]
        .into_iter()
        .enumerate()
    {
        let admin = bg.admin_base();
        let cmd = bg.sandbox.command(&["switch", to, "--admin", &admin]);
        let switch = tokio::spawn(async move { tokio::process::Command::from(cmd).output().await });
        let (status, json) = bg.turnout.upgrade(None).await;
        assert_eq!(status, 200, "upgrade {i}: {json}");
        let out = switch.await.expect("task").expect("run");
        assert!(out.status.success(), "switch {i} to {to}: {out:?}");
        let s = bg.turnout.status().await;
        assert_eq!(s["active"], to, "{s}");
        assert_eq!(
            s["generation"],
            before + 2 + i as u64,
            "switch {i} landed once: {s}"
        );
    }
    let state = std::fs::read_to_string(bg.sandbox.state_path()).expect("state file");
    assert!(
        state.contains(&format!("\"generation\": {}", before + 6)),
        "{state}"
    );
}

/// A keep-alive connection whose request is in flight at the upgrade gets its response with
/// `Connection: close` and is then closed cleanly (FIN, not RST): the client knows not to
/// send another request on it.
#[tokio::test]
async fn a_request_in_flight_at_the_upgrade_gets_connection_close() {
    let bg = BlueGreen::start().await;
    let mut conn = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    let before = bg.blue.requests();
    conn.write_all(b"GET /slow?ms=1000 HTTP/1.1\r\nHost: upgrade.test\r\n\r\n")
        .await
        .expect("write");
    eventually(10, "the request is at the app", || async {
        bg.blue.requests() > before
    })
    .await;
    let (status, json) = bg.turnout.upgrade(None).await;
    assert_eq!(status, 200, "{json}");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the answer within 10 s");
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(read.is_ok(), "{read:?} after {text:?}");
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("blue\n"), "{text}");
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`), turnout says READY=1 with its pid as the
/// main one, and the process that takes over says so with its own pid: systemd follows the
/// new process and does not count the old one's exit as the service's. The test plays
/// systemd's side of the socket.
#[tokio::test]
async fn systemd_hears_ready_and_the_new_main_pid() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify");
    let notify = tokio::net::UnixDatagram::bind(&path).expect("bind");
    let blue = turnout_testkit::upstream::TestUpstream::start("blue").await;
    let sandbox = turnout_testkit::process::Sandbox::new(crate::BIN);
    sandbox.write_config(&sandbox.config(&[("blue", &[blue.server()])], "blue", ""));
    let turnout = sandbox
        .start_with_env(&[("NOTIFY_SOCKET", path.to_str().expect("path"))])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let next = || async {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), notify.recv(&mut buf))
            .await
            .expect("a notification")
            .expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let said = next().await;
    assert!(said.contains("READY=1"), "{said}");
    assert!(
        said.contains(&format!("MAINPID={}", turnout.pid())),
        "{said}"
    );

    let (status, json) = turnout.upgrade(None).await;
    assert_eq!(status, 200, "{json}");
    let said = next().await;
    assert!(said.contains("READY=1"), "{said}");
    assert!(said.contains(&format!("MAINPID={}", json["pid"])), "{said}");
}

/// An idle keep-alive connection at the upgrade is not closed under its client: it stays open
/// past the drain's grace, its next request is answered (by the old process) with
/// `Connection: close`, and only then is it closed, cleanly.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_only_after_its_next_response() {
    let bg = BlueGreen::start().await;
    let conn = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    let mut conn = tokio::io::BufReader::new(conn);
    let request = b"GET / HTTP/1.1\r\nHost: upgrade.test\r\n\r\n";
    conn.get_mut().write_all(request).await.expect("write");
    let first = read_response(&mut conn).await;
    assert!(
        first.starts_with("http/1.1 200") && !first.contains("connection: close"),
        "{first}"
    );

    let (status, json) = bg.turnout.upgrade(None).await;
    assert_eq!(status, 200, "{json}");
    // Longer than a shutdown's grace for quiet connections (500 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.get_mut()
        .write_all(request)
        .await
        .expect("write on the kept connection");
    let second = read_response(&mut conn).await;
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("\r\nconnection: close\r\n"), "{second}");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s");
    assert!(end.is_ok() && rest.is_empty(), "{end:?} {rest:?}");
}

/// One HTTP/1.1 response with a Content-Length body, lower-cased.
async fn read_response(conn: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut line))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {head:?}");
        head.push_str(&line.to_lowercase());
        if line == "\r\n" {
            break;
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.expect("body");
    head + &String::from_utf8_lossy(&body)
}

/// A new turnout started by hand (as a new container would be) with `--takeover SOCKET` takes
/// the same ports over from the running one, which exits 0; the routing comes with the state
/// file.
#[tokio::test]
async fn a_turnout_started_by_hand_with_takeover_takes_over() {
    let mut bg = BlueGreen::start().await;
    bg.switch("green").await;
    let mut socket = bg.sandbox.state_path().into_os_string();
    socket.push(".upgrade.sock");
    let socket = socket.into_string().expect("a UTF-8 path");
    let new = bg
        .sandbox
        .start_with_args(&["--takeover", &socket])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((new.proxy, new.admin), (bg.turnout.proxy, bg.turnout.admin));
    let exit = bg.turnout.wait_exit(20).await;
    assert!(exit.success(), "{exit}\n{}", bg.turnout.logs());
    let s = new.status().await;
    assert_eq!(s["process"]["pid"], new.pid(), "{s}");
    assert_eq!(
        (s["process"]["generation"].as_u64(), s["active"].as_str()),
        (Some(2), Some("green"))
    );
    let a = get(&http_client(), &new.url("/")).await.expect("answer");
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "green\n"));

    // A second one, while that one serves and nothing is there to take over from, is refused.
    let missing = bg.sandbox.state_path().with_extension("nothing.sock");
    let out = bg
        .sandbox
        .command(&[
            "serve",
            "--config",
            bg.sandbox.config_path().to_str().expect("path"),
            "--takeover",
            missing.to_str().expect("path"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no turnout to take over from"), "{err}");

    // A plain start with the same state file, while that one serves, is refused too: two
    // processes would write one state file.
    let out = bg.sandbox.serve_to_exit();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to a turnout that is running"),
        "{err}"
    );
}
