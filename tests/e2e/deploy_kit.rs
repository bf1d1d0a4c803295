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

    // deploy.sh: green starts beside blue (what an earlier deploy of green left is removed
    // first: the stop command runs once) and is registered; blue still serves.
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
    assert_eq!(stopped(apps.path()), "green\n");

    // switch.sh with a failing smoke test: every instance straight back to blue, nothing
    // stopped.
    let mut smoke = kit("switch.sh");
    smoke.env("SMOKE_CMD", "false");
    let (code, text) = run(smoke).await;
    assert_eq!(code, Some(5), "{text}");
    assert_eq!(body("/").await, "blue\n");
    assert_eq!(stopped(apps.path()), "green\n", "nothing more stopped");

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
    assert_eq!(stopped(apps.path()), "green\nblue\n");

    // rollback.sh: blue serves again, green's app was stopped.
    let (code, text) = run(kit("rollback.sh")).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(body("/").await, "blue\n");
    assert_eq!(stopped(apps.path()), "green\nblue\ngreen\n");

    // A deploy whose app never answers: refused after the timeout, and cleaned up (the stop
    // command before the start, and once more after).
    let mut broken = kit("deploy.sh");
    broken
        .arg("v3")
        .env("DEPLOY_START_CMD", "true")
        .env("DEPLOY_HEALTH_TIMEOUT", "2");
    let (code, text) = run(broken).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("did not become healthy"), "{text}");
    assert_eq!(stopped(apps.path()), "green\nblue\ngreen\ngreen\ngreen\n");
    assert_eq!(body("/").await, "blue\n");
}

/// A stand-in for `docker` that keeps containers by name as Docker does (a stopped container
/// keeps its name until `docker rm`): `run -d --name N -p 127.0.0.1:PORT:8080 IMAGE:VERSION`
/// serves `N VERSION` on PORT with Python (or nothing, for a version that starts with
/// `broken`), `stop`, `rm [-f]`. Its containers live in `$DOCKER_STATE`, one directory each.
const STUB_DOCKER: &str = r#"#!/usr/bin/env bash
set -euo pipefail
state=${DOCKER_STATE:?}
echo "docker $*" >> "$state/calls"
cmd=$1; shift
case $cmd in
run)
    name='' port='' image=''
    while [ $# -gt 0 ]; do
        case $1 in
            -d) shift ;;
            --name) name=$2; shift 2 ;;
            -p) port=$(cut -d: -f2 <<<"$2"); shift 2 ;;
            *) image=$1; shift ;;
        esac
    done
    if [ -e "$state/c-$name" ]; then
        echo "docker: Error response from daemon: Conflict. The container name \"/$name\" is already in use." >&2
        exit 125
    fi
    mkdir -p "$state/c-$name/www"
    echo "$name ${image#*:}" > "$state/c-$name/www/index.html"
    echo running > "$state/c-$name/status"
    case ${image#*:} in
        broken*) ;;
        *) (cd "$state/c-$name/www" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
           echo $! > "$state/c-$name/pid" ;;
    esac
    echo "$name-0123456789" ;;
stop)
    for n in "$@"; do
        [ -e "$state/c-$n" ] || { echo "Error response from daemon: No such container: $n" >&2; exit 1; }
        if [ -f "$state/c-$n/pid" ]; then kill "$(cat "$state/c-$n/pid")" 2>/dev/null || true; rm -f "$state/c-$n/pid"; fi
        echo exited > "$state/c-$n/status"
        echo "$n"
    done ;;
rm)
    force=''
    if [ "${1:-}" = -f ]; then force=1; shift; fi
    for n in "$@"; do
        [ -e "$state/c-$n" ] || { echo "Error response from daemon: No such container: $n" >&2; exit 1; }
        if [ -z "$force" ] && [ "$(cat "$state/c-$n/status")" = running ]; then
            echo "Error response from daemon: cannot remove container $n: container is running: stop the container before removing or force remove" >&2
            exit 1
        fi
        if [ -f "$state/c-$n/pid" ]; then kill "$(cat "$state/c-$n/pid")" 2>/dev/null || true; fi
        rm -rf "${state:?}/c-$n"
        echo "$n"
    done ;;
