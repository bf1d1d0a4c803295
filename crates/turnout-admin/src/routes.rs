//! The routes of the admin API, its JSON body extractor and its bearer-token check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use turnout_core::status::Status;
use turnout_core::{Command, Control, RuleSpec, ServerEntry};

use crate::error::ApiError;

#[derive(Debug, Clone)]
struct AdminState {
    control: Control,
    policy: Arc<AdminPolicy>,
    upgrader: Option<Arc<dyn crate::upgrade::Upgrader>>,
}

/// Who may call the admin API, beyond the token. A browser is the danger here: any page it
/// shows can send a request to `127.0.0.1:9901`, and without a token nothing else stops it.
/// - With an `Origin` header (browsers send one on every cross-origin write), the origin must be
///   listed in `origins`, token or not.
/// - A write with a body must say `Content-Type: application/json`: a cross-origin form or
///   `text/plain` POST, which a browser sends without asking, is refused.
/// - Without a token, the `Host` must be an IP address, `localhost`, or one of `hosts`: a page
///   whose own name resolves to 127.0.0.1 (DNS rebinding) is refused.
#[derive(Debug, Clone, Default)]
pub struct AdminPolicy {
    /// `Authorization: Bearer TOKEN` on every call; `None` (never empty) for no token.
    pub token: Option<String>,
    /// Lower-case host names, beyond IP addresses and `localhost`.
    pub hosts: Vec<String>,
    /// Lower-case origins (`https://ops.example.com`).
    pub origins: Vec<String>,
}

impl AdminPolicy {
    /// Only a token (or none): no extra hosts, no browser origins.
    pub fn with_token(token: Option<String>) -> AdminPolicy {
        AdminPolicy {
            token,
            ..AdminPolicy::default()
        }
    }

    /// Why this request may not be answered, if it may not.
    fn refuses(&self, req: &Request) -> Option<ApiError> {
        let headers = req.headers();
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("?");
            let listed = self
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')));
            // The dashboard's own calls: a browser sends its page's origin, which is this
            // API's. (A page elsewhere whose name points here passes this too, and then meets
            // the Host check below, or the token.)
            let own = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|host| {
                    origin
                        .strip_prefix("http://")
                        .is_some_and(|o| o.eq_ignore_ascii_case(host))
                });
            if !listed && !own {
                return Some(ApiError::Forbidden(format!(
                    "requests from origin {origin:?} are refused; list it in [server] admin_origins to allow it"
                )));
            }
        }
        if self.token.is_none() {
            if let Some(host) = headers.get(header::HOST) {
                let host = host.to_str().unwrap_or("?");
                if !self.host_allowed(host) {
                    return Some(ApiError::Forbidden(format!(
                        "host {host:?} is refused without an admin token (DNS rebinding); use an IP address or localhost, list it in [server] admin_hosts, or set admin_token"
                    )));
                }
            }
        }
        let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let has_body = headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|l| l.as_bytes() != b"0")
            || headers.contains_key(header::TRANSFER_ENCODING);
        if writes && has_body && !is_json(headers.get(header::CONTENT_TYPE)) {
            return Some(ApiError::UnsupportedMediaType);
        }
        None
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            // A bracketed IPv6 address, with or without a port.
            Some(rest) => {
                return rest
                    .split(']')
                    .next()
                    .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
            }
            None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
        };
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The admin API's routes, guarded by `policy` (see [`AdminPolicy`]); `POST /v1/upgrade`
/// answers 404 without an `upgrader`.
pub fn router(
    control: Control,
    mut policy: AdminPolicy,
    upgrader: Option<Arc<dyn crate::upgrade::Upgrader>>,
) -> Router {
    // One notion of "a token is set" for the token check and the Host check alike.
    policy.token = policy.token.filter(|t| !t.is_empty());
    let state = AdminState {
        control,
        policy: Arc::new(policy),
        upgrader,
    };
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/switch", post(switch))
        .route("/v1/rollback", post(rollback))
        .route("/v1/prepare", post(prepare))
        .route("/v1/commit", post(commit))
        .route("/v1/abort", post(abort))
        .route("/v1/split", put(put_split))
        .route("/v1/rollout", post(start_rollout).get(get_rollout))
        .route("/v1/rollout/abort", post(abort_rollout))
        .route("/v1/rollout/pause", post(pause_rollout))
        .route("/v1/rollout/resume", post(resume_rollout))
        .route(
            "/v1/rollout/hold",
            post(hold_rollout).delete(release_rollout_hold),
        )
        .route("/v1/rollout/sample", get(rollout_sample))
        .route(
            "/v1/maintenance",
            post(maintenance_on).delete(maintenance_off),
        )
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/cache", axum::routing::delete(purge_cache))
        .route("/v1/tls/reload", post(reload_tls))
        .route("/v1/rules", put(put_rules).get(get_rules))
        .route("/v1/pools/{name}", put(put_pool).get(get_pool))
        .route("/v1/pools/{name}/probe", post(probe_pool))
        .route("/v1/upgrade", post(upgrade))
        .route("/v1/reload", post(reload))
        .route("/v1/events", get(events))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            enforce_policy,
        ))
        // The dashboard's files hold no data: served without the token (a browser cannot send
        // one to open a page); every call the page makes carries it.
        .merge(crate::ui::routes())
        .with_state(state)
}

