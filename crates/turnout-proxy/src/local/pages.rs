//! The pages of turnout's own answers: the maintenance page, 503 for a request a pause shed,
//! and the 502/503/504 of a failed forward. HTML from `[errors] dir` when a file is there
//! (built in for maintenance otherwise), JSON for clients that ask for `application/json`,
//! and the short text answers otherwise.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use turnout_core::snapshot::Maintenance;

use crate::body::ProxyBody;

/// Pages read once at start-up.
#[derive(Debug, Default)]
pub(crate) struct Pages {
    /// `502.html`, `503.html`, `504.html`, by status.
    by_status: Vec<(u16, Bytes)>,
    /// `maintenance.html`, else `503.html`: a template in which `{{message}}` is replaced.
    maintenance: Option<String>,
}

const TEXT_HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Pages {
    pub fn new(config: &turnout_config::ErrorPages) -> Pages {
        let page = |status: u16| {
            config
                .pages
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, p)| p.clone())
        };
        Pages {
            by_status: [502, 503, 504]
                .into_iter()
                .filter_map(|s| page(s).map(|p| (s, Bytes::from(p))))
                .collect(),
            maintenance: page(0).or_else(|| page(503)),
        }
    }

    /// Turns turnout's own short answer (`resp`, a 502/503/504 or another refusal) into the
    /// page for its status, or into JSON for a client that asks for it. Its headers stay.
    pub fn restyle(&self, resp: &mut Response<ProxyBody>, json: bool) {
        let status = resp.status();
        if json {
            let body = serde_json::json!({
                "error": status.canonical_reason().unwrap_or("error"),
                "status": status.as_u16(),
            });
            *resp.body_mut() = ProxyBody::bytes(Bytes::from(body.to_string()));
            resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
        } else if let Some((_, page)) = self.by_status.iter().find(|(s, _)| *s == status.as_u16()) {
            *resp.body_mut() = ProxyBody::bytes(page.clone());
            resp.headers_mut().insert(header::CONTENT_TYPE, TEXT_HTML);
        } else {
            return;
        }
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }

    /// 503 for a request a pause held too long, or shed to keep within its bounds.
    pub fn shed(&self, json: bool) -> Response<ProxyBody> {
        let mut resp = crate::error::text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: the site is paused for a moment; try again\n",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        self.restyle(&mut resp, json);
        resp
    }

    /// The maintenance answer: 503, `Retry-After`, the page (or JSON) with the message.
    pub fn maintenance(
        &self,
        m: &Maintenance,
        retry_after: std::time::Duration,
        json: bool,
    ) -> Response<ProxyBody> {
        let (body, content_type) = if json {
            let body = serde_json::json!({
                "error": "maintenance",
                "status": 503,
                "message": m.message,
            });
            (body.to_string(), JSON)
        } else {
            let message = escape_html(&m.message);
            let page = match &self.maintenance {
                Some(template) => template.replace("{{message}}", &message),
                None => format!(
                    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                     <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
                     <title>Down for maintenance</title></head>\n<body style=\"font-family: \
                     system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem\">\
                     <h1>Down for maintenance</h1>\n<p>{message}</p>\n</body></html>\n"
                ),
            };
            (page, TEXT_HTML)
        };
        let mut resp = Response::new(ProxyBody::bytes(Bytes::from(body)));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
        resp
    }
}

/// The client asks for JSON: its `Accept` names `application/json` and not `text/html`
/// (a browser's Accept names both kinds of page, HTML first).
pub(crate) fn wants_json(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .fold((false, false), |(json, html), v| {
            (
                json || v.contains("application/json"),
                html || v.contains("text/html"),
            )
        })
        == (true, false)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("value"));
        h
    }

    #[test]
    fn json_only_for_clients_that_ask_for_it_and_not_for_html() {
        assert!(wants_json(&accept("application/json")));
        assert!(wants_json(&accept("application/json, */*;q=0.8")));
        assert!(!wants_json(&accept(
            "text/html,application/xhtml+xml,application/json;q=0.9"
        )));
        assert!(!wants_json(&HeaderMap::new()));
    }

    #[test]
    fn the_message_is_escaped_into_the_page() {
        let pages = Pages::new(&turnout_config::ErrorPages {
            dir: None,
            pages: vec![(0, "<p>{{message}}</p>".into())],
        });
        let m = Maintenance {
            message: "back at <b>5</b> & soon".into(),
            since: std::time::SystemTime::now(),
        };
        let resp = pages.maintenance(&m, std::time::Duration::from_secs(120), false);
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "120");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], TEXT_HTML);
    }
}
