//! `turnout status|switch|rollback|split`: thin clients of the admin API, for people and scripts.
//! They say exactly what curl would get; exit 0 on success, 1 when the API refused, 2 when it
//! could not be reached.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help ...`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin API's base URL.
    #[arg(long, env = "TURNOUT_ADMIN", default_value = "http://127.0.0.1:9901")]
    pub admin: String,
    /// The admin token, when the server requires one.
    #[arg(long, env = "TURNOUT_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `turnout status`: the routing, the pools and the process, or the raw JSON with `json`.
pub fn status(args: &AdminArgs, json: bool) -> ExitCode {
    finish(call(args, Method::GET, "/v1/status", None), |v| {
        if json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print_status(v);
        }
    })
}

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help ...`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// Switch even if the target pool fails its health probe.
    #[arg(long)]
    pub force: bool,
    /// Return only once the pool switched away from has no request or WebSocket in flight, or
    /// this long has passed ("30s"); exit 3 if it had not drained by then.
    #[arg(long, value_name = "DURATION")]
    pub wait_drained: Option<String>,
    /// Close the WebSockets still open on the pool switched away from after this long ("60s"):
    /// each side gets a close frame 1001 (Going Away). With --wait-drained longer than it, the
    /// command returns once they are closed and the old app can stop.
    #[arg(long, value_name = "DURATION")]
    pub close_tunnels_after: Option<String>,
}

/// `turnout switch POOL` (with `pool`) or `turnout rollback` (without). With --wait-drained
/// the call lasts as long as the wait it asks for (plus the usual bound), and says meanwhile
/// what is still in flight on the pool being drained.
pub fn switch(args: &AdminArgs, pool: Option<&str>, options: &SwitchArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let outcome = runtime.block_on(switch_call(args, pool, options, tty, |line| {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }));
    if tty {
        // The progress line, rubbed out.
        eprint!("\r\x1b[2K");
    }
    let mut drained = true;
    let code = finish(outcome, |v| {
        println!("{}", summary(v));
        match v["drained"].as_bool() {
            Some(true) => println!(
                "drained: nothing in flight on the old pool ({} ms)",
                v["waited_ms"]
            ),
            Some(false) => {
                drained = false;
                println!("not drained: {}", v["message"].as_str().unwrap_or("?"));
            }
            None => {}
        }
    });
    if code == ExitCode::SUCCESS && !drained {
        return ExitCode::from(3);
    }
    code
}

/// The call behind `turnout switch` and `turnout rollback`, on the caller's runtime. With
/// --wait-drained it is bounded by the wait plus [`ADMIN_TIMEOUT`], and `progress` gets a line
/// on what is still in flight on the pool being drained: every second when `tty`, every 10 s
/// otherwise (a CI log).
pub async fn switch_call(
    args: &AdminArgs,
    pool: Option<&str>,
    options: &SwitchArgs,
    tty: bool,
    progress: impl FnMut(&str),
) -> Outcome {
    let mut body = serde_json::Map::new();
    if let Some(pool) = pool {
        body.insert("to".into(), pool.into());
    }
    insert_switch_options(
        &mut body,
        options.force,
        options.wait_drained.as_deref(),
        options.close_tunnels_after.as_deref(),
    );
    let path = if pool.is_some() {
        "/v1/switch"
    } else {
        "/v1/rollback"
    };
    // A wait the server would refuse is its to refuse (400, naming the field).
    let wait = options
        .wait_drained
        .as_deref()
        .and_then(|w| turnout_core::parse_duration(w).ok());
    let timeout = ADMIN_TIMEOUT + wait.unwrap_or_default();
    let client = admin_client();
    let call = request(
        &client,
        &args.admin,
        args.token.as_deref(),
        Method::POST,
        path,
        Some(body.into()),
        timeout,
    );
    let Some(wait) = wait else {
        return call.await;
    };
    // The pool being drained is the one live before the call.
    let before = status_with(&client, args).await;
    let old = match &before {
        Outcome::Ok(v) => v["active"].as_str().map(str::to_owned),
        _ => None,
    };
    tokio::pin!(call);
    let progress = drain_progress(
        &client,
        args,
        old,
        pool.map(str::to_owned),
        wait,
        tty,
        progress,
    );
    tokio::select! {
        outcome = &mut call => outcome,
        () = progress => call.await,
    }
}

/// `GET /v1/status` with `client`.
async fn status_with(client: &AdminClient, args: &AdminArgs) -> Outcome {
    request(
        client,
        &args.admin,
        args.token.as_deref(),
        Method::GET,
        "/v1/status",
        None,
        ADMIN_TIMEOUT,
    )
    .await
}

/// While a switch waits for `old` to drain: what is still in flight there, on stderr: every
/// second on one rewritten line at a terminal, a line every 10 s otherwise (a CI log). Never
/// ends on its own (the call it accompanies does).
async fn drain_progress(
    client: &AdminClient,
    args: &AdminArgs,
    old: Option<String>,
    to: Option<String>,
    wait: Duration,
    tty: bool,
    mut out: impl FnMut(&str),
) {
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let Outcome::Ok(v) = status_with(client, args).await else {
            continue;
        };
        // A rollback drains the pool that was live; a switch to the live pool drains the one
        // before it.
        let pool = match (&old, &to) {
            (Some(o), Some(t)) if o != t => o.clone(),
            _ => v["previous"].as_str().unwrap_or("?").to_owned(),
        };
        let p = &v["pools"][&pool];
        let line = format!(
            "waiting for {pool} to drain: {} request(s) and {} WebSocket(s) in flight ({}s of {}s)",
            p["in_flight"],
            p["tunnels"],
            started.elapsed().as_secs(),
            wait.as_secs()
        );
        out(&line);
    }
}

/// The options a switch, a rollback and a rollout's last step share, as the admin API takes
/// them (absent when not given).
pub fn insert_switch_options(
    body: &mut serde_json::Map<String, Value>,
    force: bool,
    wait_drained: Option<&str>,
    close_tunnels_after: Option<&str>,
) {
    if force {
        body.insert("force".into(), true.into());
    }
    if let Some(wait) = wait_drained {
        body.insert("wait_drained".into(), wait.into());
    }
    if let Some(after) = close_tunnels_after {
        body.insert("close_tunnels_after".into(), after.into());
    }
}

/// `POOL=WEIGHT` from the command line.
pub fn parse_weight(arg: &str) -> Result<(String, i64), String> {
    let (pool, weight) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?}: write POOL=WEIGHT, e.g. green=5"))?;
    let weight = weight
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("{arg:?}: the weight must be a whole number, e.g. green=5"))?;
    Ok((pool.trim().to_owned(), weight))
}

/// The weights as the admin API takes them.
pub fn weights_json(weights: &[(String, i64)]) -> Value {
    Value::Object(
        weights
            .iter()
            .map(|(p, w)| (p.clone(), Value::from(*w)))
            .collect(),
    )
}

/// `turnout split blue=95 green=5`.
pub fn split(args: &AdminArgs, weights: &[(String, i64)], force: bool) -> ExitCode {
    let body = serde_json::json!({ "weights": weights_json(weights), "force": force });
    finish(call(args, Method::PUT, "/v1/split", Some(body)), |v| {
        println!("{}", summary(v));
    })
}

/// `on` or `off`.
#[allow(missing_docs)] // as above: a doc comment on a value is its help
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// The call that `turnout maintenance on|off` makes.
pub fn maintenance_call(state: OnOff, message: Option<&str>) -> (Method, Option<Value>) {
    match state {
        OnOff::On => (
            Method::POST,
            Some(message.map_or_else(
                || serde_json::json!({}),
                |m| serde_json::json!({ "message": m }),
            )),
        ),
        OnOff::Off => (Method::DELETE, None),
    }
}

/// `turnout maintenance on|off [--message M]`.
pub fn maintenance(args: &AdminArgs, state: OnOff, message: Option<&str>) -> ExitCode {
    let (method, body) = maintenance_call(state, message);
    finish(call(args, method, "/v1/maintenance", body), |v| {
        println!("{}", gates_text(v));
    })
}

/// `turnout pause [--max-hold D]`.
pub fn pause(args: &AdminArgs, max_hold: Option<&str>) -> ExitCode {
    let body = max_hold.map(|d| serde_json::json!({ "max_hold": d }));
    finish(call(args, Method::POST, "/v1/pause", body), |v| {
        println!("{}", gates_text(v));
    })
}

/// `turnout resume`.
pub fn resume(args: &AdminArgs) -> ExitCode {
    finish(call(args, Method::POST, "/v1/resume", None), |v| {
        println!("{}", gates_text(v));
    })
}

// clap turns doc comments into the command line's help: these are documented by their help
// text (`turnout help ...`), and a doc comment added here would change it.
#[allow(missing_docs)]
#[derive(Debug, clap::Subcommand)]
pub enum PoolCommand {
    /// Replace NAME's servers (HOST:PORT, optionally `HOST:PORT weight=N`, or https://HOST:PORT);
    /// turnout starts checking them at once. Refused for the live pool if none of them is up.
    Set {
        name: String,
        #[arg(required = true, value_name = "SERVER")]
        servers: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show NAME's servers and their health.
    Show {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check NAME's servers now, as a switch to it would (nothing changes): exit 0 when it
    /// could take the traffic, 1 with the reason when not.
    Probe {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `turnout pool set|show|probe`.
pub fn pool(command: &PoolCommand) -> ExitCode {
    match command {
        PoolCommand::Set {
            name,
            servers,
            admin: args,
        } => {
            let body = serde_json::json!({ "servers": servers });
            let path = format!("/v1/pools/{}", encode_segment(name));
            finish(call(args, Method::PUT, &path, Some(body)), |v| {
                println!("{}", summary(v));
                print_pool(name, &v["pools"][name]);
            })
        }
        PoolCommand::Show { name, admin: args } => {
            let path = format!("/v1/pools/{}", encode_segment(name));
            finish(call(args, Method::GET, &path, None), |v| {
                print_pool(name, &v["pool"])
            })
        }
        PoolCommand::Probe { name, admin: args } => {
            // A prepared switch probes every server of the pool, as the switch itself would;
            // it is dropped at once, so nothing changes.
            let body = serde_json::json!({ "to": name, "ttl": "5s" });
            match call(args, Method::POST, "/v1/prepare", Some(body)) {
                Outcome::Ok(v) => {
                    let token = v["token"].as_str().unwrap_or_default().to_owned();
                    let _ = call(
                        args,
                        Method::POST,
                        "/v1/abort",
                        Some(serde_json::json!({ "token": token })),
                    );
                    println!("{name}: healthy; a switch to it would be taken");
                    ExitCode::SUCCESS
                }
                other => report_failure(other),
            }
        }
    }
}

/// A pool name as one path segment (names are `[a-z0-9_-]`, but a typo must not make a path).
fn encode_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn print_pool(name: &str, pool: &Value) {
    let servers = pool["servers"].as_array().cloned().unwrap_or_default();
    println!("{name}: {} server(s)", servers.len());
    for s in servers {
        let state = match (s["healthy"].as_bool(), s["ejected"].as_bool()) {
            (_, Some(true)) => "ejected".to_owned(),
            (Some(true), _) => "up".to_owned(),
            (Some(false), _) => format!(
                "down: {}",
                s["last_error"].as_str().unwrap_or("failing its checks")
            ),
            _ => "unknown".to_owned(),
        };
        println!("  {}  {state}", s["addr"].as_str().unwrap_or("?"));
    }
}

/// `turnout upgrade [--binary PATH]`: answered once the new process serves, or failed.
pub fn upgrade(args: &AdminArgs, binary: Option<&std::path::Path>) -> ExitCode {
    let body = binary.map(|b| {
        let absolute = std::path::absolute(b).unwrap_or_else(|_| b.to_path_buf());
        serde_json::json!({ "binary": absolute })
    });
    // The new process's start, plus its hand-over.
    let outcome = call_within(args, Method::POST, "/v1/upgrade", body, UPGRADE_TIMEOUT);
    finish(outcome, |v| {
        println!(
            "upgraded: pid {} handed over to pid {} (turnout {}, process generation {}) in {} ms; pid {} finishes what is in flight and exits",
            v["from_pid"], v["pid"], v["version"].as_str().unwrap_or("?"), v["generation"], v["took_ms"], v["from_pid"]
        );
    })
}

/// `turnout reload`: the running turnout checks its config file and, if it passes, hands over
/// to a new process of its own binary that reads it (exit 0); a file that fails its check is
/// named with why, and nothing changes (exit 1).
pub fn reload(args: &AdminArgs) -> ExitCode {
    let outcome = call_within(args, Method::POST, "/v1/reload", None, UPGRADE_TIMEOUT);
    finish(outcome, |v| {
        println!(
            "reloaded: pid {} (turnout {}, process generation {}) serves with the config file as it is now, in {} ms; pid {} finishes what is in flight and exits",
            v["pid"], v["version"].as_str().unwrap_or("?"), v["generation"], v["took_ms"], v["from_pid"]
        );
    })
}

/// How long `turnout upgrade` waits for its answer.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(90);

/// Maintenance and pause, as one line: "maintenance on since ...", "paused since ... (3 held)",
/// or "serving".
pub fn gates_text(v: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = v.get("maintenance").filter(|m| m.is_object()) {
        parts.push(format!(
            "maintenance ON since {}: {:?}",
            m["since"].as_str().unwrap_or("?"),
            m["message"].as_str().unwrap_or("")
        ));
    }
    if let Some(p) = v.get("paused").filter(|p| p.is_object()) {
        parts.push(format!(
            "PAUSED since {} ({} held now, {} held in all, {} shed; each held at most {} ms)",
            p["since"].as_str().unwrap_or("?"),
            p["held"],
            p["held_total"],
            p["shed_total"],
            p["max_hold_ms"]
        ));
    }
    if parts.is_empty() {
        format!("serving (generation {})", v["generation"])
    } else {
        format!("{} (generation {})", parts.join("; "), v["generation"])
    }
}

/// How an admin call ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 2xx, with its JSON.
    Ok(Value),
    /// The API refused: its status and its error.
    Refused(StatusCode, String),
    /// No answer: why (connection refused, timeout).
    Unreachable(String),
}

fn finish(outcome: Outcome, on_ok: impl FnOnce(&Value)) -> ExitCode {
    match outcome {
        Outcome::Ok(v) => {
            on_ok(&v);
            ExitCode::SUCCESS
        }
        other => report_failure(other),
    }
}

/// Says why a call failed, and the exit code for it: 1 refused, 2 unreachable.
pub fn report_failure(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Ok(_) => ExitCode::SUCCESS,
        Outcome::Refused(status, msg) => {
            eprintln!("turnout: {status}: {msg}");
            ExitCode::from(1)
        }
        Outcome::Unreachable(msg) => {
            eprintln!("turnout: {msg}");
            ExitCode::from(2)
        }
    }
}

fn call(args: &AdminArgs, method: Method, path: &str, body: Option<Value>) -> Outcome {
    call_within(args, method, path, body, ADMIN_TIMEOUT)
}

/// [`call`], bounded by `timeout` instead of [`ADMIN_TIMEOUT`].
fn call_within(
    args: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(request(
        &admin_client(),
        &args.admin,
        args.token.as_deref(),
        method,
        path,
        body,
        timeout,
    ))
}

/// One call to the admin API that `args` names, on the caller's runtime.
pub async fn call_async(
    args: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Outcome {
    let client = admin_client();
    request(
        &client,
        &args.admin,
        args.token.as_deref(),
        method,
        path,
        body,
        ADMIN_TIMEOUT,
    )
    .await
}

/// Who calls, for the instance's events: `turnout-cli` unless the fleet coordinator says
/// `turnout-fleet` (set once, at its start).
pub static AGENT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Once per process: a token was given (`--token`, `TURNOUT_ADMIN_TOKEN`) to an instance that
/// has none, which may mean this is not the instance the operator meant.
fn warn_token_unused(base: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!("turnout: warning: a token was given, but the instance at {base} has no admin token (is it the one you meant?)");
    });
}

/// How long one admin call may take before it counts as unreachable.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client of the admin calls.
pub type AdminClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A client for [`request`].
pub fn admin_client() -> AdminClient {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

/// One admin call: `method path` on the API at `base` (`http://HOST:PORT`), with a JSON body,
/// bounded by `timeout`.
pub async fn request(
    client: &AdminClient,
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Outcome {
    let uri: Uri = match format!("{}{path}", base.trim_end_matches('/')).parse() {
        Ok(u) => u,
        Err(e) => return Outcome::Unreachable(format!("bad admin URL {base:?}: {e}")),
    };
    if uri.scheme_str() != Some("http") {
        return Outcome::Unreachable(format!("bad admin URL {base:?}: expected http://HOST:PORT"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let agent = format!(
        "{}/{}",
        AGENT.get().copied().unwrap_or("turnout-cli"),
        env!("CARGO_PKG_VERSION")
    );
    let build = || {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .header(header::USER_AGENT, agent.as_str());
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        req.body(Full::new(body.clone()))
            .expect("method, URI and headers are valid")
    };

    let exchange = async {
        // A GET is sent once more when the connection fails under it: a kept-alive connection
        // to a process that has just handed over (an in-place upgrade) closes as the request
        // goes out, and the next connection reaches the new process.
        let mut resend = method == Method::GET;
        loop {
            let resp = match client.request(build()).await {
                Ok(resp) => resp,
                Err(_) if std::mem::take(&mut resend) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    return Err(format!(
                        "cannot reach the admin API at {base}: {}",
                        turnout_proxy::DisplayChain(&e)
                    ))
                }
            };
            let status = resp.status();
            if resp.headers().contains_key("x-turnout-token-unused") {
                warn_token_unused(base);
            }
            // 409 with Retry-After: turnout is handing over to a new process (an in-place
            // upgrade), which takes the change in a moment. Sent again until it does, within
            // the call's timeout.
            let retry =
                status == StatusCode::CONFLICT && resp.headers().contains_key(header::RETRY_AFTER);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("the admin API's answer broke off: {e}"))?
                .to_bytes();
            if retry {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            return Ok::<_, String>((status, bytes));
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Outcome::Unreachable(format!(
            "the admin API at {base} did not answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(msg)) => Outcome::Unreachable(msg),
        Ok(Ok((status, bytes))) => {
            let value: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            if status.is_success() {
                Outcome::Ok(value)
            } else {
                let msg = value
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_owned);
                Outcome::Refused(status, msg)
            }
        }
    }
}

/// One line of a routing answer: the active pool, the previous one, the generation, the split.
pub fn summary(v: &Value) -> String {
    let mut line = format!(
        "active: {} (previous: {}), generation {}",
        v["active"].as_str().unwrap_or("?"),
        v["previous"].as_str().unwrap_or("none"),
        v["generation"]
    );
    if let Some(split) = v["weights"].as_object().filter(|w| w.len() > 1) {
        line.push_str(", split ");
        line.push_str(&weights_text(split));
    }
    line
}

/// `blue=95 green=5`.
pub fn weights_text(weights: &serde_json::Map<String, Value>) -> String {
    weights
        .iter()
        .map(|(p, w)| format!("{p}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_status(v: &Value) {
    println!(
        "{}, changed {}",
        summary(v),
        v["changed_at"].as_str().unwrap_or("?")
    );
    if let Some(p) = v.get("process").filter(|p| p.is_object()) {
        if let Some(i) = p.get("instance").filter(|i| i.is_object()) {
            println!(
                "instance {}: proxy on {}, admin on {}",
                i["name"].as_str().unwrap_or("?"),
                i["listen"].as_str().unwrap_or("?"),
                i["admin"].as_str().unwrap_or("?")
            );
        }
        println!(
            "turnout {} (pid {}, process generation {}), started {}",
            p["version"].as_str().unwrap_or("?"),
            p["pid"],
            p["generation"],
            p["started_at"].as_str().unwrap_or("?")
        );
    }
    if v.get("maintenance").is_some_and(Value::is_object)
        || v.get("paused").is_some_and(Value::is_object)
    {
        println!("{}", gates_text(v));
    }
    if let Some(p) = v.get("prepared").filter(|p| p.is_object()) {
        println!(
            "prepared: {} waits for its commit (expires in {} ms)",
            p["change"].as_str().unwrap_or("?"),
            p["expires_in_ms"]
        );
    }
    if let Some(r) = v.get("rollout").filter(|r| r.is_object()) {
        println!(
            "rollout {}: {} -> {} at {}%{} ({} step(s) passed)",
            r["id"],
            r["baseline"].as_str().unwrap_or("?"),
            r["target"].as_str().unwrap_or("?"),
            r["percent"],
            if r["paused"] == Value::Bool(true) {
                ", paused"
            } else {
                ""
            },
            r["steps"].as_array().map_or(0, Vec::len)
        );
    }
    if let Some(m) = v["mirror"].as_str() {
        println!("mirror: {m}");
    }
    println!();
    println!(
        "{:<16} {:>9} {:>8} {:>10}  SERVERS (- = unhealthy)",
        "POOL", "IN-FLIGHT", "TUNNELS", "REQUESTS"
    );
    let active = v["active"].as_str().unwrap_or_default();
    if let Some(pools) = v["pools"].as_object() {
        for (name, pool) in pools {
            let servers: Vec<String> = pool["servers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            let addr = s["addr"].as_str().unwrap_or("?");
                            match s["healthy"].as_bool() {
                                Some(false) => format!("-{addr}"),
                                _ => addr.to_owned(),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let marker = if name == active { " *" } else { "" };
            println!(
                "{:<16} {:>9} {:>8} {:>10}  {}",
                format!("{name}{marker}"),
                pool["in_flight"].to_string(),
                pool["tunnels"].to_string(),
                pool["requests"].to_string(),
                servers.join(", ")
            );
        }
    }
}
