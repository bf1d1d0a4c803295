//! The two-phase switch a fleet uses on each instance: prepare (probe now, hold under a token),
//! then commit (apply at once) or abort; every way a commit is refused leaves routing as it was.

use http::Method;
use turnout_testkit::client::admin;

use crate::BlueGreen;

/// Checks of `/health` every 100 ms that flip after one result.
const FAST_CHECKS: &str = "\n[health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";

async fn call(bg: &BlueGreen, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (s, j) = admin(&bg.admin_base(), Method::POST, path, Some(body), None).await;
    (s.as_u16(), j)
}

async fn prepare(bg: &BlueGreen, body: &str) -> (u16, serde_json::Value) {
    call(bg, "/v1/prepare", body).await
}

async fn commit(bg: &BlueGreen, token: &str) -> (u16, serde_json::Value) {
    call(bg, "/v1/commit", &format!("{{\"token\":{token:?}}}")).await
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

    let (s, j) = call(&bg, "/v1/abort", &format!("{{\"token\":{t:?}}}")).await;
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
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
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