/// A JSON request body; every rejection is an [`ApiError`] with a JSON body. (The policy, not
/// this extractor, insists on `Content-Type: application/json`, for every write.)
struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest(
                "the request body is empty; this call takes a JSON object".into(),
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Every call passes [`AdminPolicy`] and, with a token set, carries it.
async fn enforce_policy(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(refused) = state.policy.refuses(&req) {
        tracing::warn!(target: "turnout::admin", method = %req.method(), path = %req.uri().path(), error = %refused, "admin call refused");
        return Err(refused);
    }
    if let Some(token) = &state.policy.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| turnout_core::decide::same_secret(g.as_bytes(), token.as_bytes()))
        {
            tracing::warn!(target: "turnout::admin", method = %req.method(), path = %req.uri().path(), "admin call refused: bad or missing token");
            return Err(ApiError::Unauthorized);
        }
    }
    if let Some(refused) = fleet_owned(&state, &req) {
        return Err(refused);
    }
    let token_unused =
        state.policy.token.is_none() && req.headers().contains_key(header::AUTHORIZATION);
    let by = actor(req.headers());
    let mut resp = turnout_core::events::ACTOR.scope(by, next.run(req)).await;
    if token_unused {
        // The caller thinks this instance wants a token: maybe it meant another one.
        resp.headers_mut().insert(
            TOKEN_UNUSED.clone(),
            header::HeaderValue::from_static("this instance has no admin token"),
        );
    }
    Ok(resp)
}

/// The routing writes a fleet member (`[fleet]`) takes only from the fleet's desired state in
/// etcd: one made here would leave this instance apart from the fleet (and be undone by the
/// next fleet change). Reads, pools, the cache, certificates and upgrades stay local.
const FLEET_OWNED: [&str; 11] = [
    "/v1/rules",
    "/v1/switch",
    "/v1/rollback",
    "/v1/prepare",
    "/v1/commit",
    "/v1/abort",
    "/v1/split",
    "/v1/rollout",
    "/v1/pause",
    "/v1/resume",
    "/v1/maintenance",
];

fn fleet_owned(state: &AdminState, req: &Request) -> Option<ApiError> {
    if req.method() == axum::http::Method::GET || !FLEET_OWNED.contains(&req.uri().path()) {
        return None;
    }
    let fleet = state.control.router().fleet().status()?;
    Some(ApiError::FleetOwned(format!(
        "this instance follows fleet {} (its desired state in etcd): change the routing with turnout fleet {} --fleet {} --etcd URL, not here",
        fleet.name,
        req.uri().path().trim_start_matches("/v1/"),
        fleet.name
    )))
}

