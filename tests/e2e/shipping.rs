//! Shipping it as operators expect (issue 30): JSON log lines, reload on SIGHUP and `turnout
//! reload`, and `turnout deploy`.

use std::process::Command;
use std::time::Duration;

use crate::{BlueGreen, BIN};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;

/// Every line on stderr, parsed; panics naming the first that is not one JSON object.
fn json_lines(logs: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    logs.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("not one JSON object per line ({other:?}): {l}\n{logs}"),
        })
        .collect()
}

/// `[log] format = "json"`: every line turnout writes, from start to shutdown, is one JSON
/// object with a timestamp, a level and a target; access lines carry the text line's fields,
/// for curl, Python's http.client, an aborted request and a hostile request id alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_access_fields() {
    let mut bg = BlueGreen::start_with("\n[log]\nformat = \"json\"\n").await;
    let url = bg.turnout.url("/orders/7?page=2");
    let curl = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg("X-Request-Id: forged\"id\\with\tstuff")
            .arg(&url)
            .output()
            .expect("run curl")
    });
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200", "{curl:?}");
    let python = tokio::task::block_in_place(|| {
        Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {})\n\
             c.request('DELETE', '/a%22b/%5C?x=1')\nr = c.getresponse()\nprint(r.status)\n",
                bg.turnout.proxy.port()
            ))
            .output()
            .expect("run python3")
    });
    assert_eq!(
        String::from_utf8_lossy(&python.stdout).trim(),
        "200",
        "{python:?}"
    );
    // A client that goes away before its answer (an HTTP/2 stream cancelled, as a browser
    // leaving a page does): logged as 499, "aborted".
    let slow_url = bg.turnout.url("/slow?ms=5000");
    let pending = tokio::spawn(async move {
        turnout_testkit::client::get(&turnout_testkit::client::h2c_client(), &slow_url).await
    });
    turnout_testkit::eventually(10, "the slow request reached blue", || async {
        bg.blue.requests() >= 3
    })
    .await;
    pending.abort();
    turnout_testkit::eventually(10, "the aborted request's line", || async {
        bg.turnout.logs().contains("\"status\":499")
    })
    .await;
    bg.turnout.signal("TERM");
    assert!(bg.turnout.wait_exit(20).await.success());

    let lines = json_lines(&bg.turnout.logs());
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line[key].is_string(), "no {key} in {line:?}");
        }
    }
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "turnout::access")
        .collect();
    assert_eq!(access.len(), 3, "{access:?}");
    let by_path = |path: &str| {
        access
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}: {access:?}"))
    };
    let first = by_path("/orders/7");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["status"], 200);
    assert_eq!(first["pool"], "blue");
    assert_eq!(first["route"], "split");
    assert_eq!(first["upstream"], bg.blue.server());
    assert!(first["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));
    assert!(first["ms"].is_f64(), "{first:?}");
    // The forged id from a client outside trusted_proxies was replaced: 32 hex digits.
    let id = first["request_id"].as_str().expect("an id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let python = by_path("/a%22b/%5C");
    assert_eq!(python["method"], "DELETE");
    let aborted = by_path("/slow");
    assert_eq!(aborted["status"], 499);
    assert_eq!(aborted["route"], "aborted");
    // The other lines are JSON too, their fields beside the message.
    let serving = lines
        .iter()
        .find(|l| l["message"] == "turnout is serving")
        .expect("the serving line");
    assert_eq!(serving["proxy"], bg.turnout.proxy.to_string());
    assert_eq!(serving["level"], "INFO");
}

/// A `[log] format` that is not one names the key, its line and the choices; nothing starts.
#[test]
fn a_bad_log_format_is_refused_naming_the_key() {
    let sandbox = Sandbox::new(BIN);
    let config = sandbox.config(&[("blue", &["127.0.0.1:9".to_string()])], "blue", "");
    for (value, shown) in [("\"xml\"", "\"xml\""), ("\"JSON\"", "\"JSON\""), ("1", "")] {
        sandbox.write_config(&format!("{config}\n[log]\nformat = {value}\n"));
        let out = sandbox.serve_to_exit();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{value}: {err}");
        assert!(
            err.contains("log.format") || err.contains("format"),
            "{value}: {err}"
        );
        assert!(err.contains(shown), "{value}: {err}");
    }
    sandbox.write_config(&format!(
        "{config}\n[log]\nformat = \"json\"\nlevel = \"debug\"\n"
    ));
    let out = sandbox.serve_to_exit();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("level"), "{err}");
}

// ---- Reload: SIGHUP and `turnout reload` ---------------------------------------------------

/// The pid after `pid=` on the first log line holding `needle` (the process a reload handed
/// over to), once there is one (at most 30 s).
async fn successor_from_log(turnout: &turnout_testkit::process::Turnout, needle: &str) -> u32 {
    let mut line = None;
    turnout_testkit::eventually(30, needle, || {
        line = turnout.find_log(needle);
        let found = line.is_some();
        async move { found }
    })
    .await;
    let line = line.expect("found");
    let at = line.find("pid=").expect("pid= on the line") + 4;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

/// SIGHUP under keep-alive load: the config file is read again by a new process that takes
/// over in place. The edit (blue's server replaced) takes effect; green, registered through
/// the API and left alone by the edit, keeps its servers; not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_an_edited_config_under_load_with_no_failed_request() {
    let bg = BlueGreen::start().await;
    // A deploy registered green's new server through the API.
    let green2 = TestUpstream::start("green").await;
    bg.put_pool("green", &[green2.server()]).await;
    let load = crate::rollout::Load::start(bg.turnout.url("/"), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The operator moves blue to a new server in the file, and reloads.
    let blue2 = TestUpstream::start("blue").await;
    let config = std::fs::read_to_string(bg.sandbox.config_path()).expect("config");
    let edited = config.replace(&bg.blue.server(), &blue2.server());
    assert_ne!(config, edited);
    bg.sandbox.write_config(&edited);
    let old_pid = bg.turnout.pid();
    bg.turnout.signal("HUP");
    let new_pid = successor_from_log(&bg.turnout, "upgrade: handed over").await;
    assert!(
        bg.turnout
            .find_log("SIGHUP: reloading the config file")
            .is_some(),
        "{}",
        bg.turnout.logs()
    );
    bg.turnout.adopt(new_pid);
    assert_ne!(new_pid, old_pid);
    // Requests keep coming for a while on the new process.
    let served_before = blue2.requests();
    turnout_testkit::eventually(10, "blue's new server answers", || async {
        blue2.requests() > served_before + 20
    })
    .await;
    let tally = load.finish().await;
    assert_eq!(
        tally.other, 0,
        "failed requests across the reload: {tally:?}"
    );
    assert!(tally.blue > 100, "{tally:?}");

    let status = bg.status().await;
    assert_eq!(status["process"]["pid"], new_pid, "{status}");
    let servers = |pool: &str| -> Vec<String> {
        status["pools"][pool]["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .map(|s| s["addr"].as_str().expect("addr").to_owned())
            .collect()
    };
    assert_eq!(
        servers("blue"),
        [blue2.server()],
        "the file's edit won for blue"
    );
    assert_eq!(
        servers("green"),
        [green2.server()],
        "the API's green survived"
    );
    assert!(
        bg.turnout
            .find_log("the config file's servers for this pool changed")
            .is_some_and(|l| l.contains("blue")),
        "{}",
        bg.turnout.logs()
    );
    // The state file records it: a restart keeps both.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bg.sandbox.state_path()).expect("state file"))
            .expect("JSON");
    assert_eq!(state["pools"]["blue"]["servers"][0], blue2.server());
    assert_eq!(state["config_pools"]["blue"]["servers"][0], blue2.server());
    assert_eq!(state["pools"]["green"]["servers"][0], green2.server());
}

/// `turnout reload` (and SIGHUP) with a config file that fails its check: exit 1 naming the
/// key and line, and the running process is untouched (same pid, same routing, serving). A
/// good file then reloads, exit 0, saying which process serves now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_bad_config_leaves_turnout_untouched_and_says_why() {
    let bg = BlueGreen::start().await;
    bg.switch("green").await;
    let good = std::fs::read_to_string(bg.sandbox.config_path()).expect("config");
    let admin = bg.admin_base();
    let reload = |sandbox: &Sandbox| {
        sandbox
            .command(&["reload", "--admin", &admin])
            .output()
            .expect("run turnout reload")
    };

    for (bad, names) in [
        (good.replace("[routing]", "[routing]\nbogus = 1"), "bogus"),
        (good.clone() + "\n[log]\nformat = \"xml\"\n", "log.format"),
        (
            good.replace("active = \"blue\"", "active = \"purple\""),
            "purple",
        ),
    ] {
        bg.sandbox.write_config(&bad);
        let out = tokio::task::block_in_place(|| reload(&bg.sandbox));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("422") && err.contains(names), "{names}: {err}");
        assert!(err.contains("serves on"), "{err}");
        let status = bg.status().await;
        assert_eq!(status["process"]["pid"], bg.turnout.pid());
        assert_eq!(status["active"], "green");
        assert_eq!(bg.body("/").await, "green\n");
    }
    // SIGHUP with the bad file: logged, nothing changes.
    bg.turnout.signal("HUP");
    turnout_testkit::eventually(20, "the failed SIGHUP's line", || async {
        bg.turnout
            .find_log("SIGHUP: not reloaded")
            .is_some_and(|l| l.contains("purple"))
    })
    .await;
    assert_eq!(bg.status().await["process"]["pid"], bg.turnout.pid());

    // A body is refused (a caller that meant /v1/upgrade hears so); nothing runs.
    let (status, json) = turnout_testkit::client::admin(
        &admin,
        http::Method::POST,
        "/v1/reload",
        Some(r#"{"binary":"/bin/sh"}"#),
        None,
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert!(json.to_string().contains("/v1/upgrade"), "{json}");

    bg.sandbox.write_config(&good);
    let out = tokio::task::block_in_place(|| reload(&bg.sandbox));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_pid: u32 = text
        .split("reloaded: pid ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text}"));
    bg.turnout.adopt(new_pid);
    let status = bg.status().await;
    assert_eq!(status["process"]["pid"], new_pid);
    // The state file's switch survives the reload: green is still live.
    assert_eq!(status["active"], "green");
    assert_eq!(bg.body("/").await, "green\n");
}

// ---- `turnout deploy` ----------------------------------------------------------------------

/// Runs `turnout deploy ARGS` against `bg`'s admin API: the exit code, stdout and stderr.
async fn deploy(bg: &BlueGreen, args: &[&str]) -> (Option<i32>, String, String) {
    let admin = bg.admin_base();
    let mut all = vec!["deploy"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--admin", &admin]);
    let out = tokio::task::block_in_place(|| {
        bg.sandbox
            .command(&all)
            .output()
            .expect("run turnout deploy")
    });
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The happy path, as a deploy job runs it: a new green server registered, found healthy by
/// turnout's checks, switched to, blue drained; exit 0. Under load, no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_registers_waits_switches_and_drains() {
    let bg = BlueGreen::start_with(crate::FAST_CHECKS).await;
    let v2 = TestUpstream::start("green").await;
    let load = crate::rollout::Load::start(bg.turnout.url("/"), 2);
    let (code, out, err) = deploy(
        &bg,
        &[
            "green",
            "--server",
            &v2.server(),
            "--wait-healthy",
            "20s",
            "--drain",
            "20s",
        ],
    )
    .await;
    let tally = load.finish().await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("switched: green is live"), "{out}");
    assert!(out.contains("drained: nothing in flight on blue"), "{out}");
    assert!(err.contains("green is healthy"), "{err}");
    assert_eq!(tally.other, 0, "{tally:?}");
    let status = bg.status().await;
    assert_eq!(status["active"], "green");
    assert_eq!(status["pools"]["green"]["servers"][0]["addr"], v2.server());
    assert_eq!(bg.body("/").await, "green\n");
    assert!(v2.requests() > 0);

    // The next deploy goes the other way; deploying into the live pool is refused (exit 1).
    let (code, _, err) = deploy(&bg, &["green", "--server", &v2.server()]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("green serves traffic now"), "{err}");
    // --no-switch: registered and healthy, the live pool untouched (a fleet's deploy step).
    let (code, out, err) =
        deploy(&bg, &["blue", "--server", &bg.blue.server(), "--no-switch"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("green still serves"), "{out}");
    assert_eq!(bg.status().await["active"], "green");
}

/// Every failure path leaves the old pool serving, with its own exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_failures_each_have_their_exit_code_and_leave_blue_serving() {
    let bg = BlueGreen::start_with(&format!(
        "{}\n[rollout]\nsteps = [50, 100]\nbake = \"300ms\"\nmin_requests = 10\nmax_wait = \"20s\"\n",
        crate::FAST_CHECKS
    ))
    .await;
    bg.wait_healthy("green").await;
    let blue_serves = || async {
        let status = bg.status().await;
        assert_eq!(status["active"], "blue", "{status}");
        assert_eq!(bg.body("/").await, "blue\n");
    };

    // 4: never healthy within --wait-healthy (nothing listens there).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let (code, _, err) = deploy(&bg, &["green", "--server", &dead, "--wait-healthy", "1s"]).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("not healthy within 1s") && err.contains(&dead),
        "{err}"
    );
    assert!(err.contains("blue still serves"), "{err}");
    blue_serves().await;

    // 1: a server turnout cannot take, named in the refusal.
    let (code, _, err) = deploy(&bg, &["green", "--server", "not a server"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("registering green") && err.contains("400"),
        "{err}"
    );
    blue_serves().await;

    // 2: the admin API does not answer.
    let out = tokio::task::block_in_place(|| {
        bg.sandbox
            .command(&[
                "deploy",
                "green",
                "--server",
                &bg.green.server(),
                "--admin",
                "http://127.0.0.1:1",
            ])
            .output()
            .expect("run")
    });
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading the status"));

    // 64: usage errors, nothing called.
    for args in [
        vec!["green", "--server", "127.0.0.1:1", "--wait-healthy", "soon"],
        vec!["green"],
        vec!["green", "--server", "127.0.0.1:1", "--rollout", "--switch"],
        vec!["green", "--server", "127.0.0.1:1", "--drain", "-1s"],
    ] {
        let (code, _, err) = deploy(&bg, &args).await;
        assert_eq!(code, Some(64), "{args:?}: {err}");
    }
    blue_serves().await;

    // 5: a guarded rollout of a green that fails half its requests: turnout rolls back.
    bg.green.set_fail_percent(50);
    let load = crate::rollout::Load::start(bg.turnout.url("/"), 3);
    let (code, out, err) =
        deploy(&bg, &["green", "--server", &bg.green.server(), "--rollout"]).await;
    load.finish().await;
    assert_eq!(code, Some(5), "{out}{err}");
    assert!(out.contains("failed: back on blue"), "{out}");
    blue_serves().await;
    bg.green.set_fail_percent(0);

    // 3: switched, but a slow request on blue outlasts --drain.
    bg.blue.set_delay_ms(3000);
    let slow_url = bg.turnout.url("/slow");
    let slow = tokio::spawn(async move {
        turnout_testkit::client::get(&turnout_testkit::client::http_client(), &slow_url).await
    });
    turnout_testkit::eventually(5, "the slow request in flight", || async {
        bg.status().await["pools"]["blue"]["in_flight"] == 1
    })
    .await;
    let (code, out, err) = deploy(
        &bg,
        &["green", "--server", &bg.green.server(), "--drain", "300ms"],
    )
    .await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains("not drained"), "{out}");
    assert_eq!(bg.status().await["active"], "green");
    // The slow request still finishes where it started.
    let answer = slow.await.expect("task").expect("the slow request");
    assert_eq!(answer.body, "blue\n");
}

/// `turnout help deploy` lists the exit codes.
#[test]
fn deploy_help_lists_its_exit_codes() {
    let out = Command::new(BIN)
        .args(["help", "deploy"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "64 "] {
        assert!(text.contains(&format!("\n  {code}")), "{code}: {text}");
    }
}

/// `POST /v1/pools/NAME/probe` (what `turnout deploy` waits on), as curl sends it: every
/// server checked now; an unknown or tricked name is a 404 naming it, a GET is 405, and a probe
/// changes no routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_probe_checks_servers_now_and_refuses_misuse() {
    let bg = BlueGreen::start().await;
    let curl = |method: &str, path: &str| {
        let url = format!("{}{path}", bg.admin_base());
        let out = tokio::task::block_in_place(|| {
            Command::new("curl")
                .args(["-sS", "-X", method, "-w", "\n%{http_code}", &url])
                .output()
                .expect("run curl")
        });
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("a status line");
        (code.to_owned(), body.to_owned())
    };
    let (code, body) = curl("POST", "/v1/pools/green/probe");
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["healthy"], true, "{v}");
    assert_eq!(v["servers"][0]["addr"], bg.green.server());

    bg.green.kill();
    let (code, body) = curl("POST", "/v1/pools/green/probe");
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["healthy"], false, "{v}");
    assert_eq!(v["passed"], 0);
    assert!(
        v["servers"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{v}"
    );

    for (method, path, want) in [
        ("POST", "/v1/pools/purple/probe", "404"),
        ("POST", "/v1/pools/..%2Fstatus/probe", "404"),
        ("POST", "/v1/pools/green%00/probe", "404"),
        ("GET", "/v1/pools/green/probe", "405"),
    ] {
        let (code, body) = curl(method, path);
        assert_eq!(code, want, "{method} {path}: {body}");
    }
    let status = bg.status().await;
    assert_eq!(status["active"], "blue");
    assert_eq!(status["generation"], 0);
}

