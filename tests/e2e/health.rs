//! Health: active checks, the switch's health gate, the load balancer's endpoint, the checker
//! following pools changed at runtime, and wait_drained.

use crate::{BlueGreen, BIN, FAST_CHECKS};
use http::Method;
use turnout_testkit::client::{admin, get, http_client};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::{eventually, within};

async fn switch(bg: &BlueGreen, body: &str) -> (u16, serde_json::Value) {
    bg.post("/v1/switch", body).await
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
