//! turnout started in-process: it forwards, switches, refuses a port in use with the key that
//! names it, and reports its drain when the shutdown future completes.

use turnout_testkit::client::{get, http_client};

use crate::harness::{Running, FAST_CHECKS};

#[tokio::test(start_paused = true)]
async fn run_serves_switches_and_drains_when_its_shutdown_completes() {
    let t = Running::start(FAST_CHECKS).await;
    t.wait_healthy("green").await;
    let client = http_client();
    let answer = get(&client, &t.url("/")).await.expect("through blue");
    assert_eq!(answer.status, 200);
    assert!(answer.body.starts_with("blue"), "{}", answer.body);
    t.switch("green").await;
    let answer = get(&client, &t.url("/")).await.expect("through green");
    assert!(answer.body.starts_with("green"), "{}", answer.body);
    assert_eq!(t.green.requests(), 1, "one request reached green");
    assert_eq!(t.status().await["active"], "green");
    drop(client);
    let drained = t.stop().await;
    assert!(drained.complete, "{drained:?}");
}

#[tokio::test]
async fn a_port_in_use_fails_the_start_naming_the_key() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"{}\"\n\n[pools.blue]\nservers = [\"127.0.0.1:9\"]\n\n[routing]\nactive = \"blue\"\n",
        taken.local_addr().expect("addr")
    );
    let config = turnout_config::Config::parse(&text, std::path::Path::new("<test>"))
        .expect("a valid config");
    let error = turnout::Listeners::bind(&config)
        .await
        .expect_err("the admin port is taken");
    assert_eq!(error.code(), 1, "{error}");
    assert!(error.to_string().contains("[server] admin"), "{error}");
}

#[tokio::test]
async fn a_state_file_that_is_no_state_fails_the_start_with_exit_65_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{ this is not json").expect("write");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[state]\nfile = {:?}\n\n[pools.blue]\nservers = [\"127.0.0.1:9\"]\n\n[routing]\nactive = \"blue\"\n",
        state.display().to_string()
    );
    let config = turnout_config::Config::parse(&text, std::path::Path::new("<test>"))
        .expect("a valid config");
    let listeners = turnout::Listeners::bind(&config).await.expect("bind");
    let error = turnout::run(config, listeners, std::future::pending())
        .await
        .expect_err("the state file is broken");
    assert_eq!(error.code(), 65, "{error}");
    assert!(error.to_string().contains("state.json"), "{error}");
}