/// Said on an answer to a call that sent a token to an instance that has none (the CLI warns).
pub static TOKEN_UNUSED: header::HeaderName =
    header::HeaderName::from_static("x-turnout-token-unused");

/// Who makes a call, for the events: turnout's CLI and fleet coordinator and the dashboard say
/// so (`User-Agent: turnout-cli/...`, `turnout-fleet/...`, `X-Turnout-Client: dashboard`);
/// anything else is the API, with its user agent (printable, at most 60 characters).
fn actor(headers: &header::HeaderMap) -> String {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if headers
        .get("x-turnout-client")
        .is_some_and(|v| v.as_bytes() == b"dashboard")
    {
        return "dashboard".into();
    }
    if agent.starts_with("turnout-cli/") {
        return "CLI".into();
    }
    if agent.starts_with("turnout-fleet/") {
        return "fleet".into();
    }
    let shown: String = agent
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(60)
        .collect();
    if shown.is_empty() {
        "API".into()
    } else {
        format!("API ({shown})")
    }
}

async fn status(State(state): State<AdminState>) -> Json<Status> {
    let mut status = Status::from(&*state.control.router().snapshot());
    status.prepared = state.control.two_phase().prepared();
    status.rollout = state.control.rollouts().current();
    if let Some(cache) = state.control.cache() {
        status.cache = Some(cache.stats().await);
    }
    status.tls = state.control.tls().map(|t| t.certs());
    status.fleet = state.control.router().fleet().status();
    Json(status)
}

/// `POST /v1/tls/reload`: reads every certificate and key again. New handshakes use them at
/// once; open connections keep theirs. A file that fails leaves the served set as it was.
async fn reload_tls(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(tls) = state.control.tls().cloned() else {
        return Err(ApiError::NotFound(
            "no [tls] listener here: nothing to reload".into(),
        ));
    };
    // A few small files, but still file reads: off the async workers.
    let reloaded = tokio::task::spawn_blocking(move || tls.reload())
        .await
        .map_err(|e| ApiError::CertFiles {
            message: format!("the reload did not finish: {e}"),
            io: true,
        })?;
    match reloaded {
        Ok(certs) => {
            tracing::info!(target: "turnout::admin", certs = certs.len(), "certificates reloaded");
            Ok(Json(
                serde_json::json!({ "reloaded": true, "certs": certs }),
            ))
        }
        Err(e) => {
            tracing::error!(target: "turnout::admin", error = %e.message, "certificates not reloaded; the previous ones are still served");
            Err(ApiError::CertFiles {
                message: e.message,
                io: e.io,
            })
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    to: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    wait_drained: Option<String>,
    #[serde(default)]
    close_tunnels_after: Option<String>,
}

/// What a switch and a rollback both accept. (The bodies spell the fields out rather than
/// `#[serde(flatten)]` this, because serde cannot deny unknown fields through a flatten.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchOptions {
    /// Skip the health gate.
    #[serde(default)]
    force: bool,
    /// Answer only once the pool switched away from has nothing in flight, or this long has
    /// passed: "30s".
    #[serde(default)]
    wait_drained: Option<String>,
    /// Close the tunnels (WebSockets) still open on the pool switched away from after this
    /// long: "60s". With `wait_drained` longer than it, the call returns once they are closed.
    #[serde(default)]
    close_tunnels_after: Option<String>,
}

/// The answer to a switch or rollback: the new status, and with `wait_drained`, whether the
/// old pool drained.
#[derive(Debug, serde::Serialize)]
struct SwitchAnswer {
    #[serde(flatten)]
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    drained: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waited_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

async fn switch(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<SwitchBody>,
) -> Result<Json<SwitchAnswer>, ApiError> {
    let options = SwitchOptions {
        force: body.force,
        wait_drained: body.wait_drained,
        close_tunnels_after: body.close_tunnels_after,
    };
    change_active(&state, Command::Switch { to: body.to }, options).await
}

async fn rollback(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<SwitchAnswer>, ApiError> {
    // The body is optional here: a bare `curl -X POST .../v1/rollback` works.
    let options: SwitchOptions = optional_json(&body)?;
    change_active(&state, Command::Rollback, options).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrepareBody {
    /// A switch to this pool ...
    #[serde(default)]
    to: Option<String>,
    /// ... or a split (exactly one of the two).
    #[serde(default)]
    weights: Option<BTreeMap<String, i64>>,
    /// How long the prepared switch waits for its commit: "30s" unless given.
    #[serde(default)]
    ttl: Option<String>,
    /// A fleet switch's mark (see `turnout_core::FleetMark`), the same on every instance.
    #[serde(default)]
    mark: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

/// The default wait for a commit: long enough for a fleet's prepares to all answer.
const PREPARE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// A prepared switch may wait at most this long: a forgotten one must not outlive a deploy.
const MAX_PREPARE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

async fn prepare(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<PrepareBody>,
) -> Result<Json<turnout_core::Prepared>, ApiError> {
    let ttl = match body.ttl.as_deref() {
        None => PREPARE_TTL,
        Some(t) => humantime::parse_duration(t)
            .ok()
            .filter(|d| !d.is_zero() && *d <= MAX_PREPARE_TTL)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid ttl {t:?}: write it like \"30s\", more than 0 and at most 10m"
                ))
            })?,
    };
    let command = match (body.to, body.weights) {
        (Some(to), None) => Command::Switch { to },
        (None, Some(weights)) => Command::Split {
            weights: weights.into_iter().collect(),
        },
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of \"to\" (a switch) or \"weights\" (a split)".into(),
            ))
        }
    };
    Ok(Json(
        state
            .control
            .two_phase()
            .prepare(command, ttl, body.mark.as_deref())
            .await?,
    ))
}