*) echo "stub docker: '$cmd' is not supported here" >&2; exit 1 ;;
esac
"#;

/// A directory with the stub `docker` and `turnout` (this build), for the front of `PATH`,
/// and the stub's state; every app it started is stopped when dropped.
struct StubDocker {
    bin: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl StubDocker {
    fn new() -> StubDocker {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().expect("tempdir");
        let docker = bin.path().join("docker");
        std::fs::write(&docker, STUB_DOCKER).expect("write the stub");
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(BIN, bin.path().join("turnout")).expect("link turnout");
        StubDocker {
            bin,
            state: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `docker ARGS` through the stub.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new(self.bin.path().join("docker"))
            .args(args)
            .env("DOCKER_STATE", self.state.path())
            .output()
            .expect("run the stub")
    }

    /// The container's state: "running", "exited", or "" when there is none by that name.
    fn container(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.path().join(format!("c-{name}/status")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for StubDocker {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.state.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// turnout with blue live on an app the stub started (`app-blue v1` on `blue_port`) and an
/// empty green pool.
async fn blue_on_the_stub(
    stub: &StubDocker,
    blue_port: u16,
) -> (Sandbox, turnout_testkit::process::Turnout) {
    let out = stub.docker(&[
        "run",
        "-d",
        "--name",
        "app-blue",
        "-p",
        &format!("127.0.0.1:{blue_port}:8080"),
        "myapp:v1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(
        &[
            ("blue", &[format!("127.0.0.1:{blue_port}")]),
            ("green", &[]),
        ],
        "blue",
        "",
    ));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let url = turnout.url("/");
    turnout_testkit::eventually(20, "blue's app answers through turnout", || {
        let url = url.clone();
        async move {
            get(&http_client(), &url)
                .await
                .is_ok_and(|a| a.body == "app-blue v1\n")
        }
    })
    .await;
    (sandbox, turnout)
}

/// The README's deploy snippet, as printed, run with the stub `docker`: two deploys in a row,
/// one whose app never answers, and one over a container an old `docker stop` left. The live
/// version is never stopped, and no name is left in the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_deploy_snippet_never_stops_the_live_version() {
    let readme = std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR")))
        .expect("README.md");
    let flow = &readme[readme
        .find("## The deploy flow")
        .expect("the deploy flow section")..];
    let start = flow.find("```sh\n").expect("its first sh block") + "```sh\n".len();
    let snippet = &flow[start..start + flow[start..].find("\n```").expect("the block's end")];
    assert!(snippet.contains("docker run"), "{snippet}");
    let stub = StubDocker::new();
    let script = stub.state.path().join("deploy-snippet.sh");
    std::fs::write(&script, snippet).expect("write the snippet");
    let (blue_port, green_port) = (free_port(), free_port());
    let (_sandbox, turnout) = blue_on_the_stub(&stub, blue_port).await;
    let admin = turnout.admin_url("");
    let deploy = |version: &str, health_wait: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg(version)
            .env("PATH", stub.path())
            .env("DOCKER_STATE", stub.state.path())
            .env("TURNOUT_ADMIN", &admin)
            .env_remove("TURNOUT_ADMIN_TOKEN")
            .env("BLUE_PORT", blue_port.to_string())
            .env("GREEN_PORT", green_port.to_string())
            .env("HEALTH_WAIT", health_wait);
        cmd
    };
    let body = || {
        let url = turnout.url("/");
        async move { get(&http_client(), &url).await.expect("answer").body }
    };

    let (code, text) = run(deploy("v2", "30")).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(body().await, "app-green v2\n");
    assert_eq!(
        stub.container("app-blue"),
        "",
        "the old version removed: {text}"
    );

    let (code, text) = run(deploy("v3", "30")).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(body().await, "app-blue v3\n");
    assert_eq!(stub.container("app-green"), "");

    // Never healthy: removed, and blue (live) untouched.
    let (code, text) = run(deploy("broken4", "2")).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("never got healthy"), "{text}");
    assert_eq!(body().await, "app-blue v3\n");
    assert_eq!(stub.container("app-blue"), "running");
    assert_eq!(
        stub.container("app-green"),
        "",
        "the failed container removed"
    );

    // A container an old deploy stopped but did not remove, under the new colour's name.
    let out = stub.docker(&[
        "run",
        "-d",
        "--name",
        "app-green",
        "-p",
        &format!("127.0.0.1:{green_port}:8080"),
        "myapp:old",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(stub.docker(&["stop", "app-green"]).status.success());
    let (code, text) = run(deploy("v5", "30")).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(body().await, "app-green v5\n");
    assert_eq!(stub.container("app-blue"), "");
}

/// docker/deploy.sh and switch.sh with their default commands against the stub `docker`: a
/// name left by an earlier deploy is cleared, a colour that still has share is not replaced,
/// a failing app is removed and the live one never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_with_docker_itself_leaves_the_live_version_running() {
    let stub = StubDocker::new();
    let (blue_port, green_port) = (free_port(), free_port());
    let (_sandbox, turnout) = blue_on_the_stub(&stub, blue_port).await;
    let admin = turnout.admin_url("");
    let kit = |name: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(script(name))
            .env("PATH", stub.path())
            .env("DOCKER_STATE", stub.state.path())
            .env("TURNOUT_ADMIN", &admin)
            .env("INSTANCES", &admin)
            .env_remove("TURNOUT_ADMIN_TOKEN")
            .env("BLUE_PORT", blue_port.to_string())
            .env("GREEN_PORT", green_port.to_string())
            .env("DEPLOY_HEALTH_TIMEOUT", "20")
            .env("DRAIN_TIMEOUT", "10s")
            .env("ROLLOUT_STEPS", "100");
        cmd
    };
    let body = || {
        let url = turnout.url("/");
        async move { get(&http_client(), &url).await.expect("answer").body }
    };
    // A stopped container named app-green, from an earlier deploy.
    assert!(stub
        .docker(&[
            "run",
            "-d",
            "--name",
            "app-green",
            "-p",
            &format!("127.0.0.1:{green_port}:8080"),
            "myapp:old"
        ])
        .status
        .success());
    assert!(stub.docker(&["stop", "app-green"]).status.success());
    let mut deploy = kit("deploy.sh");
    deploy.arg("v2");
    let (code, text) = run(deploy).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(stub.container("app-green"), "running");
    assert_eq!(body().await, "app-blue v1\n");

    // green has share now (a canary by hand): deploy.sh refuses to replace it.
    let (status, json) = turnout_testkit::client::admin(
        &admin,
        http::Method::PUT,
        "/v1/split",
        Some(r#"{"weights":{"blue":90,"green":10}}"#),
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let mut again = kit("deploy.sh");
    again.arg("v3");
    let (code, text) = run(again).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("green is not idle"), "{text}");
    assert_eq!(
        stub.container("app-green"),
        "running",
        "the canary was left alone"
    );
    let (status, json) = turnout_testkit::client::admin(
        &admin,
        http::Method::POST,
        "/v1/switch",
        Some(r#"{"to":"blue"}"#),
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");

    // switch.sh: green live, blue removed (its name free).
    let (code, text) = run(kit("switch.sh")).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(body().await, "app-green v2\n");
    assert_eq!(stub.container("app-blue"), "");

    // A version that never answers: removed again, green untouched.
    let mut broken = kit("deploy.sh");
    broken.arg("broken3").env("DEPLOY_HEALTH_TIMEOUT", "2");
    let (code, text) = run(broken).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("did not become healthy"), "{text}");
    assert_eq!(stub.container("app-blue"), "");
    assert_eq!(stub.container("app-green"), "running");
    assert_eq!(body().await, "app-green v2\n");
}
