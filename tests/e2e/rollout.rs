//! Guarded rollouts: green stepped up under real load, judged against blue on turnout's own
//! counters, and sent back to blue by turnout itself on a failed check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use turnout_testkit::client::{get, http_client};

use crate::BlueGreen;

/// What the clients of a load saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) blue: u64,
    pub(crate) green: u64,
    /// Answers from green with a 5xx status: the clients the bad version hurt.
    pub(crate) green_errors: u64,
    /// Requests that got no answer or an answer from no pool (turnout's own 5xx).
    pub(crate) other: u64,
}

/// `workers` clients sending GET / one after another (no cookies: each request is a new client
/// for the split), until `stop` or 30 s, at most 5 000 requests each.
pub(crate) struct Load {
    stop: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    pub(crate) fn start(url: String, workers: usize) -> Load {
        let stop = Arc::new(tokio::sync::Notify::new());
        let tasks = (0..workers)
            .map(|_| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let client = http_client();
                    let mut tally = Tally::default();
                    let until = Instant::now() + Duration::from_secs(30);
                    let stopped = stop.notified();
                    tokio::pin!(stopped);
                    for _ in 0..5_000 {
                        if Instant::now() >= until {
                            break;
                        }
                        let answer = tokio::select! {
                            () = &mut stopped => break,
                            a = get(&client, &url) => a,
                        };
                        let Ok(a) = answer else {
                            tally.other += 1;
                            continue;
                        };
                        match a.headers.get("x-upstream").and_then(|v| v.to_str().ok()) {
                            Some("blue") => tally.blue += 1,
                            Some("green") => {
                                tally.green += 1;
                                if a.status.is_server_error() {
                                    tally.green_errors += 1;
                                }
                            }
                            _ => tally.other += 1,
                        }
                    }
                    tally
                })
            })
            .collect();
        Load { stop, tasks }
    }

    pub(crate) async fn finish(self) -> Tally {
        self.stop.notify_waiters();
        let mut all = Tally::default();
        for task in self.tasks {
            let t = task.await.expect("load task");
            all.blue += t.blue;
            all.green += t.green;
            all.green_errors += t.green_errors;
            all.other += t.other;
        }
        all
    }
}

async fn call(bg: &BlueGreen, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, json) =
        turnout_testkit::client::admin(&bg.admin_base(), method, path, body, None).await;
    (status.as_u16(), json)
}

/// Starts a rollout with `body`; answers its first report (the rollout is under way).
async fn start(bg: &BlueGreen, body: &str) -> Value {
    let (status, report) = call(bg, Method::POST, "/v1/rollout", Some(body)).await;
    assert_eq!(status, 202, "{report}");
    report
}

