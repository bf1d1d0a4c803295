//! Admin API errors. Each variant has its status, chosen by who was wrong: the caller's request
//! (400, 401, 404, 409) or turnout itself (500). Bodies are always `{"error": "..."}`; details of
//! internal failures go to the log, not to the caller.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use turnout_core::CoreError;

/// Why an admin call was refused; [`ApiError::status`] says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The call itself is wrong (a field, a value), said in words: 400.
    #[error("{0}")]
    BadRequest(String),
    /// No token, or not the one configured: 401.
    #[error("missing or wrong admin token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// No such pool, route or rollout: 404.
    #[error("{0}")]
    NotFound(String),
    /// Refused by the admin policy: a browser origin, or a host name without a token.
    #[error("{0}")]
    Forbidden(String),
    /// A routing change on a fleet member, which takes them from the fleet's store only: 409.
    #[error("{0}")]
    FleetOwned(String),
    /// A body sent without `Content-Type: application/json`: 415.
    #[error("a write with a body must send Content-Type: application/json (curl: --json '...' or -H 'Content-Type: application/json')")]
    UnsupportedMediaType,
    /// A method the route does not take: 405.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// What the routing state refused, with the status its kind chooses.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A certificate or key that could not be loaded: 400 when a file is bad, 500 when it could
    /// not be read at all. The message names the file either way (the operator put it there).
    #[error("certificates not reloaded, the previous ones are still served: {message}")]
    CertFiles {
        /// What went wrong, naming the file.
        message: String,
        /// The file could not be read at all (the host's fault, not the file's).
        io: bool,
    },
    /// An in-place upgrade that was refused or failed.
    #[error(transparent)]
    Upgrade(#[from] crate::upgrade::UpgradeError),
}

impl ApiError {
    /// The answer's status: 4xx when the caller was wrong, 5xx when turnout or its host was.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::FleetOwned(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::CertFiles { io: true, .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::CertFiles { io: false, .. } => StatusCode::BAD_REQUEST,
            ApiError::Upgrade(crate::upgrade::UpgradeError::Refused(_)) => StatusCode::CONFLICT,
            ApiError::Upgrade(crate::upgrade::UpgradeError::Forbidden(_)) => StatusCode::FORBIDDEN,
            ApiError::Upgrade(crate::upgrade::UpgradeError::Invalid(_)) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Upgrade(crate::upgrade::UpgradeError::Failed { .. }) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Core(e) => match e {
                CoreError::UnknownPool { .. } => StatusCode::NOT_FOUND,
                CoreError::NoPrevious
                | CoreError::EmptyPool { .. }
                | CoreError::PoolInUse { .. }
                | CoreError::Unhealthy { .. }
                | CoreError::GateNotMet { .. }
                | CoreError::NotPrepared { .. }
                | CoreError::Moved { .. }
                | CoreError::AlreadyPrepared { .. }
                | CoreError::RolloutRunning { .. }
                | CoreError::Upgrading { .. } => StatusCode::CONFLICT,
                CoreError::NoRollout => StatusCode::NOT_FOUND,
                CoreError::Invalid(_) => StatusCode::BAD_REQUEST,
                CoreError::Persist { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A failed certificate reload or upgrade names the file or the new process's error:
        // the operator needs it, and it reveals nothing they did not give.
        let told = matches!(self, ApiError::CertFiles { .. } | ApiError::Upgrade(_));
        let message = if status.is_server_error() && !told {
            tracing::error!(target: "turnout::admin", error = %self, "admin call failed");
            "internal error: the change was not made; see turnout's log".to_owned()
        } else {
            self.to_string()
        };
        let mut resp = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, ApiError::Core(CoreError::Upgrading { .. })) {
            // Retry in a second, on a new connection: it may reach the new process, which
            // takes the change (turnout's own client does this by itself).
            let headers = resp.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
