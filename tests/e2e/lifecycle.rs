//! The process around the proxy: config and state files, restarts, signals, and the admin API
//! and CLI as an operator uses them.

use http::Method;
use turnout_testkit::client::{admin, get, http_client};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::{eventually, within};

use crate::{BlueGreen, BIN};

#[tokio::test]
async fn state_survives_a_restart_and_wins_over_the_config() {
    let mut bg = BlueGreen::start().await;
    bg.switch("green").await;
    let canary = TestUpstream::start("canary").await;
    bg.put_pool("canary", &[canary.server()]).await;
    bg.turnout.signal("TERM");
    let status = bg.turnout.wait_exit(20).await;
    assert!(status.success(), "exit {status}:\n{}", bg.turnout.logs());

    // The config still says active = "blue"; the state file says green.
    let turnout = bg.sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        turnout.find_log("source=\"state file\"").is_some(),
        "{}",
        turnout.logs()
    );
    let j = turnout.status().await;
    assert_eq!(j["active"], "green", "{j}");
    assert_eq!(j["previous"], "blue", "{j}");
    assert_eq!(j["generation"], 2, "{j}");
    assert_eq!(
        j["pools"]["canary"]["servers"][0]["addr"],
        canary.server(),
        "{j}"
    );
    assert_eq!(
        get(&http_client(), &turnout.url("/"))
            .await
            .expect("get")
            .body,
        "green\n"
    );
    // And rollback still knows where to go.
    let (s, j) = admin(
        &format!("http://{}", turnout.admin),
        Method::POST,
        "/v1/rollback",
        None,
        None,
    )
    .await;
    assert_eq!(
        (s.as_u16(), j["active"].as_str()),
        (200, Some("blue")),
        "{j}"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_stops_start_up_and_names_the_file() {
    let blue = TestUpstream::start("blue").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(&[("blue", &[blue.server()])], "blue", ""));
    std::fs::write(sandbox.state_path(), "{\"version\":1,\"active\":").expect("write");
    let out = sandbox.serve_to_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(&sandbox.state_path().display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("corrupt") && stderr.contains("move it aside"),
        "{stderr}"
    );
    // The corrupt file is left as it was, for the operator to look at.
    assert_eq!(
        std::fs::read_to_string(sandbox.state_path()).expect("read"),
        "{\"version\":1,\"active\":"
    );
}

#[test]
fn an_unwritable_state_file_stops_start_up() {
    let sandbox = Sandbox::new(BIN);
    // Nothing can be created under /proc, not even by root.
    let text = sandbox
        .config(&[("blue", &["127.0.0.1:3000".into()])], "blue", "")
        .replace(
            &sandbox.state_path().display().to_string(),
            "/proc/turnout/state.json",
        );
    sandbox.write_config(&text);
    let out = sandbox.serve_to_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{stderr}");
    assert!(stderr.contains("/proc/turnout/state.json"), "{stderr}");
}

