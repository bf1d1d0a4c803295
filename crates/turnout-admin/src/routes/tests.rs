//! The admin API without sockets: requests through `Router::oneshot`.

use super::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use turnout_config::Config;
use turnout_core::{Router as Routes, RoutingSnapshot};

fn app(token: Option<&str>) -> (Router, Control) {
    let config = Config::parse(
        "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nservers=[\"127.0.0.1:4000\"]\n\
         [routing]\nactive=\"blue\"\n",
        std::path::Path::new("t.toml"),
    )
    .expect("config");
    let control = Control::new(
        Routes::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot")),
        None,
    );
    (
        router(
            control.clone(),
            AdminPolicy::with_token(token.map(String::from)),
            None,
        ),
        control,
    )
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: &str,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

#[tokio::test]
async fn switch_rollback_and_status() {
    let (app, control) = app(None);
    let (s, j) = call(&app, "GET", "/v1/status", "", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["active"], "blue");
    assert_eq!(j["generation"], 0);
    assert_eq!(j["pools"]["green"]["servers"][0]["addr"], "127.0.0.1:4000");
    assert_eq!(j["pools"]["blue"]["in_flight"], 0);

    let (s, j) = call(&app, "POST", "/v1/rollback", "", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{j}");
    assert!(j["error"].as_str().expect("error").contains("no previous"));

    let (s, j) = call(&app, "POST", "/v1/switch", r#"{"to":"green"}"#, None).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(
        (j["active"].as_str(), j["previous"].as_str()),
        (Some("green"), Some("blue"))
    );
    assert_eq!(j["generation"], 1);
    assert_eq!(control.router().active().name().as_str(), "green");

    let (s, j) = call(&app, "POST", "/v1/rollback", "", None).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["active"], "blue");
    assert_eq!(j["generation"], 2);
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let (app, _) = app(None);
    let cases = [
        (
            "POST",
            "/v1/switch",
            r#"{"to":"purple"}"#,
            StatusCode::NOT_FOUND,
            "purple",
        ),
        (
            "POST",
            "/v1/switch",
            r#"{"to":"#,
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            "POST",
            "/v1/switch",
            r#"{}"#,
            StatusCode::BAD_REQUEST,
            "missing field `to`",
        ),
        (
            "POST",
            "/v1/switch",
            r#"{"to":"green","x":1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `x`",
        ),
        ("POST", "/v1/switch", "", StatusCode::BAD_REQUEST, "empty"),
        (
            "PUT",
            "/v1/pools/green",
            r#"{"servers":["nohost"]}"#,
            StatusCode::BAD_REQUEST,
            "nohost",
        ),
        (
            "PUT",
            "/v1/pools/b%20d",
            r#"{"servers":[]}"#,
            StatusCode::BAD_REQUEST,
            "invalid pool name",
        ),
        (
            "PUT",
            "/v1/pools/blue",
            r#"{"servers":[]}"#,
            StatusCode::CONFLICT,
            "takes new clients",
        ),
        (
            "GET",
            "/v1/nothing",
            "",
            StatusCode::NOT_FOUND,
            "GET /v1/nothing",
        ),
        (
            "GET",
            "/v1/switch",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "GET",
        ),
        (
            "GET",
            "/v1/pools/purple",
            "",
            StatusCode::NOT_FOUND,
            "purple",
        ),
    ];
    for (method, uri, body, want, text) in cases {
        let (s, j) = call(&app, method, uri, body, None).await;
        assert_eq!(s, want, "{method} {uri} {body}: {j}");
        let msg = j["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {j}"));
        assert!(msg.contains(text), "{method} {uri}: {msg:?} lacks {text:?}");
    }
}

#[tokio::test]
async fn put_pool_registers_a_new_container() {
    let (app, control) = app(None);
    let (s, j) = call(
        &app,
        "PUT",
        "/v1/pools/green",
        r#"{"servers":["127.0.0.1:4001","127.0.0.1:4002"]}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["pools"]["green"]["servers"][1]["addr"], "127.0.0.1:4002");
    assert_eq!(control.router().snapshot().generation, 1);
    let (s, j) = call(&app, "GET", "/v1/pools/green", "", None).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["pool"]["servers"][0]["addr"], "127.0.0.1:4001");
}