/// `POST /v1/reload` on a turnout without `[state] file`: 404 saying why (a reload is an
/// in-place upgrade, whose new process reads the routing from the state file), and the running
/// process goes on serving, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_a_state_file_is_refused_saying_why() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let sandbox = Sandbox::new(BIN);
    let config = sandbox.config(
        &[
            ("blue", &[blue.addr.to_string()]),
            ("green", &[green.addr.to_string()]),
        ],
        "blue",
        "",
    );
    let state = format!(
        "[state]\nfile = {:?}\n\n",
        sandbox.state_path().display().to_string()
    );
    assert!(config.contains(&state), "{config}");
    sandbox.write_config(&config.replace(&state, ""));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let pid = turnout.status().await["process"]["pid"].clone();
    let (code, answer) = turnout_testkit::client::admin(
        &turnout.admin_url(""),
        http::Method::POST,
        "/v1/reload",
        None,
        None,
    )
    .await;
    assert_eq!(code, 404, "{answer}");
    assert!(answer.to_string().contains("[state] file"), "{answer}");
    assert_eq!(turnout.status().await["process"]["pid"], pid);
    let answer =
        turnout_testkit::client::get(&turnout_testkit::client::http_client(), &turnout.url("/"))
            .await
            .expect("an answer");
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("blue"), "{}", answer.body);
}