async fn commit(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Json<Status>, ApiError> {
    let after = state.control.two_phase().commit(&body.token).await?;
    Ok(Json(Status::from(&*after)))
}

async fn abort(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.control.two_phase().abort(&body.token).await?;
    Ok(Json(serde_json::json!({ "aborted": body.token })))
}

/// `POST /v1/rollout`: the pool to roll out, and any `[rollout]` field to override for this
/// one. (Spelled out rather than flattened, so unknown fields are still refused.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    to: String,
    #[serde(default)]
    force: bool,
    wait_drained: Option<String>,
    close_tunnels_after: Option<String>,
    steps: Option<Vec<u32>>,
    bake: Option<String>,
    min_requests: Option<u64>,
    max_wait: Option<String>,
    max_error_rate: Option<f64>,
    max_error_ratio: Option<f64>,
    error_floor: Option<f64>,
    max_p95_ratio: Option<f64>,
    max_p99_ratio: Option<f64>,
    latency_floor: Option<String>,
    mirror_percent: Option<u32>,
    mirror_methods: Option<Vec<String>>,
    mirror_max_body: Option<u64>,
}

fn duration_field(field: &str, value: Option<&str>) -> Result<Option<Duration>, ApiError> {
    value
        .map(|v| {
            turnout_core::parse_duration(v)
                .map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
        })
        .transpose()
}

