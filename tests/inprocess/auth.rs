//! `[[auth]]`: basic auth against a users file (bcrypt and argon2) allows, refuses and
//! challenges; forward auth to a real small auth service on loopback allows (copying its
//! headers), passes its refusal on, and fails closed when the service is down or answers 500;
//! the ALB's `x-amzn-oidc-data` signed with a key the test makes passes (padded or not), a
//! forged, expired or foreign-signed one is refused, and a key server that is down fails
//! closed; a rule on green's preview ends when green goes live. A refused request never
//! reaches a pool nor counts in its figures, and a client's own copy of an identity header
//! never reaches the app.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use turnout_testkit::client::http_client;

use crate::harness::Running;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `/metrics` from the admin port.
async fn metrics(t: &Running) -> String {
    turnout_testkit::client::get(&http_client(), &format!("{}/metrics", t.admin_base()))
        .await
        .expect("metrics")
        .body
}

/// A small HTTP server on 127.0.0.1:0 answering with `answer`; it stops with the test.
async fn serve<F>(answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let resp = answer(req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

fn users_file(dir: &tempfile::TempDir) -> String {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let bcrypt = bcrypt::hash("blue-sky", 4).expect("bcrypt");
    // Small argon2 parameters: the test checks the format, not the cost.
    let params = argon2::Params::new(1024, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(
            b"green-grass",
            &SaltString::encode_b64(b"sixteen byte sal").expect("salt"),
        )
        .expect("argon2")
        .to_string();
    let path = dir.path().join("users");
    std::fs::write(
        &path,
        format!("# the preview's testers\nann:{bcrypt}\n\nbob:{argon}\n"),
    )
    .expect("write users");
    path.display().to_string()
}

/// The host the basic rule covers (its port and case do not matter).
const STAFF: (&str, &str) = ("host", "staff.test:8080");

#[tokio::test]
async fn basic_auth_allows_the_right_password_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let users = users_file(&dir);
    let t = Running::start(&format!(
        "\n[[auth]]\nname = \"staff\"\nkind = \"basic\"\nusers_file = {users:?}\nrealm = \"staff only\"\nhost = \"Staff.Test\"\nuser_header = \"X-Auth-User\"\n"
    ))
    .await;
    // Another host: no credentials needed, and a forged identity header is removed.
    let open = t.get("/headers", &[("x-auth-user", "root")]).await;
    assert_eq!(open.status, StatusCode::OK);
    assert!(!open.body.contains("x-auth-user"), "{}", open.body);

    let none = t.get("/headers", &[STAFF]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers["www-authenticate"],
        "Basic realm=\"staff only\", charset=\"UTF-8\""
    );
    for (who, why) in [
        (basic("ann", "wrong"), "wrong password"),
        (basic("bob", "blue-sky"), "ann's password for bob"),
        (basic("eve", "blue-sky"), "no such user"),
        ("Basic !!!not-base64".to_owned(), "malformed"),
        ("Bearer abc".to_owned(), "another scheme"),
        (format!("Basic {}", "A".repeat(4000)), "huge"),
    ] {
        let a = t.get("/headers", &[STAFF, ("authorization", &who)]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(a.headers.contains_key("www-authenticate"), "{why}");
    }
    let before = t.blue.requests();
    for (user, password) in [
        ("ann", "blue-sky"),
        ("bob", "green-grass"),
        ("ann", "blue-sky"),
    ] {
        let a = t
            .get(
                "/headers",
                &[
                    STAFF,
                    ("authorization", &basic(user, password)),
                    ("x-auth-user", "root"),
                ],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{user}");
        // The verified user, once; never the client's copy.
        assert!(
            a.body.contains(&format!("\"x-auth-user\":[\"{user}\"]")),
            "{}",
            a.body
        );
    }
    assert_eq!(
        t.blue.requests() - before,
        3,
        "only the allowed reached blue"
    );
    let text = metrics(&t).await;
    assert!(
        text.contains("turnout_auth_total{outcome=\"refused\",rule=\"staff\"} 7"),
        "{text}"
    );
    assert!(
        text.contains("turnout_auth_total{outcome=\"allowed\",rule=\"staff\"} 3"),
        "{text}"
    );
    // The refused never count in blue's figures.
    assert!(
        !text.contains("turnout_requests_total{class=\"4xx\",pool=\"blue\"} 7"),
        "{text}"
    );
    t.stop().await;
}

#[tokio::test]
async fn forward_auth_allows_refuses_and_fails_closed() {
    let service = serve(|req| {
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let uri = req
            .headers()
            .get("x-forwarded-uri")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let method = req.headers().get("x-forwarded-method").cloned();
        let told = uri.as_deref() == Some("/headers?x=1") && method.is_some_and(|m| m == "GET");
        match auth.as_deref() {
            // Told what is asked for, as nginx's auth_request and Traefik tell it.
            Some("Bearer good") if told => Response::builder()
                .header("x-auth-user", "alice")
                .header("x-auth-secret", "not copied")
                .body(Full::new(Bytes::new())),
            Some("Bearer fired") => Response::builder()
                .status(403)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from_static(b"no longer here\n"))),
            Some("Bearer broken") => Response::builder()
                .status(500)
                .body(Full::new(Bytes::from_static(b"oops"))),
            _ => Response::builder()
                .status(401)
                .header("www-authenticate", "Bearer realm=\"sso\"")
                .body(Full::new(Bytes::from_static(b"who are you?\n"))),
        }
        .expect("an answer")
    })
    .await;
    let down = closed_port().await;
    let t = Running::start(&format!(
        "\n[[auth]]\nname = \"sso\"\nkind = \"forward\"\nurl = \"http://{service}/check\"\ncopy_headers = [\"X-Auth-User\"]\npath_prefix = \"/headers\"\n\
         [[auth]]\nname = \"gone\"\nkind = \"forward\"\nurl = \"http://{down}/check\"\ntimeout = \"2s\"\npath_prefix = \"/down\"\n"
    ))
    .await;
    let ok = t
        .get(
            "/headers?x=1",
            &[("authorization", "Bearer good"), ("x-auth-user", "mallory")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(
        ok.body.contains("\"x-auth-user\":[\"alice\"]"),
        "{}",
        ok.body
    );
    assert!(!ok.body.contains("x-auth-secret"), "{}", ok.body);

    let no = t.get("/headers", &[]).await;
    assert_eq!(no.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no.headers["www-authenticate"], "Bearer realm=\"sso\"");
    assert_eq!(no.body, "who are you?\n");
    let fired = t
        .get("/headers", &[("authorization", "Bearer fired")])
        .await;
    assert_eq!(fired.status, StatusCode::FORBIDDEN);
    assert_eq!(fired.body, "no longer here\n");

    let broken = t
        .get("/headers", &[("authorization", "Bearer broken")])
        .await;
    assert_eq!(broken.status, StatusCode::BAD_GATEWAY);
    assert!(
        broken.body.contains("authentication service"),
        "{}",
        broken.body
    );
    let unreachable = t.get("/down/x", &[("authorization", "Bearer good")]).await;
    assert_eq!(unreachable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        unreachable
            .body
            .contains("authentication service is unreachable"),
        "{}",
        unreachable.body
    );
    assert_eq!(
        t.blue.requests(),
        1,
        "only the allowed request reached blue"
    );
    let text = metrics(&t).await;
    assert!(
        text.contains("turnout_auth_total{outcome=\"failed\",rule=\"gone\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("turnout_auth_total{outcome=\"failed\",rule=\"sso\"} 1"),
        "{text}"
    );
    // An auth service's failure is not the app's: blue shows no 5xx.
    assert!(
        !text.contains("turnout_requests_total{class=\"5xx\",pool=\"blue\"} 1"),
        "{text}"
    );
    t.stop().await;
}

const SIGNER: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/shop/50dc6c495c0c9188";

/// The ALB's way: base64url segments padded with `=`.
fn b64_padded(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(data)
}

/// A token as an ALB makes it, signed with `key`.
fn token(key: &p256::ecdsa::SigningKey, kid: &str, signer: &str, exp: u64, padded: bool) -> String {
    use p256::ecdsa::signature::Signer as _;
    let enc = |d: &[u8]| {
        if padded {
            b64_padded(d)
        } else {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
        }
    };
    let header = serde_json::json!({
        "alg": "ES256", "kid": kid, "signer": signer, "iss": "https://idp.example",
        "client": "shop", "exp": exp, "typ": "JWT",
    });
    let claims = serde_json::json!({
        "sub": "u-1234", "email": "ann@example.com", "exp": exp, "iss": "https://idp.example",
    });
    let signed = format!(
        "{}.{}",
        enc(header.to_string().as_bytes()),
        enc(claims.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", enc(&sig.to_bytes()))
}

#[tokio::test]
async fn an_albs_signed_identity_passes_and_a_forged_one_is_refused() {
    use p256::pkcs8::EncodePublicKey as _;
    let alb = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).expect("a key");
    let forger = p256::ecdsa::SigningKey::from_bytes(&[9u8; 32].into()).expect("a key");
    let pem = alb
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .expect("pem");
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&fetches);
    let keys = serve(move |req| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if req.uri().path() == "/key-1" {
            Response::new(Full::new(Bytes::from(pem.clone())))
        } else {
            Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .expect("404")
        }
    })
    .await;
    let down = closed_port().await;
    let t = Running::start(&format!(
        "\n[[auth]]\nname = \"alb\"\nkind = \"alb\"\nkeys_url = \"http://{keys}\"\nsigner = \"{SIGNER}\"\npath_prefix = \"/headers\"\n\
         [[auth]]\nname = \"alb-down\"\nkind = \"alb\"\nkeys_url = \"http://{down}\"\nsigner = \"{SIGNER}\"\npath_prefix = \"/down\"\n"
    ))
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    for padded in [true, false] {
        let good = token(&alb, "key-1", SIGNER, now + 120, padded);
        let a = t
            .get(
                "/headers",
                &[
                    ("x-amzn-oidc-data", &good),
                    ("x-auth-email", "root@example.com"),
                ],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "padded: {padded}: {}", a.body);
        assert!(
            a.body.contains("\"x-auth-email\":[\"ann@example.com\"]")
                && a.body.contains("\"x-auth-user\":[\"u-1234\"]"),
            "{}",
            a.body
        );
    }
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the key is cached"
    );

    let good = token(&alb, "key-1", SIGNER, now + 120, true);
    let mut tampered = good.clone();
    // Another user's claims under the same signature.
    let parts: Vec<&str> = good.split('.').collect();
    let evil = b64_padded(
        serde_json::json!({"sub": "admin", "email": "admin@example.com", "exp": now + 120})
            .to_string()
            .as_bytes(),
    );
    tampered = tampered.replace(parts[1], &evil);
    for (bad, why) in [
        (
            token(&forger, "key-1", SIGNER, now + 120, true),
            "signed by another key",
        ),
        (tampered, "claims changed"),
        (token(&alb, "key-1", SIGNER, now - 10, true), "expired"),
        (
            token(
                &alb,
                "key-1",
                &SIGNER.replace("shop", "other"),
                now + 120,
                true,
            ),
            "another load balancer",
        ),
        (
            token(&alb, "key-2", SIGNER, now + 120, true),
            "unknown key id",
        ),
        (
            token(&alb, "../key-1", SIGNER, now + 120, true),
            "a path in the key id",
        ),
        ("not.a-jwt".to_owned(), "malformed"),
        ("a.b.c".to_owned(), "garbage segments"),
        (format!("{}.{}", "a".repeat(20_000), "b.c"), "huge"),
    ] {
        let a = t.get("/headers", &[("x-amzn-oidc-data", &bad)]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{why}: {}", a.body);
    }
    assert_eq!(
        t.get("/headers", &[]).await.status,
        StatusCode::UNAUTHORIZED,
        "no token: not through the ALB"
    );
    // An unknown key id is asked once, then refused from memory.
    let again = token(&alb, "key-2", SIGNER, now + 120, true);
    assert_eq!(
        t.get("/headers", &[("x-amzn-oidc-data", &again)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The key server is down: fail closed.
    let a = t.get("/down/x", &[("x-amzn-oidc-data", &good)]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(
        t.blue.requests(),
        2,
        "only the two good tokens reached blue"
    );
    t.stop().await;
}

#[tokio::test]
async fn auth_on_greens_preview_ends_when_green_goes_live() {
    let dir = tempfile::tempdir().expect("dir");
    let users = users_file(&dir);
    let t = Running::start_routing(
        &format!("\n[[auth]]\nname = \"preview\"\nkind = \"basic\"\nusers_file = {users:?}\npool = \"green\"\n"),
        "preview_header = \"X-Turnout-Pool\"\n",
    )
    .await;
    t.wait_healthy("green").await;
    // Blue, live: open.
    let a = t.get("/", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "blue\n"));
    // Green's preview: credentials needed.
    let preview = [("x-turnout-pool", "green")];
    assert_eq!(t.get("/", &preview).await.status, StatusCode::UNAUTHORIZED);
    let auth = basic("ann", "blue-sky");
    let a = t.get("/", &[preview[0], ("authorization", &auth)]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "green\n"));

    t.switch("green").await;
    // Green is live: everyone reaches it without credentials, through the preview too.
    let a = t.get("/", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "green\n"));
    assert_eq!(t.get("/", &preview).await.status, StatusCode::OK);
    // And blue, no longer live, is not under green's rule.
    let a = t.get("/", &[("x-turnout-pool", "blue")]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "blue\n"));
    // The health path never is.
    assert_eq!(
        t.get("/health-check", &preview).await.status,
        StatusCode::OK
    );
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_forward_auth_service_that_never_answers_fails_closed_at_its_timeout() {
    // Accepts, reads, never answers: the check fails closed at the rule's timeout (paused
    // time: the 3 s pass at once).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let t = Running::start(&format!(
        "\n[[auth]]\nname = \"slow\"\nkind = \"forward\"\nurl = \"http://{silent}/check\"\ntimeout = \"3s\"\n"
    ))
    .await;
    let started = tokio::time::Instant::now();
    let a = t.get("/", &[("authorization", "Bearer good")]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    assert_eq!(t.blue.requests(), 0);
    let text = metrics(&t).await;
    assert!(
        text.contains("turnout_auth_total{outcome=\"failed\",rule=\"slow\"} 1"),
        "{text}"
    );
    t.stop().await;
}
