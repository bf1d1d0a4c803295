//! The two-phase switch a fleet uses on each instance: prepare (probe now, hold under a token),
//! then commit (apply at once) or abort; every way a commit is refused leaves routing as it was.

use crate::{BlueGreen, FAST_CHECKS};

async fn prepare(bg: &BlueGreen, body: &str) -> (u16, serde_json::Value) {
    bg.post("/v1/prepare", body).await
}

async fn commit(bg: &BlueGreen, token: &str) -> (u16, serde_json::Value) {
    bg.post("/v1/commit", &format!("{{\"token\":{token:?}}}"))
        .await
}

fn token(j: &serde_json::Value) -> String {
    j["token"].as_str().expect("a token").to_string()
}

#[tokio::test]
async fn prepare_changes_nothing_and_commit_switches() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    let (s, j) = prepare(&bg, r#"{"to":"green","ttl":"30s"}"#).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        (j["to"].as_str(), j["generation"].as_u64()),
        (Some("green"), Some(0))
    );
    assert_eq!(
        bg.body("/").await,
        "blue\n",
        "nothing changes before the commit"
    );

    let t = token(&j);
    let (s, j) = commit(&bg, &t).await;
    assert_eq!((s, j["active"].as_str()), (200, Some("green")), "{j}");
    assert!(
        bg.status().await.get("prepared").is_none(),
        "nothing pending after the commit"
    );
    assert_eq!(bg.body("/").await, "green\n");
    assert_eq!(bg.status().await["generation"], 1);

    // A token works once.
    let (s, j) = commit(&bg, &t).await;
    assert_eq!(s, 409, "{j}");
    assert_eq!(bg.status().await["generation"], 1);
}

