//! The fleet's desired state in a real etcd (Debian's etcd-server): members follow it, a switch
//! is every member or none, an instance started mid-switch comes up on the new colour, a dead
//! coordinator changes nothing, a store that is down stops nothing, a member that missed a
//! change fails its health path until it catches up, and a killed etcd leader is survived.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use turnout_testkit::etcd::Etcd;
use turnout_testkit::eventually;

use crate::{BlueGreen, FAST_CHECKS};

const HEALTH: &str = "/health-check";

/// A member of fleet "shop" named `name`, reaching etcd at `endpoints` (a TOML array).
async fn member(name: &str, endpoints: &str) -> BlueGreen {
    BlueGreen::start_with(&format!(
        "{FAST_CHECKS}\n[fleet]\nname = \"shop\"\ninstance = \"{name}\"\netcd = {endpoints}\nlease_ttl = \"2s\"\n"
    ))
    .await
}

/// A member started with `env` (the etcd credentials) and extra `[fleet]` lines.
async fn member_with_env(
    name: &str,
    endpoints: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> BlueGreen {
    let blue = turnout_testkit::upstream::TestUpstream::start("blue").await;
    let green = turnout_testkit::upstream::TestUpstream::start("green").await;
    let sandbox = turnout_testkit::process::Sandbox::new(crate::BIN);
    let config = sandbox.config(
        &[("blue", &[blue.server()]), ("green", &[green.server()])],
        "blue",
        &format!("{FAST_CHECKS}\n[fleet]\nname = \"shop\"\ninstance = \"{name}\"\netcd = {endpoints}\nlease_ttl = \"2s\"\n{extra}\n"),
    );
    sandbox.write_config(&config);
    let turnout = sandbox
        .start_with_env(env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    BlueGreen {
        blue,
        green,
        sandbox,
        turnout,
    }
}

async fn members(n: usize, etcd: &Etcd) -> Vec<BlueGreen> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(member(&format!("web-{i}"), &etcd.toml_endpoints()).await);
    }
    v
}

/// `turnout fleet ARGS... --etcd URL... --fleet shop`, as a command.
fn command(any: &BlueGreen, etcd: &[String], args: &[&str]) -> std::process::Command {
    let mut cmd = any.sandbox.command(&["fleet"]);
    cmd.args(args);
    for e in etcd {
        cmd.arg("--etcd").arg(e);
    }
    cmd.args(["--fleet", "shop"]);
    cmd
}