/// Starts a guarded rollout (202): its steps run in the background; follow them with
/// `GET /v1/rollout` or `turnout rollout`.
async fn start_rollout(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<RolloutBody>,
) -> Result<(StatusCode, Json<turnout_core::RolloutReport>), ApiError> {
    use turnout_core::HumanDuration;
    let over = turnout_core::RolloutOverrides {
        steps: body.steps,
        bake: duration_field("bake", body.bake.as_deref())?.map(HumanDuration),
        min_requests: body.min_requests,
        max_wait: duration_field("max_wait", body.max_wait.as_deref())?.map(HumanDuration),
        max_error_rate: body.max_error_rate,
        max_error_ratio: body.max_error_ratio,
        error_floor: body.error_floor,
        max_p95_ratio: body.max_p95_ratio,
        max_p99_ratio: body.max_p99_ratio,
        latency_floor: duration_field("latency_floor", body.latency_floor.as_deref())?
            .map(HumanDuration),
        // Never from a call: an API that runs commands would hand a shell to anyone who can
        // reach it. Only `[rollout] check_cmd` in the config file.
        check_cmd: None,
        mirror_percent: body.mirror_percent,
        mirror_methods: body.mirror_methods,
        mirror_max_body: body.mirror_max_body,
    };
    let policy = state
        .control
        .rollout_policy()
        .merged(&over)
        .map_err(|(field, message)| ApiError::BadRequest(format!("{field}: {message}")))?;
    let report = state
        .control
        .rollouts()
        .start(turnout_core::RolloutRequest {
            to: body.to,
            policy,
            force: body.force,
            wait_drained: duration_field("wait_drained", body.wait_drained.as_deref())?,
            close_tunnels_after: duration_field(
                "close_tunnels_after",
                body.close_tunnels_after.as_deref(),
            )?,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(report)))
}

/// `GET /v1/rollout`: the rollout under way (or `null`) and the last ones, newest first.
async fn get_rollout(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "current": state.control.rollouts().current(),
        "history": state.control.rollouts().history(),
    }))
}

/// `POST /v1/rollout/pause`: hold the rollout at its step (a failing check still rolls back).
async fn pause_rollout(
    State(state): State<AdminState>,
) -> Result<Json<turnout_core::RolloutReport>, ApiError> {
    Ok(Json(state.control.rollouts().pause(true)?))
}

/// `POST /v1/rollout/resume`: let a paused rollout go on.
async fn resume_rollout(
    State(state): State<AdminState>,
) -> Result<Json<turnout_core::RolloutReport>, ApiError> {
    Ok(Json(state.control.rollouts().pause(false)?))
}

/// `POST /v1/rollout/abort`: every new client back to the baseline now.
async fn abort_rollout(
    State(state): State<AdminState>,
) -> Result<Json<turnout_core::RolloutReport>, ApiError> {
    Ok(Json(state.control.rollouts().abort()?))
}

/// `POST /v1/rollout/hold` (a fleet rollout's coordinator, renewing every second or so): unless
/// renewed within `ttl`, this instance goes back to `baseline` by itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    baseline: String,
    ttl: String,
}

async fn hold_rollout(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<HoldBody>,
) -> Result<Json<turnout_core::rollouts::LeaseReport>, ApiError> {
    let ttl = duration_field("ttl", Some(&body.ttl))?.unwrap_or_default();
    if ttl.is_zero() || ttl > Duration::from_secs(600) {
        return Err(ApiError::BadRequest(
            "ttl: must be more than 0s and at most 10m".into(),
        ));
    }
    Ok(Json(
        state.control.rollouts().lease(&body.baseline, ttl).await?,
    ))
}

async fn release_rollout_hold(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "released": state.control.rollouts().release_lease().await }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleQuery {
    /// Pool names, comma-separated.
    pools: String,
}

/// `GET /v1/rollout/sample?pools=blue,green`: each pool's request, 5xx and latency-histogram
/// counters since start-up, for a fleet rollout's coordinator to add up and judge.
async fn rollout_sample(
    State(state): State<AdminState>,
    axum::extract::Query(query): axum::extract::Query<SampleQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pools: Vec<&str> = query.pools.split(',').map(str::trim).collect();
    let samples = state.control.rollouts().samples(&pools)?;
    Ok(Json(serde_json::Value::Object(
        samples
            .into_iter()
            .map(|(name, sample)| {
                (
                    name,
                    serde_json::to_value(sample).expect("a sample serializes"),
                )
            })
            .collect(),
    )))
}

