//! The deploy kit (docker/deploy.sh, switch.sh, rollback.sh) run end to end against a real
//! turnout, with the app started by the kit's command hooks (a Python static server here), so
//! no Docker engine is needed.

use std::path::Path;
use std::process::{Command, Output};

use turnout_testkit::client::{get, http_client};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::within;

use crate::BIN;

/// Starts the colour's app: a static server whose index names the colour and version.
const START: &str = r#"mkdir -p "$APPS/$COLOUR" && echo "$COLOUR $VERSION" > "$APPS/$COLOUR/index.html" && cd "$APPS/$COLOUR" && { python3 -m http.server "$PORT" --bind 127.0.0.1 >/dev/null 2>&1 & echo $! > "$APPS/$COLOUR.pid"; }"#;
/// Stops it, and notes which colour was stopped.
const STOP: &str = r#"echo "$COLOUR" >> "$APPS/stopped"; if [ -f "$APPS/$COLOUR.pid" ]; then kill "$(cat "$APPS/$COLOUR.pid")" || true; rm -f "$APPS/$COLOUR.pid"; fi"#;

fn script(name: &str) -> String {
    format!("{}/docker/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a kit script to its end (at most 60 s), off the test's runtime.
async fn run(mut cmd: Command) -> (Option<i32>, String) {
    let out: Output = within(60, "a deploy kit script", async {
        tokio::task::spawn_blocking(move || cmd.output().expect("run the script"))
            .await
            .expect("join")
    })
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn stopped(apps: &Path) -> String {
    std::fs::read_to_string(apps.join("stopped")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_switch_and_rollback_scripts_run_end_to_end() {
    let blue = TestUpstream::start("blue").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(
        &[("blue", &[blue.server()]), ("green", &[])],
        "blue",
        "",
    ));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let apps = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let admin = turnout.admin_url("");
    let kit = |name: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(script(name))
            .env("TURNOUT", BIN)
            .env("TURNOUT_ADMIN", &admin)
            .env("INSTANCES", &admin)
            .env_remove("TURNOUT_ADMIN_TOKEN")
            .env("GREEN_PORT", port.to_string())
            .env("APPS", apps.path())
            .env("DEPLOY_START_CMD", START)
            .env("DEPLOY_STOP_CMD", STOP)
            .env("STOP_CMD", STOP)
            .env("DEPLOY_HEALTH_TIMEOUT", "20")
            .env("DRAIN_TIMEOUT", "10s")
            // A plain fleet switch unless a case asks for steps (nothing loads this turnout,
            // so a step could never reach its minimum of requests).
            .env("ROLLOUT_STEPS", "100");
        cmd
    };

    // deploy.sh: green starts beside blue and is registered; blue still serves.
    let mut deploy = kit("deploy.sh");
    deploy.arg("v2");
    let (code, text) = run(deploy).await;
    assert_eq!(code, Some(0), "{text}");
    let j = turnout.status().await;
    assert_eq!(
        j["pools"]["green"]["servers"][0]["addr"],
        format!("127.0.0.1:{port}"),
        "{j}"
    );
    let body = |path: &str| {
        let url = turnout.url(path);
        async move { get(&http_client(), &url).await.expect("answer").body }
    };
    assert_eq!(body("/").await, "blue\n");

    // switch.sh with a failing smoke test: every instance straight back to blue, nothing
    // stopped.
    let mut smoke = kit("switch.sh");
    smoke.env("SMOKE_CMD", "false");
    let (code, text) = run(smoke).await;
    assert_eq!(code, Some(5), "{text}");
    assert_eq!(body("/").await, "blue\n");
    assert_eq!(stopped(apps.path()), "");

    // switch.sh, stepping through a guarded rollout: green serves, blue's app was stopped.
    let mut stepped = kit("switch.sh");
    stepped
        .env("ROLLOUT_STEPS", "50,100")
        .env("ROLLOUT_BAKE", "300ms")
        .env("ROLLOUT_ARGS", "--min-requests 0");
    let (code, text) = run(stepped).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("step 50%: pass"), "{text}");
    assert_eq!(body("/").await, "green v2\n");
    assert_eq!(stopped(apps.path()), "blue\n");

    // rollback.sh: blue serves again, green's app was stopped.
    let (code, text) = run(kit("rollback.sh")).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(body("/").await, "blue\n");
    assert_eq!(stopped(apps.path()), "blue\ngreen\n");

    // A deploy whose app never answers: refused after the timeout, and cleaned up.
    let mut broken = kit("deploy.sh");
    broken
        .arg("v3")
        .env("DEPLOY_START_CMD", "true")
        .env("DEPLOY_HEALTH_TIMEOUT", "2");
    let (code, text) = run(broken).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("did not become healthy"), "{text}");
    assert_eq!(stopped(apps.path()), "blue\ngreen\ngreen\n");
    assert_eq!(body("/").await, "blue\n");
}