/// Runs it to its end, off the test's runtime: (exit code, stdout, stderr).
async fn run(any: &BlueGreen, etcd: &[String], args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = command(any, etcd, args);
    let out: Output = tokio::task::spawn_blocking(move || cmd.output().expect("run turnout fleet"))
        .await
        .expect("join");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `turnout fleet status --json`.
async fn status(any: &BlueGreen, etcd: &[String]) -> Value {
    let (_, stdout, stderr) = run(any, etcd, &["status", "--json"]).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status --json: {e}: {stdout}{stderr}"))
}

async fn bodies(fleet: &[BlueGreen]) -> Vec<String> {
    let mut v = Vec::new();
    for bg in fleet {
        v.push(bg.body("/").await);
    }
    v
}

async fn health(bg: &BlueGreen) -> (u16, String) {
    let a = turnout_testkit::client::get(
        &turnout_testkit::client::http_client(),
        &bg.turnout.url(HEALTH),
    )
    .await
    .expect("the health path answers");
    (a.status.as_u16(), a.body)
}

async fn start_etcd(n: usize) -> Etcd {
    tokio::task::spawn_blocking(move || Etcd::cluster(n))
        .await
        .expect("etcd starts")
}

/// Waits until the fleet's status satisfies `check`.
async fn until(any: &BlueGreen, etcd: &[String], what: &str, check: impl Fn(&Value) -> bool) {
    eventually(20, what, || async { check(&status(any, etcd).await) }).await;
}

fn member_count(s: &Value) -> usize {
    s["members"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_through_etcd_flips_every_member_and_a_new_instance_joins_on_the_fleets_colour() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(3, &etcd).await;
    for bg in &fleet {
        assert_eq!(
            health(bg).await.0,
            200,
            "joined members pass the health path"
        );
    }
    let s = status(&fleet[0], &eps).await;
    assert_eq!(member_count(&s), 3, "{s}");
    assert_eq!(
        s["desired"]["generation"], 1,
        "seeded by the first member: {s}"
    );

    let (code, stdout, stderr) = run(&fleet[0], &eps, &["switch", "--to", "green"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("generation 2 (switch to green) committed; 3/3 member(s) applied it"),
        "{stdout}"
    );
    assert!(stdout.contains("store writes"), "{stdout}");
    assert_eq!(bodies(&fleet).await, ["green\n"; 3]);
    let s = status(&fleet[0], &eps).await;
    let applied: Vec<&Value> = s["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| &m["applied"])
        .collect();
    assert_eq!(applied, [2, 2, 2], "{s}");
    // Each member's own view: its status and its metrics.
    let own = fleet[1].status().await;
    assert_eq!(own["fleet"]["name"], "shop", "{own}");
    assert_eq!(own["fleet"]["instance"], "web-1", "{own}");
    assert_eq!(own["fleet"]["applied"], 2, "{own}");
    assert_eq!(own["fleet"]["connected"], true, "{own}");
    assert!(own["fleet"]["hold"].is_null(), "{own}");
    eventually(10, "the member heard every report", || async {
        let own = fleet[1].status().await;
        own["fleet"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["applied"] == 2))
    })
    .await;
    let metrics = fleet[1].turnout.metrics().await;
    for line in [
        "turnout_fleet_applied_generation 2",
        "turnout_fleet_seen_generation 2",
        "turnout_fleet_members 3",
        "turnout_fleet_store_connected 1",
        "turnout_fleet_health_held 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains("turnout_fleet_last_apply_seconds "),
        "{metrics}"
    );
    // A member takes routing changes from the fleet only: a local one would set it apart.
    for (path, body) in [
        ("/v1/switch", r#"{"to":"blue"}"#),
        ("/v1/rollback", "{}"),
        ("/v1/pause", "{}"),
    ] {
        let (code, json) = fleet[1].post(path, body).await;
        assert_eq!(code, 409, "{path}: {json}");
        assert!(
            json.to_string().contains("follows fleet shop"),
            "{path}: {json}"
        );
    }
    let (code, json) = turnout_testkit::client::admin(
        &fleet[1].admin_base(),
        http::Method::PUT,
        "/v1/split",
        Some(r#"{"weights":{"blue":1}}"#),
        None,
    )
    .await;
    assert_eq!(code, 409, "{json}");
    assert_eq!(
        bodies(&fleet).await,
        ["green\n"; 3],
        "nothing changed locally"
    );

    // Scale-out after the deploy: its own config says blue; it serves the fleet's green from
    // its first answered request, and asks blue for nothing.
    let late = member("web-late", &etcd.toml_endpoints()).await;
    assert_eq!(late.body("/").await, "green\n");
    assert_eq!(
        late.blue.requests(),
        0,
        "the new instance sent nothing to blue"
    );
    assert_eq!(health(&late).await.0, 200);
    until(&fleet[0], &eps, "four members", |s| member_count(s) == 4).await;

    let (code, stdout, stderr) = run(&fleet[0], &eps, &["rollback"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("4/4 member(s)"), "{stdout}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 3]);
    assert_eq!(late.body("/").await, "blue\n");

    // The other changes: maintenance, pause and resume, a split.
    let (code, stdout, stderr) = run(
        &fleet[0],
        &eps,
        &["maintenance", "on", "--message", "back at 5"],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let a = turnout_testkit::client::get(
        &turnout_testkit::client::http_client(),
        &fleet[1].turnout.url("/"),
    )
    .await
    .expect("answer");
    assert_eq!(a.status, 503);
    assert!(a.body.contains("back at 5"), "{}", a.body);
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["maintenance", "off"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(fleet[1].body("/").await, "blue\n");
    // The A/B rules are the fleet's too: a beta header goes to green on every member.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"rules": [{"header": "X-Beta", "equals": "1", "to": "green"}]}"#,
    )
    .expect("write rules");
    let (code, stdout, stderr) = run(
        &fleet[0],
        &eps,
        &["rules", "--file", &rules.display().to_string()],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for bg in &fleet {
        let mut req = http::Request::get(bg.turnout.url("/"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        req.headers_mut()
            .insert("x-beta", http::HeaderValue::from_static("1"));
        let a = turnout_testkit::client::send(&turnout_testkit::client::http_client(), req)
            .await
            .expect("answer");
        assert_eq!(a.body, "green\n", "the rule holds on every member");
        assert_eq!(bg.body("/").await, "blue\n");
    }
    let (code, json) = turnout_testkit::client::admin(
        &fleet[1].admin_base(),
        http::Method::PUT,
        "/v1/rules",
        Some(r#"{"rules": []}"#),
        None,
    )
    .await;
    assert_eq!(code, 409, "a member's own rules write is refused: {json}");
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["split", "blue=50", "green=50"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let st = fleet[2].status().await;
    assert_eq!(st["weights"]["green"], 50, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_during_a_switch_comes_up_on_the_new_colour() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(2, &etcd).await;
    let coordinator = command(
        &fleet[0],
        &eps,
        &["switch", "--to", "green", "--pause-before-commit", "3s"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("run the coordinator");
    until(&fleet[0], &eps, "the prepare acknowledged by both", |s| {
        s["prepare"]["next"]["generation"] == 2
            && s["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["prepared"] == 2))
    })
    .await;
    // Launched mid-switch (an autoscaler's scale-out): it waits for the outcome to serve.
    let late = member("web-late", &etcd.toml_endpoints()).await;
    assert_eq!(late.body("/").await, "green\n", "{}", late.turnout.logs());
    assert_eq!(late.blue.requests(), 0, "nothing went to the old colour");
    let out = tokio::task::spawn_blocking(move || coordinator.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bodies(&fleet).await, ["green\n"; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_between_prepare_and_commit_changes_nothing() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(3, &etcd).await;
    let mut coordinator = command(
        &fleet[0],
        &eps,
        &[
            "switch",
            "--to",
            "green",
            "--pause-before-commit",
            "60s",
            "--ttl",
            "2s",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("run the coordinator");
    until(&fleet[0], &eps, "every member acknowledged", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["prepared"] == 2))
    })
    .await;
    coordinator.kill().expect("SIGKILL the coordinator");
    coordinator.wait().expect("reaped");
    // Its lease ends within its 2 s: the prepare and the lock go, members drop what they held.
    until(&fleet[0], &eps, "the prepare and the lock gone", |s| {
        s["prepare"].is_null() && s["lock"].is_null()
    })
    .await;
    until(&fleet[0], &eps, "members dropped the prepare", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["prepared"].is_null()))
    })
    .await;
    let s = status(&fleet[0], &eps).await;
    assert_eq!(s["desired"]["generation"], 1, "nothing changed: {s}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 3]);
    for bg in &fleet {
        assert!(
            bg.status().await["prepared"].is_null(),
            "no switch left prepared"
        );
    }
    // And the next switch works.
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["switch", "--to", "green"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["green\n"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_instances_keep_serving_commands_fail_clearly_and_nothing_is_lost() {
    let mut etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(2, &etcd).await;
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["switch", "--to", "green"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    etcd.kill(0);
    // Past the members' 2 s lease: they know the store is gone, and serve on, healthy.
    for _ in 0..6 {
        for bg in &fleet {
            assert_eq!(bg.body("/").await, "green\n");
            assert_eq!(
                health(bg).await.0,
                200,
                "a store down for everyone fails nobody closed"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, stdout, stderr) = run(
        &fleet[0],
        &eps,
        &["switch", "--to", "blue", "--timeout", "1s"],
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach etcd at {}", eps[0])),
        "{stderr}"
    );
    let (code, _, stderr) = run(&fleet[0], &eps, &["status", "--timeout", "1s"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach etcd"), "{stderr}");

    let restarted = tokio::task::spawn_blocking(move || {
        etcd.restart(0);
        etcd.wait_healthy();
        etcd
    })
    .await
    .expect("etcd restarts");
    until(&fleet[0], &eps, "both members back", |s| {
        member_count(s) == 2 && s["desired"]["generation"] == 2
    })
    .await;
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["switch", "--to", "blue"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["blue\n"; 2]);
    drop(restarted);
}

/// A TCP relay to `target` that the test can cut (every connection closed, new ones refused)
/// and restore: a network partition between one member and etcd.
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            let target = target.trim_start_matches("http://").to_string();
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    continue;
                }
                let flag = Arc::clone(&flag);
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
                    let watch = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = watch => {}
                    }
                });
            }
        });
        Relay { addr, cut, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_missed_a_change_fails_its_health_path_until_it_catches_up() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(2, &etcd).await;
    let relay = Relay::start(eps[0].clone()).await;
    let cut_off = member("web-cut", &format!("[\"http://{}\"]", relay.addr)).await;
    until(&fleet[0], &eps, "three members", |s| member_count(s) == 3).await;

    // The partition: its lease runs out, the fleet no longer waits for it.
    relay.cut.store(true, Ordering::SeqCst);
    until(
        &fleet[0],
        &eps,
        "the cut-off member dropped from the roster",
        |s| member_count(s) == 2,
    )
    .await;
    // And green cannot serve there, so it will not be able to catch up at once.
    cut_off.green.set_healthy(false);
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["switch", "--to", "green"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["green\n"; 2]);
    // It cannot know it is behind yet: it serves its last state, healthy.
    assert_eq!(health(&cut_off).await.0, 200);
    assert_eq!(cut_off.body("/").await, "blue\n");

    // Back in touch: it learns of generation 2, cannot apply it, and says so where the load
    // balancer looks.
    relay.cut.store(false, Ordering::SeqCst);
    eventually(20, "the behind member fails its health path", || async {
        health(&cut_off).await.0 == 503
    })
    .await;
    let (_, text) = health(&cut_off).await;
    assert!(text.contains("behind fleet shop: generation 2"), "{text}");
    until(&fleet[0], &eps, "the status shows it behind", |s| {
        s["members"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["instance"] == "web-cut" && m["behind"].is_string() && m["lag"] == 1)
        })
    })
    .await;
    let (code, stdout, _) = run(&fleet[0], &eps, &["status"]).await;
    assert_eq!(code, Some(1), "a member behind: exit 1\n{stdout}");
    assert!(
        stdout.contains("web-cut") && stdout.contains("behind:"),
        "{stdout}"
    );

    // Green comes good there: it catches up by itself, and passes again.
    cut_off.green.set_healthy(true);
    eventually(20, "caught up", || async {
        health(&cut_off).await.0 == 200
    })
    .await;
    assert_eq!(cut_off.body("/").await, "green\n");
    // Its report follows its health path by a write.
    until(&fleet[0], &eps, "its report caught up", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["applied"] == 2 && m["behind"].is_null()))
    })
    .await;
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["status"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_survives_the_etcd_leader_killed_between_prepare_and_commit() {
    let mut etcd = start_etcd(3).await;
    let eps = etcd.endpoints();
    let fleet = members(2, &etcd).await;
    let coordinator = command(
        &fleet[0],
        &eps,
        &[
            "switch",
            "--to",
            "green",
            "--pause-before-commit",
            "2s",
            "--timeout",
            "10s",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("run the coordinator");
    until(&fleet[0], &eps, "both acknowledged", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["prepared"] == 2))
    })
    .await;
    let killed = etcd.leader().expect("a leader");
    etcd.kill(killed);
    let out = tokio::task::spawn_blocking(move || coordinator.wait_with_output().expect("wait"))
        .await
        .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{stderr}\n{}\n{}",
        fleet[0].turnout.logs(),
        fleet[1].turnout.logs()
    );
    assert!(stdout.contains("2/2 member(s) applied"), "{stdout}");
    assert_eq!(bodies(&fleet).await, ["green\n"; 2]);
    let alive: Vec<String> = (0..3)
        .filter(|i| *i != killed)
        .map(|i| etcd.endpoint(i))
        .collect();
    let s = status(&fleet[0], &alive).await;
    assert_eq!(s["desired"]["generation"], 2, "{s}");
    assert_eq!(member_count(&s), 2, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_arguments_and_records_that_are_wrong_are_named() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(1, &etcd).await;
    let any = &fleet[0];
    let cases: [(&[&str], &str); 6] = [
        (
            &["status", "--json", "--instance", "http://127.0.0.1:1"],
            "--json is for turnout fleet status through etcd",
        ),
        (
            &[
                "rollout",
                "--to",
                "green",
                "--fleet",
                "shop",
                "--etcd",
                "http://127.0.0.1:1",
                "--hold",
                "1s",
            ],
            "--hold must be at least 2s",
        ),
        (
            &["switch", "--to", "green", "--etcd", "http://127.0.0.1:1"],
            "--etcd needs --fleet",
        ),
        (
            &[
                "switch",
                "--to",
                "green",
                "--fleet",
                "../x",
                "--etcd",
                "http://127.0.0.1:1",
            ],
            "invalid --fleet",
        ),
        (
            &[
                "switch",
                "--to",
                "green",
                "--fleet",
                "shop",
                "--etcd",
                "127.0.0.1:1",
            ],
            "invalid --etcd",
        ),
        (
            &[
                "switch",
                "--to",
                "green",
                "--fleet",
                "shop",
                "--etcd",
                "http://127.0.0.1:1",
                "--instance",
                "http://127.0.0.1:2",
            ],
            "two ways",
        ),
    ];
    for (args, want) in cases {
        let mut cmd = any.sandbox.command(&["fleet"]);
        cmd.args(args);
        let out = cmd.output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // A config without [fleet] for --config; a password set but empty.
    let plain = tempfile::tempdir().expect("tempdir");
    let no_fleet = plain.path().join("no-fleet.toml");
    std::fs::write(
        &no_fleet,
        "[pools.blue]\nservers = [\"127.0.0.1:1\"]\n[routing]\nactive = \"blue\"\n",
    )
    .expect("write");
    let out = any
        .sandbox
        .command(&[
            "fleet",
            "status",
            "--config",
            &no_fleet.display().to_string(),
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no-fleet.toml has no [fleet] section"),
        "{stderr}"
    );
    let out = any
        .sandbox
        .command(&["fleet", "status", "--fleet", "shop", "--etcd", &eps[0]])
        .env("TURNOUT_ETCD_USER", "root")
        .env("TURNOUT_ETCD_PASSWORD", "")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("set but empty"), "{stderr}");

    // A pool the fleet does not have, a rollback with nothing to go back to.
    let (code, _, stderr) = run(any, &eps, &["switch", "--to", "purple"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no pool named \"purple\""), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"header": "X-Beta"}]"#).expect("write");
    let (code, _, stderr) = run(any, &eps, &["rules", "--file", &bad.display().to_string()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.json") && stderr.contains("PUT /v1/rules"),
        "{stderr}"
    );
    let purple = dir.path().join("purple.json");
    std::fs::write(
        &purple,
        r#"{"rules": [{"cookie": "b", "equals": "1", "to": "purple"}]}"#,
    )
    .expect("write");
    let (code, _, stderr) = run(
        any,
        &eps,
        &["rules", "--file", &purple.display().to_string()],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("rule 1") && stderr.contains("purple"),
        "{stderr}"
    );
    let (code, _, stderr) = run(any, &eps, &["rollback"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nothing to roll back"), "{stderr}");
    // A fleet nobody seeded.
    let mut cmd = any.sandbox.command(&[
        "fleet", "switch", "--to", "green", "--fleet", "nobody", "--etcd", &eps[0],
    ]);
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no desired state in etcd yet"));

    // A desired state that turnout did not write: the member keeps serving, the status names
    // the key, and a coordinator refuses to build on it.
    let put = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &eps[0],
            "put",
            "/turnout/fleets/shop/desired",
            "{\"generation\": \"lots\"}",
        ])
        .output()
        .expect("run etcdctl");
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let (code, _, stderr) = run(any, &eps, &["status"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/turnout/fleets/shop/desired"), "{stderr}");
    let (code, _, stderr) = run(any, &eps, &["switch", "--to", "green"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not one turnout wrote"), "{stderr}");
    assert_eq!(any.body("/").await, "blue\n");
    assert_eq!(health(any).await.0, 200);

    // `turnout check` reads [fleet] as a start does: the fleet named, a TLS file that is not
    // there named too.
    let out = any
        .sandbox
        .command(&[
            "check",
            "--config",
            &any.sandbox.config_path().display().to_string(),
        ])
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fleet shop as web-0"), "{stdout}");
    let tls_config = std::fs::read_to_string(any.sandbox.config_path())
        .expect("config")
        .replace(
            &format!("etcd = {}", etcd.toml_endpoints()),
            "etcd = [\"https://127.0.0.1:2379\"]",
        )
        + "[fleet.tls]\nca = \"/nonexistent/etcd-ca.pem\"\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tls.toml");
    std::fs::write(&path, tls_config).expect("write");
    let out = any
        .sandbox
        .command(&["check", "--config", &path.display().to_string()])
        .output()
        .expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[fleet.tls] ca") && stderr.contains("/nonexistent/etcd-ca.pem"),
        "{stderr}"
    );

    // An instance without [fleet] shows no fleet, in its status or its metrics.
    let alone = BlueGreen::start_with(FAST_CHECKS).await;
    assert!(alone.status().await["fleet"].is_null());
    assert!(!alone.turnout.metrics().await.contains("turnout_fleet_"));
    let (code, _) = alone.post("/v1/switch", r#"{"to":"green"}"#).await;
    assert_eq!(code, 200, "a local switch is the instance's own business");
}

/// Three members under load, one of whose greens fails one request in five: the fleet's sum
/// fails the first step and every member goes back to blue, through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rollout_through_etcd_with_one_bad_member_is_rolled_back_everywhere() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(3, &etcd).await;
    fleet[1].green.set_fail_percent(20);
    let loads: Vec<crate::rollout::Load> = fleet
        .iter()
        .map(|bg| crate::rollout::Load::start(bg.turnout.url("/"), 2))
        .collect();
    let (code, stdout, stderr) = run(
        &fleet[0],
        &eps,
        &[
            "rollout",
            "--to",
            "green",
            "--steps",
            "20,100",
            "--bake",
            "1s",
            "--min-requests",
            "30",
        ],
    )
    .await;
    let mut hurt = 0;
    for load in loads {
        let tally = load.finish().await;
        assert_eq!(
            tally.other, 0,
            "no request failed for want of a pool: {tally:?}"
        );
        hurt += tally.green_errors;
    }
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("step 20%: fail on error_"), "{stdout}");
    assert!(
        stdout.contains("failed: every member is back on blue"),
        "{stdout}"
    );
    assert!(hurt > 0, "the bad member's green did serve, and failed");
    for bg in &fleet {
        assert_eq!(
            bg.status().await["weights"],
            serde_json::json!({"blue": 100})
        );
    }
    let s = status(&fleet[0], &eps).await;
    assert!(
        s["desired"]["rollout"].is_null() && s["lock"].is_null(),
        "{s}"
    );

    // A healthy fleet goes through.
    fleet[1].green.set_fail_percent(0);
    let (code, stdout, stderr) = run(
        &fleet[0],
        &eps,
        &[
            "rollout",
            "--to",
            "green",
            "--steps",
            "50,100",
            "--bake",
            "300ms",
            "--min-requests",
            "0",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("passed: green takes every new client on every member"),
        "{stdout}"
    );
    assert_eq!(bodies(&fleet).await, ["green\n"; 3]);
}

/// The rollout's coordinator SIGKILLed while the fleet is split: once its lock's lease runs
/// out, a member writes the baseline back, and every member applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rollout_whose_coordinator_dies_goes_back_to_the_baseline_by_itself() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(3, &etcd).await;
    let mut coordinator = command(
        &fleet[0],
        &eps,
        &[
            "rollout", "--to", "green", "--steps", "30,100", "--bake", "60s", "--hold", "2s",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("run the coordinator");
    until(&fleet[0], &eps, "the fleet split by the rollout", |s| {
        s["desired"]["weights"]["green"] == 30 && s["desired"]["rollout"]["baseline"] == "blue"
    })
    .await;
    for bg in &fleet {
        eventually(10, "the member split", || async {
            bg.status().await["weights"]["green"] == 30
        })
        .await;
    }
    coordinator.kill().expect("SIGKILL");
    coordinator.wait().expect("reaped");
    until(&fleet[0], &eps, "the baseline restored by a member", |s| {
        s["desired"]["weights"] == serde_json::json!({"blue": 100})
            && s["desired"]["rollout"].is_null()
    })
    .await;
    let s = status(&fleet[0], &eps).await;
    let change = s["desired"]["change"].as_str().unwrap_or_default();
    assert!(change.contains("lost its coordinator"), "{s}");
    assert!(
        s["desired"]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("web-")),
        "a member wrote it: {s}"
    );
    for bg in &fleet {
        eventually(10, "every member back on blue", || async {
            bg.status().await["weights"] == serde_json::json!({"blue": 100})
        })
        .await;
    }
}

/// `turnout fleet upgrade` across three members under load: each member's turnout is replaced
/// in place, one at a time, each verified before the next, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_upgrade_across_three_members_under_load_fails_no_request() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    let fleet = members(3, &etcd).await;
    let pids: Vec<u64> = {
        let mut v = Vec::new();
        for bg in &fleet {
            v.push(bg.status().await["process"]["pid"].as_u64().expect("pid"));
        }
        v
    };
    let loads: Vec<crate::rollout::Load> = fleet
        .iter()
        .map(|bg| crate::rollout::Load::start(bg.turnout.url("/"), 2))
        .collect();
    let binary = std::path::absolute(crate::BIN).expect("the binary's path");
    let binary = binary.display().to_string();
    let (code, stdout, stderr) = run(
        &fleet[0],
        &eps,
        &[
            "upgrade",
            "--binary",
            &binary,
            "--max-unavailable",
            "1",
            "--settle",
            "1s",
        ],
    )
    .await;
    // The new processes, so that the test's end stops them too.
    for bg in &fleet {
        if let Some(pid) = bg.status().await["process"]["pid"].as_u64() {
            bg.turnout.adopt(u32::try_from(pid).expect("a pid"));
        }
    }
    let mut served = 0;
    for load in loads {
        let tally = load.finish().await;
        assert_eq!(tally.other, 0, "no request failed: {tally:?}");
        assert_eq!(tally.green_errors, 0, "{tally:?}");
        served += tally.blue;
    }
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(served > 0, "the load was served");
    assert!(
        stdout.contains("upgraded: every member of fleet shop (3)"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("handed over to pid").count(), 3, "{stdout}");
    for (bg, old) in fleet.iter().zip(pids) {
        let st = bg.status().await;
        assert_ne!(
            st["process"]["pid"].as_u64(),
            Some(old),
            "a new process serves: {st}"
        );
        assert_eq!(st["process"]["generation"], 2, "{st}");
        assert_eq!(
            st["fleet"]["applied"], 1,
            "it rejoined on the fleet's generation: {st}"
        );
    }
    until(&fleet[0], &eps, "three members after the upgrade", |s| {
        member_count(s) == 3
    })
    .await;
    // The upgraded fleet still switches together.
    let (code, stdout, stderr) = run(&fleet[0], &eps, &["switch", "--to", "green"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(bodies(&fleet).await, ["green\n"; 3]);
}

/// etcd with authentication on: the user and password come from the environment, for members
/// and commands alike; wrong ones are named and never pass a member's health path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_credentials_come_from_the_environment_and_wrong_ones_are_named() {
    let etcd = start_etcd(1).await;
    let eps = etcd.endpoints();
    for args in [
        vec!["user", "add", "root:s3cret"],
        vec!["user", "grant-role", "root", "root"],
        vec!["auth", "enable"],
    ] {
        let out = std::process::Command::new("etcdctl")
            .args(["--endpoints", &eps[0]])
            .args(&args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let good = [
        ("TURNOUT_ETCD_USER", "root"),
        ("TURNOUT_ETCD_PASSWORD", "s3cret"),
    ];
    let a = member_with_env("web-a", &etcd.toml_endpoints(), "", &good).await;
    assert_eq!(health(&a).await.0, 200, "{}", a.turnout.logs());

    let with_env = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = command(&a, &eps, args);
        cmd.env_remove("TURNOUT_ETCD_USER")
            .env_remove("TURNOUT_ETCD_PASSWORD");
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run turnout fleet");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = with_env(&["switch", "--to", "green"], &good);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(a.body("/").await, "green\n");

    let (code, _, stderr) = with_env(
        &["status", "--timeout", "1s"],
        &[
            ("TURNOUT_ETCD_USER", "root"),
            ("TURNOUT_ETCD_PASSWORD", "wrong"),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach etcd") && stderr.contains("authentication failed"),
        "{stderr}"
    );
    let (code, _, stderr) = with_env(&["status"], &[("TURNOUT_ETCD_USER", "root")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("go together"), "{stderr}");
    let (code, _, stderr) = with_env(&["status", "--timeout", "1s"], &[]);
    assert_eq!(code, Some(1), "no credentials: {stderr}");

    // A member with the wrong password starts (it must not stop a scale-out for good), but
    // never passes its health path: it cannot know the fleet's colour.
    let bad = member_with_env(
        "web-bad",
        &etcd.toml_endpoints(),
        "join_timeout = \"1s\"",
        &[
            ("TURNOUT_ETCD_USER", "root"),
            ("TURNOUT_ETCD_PASSWORD", "wrong"),
        ],
    )
    .await;
    let (code, text) = health(&bad).await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("joining fleet shop"), "{text}");
    assert!(
        bad.turnout.logs().contains("authentication failed"),
        "{}",
        bad.turnout.logs()
    );
}

/// etcd over TLS: a member with `[fleet.tls] ca` and an `https://` endpoint joins and follows;
/// the command line reaches the same etcd through `--config`; a CA that did not sign etcd's
/// certificate is named as the reason it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_the_configs_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = crate::tls::Ca::new("etcd test CA");
    let (chain, key, _) = ca.leaf(&["127.0.0.1", "localhost"], 30);
    let cert_path = crate::tls::write(dir.path(), "etcd.pem", &chain);
    let key_path = crate::tls::write(dir.path(), "etcd-key.pem", &key);
    let ca_path = crate::tls::write(dir.path(), "ca.pem", &ca.pem());
    let etcd = tokio::task::spawn_blocking(move || Etcd::start_tls(&cert_path, &key_path))
        .await
        .expect("etcd starts");
    let endpoint = etcd.endpoint(0);
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let tls = format!("[fleet.tls]\nca = {:?}\n", ca_path.display().to_string());
    let a = member_with_env("web-a", &etcd.toml_endpoints(), &tls, &[]).await;
    assert_eq!(health(&a).await.0, 200, "{}", a.turnout.logs());

    let config = a.sandbox.config_path().display().to_string();
    let out = a
        .sandbox
        .command(&["fleet", "switch", "--to", "green", "--config", &config])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.body("/").await, "green\n");

    // Another CA: refused, and said so.
    let other = crate::tls::Ca::new("not etcd's CA");
    let other_path = crate::tls::write(dir.path(), "other.pem", &other.pem());
    let text = std::fs::read_to_string(a.sandbox.config_path())
        .expect("config")
        .replace(
            &ca_path.display().to_string(),
            &other_path.display().to_string(),
        );
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, text).expect("write");
    let out = a
        .sandbox
        .command(&[
            "fleet",
            "status",
            "--config",
            &wrong.display().to_string(),
            "--timeout",
            "1s",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach etcd at {endpoint}")),
        "{stderr}"
    );
}