#[test]
fn bad_configs_stop_start_up_naming_key_and_line() {
    let sandbox = Sandbox::new(BIN);
    let good = sandbox.config(
        &[
            ("blue", &["127.0.0.1:3000".into()]),
            ("green", &["127.0.0.1:4000".into()]),
        ],
        "blue",
        "",
    );
    let cases = [
        (
            good.replace("shutdown_delay", "shutdown_dleay"),
            &["shutdown_dleay", "line 4"][..],
        ),
        (
            good.replace("listen = \"127.0.0.1:0\"", "listen = \"localhost\""),
            &["localhost", "line 2"],
        ),
        (
            good.replace("127.0.0.1:4000", "127.0.0.1:99999"),
            &["127.0.0.1:99999", "pools.green.servers"],
        ),
        (
            good.replace("active = \"blue\"", "active = \"purple\""),
            &["routing.active", "purple", "line 16"],
        ),
        (
            good.replace("\"0s\"", "\"soon\""),
            &["invalid duration", "soon", "line 4"],
        ),
    ];
    for (text, wants) in cases {
        sandbox.write_config(&text);
        let config = sandbox.config_path().display().to_string();
        for cmd in ["serve", "check"] {
            let out = sandbox
                .command(&[cmd, "--config", &config])
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{cmd}: {stderr}\n{text}");
            for want in wants {
                assert!(
                    stderr.contains(want),
                    "{cmd}: {want:?} missing from: {stderr}\n{text}"
                );
            }
        }
    }
    sandbox.write_config(&good);
    let out = sandbox
        .command(&[
            "check",
            "--config",
            &sandbox.config_path().display().to_string(),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("blue would be active"));
    let out = sandbox
        .command(&["check", "--config", "/nonexistent/turnout.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/turnout.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_503_then_drains_and_exits_0() {
    let mut bg = BlueGreen::start_with("shutdown_delay = \"3s\"").await;
    let health = bg.turnout.url("/health-check");
    assert_eq!(
        get(&http_client(), &health).await.expect("health").status,
        200
    );

    let url = bg.turnout.url("/slow?ms=4500");
    let slow = tokio::spawn(async move { get(&http_client(), &url).await });
    eventually(10, "the slow request is in flight", || async {
        bg.status().await["pools"]["blue"]["in_flight"] == 1
    })
    .await;

    bg.turnout.signal("TERM");
    bg.turnout.wait_for_status("/health-check", 503, 3).await;
    // Requests still pass during the delay; only the health check fails.
    let a = get(&http_client(), &bg.turnout.url("/"))
        .await
        .expect("served during the delay");
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));

    let slow = within(15, "slow request", slow)
        .await
        .expect("task")
        .expect("the in-flight request finished");
    assert_eq!((slow.status.as_u16(), slow.body.as_str()), (200, "blue\n"));
    let status = bg.turnout.wait_exit(20).await;
    assert_eq!(status.code(), Some(0), "{}", bg.turnout.logs());
    assert!(
        bg.turnout.find_log("drained; exiting").is_some(),
        "{}",
        bg.turnout.logs()
    );
}

#[tokio::test]
async fn admin_errors_over_http_with_a_token_from_the_environment() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(
        &[("blue", &[blue.server()]), ("green", &[green.server()])],
        "blue",
        "admin_token = \"from-the-file\"",
    ));
    let turnout = sandbox
        .start_with_env(&[("TURNOUT_ADMIN_TOKEN", "from-env")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", turnout.admin);
    // (method, path, body, token, expected status, text the error must hold)
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: [Case; 6] = [
        (Method::GET, "/v1/status", None, None, 401, "token"),
        (
            Method::POST,
            "/v1/switch",
            Some(r#"{"to":"green"}"#),
            Some("from-the-file"),
            401,
            "token",
        ),
        (
            Method::POST,
            "/v1/switch",
            Some(r#"{"to":"#),
            Some("from-env"),
            400,
            "invalid JSON",
        ),
        (
            Method::POST,
            "/v1/switch",
            Some(r#"{"pool":"green"}"#),
            Some("from-env"),
            400,
            "unknown field `pool`",
        ),
        (
            Method::POST,
            "/v1/switch",
            Some(r#"{"to":"purple"}"#),
            Some("from-env"),
            404,
            "\"purple\"",
        ),
        (
            Method::POST,
            "/v1/rollback",
            None,
            Some("from-env"),
            409,
            "no previous",
        ),
    ];
    for (method, path, body, token, want, text) in cases {
        let (s, j) = admin(&base, method.clone(), path, body, token).await;
        assert_eq!(s.as_u16(), want, "{method} {path} {body:?}: {j}");
        let msg = j["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {j}"));
        assert!(msg.contains(text), "{msg:?} lacks {text:?}");
    }
    assert_eq!(
        get(&http_client(), &turnout.url("/"))
            .await
            .expect("get")
            .body,
        "blue\n",
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_switches_rolls_back_and_reports() {
    let bg = BlueGreen::start().await;
    let base = bg.admin_base();
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--admin", &base]);
        let out = bg.sandbox.command(&all).output().expect("run the CLI");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::block_in_place(|| run(&["switch", "green"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("active: green (previous: blue), generation 1"),
        "{out}"
    );
    assert_eq!(bg.body("/").await, "green\n");

    let (code, out, err) = tokio::task::block_in_place(|| run(&["status"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("green *"), "{out}");
    assert!(out.contains(&bg.green.server()), "{out}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(out.contains(&format!("turnout {version} (pid ")), "{out}");

    let (code, out, _) = tokio::task::block_in_place(|| run(&["status", "--json"]));
    assert_eq!(code, Some(0));
    let j: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(j["active"], "green");
    // Which process serves: its version, pid and start, also in /metrics and the log.
    assert_eq!(j["process"]["version"], version);
    let pid = j["process"]["pid"].as_u64().expect("pid");
    let started = j["process"]["started_at"].as_str().expect("started_at");
    assert!(humantime::parse_rfc3339(started).is_ok(), "{started}");
    let metrics = bg.turnout.metrics().await;
    assert!(
        metrics.contains(&format!("turnout_build_info{{version=\"{version}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("turnout_start_time_seconds "), "{metrics}");
    assert!(
        bg.turnout
            .find_log("turnout is serving")
            .is_some_and(|l| l.contains(&format!("pid={pid}"))),
        "{}",
        bg.turnout.logs()
    );

    let (code, out, err) = tokio::task::block_in_place(|| run(&["rollback"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("active: blue"), "{out}");

    let (code, _, err) = tokio::task::block_in_place(|| run(&["switch", "purple"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("404") && err.contains("purple"), "{err}");

    let out = bg
        .sandbox
        .command(&["status", "--admin", "http://127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
}

/// systemd socket activation: the listening socket exists before turnout runs (here,
/// `systemd-socket-activate` holds it and starts turnout on the first connection, passing it as
/// `LISTEN_FDS`); turnout serves on it, and the connection that arrived before it ran is
/// answered, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activation_hands_turnout_its_listening_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let blue = TestUpstream::start("blue").await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let sandbox = Sandbox::new(BIN);
    let config = sandbox
        .config(&[("blue", &[blue.server()])], "blue", "")
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{listen}\""),
            1,
        );
    sandbox.write_config(&config);
    // The first client: its connection waits in the socket's queue while turnout starts.
    let early = tokio::spawn({
        let listen = listen.clone();
        async move {
            let mut conn = loop {
                match tokio::net::TcpStream::connect(&listen).await {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            };
            conn.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut answer = String::new();
            conn.read_to_string(&mut answer).await.expect("read");
            answer
        }
    });
    let turnout = sandbox
        .start_wrapped(&["systemd-socket-activate", "-l", &listen])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = turnout_testkit::within(10, "the early client's answer", early)
        .await
        .expect("task");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("blue\n"), "{answer}");
    assert_eq!(turnout.proxy.to_string(), listen);
    assert!(
        turnout
            .find_log("LISTEN_FDS")
            .is_some_and(|l| l.contains(&listen)),
        "{}",
        turnout.logs()
    );
    let a = get(&http_client(), &turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(a.body, "blue\n");
}