#[tokio::test]
async fn prepare_to_an_unhealthy_pool_is_refused_naming_the_servers() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    bg.green.set_healthy(false);
    let (s, j) = prepare(&bg, r#"{"to":"green"}"#).await;
    assert_eq!(s, 409, "{j}");
    let msg = j["error"].as_str().expect("error");
    assert!(msg.contains(&bg.green.server()), "{msg}");
    let (s, j) = prepare(&bg, r#"{"to":"purple"}"#).await;
    assert_eq!(s, 404, "an unknown pool: {j}");
    let (s, j) = prepare(&bg, r#"{"to":"green","ttl":"forever"}"#).await;
    assert_eq!(s, 400, "{j}");
    assert!(j["error"].as_str().expect("error").contains("ttl"), "{j}");
    assert_eq!(bg.body("/").await, "blue\n");
}

#[tokio::test]
async fn an_aborted_or_expired_prepare_cannot_be_committed() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    let (_, j) = prepare(&bg, r#"{"to":"green"}"#).await;
    let t = token(&j);
    // One pending prepare at a time.
    let (s, j) = prepare(&bg, r#"{"to":"green"}"#).await;
    assert_eq!(s, 409, "{j}");
    assert!(j["error"].as_str().expect("error").contains(&t), "{j}");

    let (s, j) = bg.post("/v1/abort", &format!("{{\"token\":{t:?}}}")).await;
    assert_eq!((s, j["aborted"].as_str()), (200, Some(t.as_str())), "{j}");
    let (s, j) = commit(&bg, &t).await;
    assert_eq!(s, 409, "{j}");
    assert!(
        j["error"]
            .as_str()
            .expect("error")
            .contains("nothing was changed"),
        "{j}"
    );

    let (s, j) = prepare(&bg, r#"{"to":"green","ttl":"200ms"}"#).await;
    assert_eq!(s, 200, "{j}");
    // Expired when the status no longer lists it (its expiry is a rule of turnout-core's, tested
    // there in paused time).
    turnout_testkit::eventually(5, "the prepare expired", || async {
        bg.status().await.get("prepared").is_none()
    })
    .await;
    let (s, j) = commit(&bg, &token(&j)).await;
    assert_eq!(s, 409, "expired: {j}");
    turnout_testkit::eventually(5, "the expiry is logged", || async {
        bg.turnout.find_log("expired without a commit").is_some()
    })
    .await;
    assert_eq!(bg.body("/").await, "blue\n");
    assert_eq!(bg.status().await["generation"], 0);
}

#[tokio::test]
async fn a_commit_after_another_change_is_refused() {
    let bg = BlueGreen::start_with(FAST_CHECKS).await;
    let (_, j) = prepare(&bg, r#"{"to":"green"}"#).await;
    // Someone changes the routing between prepare and commit.
    bg.put_pool("canary", &[bg.blue.server()]).await;
    let (s, j) = commit(&bg, &token(&j)).await;
    assert_eq!(s, 409, "{j}");
    assert!(
        j["error"]
            .as_str()
            .expect("error")
            .contains("changed since"),
        "{j}"
    );
    assert_eq!(bg.body("/").await, "blue\n");
}

/// `GET /` through `bg`, with a `Cookie` header if given.
async fn get_with_cookie(bg: &BlueGreen, cookie: Option<&str>) -> turnout_testkit::client::Answer {
    let mut req = http::Request::get(bg.turnout.url("/"));
    if let Some(c) = cookie {
        req = req.header(http::header::COOKIE, c);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    turnout_testkit::client::send(&turnout_testkit::client::http_client(), req)
        .await
        .expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_marked_by_the_new_version_stays_on_it_where_the_switch_is_only_prepared() {
    let (a, b) = (
        BlueGreen::start_with(FAST_CHECKS).await,
        BlueGreen::start_with(FAST_CHECKS).await,
    );
    let body = r#"{"to":"green","mark":"f1a2b"}"#;
    let (s, ja) = prepare(&a, body).await;
    assert_eq!(s, 200, "{ja}");
    let (s, jb) = prepare(&b, body).await;
    assert_eq!(s, 200, "{jb}");

    // a commits first: its green responses hand out the mark.
    let (s, j) = commit(&a, &token(&ja)).await;
    assert_eq!(s, 200, "{j}");
    let answer = get_with_cookie(&a, None).await;
    assert_eq!(answer.body, "green\n");
    let cookie = answer
        .headers
        .get(http::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a Set-Cookie with the mark")
        .to_string();
    assert!(cookie.starts_with("turnout-mark=f1a2b;"), "{cookie}");

    // b has only prepared: the marked client goes to green, everyone else still to blue.
    assert_eq!(
        get_with_cookie(&b, Some("theme=dark; turnout-mark=f1a2b"))
            .await
            .body,
        "green\n"
    );
    assert_eq!(get_with_cookie(&b, None).await.body, "blue\n");
    assert_eq!(
        get_with_cookie(&b, Some("turnout-mark=other")).await.body,
        "blue\n"
    );
    assert_eq!(b.status().await["generation"], 0, "nothing changed on b");

    // b commits: green for everyone, and b hands out the mark too.
    let (s, j) = commit(&b, &token(&jb)).await;
    assert_eq!(s, 200, "{j}");
    let answer = get_with_cookie(&b, None).await;
    assert_eq!(answer.body, "green\n");
    assert!(answer.headers.contains_key(http::header::SET_COOKIE));

    // An aborted prepare takes its mark back.
    let (s, jc) = prepare(&b, r#"{"to":"blue","mark":"f9"}"#).await;
    assert_eq!(s, 200, "{jc}");
    assert_eq!(
        get_with_cookie(&b, Some("turnout-mark=f9")).await.body,
        "blue\n"
    );
    let (s, j) = b
        .post("/v1/abort", &format!("{{\"token\":{:?}}}", token(&jc)))
        .await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        get_with_cookie(&b, Some("turnout-mark=f9")).await.body,
        "green\n"
    );

    // A mark that is not cookie-safe is refused.
    let (s, j) = prepare(&a, r#"{"to":"blue","mark":"a b;c"}"#).await;
    assert_eq!(s, 400, "{j}");
}
