//! `turnout deploy POOL --server ADDR...`: one deploy step on one instance, through its admin
//! API: register the new version's servers in the idle pool, wait for turnout's own health
//! checks to find them up, switch to it (or run the guarded rollout), wait for the old pool to
//! drain. Whatever step fails, the pool that served before serves on (but for a drain that
//! runs out of time, which comes after the switch), and the exit code names the step.

use std::process::ExitCode;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};

use crate::client::{self, AdminArgs, Outcome, SwitchArgs};
use crate::rollout::{Followed, Progress};

/// `turnout deploy`'s exit codes: one meaning each.
pub mod code {
    /// POOL takes every new client and the old pool drained (or, with --no-switch, POOL is
    /// registered and healthy).
    pub const DEPLOYED: u8 = 0;
    /// turnout refused a step (POOL serves traffic now, a server it cannot take, the switch's
    /// health gate, a rollout under way); what came before that step stays, nothing after.
    pub const REFUSED: u8 = 1;
    /// The admin API did not answer.
    pub const UNREACHABLE: u8 = 2;
    /// POOL is live, but the old pool still had requests or tunnels after --drain.
    pub const NOT_DRAINED: u8 = 3;
    /// POOL's servers were not all healthy within --wait-healthy; the old pool serves on.
    pub const NOT_HEALTHY: u8 = 4;
    /// The guarded rollout failed or was aborted: turnout put every client back on the old
    /// pool.
    pub const ROLLED_BACK: u8 = 5;
    /// A usage error: a bad flag, duration or missing argument; nothing was called.
    pub const USAGE: u8 = 64;
}

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help deploy`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The pool to deploy to: the idle one (e.g. green while blue serves).
    pub pool: String,
    /// A server of the new version, HOST:PORT (or https://HOST:PORT); once per server.
    #[arg(long = "server", required = true, value_name = "ADDR")]
    pub servers: Vec<String>,
    /// Switch every new client to POOL at once once it is healthy (the default).
    #[arg(long, conflicts_with_all = ["rollout", "no_switch"])]
    pub switch: bool,
    /// Run the guarded rollout ([rollout]'s steps and checks) instead of switching at once.
    #[arg(long, conflicts_with = "no_switch")]
    pub rollout: bool,
    /// Register and wait until healthy, then stop (a fleet's deploy step: switch every
    /// instance together with `turnout fleet switch` or `rollout`).
    #[arg(long)]
    pub no_switch: bool,
    /// How long POOL's servers may take to pass turnout's health checks.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub wait_healthy: String,
    /// After the switch, how long the old pool may take to finish what it has in flight.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub drain: String,
    /// Close the old pool's WebSockets this long after the switch (1001 Going Away), so that
    /// the drain can end.
    #[arg(long, value_name = "DURATION")]
    pub close_tunnels_after: Option<String>,
}

/// How often the health wait probes.
const POLL: Duration = Duration::from_secs(1);

/// `turnout deploy`.
pub fn run(admin: &AdminArgs, args: &DeployArgs) -> ExitCode {
    let wait_healthy = match flag_duration("--wait-healthy", &args.wait_healthy) {
        Ok(d) => d,
        Err(code) => return code,
    };
    for (flag, value) in [
        ("--drain", Some(&args.drain)),
        ("--close-tunnels-after", args.close_tunnels_after.as_ref()),
    ] {
        if let Some(Err(code)) = value.map(|v| flag_duration(flag, v)) {
            return code;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    ExitCode::from(runtime.block_on(deploy(admin, args, wait_healthy)))
}

fn flag_duration(flag: &str, value: &str) -> Result<Duration, ExitCode> {
    turnout_core::parse_duration(value).map_err(|e| {
        eprintln!("turnout deploy: {flag} {value:?}: {e}");
        ExitCode::from(code::USAGE)
    })
}

/// The steps; the exit code.
async fn deploy(admin: &AdminArgs, args: &DeployArgs, wait_healthy: Duration) -> u8 {
    let pool = args.pool.as_str();
    // 1. POOL must be idle: no share of new clients, nothing in flight.
    let status = match client::call_async(admin, Method::GET, "/v1/status", None).await {
        Outcome::Ok(v) => v,
        other => return failed("reading the status", other),
    };
    let live = status["active"].as_str().unwrap_or("?").to_owned();
    let weight = status["weights"][pool].as_i64().unwrap_or(0);
    let busy = status["pools"][pool]["in_flight"].as_u64().unwrap_or(0)
        + status["pools"][pool]["tunnels"].as_u64().unwrap_or(0);
    if live == pool || weight > 0 {
        eprintln!("turnout deploy: {pool} serves traffic now (weight {weight}; {live} is live): deploying into it would replace the servers that answer; deploy to the idle pool");
        return code::REFUSED;
    }
    if busy > 0 {
        eprintln!("turnout deploy: {pool} still has {busy} request(s) or tunnel(s) in flight from when it was live: let it drain (or roll back to it) first; nothing changed");
        return code::REFUSED;
    }
    eprintln!(
        "deploy: {live} is live; registering {pool}: {}",
        args.servers.join(", ")
    );

    // 2. Register the servers; turnout starts checking them at once.
    let path = format!("/v1/pools/{}", segment(pool));
    let body = json!({ "servers": args.servers });
    if let other @ (Outcome::Refused(..) | Outcome::Unreachable(_)) =
        client::call_async(admin, Method::PUT, &path, Some(body)).await
    {
        return failed(&format!("registering {pool}"), other);
    }

    // 3. Wait until turnout's own checks find every server up.
    match wait_until_healthy(admin, pool, wait_healthy).await {
        Ok(()) => eprintln!("deploy: {pool} is healthy"),
        Err(code) => {
            if code == code::NOT_HEALTHY {
                eprintln!("turnout deploy: {live} still serves; {pool}'s servers stay registered (the next deploy replaces them)");
            }
            return code;
        }
    }
    if args.no_switch {
        println!("{pool} registered and healthy; {live} still serves (--no-switch)");
        return code::DEPLOYED;
    }

    // 4. Switch, or roll out; both wait for the old pool to drain.
    if args.rollout {
        return rollout(admin, args, &live).await;
    }
    let options = SwitchArgs {
        force: false,
        wait_drained: Some(args.drain.clone()),
        close_tunnels_after: args.close_tunnels_after.clone(),
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = Progress::new();
    let outcome = client::switch_call(admin, Some(pool), &options, tty, |line| {
        progress.show(line);
    })
    .await;
    progress.clear();
    match outcome {
        Outcome::Ok(v) => {
            println!("switched: {pool} is live (generation {})", v["generation"]);
            drained_or_not(&v, &live)
        }
        other => failed(&format!("switching to {pool}"), other),
    }
}

/// The guarded rollout, followed to its end.
async fn rollout(admin: &AdminArgs, args: &DeployArgs, live: &str) -> u8 {
    let mut body = serde_json::Map::new();
    body.insert("to".into(), args.pool.clone().into());
    client::insert_switch_options(
        &mut body,
        false,
        Some(&args.drain),
        args.close_tunnels_after.as_deref(),
    );
    let started =
        match client::call_async(admin, Method::POST, "/v1/rollout", Some(body.into())).await {
            Outcome::Ok(v) => v,
            other => return failed("starting the rollout", other),
        };
    println!(
        "rollout {}: {live} -> {}, steps {}",
        started["id"], args.pool, started["policy"]["steps"]
    );
    match crate::rollout::follow(admin, started["id"].as_u64().unwrap_or(0)).await {
        Followed::Passed { drained: true } => {
            println!("drained: nothing in flight on {live}");
            code::DEPLOYED
        }
        Followed::Passed { drained: false } => {
            println!(
                "not drained: {live} still had requests or tunnels in flight after {}",
                args.drain
            );
            code::NOT_DRAINED
        }
        Followed::Ended => code::ROLLED_BACK,
        // The API stopped answering mid-rollout: the rollout goes on (or rolls back) without
        // this command.
        Followed::Lost(_) => code::UNREACHABLE,
    }
}

/// Exit 0 when the switch's answer says the old pool drained, 3 when not.
fn drained_or_not(v: &Value, live: &str) -> u8 {
    match v["drained"].as_bool() {
        Some(false) => {
            println!(
                "not drained: {live} still has requests or tunnels in flight: {}",
                v["message"].as_str().unwrap_or("?")
            );
            code::NOT_DRAINED
        }
        _ => {
            println!(
                "drained: nothing in flight on {live} ({} ms)",
                v["waited_ms"]
            );
            code::DEPLOYED
        }
    }
}

/// Has turnout probe every server of `pool` (its health path, on a fresh connection: what a
/// switch's gate does) until all pass, saying which do not meanwhile (a line rewritten at a
/// terminal, every 10 s in a CI log). The status's `healthy` alone would not do: a server
/// counts as up until its first check.
async fn wait_until_healthy(admin: &AdminArgs, pool: &str, within: Duration) -> Result<(), u8> {
    let started = tokio::time::Instant::now();
    let path = format!("/v1/pools/{}/probe", segment(pool));
    let mut progress = Progress::new();
    loop {
        let probe = match client::call_async(admin, Method::POST, &path, None).await {
            Outcome::Ok(v) => v,
            other => {
                progress.clear();
                return Err(failed(&format!("probing {pool}"), other));
            }
        };
        if probe["healthy"] == Value::Bool(true) {
            progress.clear();
            return Ok(());
        }
        let failing: Vec<String> = probe["servers"]
            .as_array()
            .map(|servers| {
                servers
                    .iter()
                    .filter(|s| s["ok"] != Value::Bool(true))
                    .map(|s| {
                        format!(
                            "{} ({})",
                            s["addr"].as_str().unwrap_or("?"),
                            s["error"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let waited = started.elapsed();
        if waited >= within {
            progress.clear();
            eprintln!(
                "turnout deploy: {pool} was not healthy within {}: {} of {} server(s) failing turnout's health check: {}",
                humantime::format_duration(within),
                failing.len(),
                probe["total"],
                failing.join("; ")
            );
            return Err(code::NOT_HEALTHY);
        }
        progress.show(&format!(
            "deploy: waiting for {pool} to be healthy: {} s of {} s; {} of {} passing; {}",
            waited.as_secs(),
            within.as_secs(),
            probe["passed"],
            probe["total"],
            failing.join("; ")
        ));
        tokio::time::sleep(POLL).await;
    }
}

/// A pool name as one path segment (a typo must not make a path).
fn segment(pool: &str) -> String {
    percent_encoding::utf8_percent_encode(pool, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Says which step failed and why; the exit code for it.
fn failed(step: &str, outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Ok(_) => code::DEPLOYED,
        Outcome::Refused(status, message) => {
            eprintln!("turnout deploy: {step}: refused ({status}): {message}");
            code::REFUSED
        }
        Outcome::Unreachable(message) => {
            eprintln!("turnout deploy: {step}: {message}");
            code::UNREACHABLE
        }
    }
}