/// Waits (at most `secs`) for the rollout under way to end; answers its report.
async fn ended(bg: &BlueGreen, secs: u64) -> Value {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, v) = call(bg, Method::GET, "/v1/rollout", None).await;
        if v["current"].is_null() {
            return v["history"][0].clone();
        }
        assert!(
            Instant::now() < until,
            "the rollout did not end in {secs}s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A green that answers 500 to one request in five is rolled back at its first step, by turnout,
/// and only that step's share of the requests ever reached it.
#[tokio::test]
async fn a_green_failing_one_request_in_five_is_rolled_back_at_the_first_step() {
    let bg = BlueGreen::start().await;
    bg.green.set_fail_percent(20);
    let load = Load::start(bg.turnout.url("/"), 4);
    let started = start(
        &bg,
        r#"{"to": "green", "steps": [10, 50, 100], "bake": "1s", "min_requests": 20}"#,
    )
    .await;
    assert_eq!(started["outcome"], "running");
    let report = ended(&bg, 20).await;
    // Requests after the rollback: every one on blue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = load.finish().await;
    assert_eq!(report["outcome"], "failed", "{report}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "it never went past 10%: {report}");
    assert_eq!(steps[0]["check"], "error_rate", "{report}");
    let reason = report["reason"].as_str().expect("reason");
    assert!(
        reason.contains("step 10%") && reason.contains("error_rate"),
        "{reason}"
    );
    let (_, status) = call(&bg, Method::GET, "/v1/status", None).await;
    assert_eq!(status["active"], "blue");
    assert_eq!(status["weights"], serde_json::json!({"blue": 100}));
    assert!(status["rollout"].is_null());
    for _ in 0..20 {
        assert_eq!(bg.body("/").await, "blue\n");
    }
    let total = tally.blue + tally.green;
    eprintln!(
        "bad green: {tally:?}; {} of {total} requests reached green, {} got its 500; rolled back after {} ms",
        tally.green, tally.green_errors, report["took_ms"]
    );
    assert!(tally.green_errors > 0, "{tally:?}");
    // 10% nominal, for about a second of the whole run.
    assert!(tally.green * 100 <= total * 20, "{tally:?}");
    assert_eq!(tally.other, 0, "{tally:?}");
    let metrics = bg.turnout.metrics().await;
    assert!(
        metrics.contains("turnout_rollouts_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("turnout_rollout_percent 0"), "{metrics}");
}

/// A green 200 ms slower than blue fails the latency check and goes back.
#[tokio::test]
async fn a_slow_green_is_rolled_back_on_latency() {
    let bg = BlueGreen::start().await;
    bg.green.set_delay_ms(200);
    let load = Load::start(bg.turnout.url("/"), 8);
    start(
        &bg,
        r#"{"to": "green", "steps": [25, 100], "bake": "1s", "min_requests": 5}"#,
    )
    .await;
    let report = ended(&bg, 20).await;
    let tally = load.finish().await;
    assert_eq!(report["outcome"], "failed", "{report}");
    let check = report["steps"][0]["check"].as_str().unwrap_or("?");
    assert!(check.ends_with("_latency"), "{report}");
    let target_p95 = report["steps"][0]["target"]["p95_ms"]
        .as_f64()
        .expect("p95");
    assert!(target_p95 >= 100.0, "{report}");
    assert_eq!(tally.other, 0, "{tally:?}");
    assert_eq!(bg.body("/").await, "blue\n");
}

/// A healthy green goes through every step to 100% (here through the CLI, which follows it
/// and prints a line per step).
#[tokio::test]
async fn a_healthy_green_reaches_every_client_through_the_cli() {
    let bg = BlueGreen::start().await;
    let load = Load::start(bg.turnout.url("/"), 4);
    let mut cmd = bg.sandbox.command(&[
        "rollout",
        "green",
        "--steps",
        "20,50,100",
        "--bake",
        "700ms",
        "--min-requests",
        "5",
        "--admin",
        &bg.admin_base(),
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("task")
        .expect("run the CLI");
    let tally = load.finish().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    assert!(stdout.contains("step 20%: pass"), "{stdout}");
    assert!(stdout.contains("step 50%: pass"), "{stdout}");
    assert!(
        stdout.contains("passed: green takes every new client"),
        "{stdout}"
    );
    assert_eq!(bg.body("/").await, "green\n");
    let (_, v) = call(&bg, Method::GET, "/v1/rollout", None).await;
    assert_eq!(v["history"][0]["outcome"], "passed", "{v}");
    assert_eq!(tally.other, 0, "{tally:?}");
    assert!(tally.green > 0 && tally.blue > 0, "{tally:?}");
}

/// Too little traffic for a verdict: the step waits its `max_wait`, then the rollout fails
/// cleanly back to blue. A second rollout is refused while one runs; bad fields are named.
#[tokio::test]
async fn too_little_traffic_waits_then_fails_and_rollouts_are_checked() {
    let bg = BlueGreen::start().await;
    let (status, v) = call(
        &bg,
        Method::POST,
        "/v1/rollout",
        Some(r#"{"to": "green", "steps": [5, 50]}"#),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").starts_with("steps:"),
        "{v}"
    );
    let (status, v) = call(&bg, Method::POST, "/v1/rollout", Some(r#"{"to": "red"}"#)).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = call(&bg, Method::POST, "/v1/rollout", Some(r#"{"to": "blue"}"#)).await;
    assert_eq!(status, 400, "{v}");

    start(&bg, r#"{"to": "green", "steps": [10, 100], "bake": "300ms", "min_requests": 50, "max_wait": "1s"}"#).await;
    let (status, v) = call(&bg, Method::POST, "/v1/rollout", Some(r#"{"to": "green"}"#)).await;
    assert_eq!(status, 409, "{v}");
    let (_, s) = call(&bg, Method::GET, "/v1/status", None).await;
    assert_eq!(s["rollout"]["percent"], 10, "{s}");
    assert_eq!(s["weights"], serde_json::json!({"blue": 90, "green": 10}));
    let mut cmd = bg.sandbox.command(&["status", "--admin", &bg.admin_base()]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("task")
        .expect("turnout status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(": blue -> green at 10% (0 step(s) passed)"),
        "{text}"
    );
    let report = ended(&bg, 10).await;
    assert_eq!(report["outcome"], "failed", "{report}");
    assert_eq!(report["steps"][0]["check"], "min_requests", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or("")
            .contains("fewer than the 50"),
        "{report}"
    );
    let (_, s) = call(&bg, Method::GET, "/v1/status", None).await;
    assert_eq!(s["weights"], serde_json::json!({"blue": 100}));

    // An abort goes back at once.
    start(&bg, r#"{"to": "green", "steps": [30, 100], "bake": "60s"}"#).await;
    let (status, v) = call(&bg, Method::POST, "/v1/rollout/abort", None).await;
    assert_eq!(status, 200, "{v}");
    let report = ended(&bg, 5).await;
    assert_eq!(report["outcome"], "aborted", "{report}");
    assert_eq!(bg.body("/").await, "blue\n");
    let (status, _) = call(&bg, Method::POST, "/v1/rollout/abort", None).await;
    assert_eq!(status, 404);
}

/// turnout stopped half-way through a rollout comes back on the baseline, and says so.
#[tokio::test]
async fn a_restart_mid_rollout_comes_back_on_the_baseline() {
    let mut bg = BlueGreen::start().await;
    start(&bg, r#"{"to": "green", "steps": [50, 100], "bake": "60s"}"#).await;
    let (_, s) = call(&bg, Method::GET, "/v1/status", None).await;
    assert_eq!(s["weights"], serde_json::json!({"blue": 50, "green": 50}));
    bg.turnout.signal("KILL");
    bg.turnout.wait_exit(10).await;
    bg.turnout = bg.sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let (_, s) = call(&bg, Method::GET, "/v1/status", None).await;
    assert_eq!(s["weights"], serde_json::json!({"blue": 100}), "{s}");
    assert_eq!(s["active"], "blue");
    let (_, v) = call(&bg, Method::GET, "/v1/rollout", None).await;
    assert!(v["current"].is_null(), "{v}");
    assert_eq!(v["history"][0]["outcome"], "failed", "{v}");
    assert!(
        v["history"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("turnout stopped during this rollout"),
        "{v}"
    );
    assert_eq!(bg.body("/").await, "blue\n");
}

/// `turnout fleet rollout ARGS... --instance URL...` for every instance of `fleet`.
fn fleet_rollout(fleet: &[BlueGreen], args: &[&str]) -> std::process::Command {
    let mut cmd = fleet[0].sandbox.command(&["fleet", "rollout"]);
    cmd.args(args);
    for bg in fleet {
        cmd.arg("--instance").arg(bg.admin_base());
    }
    cmd
}

async fn three() -> Vec<BlueGreen> {
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(BlueGreen::start().await);
    }
    fleet
}

async fn weights(bg: &BlueGreen) -> Value {
    call(bg, Method::GET, "/v1/status", None).await.1["weights"].clone()
}

/// Three instances under load, one of whose greens fails one request in five: the fleet's sum
/// fails the first step and every instance goes back to blue; a healthy fleet goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rollout_judges_the_sum_and_rolls_every_instance_back() {
    let fleet = three().await;
    fleet[1].green.set_fail_percent(20);
    let loads: Vec<Load> = fleet
        .iter()
        .map(|bg| Load::start(bg.turnout.url("/"), 2))
        .collect();
    let mut cmd = fleet_rollout(
        &fleet,
        &[
            "--to",
            "green",
            "--steps",
            "20,100",
            "--bake",
            "1s",
            "--min-requests",
            "30",
        ],
    );
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("task")
        .expect("run turnout fleet rollout");
    let mut hurt = 0;
    for load in loads {
        let tally = load.finish().await;
        assert_eq!(tally.other, 0, "{tally:?}");
        hurt += tally.green_errors;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("step 20%: fail on error_"), "{stdout}");
    assert!(
        stdout.contains("failed: every instance is back on blue"),
        "{stdout}"
    );
    assert!(hurt > 0);
    for bg in &fleet {
        assert_eq!(weights(bg).await, serde_json::json!({"blue": 100}));
        assert_eq!(bg.body("/").await, "blue\n");
    }

    fleet[1].green.set_fail_percent(0);
    let loads: Vec<Load> = fleet
        .iter()
        .map(|bg| Load::start(bg.turnout.url("/"), 2))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("steps");
    let check = format!(
        "echo $TURNOUT_ROLLOUT_TARGET $TURNOUT_ROLLOUT_PERCENT >> {}",
        seen.display()
    );
    let mut cmd = fleet_rollout(
        &fleet,
        &[
            "--to",
            "green",
            "--steps",
            "50,100",
            "--bake",
            "600ms",
            "--check-cmd",
            &check,
            "--min-requests",
            "10",
        ],
    );
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("task")
        .expect("run turnout fleet rollout");
    for load in loads {
        load.finish().await;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("step 50%: pass"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&seen).expect("--check-cmd ran"),
        "green 50\n"
    );
    for bg in &fleet {
        assert_eq!(bg.body("/").await, "green\n");
        let (_, h) = call(bg, Method::POST, "/v1/rollout/hold", None).await;
        assert!(h["error"].is_string(), "holds need a body: {h}");
    }
}

/// A coordinator that dies half-way leaves no instance split: each one's hold runs out and it
/// goes back to the baseline by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_go_back_by_themselves_when_the_fleet_coordinator_dies() {
    let fleet = three().await;
    let mut child = fleet_rollout(
        &fleet,
        &[
            "--to", "green", "--steps", "50,100", "--bake", "60s", "--hold", "1s",
        ],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("start turnout fleet rollout");
    let split = serde_json::json!({"blue": 50, "green": 50});
    let until = Instant::now() + Duration::from_secs(10);
    for bg in &fleet {
        while weights(bg).await != split {
            assert!(Instant::now() < until, "the fleet never split");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    child.kill().expect("kill the coordinator");
    let _ = child.wait();
    let until = Instant::now() + Duration::from_secs(10);
    for bg in &fleet {
        while weights(bg).await != serde_json::json!({"blue": 100}) {
            assert!(Instant::now() < until, "an instance stayed split");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, v) = call(bg, Method::GET, "/v1/rollout", None).await;
        let reason = v["history"][0]["reason"].as_str().unwrap_or("").to_owned();
        assert!(reason.contains("stopped renewing its hold"), "{v}");
    }
}

/// `[rollout] check_cmd` must also pass for a step to pass (it sees the step in its
/// environment); a paused rollout holds its step until resumed.
#[tokio::test]
async fn check_cmd_gates_each_step_and_a_paused_rollout_holds_its_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("steps");
    let bg = BlueGreen::start_with(&format!(
        "\n[rollout]\ncheck_cmd = '''echo $TURNOUT_ROLLOUT_TARGET $TURNOUT_ROLLOUT_PERCENT >> {}; test $TURNOUT_ROLLOUT_PERCENT -lt 50 || {{ echo smoke failed at $TURNOUT_ROLLOUT_PERCENT >&2; exit 3; }}'''\n",
        seen.display()
    ))
    .await;
    start(
        &bg,
        r#"{"to": "green", "steps": [20, 50, 100], "bake": "300ms", "min_requests": 0}"#,
    )
    .await;
    let report = ended(&bg, 10).await;
    assert_eq!(report["outcome"], "failed", "{report}");
    assert_eq!(report["steps"][0]["verdict"], "pass", "{report}");
    assert_eq!(report["steps"][1]["check"], "check_cmd", "{report}");
    let reason = report["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("smoke failed at 50") && reason.contains('3'),
        "{reason}"
    );
    assert_eq!(
        std::fs::read_to_string(&seen).expect("check_cmd ran"),
        "green 20\ngreen 50\n"
    );
    assert_eq!(bg.body("/").await, "blue\n");
    // A call cannot bring its own command.
    let (status, v) = call(
        &bg,
        Method::POST,
        "/v1/rollout",
        Some(r#"{"to": "green", "check_cmd": "true"}"#),
    )
    .await;
    assert_eq!(status, 400, "{v}");

    start(
        &bg,
        r#"{"to": "green", "steps": [30, 100], "bake": "300ms", "min_requests": 0}"#,
    )
    .await;
    let (status, v) = call(&bg, Method::POST, "/v1/rollout/pause", None).await;
    assert_eq!(
        (status, v["paused"].clone()),
        (200, Value::Bool(true)),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, v) = call(&bg, Method::GET, "/v1/rollout", None).await;
    assert_eq!(v["current"]["percent"], 30, "held at its step: {v}");
    assert_eq!(
        weights(&bg).await,
        serde_json::json!({"blue": 70, "green": 30})
    );
    let (status, _) = call(&bg, Method::POST, "/v1/rollout/resume", None).await;
    assert_eq!(status, 200);
    let report = ended(&bg, 10).await;
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(bg.body("/").await, "green\n");
}

/// A mirror phase sends copies of live GETs to green before any client goes there: a failing
/// green is judged on the copies and never answers a client; a healthy one goes on to its steps.
#[tokio::test]
async fn a_mirror_phase_judges_green_on_copies_no_client_sees() {
    let bg = BlueGreen::start().await;
    bg.green.set_fail_percent(50);
    let load = Load::start(bg.turnout.url("/"), 4);
    start(&bg, r#"{"to": "green", "mirror_percent": 50, "steps": [10, 100], "bake": "1s", "min_requests": 20}"#).await;
    let (_, s) = call(&bg, Method::GET, "/v1/status", None).await;
    let mirror = s["mirror"].as_str().unwrap_or_default().to_owned();
    let report = ended(&bg, 20).await;
    let tally = load.finish().await;
    assert_eq!(mirror, "50% of GET,HEAD,OPTIONS to green", "{s}");
    assert_eq!(report["outcome"], "failed", "{report}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{report}");
    assert_eq!(
        (steps[0]["mirror"].clone(), steps[0]["check"].clone()),
        (serde_json::json!(50), serde_json::json!("error_rate")),
        "{report}"
    );
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("mirror of 50%"),
        "{report}"
    );
    assert_eq!(tally.green, 0, "no client saw green: {tally:?}");
    assert_eq!(tally.other, 0, "{tally:?}");
    assert!(bg.green.requests() >= 20, "the copies reached green");
    let (_, s) = call(&bg, Method::GET, "/v1/status", None).await;
    assert!(s["mirror"].is_null(), "{s}");

    bg.green.set_fail_percent(0);
    let load = Load::start(bg.turnout.url("/"), 4);
    start(&bg, r#"{"to": "green", "mirror_percent": 20, "steps": [100], "bake": "500ms", "min_requests": 5}"#).await;
    let report = ended(&bg, 20).await;
    load.finish().await;
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(report["steps"][0]["mirror"], 20, "{report}");
    assert_eq!(bg.body("/").await, "green\n");
}

/// A mirror copies request bodies of a known length up to its limit (the copy gets the same
/// bytes once the original has sent them); longer ones are not copied; the client sees blue.
#[tokio::test]
async fn a_mirror_copies_request_bodies_up_to_its_limit() {
    let bg = BlueGreen::start().await;
    start(&bg, r#"{"to": "green", "mirror_percent": 100, "mirror_methods": ["POST"], "mirror_max_body": 1000, "steps": [100], "bake": "60s", "min_requests": 1000}"#).await;
    let client = http_client();
    for (n, len) in [(10, 100usize), (5, 2000)] {
        for _ in 0..n {
            let req = http::Request::post(bg.turnout.url("/upload"))
                .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                    b'x';
                    len
                ])))
                .expect("request");
            let a = turnout_testkit::client::send(&client, req)
                .await
                .expect("answer");
            assert_eq!(a.headers["x-upstream"], "blue");
            let j: Value = serde_json::from_str(&a.body).expect("json");
            assert_eq!(j["bytes"], len, "{j}");
        }
    }
    turnout_testkit::eventually(5, "ten copies answered by green", || async {
        bg.turnout
            .metrics()
            .await
            .contains("turnout_requests_total{class=\"2xx\",pool=\"green\"} 10")
    })
    .await;
    assert_eq!(
        bg.green.requests(),
        10,
        "the 2000-byte bodies were not copied"
    );
    let (status, _) = call(&bg, Method::POST, "/v1/rollout/abort", None).await;
    assert_eq!(status, 200);
    assert_eq!(ended(&bg, 5).await["outcome"], "aborted");
}

/// `close_tunnels_after` on a rollout: once its last step is live, the baseline's WebSockets
/// get a close frame 1001 after that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_closes_the_baselines_websockets_after_its_last_step() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let bg = BlueGreen::start_with(crate::FAST_CHECKS).await;
    let (mut ws, _) = turnout_testkit::within(
        5,
        "ws connect",
        tokio_tungstenite::connect_async(format!("ws://{}/ws", bg.turnout.proxy)),
    )
    .await
    .expect("websocket");
    ws.send(Message::text("a")).await.expect("send");
    assert_eq!(
        turnout_testkit::within(5, "echo", ws.next())
            .await
            .expect("msg")
            .expect("ok"),
        Message::text("blue:a")
    );
    start(
        &bg,
        r#"{"to":"green","steps":[100],"close_tunnels_after":"200ms","wait_drained":"10s"}"#,
    )
    .await;
    let report = ended(&bg, 20).await;
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(report["drained"], true, "{report}");
    match turnout_testkit::within(5, "the close frame", ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame 1001, got {other:?}"),
    }
}