#[tokio::test]
async fn token_is_required_when_set() {
    let (app, control) = app(Some("s3cret"));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Basic s3cret"),
    ] {
        let (s, j) = call(&app, "POST", "/v1/switch", r#"{"to":"green"}"#, auth).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(j["error"].as_str().expect("error").contains("token"));
    }
    let (s, _) = call(&app, "GET", "/v1/status", "", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "status needs the token too");
    assert_eq!(control.router().active().name().as_str(), "blue");
    let (s, j) = call(
        &app,
        "POST",
        "/v1/switch",
        r#"{"to":"green"}"#,
        Some("Bearer s3cret"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{j}");
}

/// The fuzzing tier for the admin API (proptest, stable Rust, bounded cases): any body, JSON or
/// not, to any write route gets a JSON answer, never a 500 and never a panic; what is refused
/// changes nothing.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,80}",
            // JSON objects with the keys the routes read, and values of every type.
            proptest::collection::btree_map(
                prop_oneof![
                    Just("to"),
                    Just("force"),
                    Just("wait_drained"),
                    Just("ttl"),
                    Just("token"),
                    Just("weights"),
                    Just("servers"),
                    Just("rules"),
                    Just("mark"),
                    Just("steps"),
                    Just("bake"),
                    Just("max_error_rate"),
                    Just("message"),
                    Just("max_hold"),
                    Just("close_tunnels_after"),
                    Just("x"),
                ],
                prop_oneof![
                    Just(serde_json::json!("green")),
                    Just(serde_json::json!("blue")),
                    Just(serde_json::json!("400000000000years")),
                    Just(serde_json::json!(-1)),
                    Just(serde_json::json!(1e300)),
                    Just(serde_json::json!(null)),
                    Just(serde_json::json!(true)),
                    Just(serde_json::json!({"blue": 1, "green": -5})),
                    Just(serde_json::json!(["127.0.0.1:1", "nope"])),
                    Just(serde_json::json!([5, 50, 100])),
                    Just(serde_json::json!([{"header": "x", "equals": "1", "to": "green"}])),
                    "[ -~]{0,20}".prop_map(serde_json::Value::String),
                ],
                0..5,
            )
            .prop_map(|m| serde_json::to_string(&m).expect("json")),
        ]
    }

    fn route() -> impl Strategy<Value = (&'static str, &'static str)> {
        prop_oneof![
            Just(("POST", "/v1/switch")),
            Just(("POST", "/v1/rollback")),
            Just(("POST", "/v1/prepare")),
            Just(("POST", "/v1/commit")),
            Just(("POST", "/v1/abort")),
            Just(("PUT", "/v1/split")),
            Just(("PUT", "/v1/rules")),
            Just(("PUT", "/v1/pools/green")),
            Just(("PUT", "/v1/pools/..")),
            Just(("DELETE", "/v1/cache")),
            Just(("POST", "/v1/rollout")),
            Just(("POST", "/v1/rollout/abort")),
            Just(("POST", "/v1/maintenance")),
            Just(("DELETE", "/v1/maintenance")),
            Just(("POST", "/v1/pause")),
            Just(("POST", "/v1/resume")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_body_gets_a_json_answer_and_never_a_500((method, uri) in route(), body in body()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let (status, json) = rt.block_on(async {
                let (app, _control) = app(None);
                call(&app, method, uri, &body, None).await
            });
            prop_assert!(!status.is_server_error(), "{method} {uri} {body}: {status} {json}");
            if !status.is_success() {
                prop_assert!(json["error"].is_string(), "{json}");
            }
        }
    }
}

/// While another process takes over (an in-place upgrade) every change is refused with 409, a
/// `Retry-After` and `Connection: close` (so the retry may reach the new process); reads still
/// answer; after a thaw the change lands. Without an upgrader, `POST /v1/upgrade` is a 404.
#[tokio::test]
async fn a_frozen_control_refuses_changes_until_thawed() {
    let (app, control) = app(None);
    control.freeze("hand-over to pid 42".into()).await;
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/v1/switch")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"to":"green","force":true}"#))
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["connection"], "close");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("upgrading") && text.contains("pid 42"),
        "{text}"
    );
    let (s, j) = call(&app, "GET", "/v1/status", "", None).await;
    assert_eq!((s, j["active"].as_str()), (StatusCode::OK, Some("blue")));
    let (s, j) = call(&app, "POST", "/v1/rollout", r#"{"to":"green"}"#, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{j}");

    control.thaw();
    let (s, j) = call(
        &app,
        "POST",
        "/v1/switch",
        r#"{"to":"green","force":true}"#,
        None,
    )
    .await;
    assert_eq!(
        (s, j["active"].as_str()),
        (StatusCode::OK, Some("green")),
        "{j}"
    );
    let (s, j) = call(&app, "POST", "/v1/upgrade", "", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
}

/// Who an event names comes from what the caller says of itself: a label, never trusted for
/// anything else. What a careless or hostile caller sends is bounded and made printable.
#[test]
fn the_actor_named_in_events_is_bounded_and_printable() {
    let with = |pairs: &[(&str, &[u8])]| {
        let mut h = header::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                header::HeaderValue::from_bytes(v).expect("value"),
            );
        }
        actor(&h)
    };
    assert_eq!(with(&[]), "API");
    assert_eq!(with(&[("user-agent", b"turnout-cli/0.1.0")]), "CLI");
    assert_eq!(with(&[("user-agent", b"turnout-fleet/0.1.0")]), "fleet");
    assert_eq!(with(&[("x-turnout-client", b"dashboard")]), "dashboard");
    // Anything else from the page's header is the API, with its agent.
    assert_eq!(
        with(&[
            ("x-turnout-client", b"dashboard2"),
            ("user-agent", b"curl/8.5.0")
        ]),
        "API (curl/8.5.0)"
    );
    // Huge: cut at 60 characters. Control characters are dropped; an agent that is not text
    // at all is no agent.
    let huge = vec![b'a'; 10_000];
    assert_eq!(
        with(&[("user-agent", &huge)]),
        format!("API ({})", "a".repeat(60))
    );
    assert_eq!(with(&[("user-agent", b"evil\tagent\xff\xfe")]), "API");
    assert_eq!(with(&[("user-agent", b"curl\t/8")]), "API (curl/8)");
}