async fn change_active(
    state: &AdminState,
    command: Command,
    options: SwitchOptions,
) -> Result<Json<SwitchAnswer>, ApiError> {
    let wait = duration_field("wait_drained", options.wait_drained.as_deref())?;
    let close_after = duration_field(
        "close_tunnels_after",
        options.close_tunnels_after.as_deref(),
    )?;
    let before = state.control.router().snapshot();
    let after = state.control.apply(command, options.force).await?;
    if let Some(close_after) = close_after {
        // The pools this call took every new client from; when the call changed nothing (a
        // deploy script's repeated switch), the one the last switch left, as for wait_drained.
        let losing: Vec<_> = if Arc::ptr_eq(&before, &after) {
            after
                .previous_primary()
                .filter(|p| after.weights.get(p.as_str()) == 0)
                .and_then(|p| after.pools.get(p))
                .cloned()
                .into_iter()
                .collect()
        } else {
            before
                .weights
                .iter()
                .filter(|(name, _)| after.weights.get(name.as_str()) == 0)
                .filter_map(|(name, _)| after.pools.get(name).cloned())
                .collect()
        };
        state.control.close_tunnels_after(losing, close_after);
    }
    let mut answer = SwitchAnswer {
        status: Status::from(&*after),
        drained: None,
        waited_ms: None,
        message: None,
    };
    if let Some(limit) = wait {
        // The pool this call switched away from; when the call changed nothing (a repeated
        // switch from a deploy script), the one the last switch left.
        let old = if Arc::ptr_eq(&before.active, &after.active) {
            after
                .previous_primary()
                .and_then(|p| after.pools.get(p))
                .map_or_else(|| Arc::clone(&after.active), Arc::clone)
        } else {
            Arc::clone(&before.active)
        };
        let started = std::time::Instant::now();
        let drained = state.control.wait_drained(&old, limit).await;
        answer.drained = Some(drained);
        answer.waited_ms = Some(started.elapsed().as_millis() as u64);
        if !drained {
            let stats = old.stats();
            answer.message = Some(format!(
                "pool {} still has {} request(s) and {} tunnel(s) in flight after {}",
                old.name(),
                stats.in_flight(),
                stats.tunnels(),
                humantime::format_duration(limit)
            ));
        }
        // Counters moved while waiting.
        answer.status = Status::from(&*state.control.router().snapshot());
    }
    Ok(Json(answer))
}

async fn metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    let snapshot = state.control.router().snapshot();
    let cache = match state.control.cache() {
        Some(c) => Some(c.stats().await),
        None => None,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        snapshot.env.metrics.render(
            &turnout_core::metrics::Gauges {
                fleet: state.control.router().fleet().status(),
                ..snapshot.gauges()
            },
            cache,
            &state.control.tls().map(|t| t.certs()).unwrap_or_default(),
        ),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolBody {
    /// `"HOST:PORT"` or `{"addr": "HOST:PORT", "weight": 3}`.
    servers: Vec<ServerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    /// Pool -> weight; whole numbers, 0 or more, not all 0.
    weights: BTreeMap<String, i64>,
    /// Skip the health gate for the pools that gain share.
    #[serde(default)]
    force: bool,
}

/// An optional JSON body: empty (or blank) is `T::default()`.
fn optional_json<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    /// Shown on the page; `[maintenance] message` unless given.
    #[serde(default)]
    message: Option<String>,
}

