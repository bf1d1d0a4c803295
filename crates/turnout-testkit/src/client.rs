//! Clients for tests: a pooled keep-alive HTTP client (HTTP/1.1, or HTTP/2 with prior
//! knowledge) and a JSON caller for the admin API.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1.1 keep-alive client.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client that speaks HTTP/2 without TLS (prior knowledge).
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished response: status, headers and the body as text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as text (lossy).
    pub body: String,
    /// The body's bytes as sent (a compressed body, say).
    pub body_bytes: Bytes,
}

/// Sends `req` and reads the whole answer.
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        body_bytes: body,
    })
}

pub async fn get(client: &HttpClient, url: &str) -> Result<Answer, String> {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(client, req).await
}

/// Calls the admin API; the answer's body is parsed as JSON (every admin answer is JSON).
pub async fn admin(
    base: &str,
    method: Method,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some_and(|b| !b.is_empty()) {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .expect("request");
    let answer = send(&http_client(), req)
        .await
        .unwrap_or_else(|e| panic!("admin call {path} failed: {e}"));
    let json = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("admin answer to {path} is not JSON ({e}): {}", answer.body));
    (answer.status, json)
}
