//! Traffic splitting through the real binary: weighted splits, sticky cookies, preview
//! routing, A/B rules, and each balancer inside a pool.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use turnout_testkit::client::{http_client, send, Answer};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;

use crate::{BlueGreen, BIN, FAST_CHECKS};

/// GET `path` through turnout with extra request headers.
async fn get_with(bg: &BlueGreen, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(bg.turnout.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    send(&http_client(), req)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", bg.turnout.logs()))
}

/// The `Set-Cookie` values of an answer.
fn set_cookies(a: &Answer) -> Vec<String> {
    a.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

async fn admin(
    bg: &BlueGreen,
    method: http::Method,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, json) =
        turnout_testkit::client::admin(&bg.admin_base(), method, path, Some(body), None).await;
    (status.as_u16(), json)
}

async fn put_split(bg: &BlueGreen, weights: &str) -> (u16, serde_json::Value) {
    admin(
        bg,
        http::Method::PUT,
        "/v1/split",
        &format!("{{\"weights\":{weights}}}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_sends_its_share_of_new_clients_and_keeps_each_client_on_its_pool() {
    let mut bg = BlueGreen::start_with(FAST_CHECKS).await;
    bg.wait_healthy("green").await;
    let (status, json) = put_split(&bg, r#"{"blue":80,"green":20}"#).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        json["weights"],
        serde_json::json!({"blue": 80, "green": 20})
    );
    assert_eq!(json["active"], "blue");

    // 400 new clients (no cookie): about 20% to green. The bound is 5 standard deviations
    // wide (σ = 8): the share is checked to a point in the core's unit test, with a seed.
    let mut green = 0;
    let mut green_cookie = None;
    for _ in 0..400 {
        let a = get_with(&bg, "/", &[]).await;
        let cookies = set_cookies(&a);
        assert_eq!(cookies.len(), 1, "every new client gets its pool's cookie");
        assert!(
            cookies[0].starts_with(&format!("turnout-pool={}", a.body.trim())),
            "{cookies:?}"
        );
        if a.body == "green\n" {
            green += 1;
            green_cookie = Some(cookies[0].split(';').next().expect("pair").to_owned());
        }
    }
    assert!((40..=120).contains(&green), "green got {green} of 400");
    let metrics = bg.turnout.metrics().await;
    assert!(
        metrics.contains("turnout_pool_weight{pool=\"green\"} 20"),
        "{metrics}"
    );

    // A whole session with the cookie stays on green, and is not handed a new cookie.
    let cookie = green_cookie.expect("some client got green");
    for _ in 0..50 {
        let a = get_with(&bg, "/", &[("cookie", &format!("theme=dark; {cookie}"))]).await;
        assert_eq!(a.body, "green\n");
        assert!(set_cookies(&a).is_empty());
    }

    // The CLI does the same; the split survives a restart (it is in the state file).
    let out = bg
        .sandbox
        .command(&["split", "blue=95", "green=5", "--admin", &bg.admin_base()])
        .output()
        .expect("run turnout split");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("split blue=95 green=5"), "{stdout}");
    bg.turnout.signal("TERM");
    assert!(bg.turnout.wait_exit(20).await.success());
    bg.turnout = bg.sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        bg.status().await["weights"],
        serde_json::json!({"blue": 95, "green": 5})
    );
    let bad = bg
        .sandbox
        .command(&["split", "blue=lots", "--admin", &bg.admin_base()])
        .output()
        .expect("run turnout split");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("whole number"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_pool_drops_to_zero_moves_and_gets_a_new_cookie() {
    let bg = BlueGreen::start().await;
    assert_eq!(put_split(&bg, r#"{"blue":50,"green":50}"#).await.0, 200);
    let on_green = [("cookie", "turnout-pool=green")];
    assert_eq!(get_with(&bg, "/", &on_green).await.body, "green\n");
    assert_eq!(put_split(&bg, r#"{"blue":100,"green":0}"#).await.0, 200);
    let a = get_with(&bg, "/", &on_green).await;
    assert_eq!(a.body, "blue\n");
    let cookies = set_cookies(&a);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("turnout-pool=blue;"), "{cookies:?}");
    // With one pool left, a new client needs no cookie.
    assert!(set_cookies(&get_with(&bg, "/", &[]).await).is_empty());

    // Rollback restores the split before the last change; a switch is a 100/0 split.
    let (_, json) = bg.post("/v1/rollback", "").await;
    assert_eq!(
        json["weights"],
        serde_json::json!({"blue": 50, "green": 50}),
        "{json}"
    );
    bg.switch("green").await;
    let status = bg.status().await;
    assert_eq!(status["weights"], serde_json::json!({"green": 100}));
    assert_eq!(
        status["previous_weights"],
        serde_json::json!({"blue": 50, "green": 50})
    );
    let (_, json) = bg.post("/v1/rollback", "").await;
    assert_eq!(
        json["weights"],
        serde_json::json!({"blue": 50, "green": 50}),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_weights_and_bad_rules_are_refused_with_what_is_wrong() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    let before = bg.status().await["generation"].clone();
    for (weights, says) in [
        (
            r#"{"blue":-5,"green":5}"#,
            "weight -5 for pool \\\"blue\\\"",
        ),
        (r#"{"blue":0,"green":0}"#, "every weight is zero"),
        (r#"{"blue":90,"purple":10}"#, "unknown pool \\\"purple\\\""),
        (r#"{"blue":1.5}"#, "invalid JSON body"),
        (r#"{}"#, "every weight is zero"),
    ] {
        let (status, json) = put_split(&bg, weights).await;
        assert_eq!(status, 400, "{weights}: {json}");
        assert!(
            json["error"].to_string().contains(says),
            "{weights}: {json}"
        );
    }
    for (rules, says) in [
        (
            r#"[{"header":"X-Beta","equals":"1","to":"purple"}]"#,
            "rule 1: unknown pool",
        ),
        (
            r#"[{"header":"X-Beta","equals":"1","to":"green"},{"equals":"1","to":"green"}]"#,
            "rule 2: give exactly one of",
        ),
        (
            r#"[{"cookie":"a","equals":"1","prefix":"x","to":"green"}]"#,
            "exactly one of \\\"equals\\\"",
        ),
        (
            r#"[{"header":"X Beta","equals":"1","to":"green"}]"#,
            "not a valid header name",
        ),
        (
            r#"[{"header":"X-Beta","equals":"1","to":"green","extra":1}]"#,
            "unknown field",
        ),
    ] {
        let (status, json) = admin(
            &bg,
            http::Method::PUT,
            "/v1/rules",
            &format!("{{\"rules\":{rules}}}"),
        )
        .await;
        assert_eq!(status, 400, "{rules}: {json}");
        assert!(json["error"].to_string().contains(says), "{rules}: {json}");
    }
    assert_eq!(bg.status().await["generation"], before, "nothing changed");

    // The health gate covers a split: a pool that would gain share must have a healthy server.
    bg.green.set_healthy(false);
    let (status, json) = put_split(&bg, r#"{"blue":90,"green":10}"#).await;
    assert_eq!(status, 409, "{json}");
    assert!(
        json["error"]
            .to_string()
            .contains("\\\"green\\\" has no healthy server"),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_by_header_or_cookie_needs_the_token_when_one_is_set() {
    let bg = BlueGreen::start_full(
        "",
        "preview_header = \"X-Turnout-Pool\"\npreview_token = \"tok3n\"\n",
    )
    .await;
    assert_eq!(get_with(&bg, "/", &[]).await.body, "blue\n");
    let a = get_with(&bg, "/", &[("x-turnout-pool", "green:tok3n")]).await;
    assert_eq!(a.body, "green\n");
    let cookies = set_cookies(&a);
    assert!(
        cookies[0].starts_with("turnout-preview=green:tok3n;"),
        "{cookies:?}"
    );
    // The browser's cookie alone keeps it on green.
    let a = get_with(&bg, "/", &[("cookie", "turnout-preview=green:tok3n")]).await;
    assert_eq!((a.body.as_str(), set_cookies(&a).len()), ("green\n", 0));
    // A wrong or missing token is refused, a wrong cookie ignored.
    for value in ["green", "green:nope"] {
        let a = get_with(&bg, "/", &[("x-turnout-pool", value)]).await;
        assert_eq!(a.status, 403, "{value}: {}", a.body);
    }
    let a = get_with(&bg, "/", &[("x-turnout-pool", "purple:tok3n")]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        get_with(&bg, "/", &[("cookie", "turnout-preview=green:nope")])
            .await
            .body,
        "blue\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_rules_from_config_and_the_api_match_in_order() {
    // One rule from the config file, without preview routing: the preview header is just a
    // header then.
    let bg = BlueGreen::start_full(
        "",
        "[[routing.rules]]\nheader = \"X-Beta\"\nequals = \"yes\"\nto = \"green\"\n",
    )
    .await;
    assert_eq!(
        get_with(&bg, "/", &[("x-beta", "yes")]).await.body,
        "green\n"
    );
    assert_eq!(get_with(&bg, "/", &[("x-beta", "no")]).await.body, "blue\n");
    assert_eq!(
        get_with(&bg, "/", &[("x-turnout-pool", "green")])
            .await
            .body,
        "blue\n"
    );

    let rules = r#"{"rules":[
        {"cookie":"group","prefix":"beta-","to":"green"},
        {"query":"variant","equals":"b b","to":"green"},
        {"cookie":"group","prefix":"beta-old","to":"blue"}
    ]}"#;
    let (status, json) = admin(&bg, http::Method::PUT, "/v1/rules", rules).await;
    assert_eq!(status, 200, "{json}");
    let (_, listed) = admin(&bg, http::Method::GET, "/v1/rules", "").await;
    assert_eq!(
        listed["rules"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    assert_eq!(
        listed["rules"][1],
        serde_json::json!({"query":"variant","equals":"b b","to":"green"})
    );
    // The config's rule is gone: the API replaced the list.
    assert_eq!(
        get_with(&bg, "/", &[("x-beta", "yes")]).await.body,
        "blue\n"
    );
    // First match wins: "beta-old-7" matches rule 1 before rule 3.
    assert_eq!(
        get_with(&bg, "/", &[("cookie", "a=1; group=beta-old-7")])
            .await
            .body,
        "green\n"
    );
    assert_eq!(
        get_with(&bg, "/?x=1&variant=b%20b", &[]).await.body,
        "green\n"
    );
    assert_eq!(get_with(&bg, "/?variant=a", &[]).await.body, "blue\n");
    // No rule: the split decides; an empty list clears them.
    let (status, _) = admin(&bg, http::Method::PUT, "/v1/rules", r#"{"rules":[]}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        get_with(&bg, "/", &[("cookie", "group=beta-1")]).await.body,
        "blue\n"
    );
    // A pool a rule sends to keeps its servers.
    let (status, _) = admin(&bg, http::Method::PUT, "/v1/rules", rules).await;
    assert_eq!(status, 200);
    let (status, json) = admin(
        &bg,
        http::Method::PUT,
        "/v1/pools/green",
        r#"{"servers":[]}"#,
    )
    .await;
    assert_eq!(status, 409, "{json}");
    assert!(
        json["error"].to_string().contains("rule 1 sends to it"),
        "{json}"
    );
}

/// Three named upstreams in one pool `blue` balanced by `balance`, with these weights.
async fn balanced(
    balance: &str,
    weights: [u32; 3],
    routing: &str,
) -> (
    Vec<TestUpstream>,
    Sandbox,
    turnout_testkit::process::Turnout,
) {
    let ups = vec![
        TestUpstream::start("s1").await,
        TestUpstream::start("s2").await,
        TestUpstream::start("s3").await,
    ];
    let servers: Vec<String> = ups
        .iter()
        .zip(weights)
        .map(|(u, w)| format!("{{ addr = \"{}\", weight = {w} }}", u.server()))
        .collect();
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_delay = \"0s\"\n\
         [health]\nenabled = false\n\
         [pools.blue]\nbalance = \"{balance}\"\nservers = [{}]\n[routing]\nactive = \"blue\"\n{routing}",
        servers.join(", ")
    ));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    (ups, sandbox, turnout)
}

fn count(bodies: &[String]) -> [usize; 3] {
    let mut c = [0; 3];
    for b in bodies {
        match b.trim() {
            "s1" => c[0] += 1,
            "s2" => c[1] += 1,
            "s3" => c[2] += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    c
}

async fn get_many(
    turnout: &turnout_testkit::process::Turnout,
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let client = http_client();
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = Request::get(turnout.url("/"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let a = send(&client, req.body(Full::new(Bytes::new())).expect("req"))
            .await
            .expect("answer");
        bodies.push(a.body);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_balancer_spreads_requests_as_configured() {
    // weighted: exact shares, 3:2:1.
    let (_ups, _sb, t) = balanced("weighted", [3, 2, 1], "").await;
    assert_eq!(count(&get_many(&t, 120, &[]).await), [60, 40, 20]);
    let status = t.status().await;
    assert_eq!(status["pools"]["blue"]["balance"], "weighted");
    assert_eq!(status["pools"]["blue"]["servers"][0]["weight"], 3);

    // ip_hash: one client keeps its server; clients behind a trusted proxy are told apart by
    // X-Forwarded-For, and spread.
    let (_ups, _sb, t) =
        balanced("ip_hash", [1, 1, 1], "trusted_proxies = [\"127.0.0.1\"]\n").await;
    let mut used = [0; 3];
    for i in 0..30 {
        let xff = format!("198.51.100.{i}");
        let c = count(&get_many(&t, 5, &[("x-forwarded-for", &xff)]).await);
        assert_eq!(
            c.iter().filter(|&&n| n > 0).count(),
            1,
            "client {xff} moved: {c:?}"
        );
        for (u, n) in used.iter_mut().zip(c) {
            *u += n;
        }
    }
    assert!(
        used.iter().all(|&n| n > 0),
        "30 clients on every server: {used:?}"
    );

    // random_two_choices: every server gets work.
    let (_ups, _sb, t) = balanced("random_two_choices", [1, 1, 1], "").await;
    let c = count(&get_many(&t, 150, &[]).await);
    assert!(c.iter().all(|&n| n >= 15), "{c:?}");

    // least_requests, weights 2:1:1: eight slow requests land 4, 2, 2 whatever order ties
    // break in (round robin would give 3, 3, 2), and the status shows them per server. Each
    // starts once the one before is in flight, so every pick sees the loads before it.
    let (ups, _sb, t) = balanced("least_requests", [2, 1, 1], "").await;
    let client = http_client();
    let mut slow = Vec::new();
    for i in 1..=8u64 {
        let client = client.clone();
        let url = t.url("/slow?ms=5000");
        slow.push(tokio::spawn(async move {
            turnout_testkit::client::get(&client, &url).await
        }));
        turnout_testkit::eventually(10, &format!("{i} slow requests in flight"), || async {
            t.status().await["pools"]["blue"]["in_flight"] == i
        })
        .await;
    }
    let status = t.status().await;
    let loads: Vec<u64> = (0..3)
        .map(|i| {
            status["pools"]["blue"]["servers"][i]["in_flight"]
                .as_u64()
                .expect("count")
        })
        .collect();
    assert_eq!(loads, [4, 2, 2], "{status}");
    for s in slow {
        let a = turnout_testkit::within(10, "slow answer", s)
            .await
            .expect("join")
            .expect("answer");
        assert_eq!(a.status, 200);
    }
    assert_eq!(ups.iter().map(TestUpstream::requests).sum::<u64>(), 8);

    // round_robin refuses weights, naming the server.
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(
        "[pools.blue]\nservers = [{ addr = \"127.0.0.1:3000\", weight = 2 }]\n[routing]\nactive = \"blue\"\n",
    );
    let config = sandbox.config_path().display().to_string();
    let out = sandbox
        .command(&["check", "--config", &config])
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("balance = \"weighted\""),
        "{stderr}"
    );
}