/// `POST /v1/maintenance`: every request but the health path and `[maintenance]`'s allow-lists
/// gets 503 and the maintenance page. Persisted: a restart keeps it on.
async fn maintenance_on(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<Status>, ApiError> {
    let body: MaintenanceBody = optional_json(&body)?;
    let command = Command::Maintenance {
        on: Some(turnout_core::MaintenanceSpec {
            message: body.message,
        }),
    };
    let after = state.control.apply(command, true).await?;
    Ok(Json(Status::from(&*after)))
}

/// `DELETE /v1/maintenance`: requests reach the apps again.
async fn maintenance_off(State(state): State<AdminState>) -> Result<Json<Status>, ApiError> {
    let after = state
        .control
        .apply(Command::Maintenance { on: None }, true)
        .await?;
    Ok(Json(Status::from(&*after)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    /// The longest a request is held: "30s" (`[pause] max_hold` unless given).
    #[serde(default)]
    max_hold: Option<String>,
}

/// A query string, or why it could not be read.
type QueryOr400<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// The query, or a 400 that says what was wrong with it.
fn query_or_400<T>(query: QueryOr400<T>) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only the events numbered above this.
    #[serde(default)]
    after: u64,
}

/// `GET /v1/events?after=N`: the recent routing and health changes, oldest first.
async fn events(
    State(state): State<AdminState>,
    query: QueryOr400<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_or_400(query)?;
    let events = state.control.router().snapshot().env.events.since(q.after);
    Ok(Json(serde_json::json!({ "events": events })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    /// Only the points taken after this (milliseconds since the Unix epoch).
    #[serde(default)]
    since: u64,
}

/// `GET /v1/stats?since=T`: each pool's last minutes, a point a second (requests per second,
/// 5xx rate, p95 latency, in flight), from turnout's own counters.
async fn stats(
    State(state): State<AdminState>,
    query: QueryOr400<StatsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_or_400(query)?;
    let pools = state.control.router().snapshot().env.stats.since(q.since);
    Ok(Json(serde_json::json!({
        "interval_ms": turnout_core::stats::INTERVAL.as_millis() as u64,
        "points": turnout_core::stats::POINTS,
        "pools": pools,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpgradeBody {
    /// The new binary; the one this process was started from unless given.
    binary: Option<std::path::PathBuf>,
}

/// `POST /v1/upgrade`: a new turnout takes over the sockets and the state file; answered once
/// it serves (200) or once it failed (500, naming why; this process serves on).
async fn upgrade(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<crate::upgrade::UpgradeReport>, ApiError> {
    let body: UpgradeBody = optional_json(&body)?;
    let Some(upgrader) = &state.upgrader else {
        return Err(ApiError::NotFound(
            "in-place upgrades are off here: they need [state] file (the new process reads the routing from it)".into(),
        ));
    };
    let report = upgrader.upgrade(body.binary).await?;
    Ok(Json(report))
}

/// `POST /v1/pools/{name}/probe`: every server of the pool checked now, as a switch to it
/// would check it; nothing changes but the servers' recorded health. `healthy`: every server
/// passed (and there is at least one).
async fn probe_pool(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let results = state.control.probe_pool(&name).await?;
    let passed = results.iter().filter(|(_, r)| r.is_ok()).count();
    let servers: Vec<serde_json::Value> = results
        .iter()
        .map(|(addr, result)| {
            serde_json::json!({
                "addr": addr.as_str(),
                "ok": result.is_ok(),
                "error": result.as_ref().err(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "pool": name,
        "healthy": passed > 0 && passed == results.len(),
        "passed": passed,
        "total": results.len(),
        "servers": servers,
    })))
}

/// `POST /v1/reload`: the config file checked, then read by a new process of the same binary
/// (an in-place upgrade); 422 naming what is wrong with the file (this process untouched).
/// Takes no body: one sent is refused, so that a caller who meant `/v1/upgrade` hears so.
async fn reload(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<crate::upgrade::UpgradeReport>, ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "POST /v1/reload takes no body (it reloads the config file the running turnout was started with; to start another binary, POST /v1/upgrade)".into(),
        ));
    }
    let Some(upgrader) = &state.upgrader else {
        return Err(ApiError::NotFound(
            "reloads are off here: a reload is an in-place upgrade, which needs [state] file (the new process reads the routing from it)".into(),
        ));
    };
    let report = upgrader.reload().await?;
    Ok(Json(report))
}

/// `POST /v1/pause`: hold new requests (not the health path) until `POST /v1/resume`; requests
/// in flight finish.
async fn pause(State(state): State<AdminState>, body: Bytes) -> Result<Json<Status>, ApiError> {
    let body: PauseBody = optional_json(&body)?;
    let max_hold = duration_field("max_hold", body.max_hold.as_deref())?;
    let after = state
        .control
        .apply(Command::Pause { max_hold }, true)
        .await?;
    Ok(Json(Status::from(&*after)))
}

/// `POST /v1/resume`: the held requests go on, in the order they came.
async fn resume(State(state): State<AdminState>) -> Result<Json<Status>, ApiError> {
    let after = state.control.apply(Command::Resume, true).await?;
    Ok(Json(Status::from(&*after)))
}

/// `PUT /v1/split`: share new clients between pools. Health-gated like a switch.
async fn put_split(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<SplitBody>,
) -> Result<Json<Status>, ApiError> {
    let command = Command::Split {
        weights: body.weights.into_iter().collect(),
    };
    let after = state.control.apply(command, body.force).await?;
    Ok(Json(Status::from(&*after)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesBody {
    rules: Vec<RuleSpec>,
    #[serde(default)]
    force: bool,
}

/// `PUT /v1/rules`: replace the A/B rules (in order; the first match wins).
async fn put_rules(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<RulesBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let after = state
        .control
        .apply(Command::SetRules { rules: body.rules }, body.force)
        .await?;
    Ok(Json(rules_answer(&after)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeQuery {
    pool: Option<String>,
    prefix: Option<String>,
}

/// `DELETE /v1/cache[?pool=NAME][&prefix=/assets/]`: drops cached entries.
async fn purge_cache(
    State(state): State<AdminState>,
    query: Result<axum::extract::Query<PurgeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))?;
    let Some(cache) = state.control.cache() else {
        return Err(ApiError::NotFound("no cache here".into()));
    };
    if let Some(pool) = &q.pool {
        state.control.router().snapshot().pool(pool)?;
    }
    if let Some(prefix) = q.prefix.as_deref().filter(|p| !p.starts_with('/')) {
        return Err(ApiError::BadRequest(format!(
            "invalid prefix {prefix:?}: a path prefix starts with '/'"
        )));
    }
    let purged = cache.purge(q.pool.as_deref(), q.prefix.as_deref()).await;
    tracing::info!(target: "turnout::admin", pool = q.pool.as_deref().unwrap_or("*"), prefix = q.prefix.as_deref().unwrap_or("*"), purged, "cache purged");
    let stats = cache.stats().await;
    Ok(Json(
        serde_json::json!({ "purged": purged, "cache": stats }),
    ))
}

async fn get_rules(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(rules_answer(&state.control.router().snapshot()))
}

fn rules_answer(s: &turnout_core::RoutingSnapshot) -> serde_json::Value {
    let rules: Vec<RuleSpec> = s.rules.iter().map(turnout_core::Rule::spec).collect();
    serde_json::json!({ "rules": rules, "generation": s.generation })
}

async fn put_pool(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PoolBody>,
) -> Result<Json<Status>, ApiError> {
    let command = Command::PutPool {
        name,
        servers: body.servers,
    };
    let snapshot = state.control.apply(command, false).await?;
    Ok(Json(Status::from(&*snapshot)))
}

async fn get_pool(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut status = Status::from(&*state.control.router().snapshot());
    match status.pools.remove(&name) {
        Some(pool) => Ok(Json(serde_json::json!({ "name": name, "pool": pool }))),
        None => Err(ApiError::NotFound(format!("unknown pool {name:?}"))),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no admin call {} {}; the calls are GET /v1/status, POST /v1/switch, POST /v1/rollback, PUT /v1/split, GET|PUT /v1/rules, GET|PUT /v1/pools/{{name}}, POST /v1/prepare|commit|abort, GET /metrics",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

#[cfg(test)]
mod tests;
