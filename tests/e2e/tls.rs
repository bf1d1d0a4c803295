//! The HTTPS listener: SNI and ALPN, `X-Forwarded-Proto`, the https redirect, certificate
//! renewal (admin API, SIGHUP, file watch) without dropping open connections, refused files,
//! bounded handshakes, and `https://` upstreams trusted through a pool's own CA. Every
//! certificate is made here with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use turnout_testkit::process::{Sandbox, Turnout};
use turnout_testkit::upstream::TestUpstream;

use crate::{BlueGreen, BIN};

/// A test CA that signs leaf certificates.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA cert");
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The CA's certificate, PEM.
    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf for `names` (DNS names or IP addresses), valid from yesterday for `days`
    /// (negative: already expired); returns (chain PEM, key PEM, leaf DER).
    pub(crate) fn leaf(
        &self,
        names: &[&str],
        days: i64,
    ) -> (String, String, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        let now = time_now();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (
            format!("{}{}", cert.pem(), self.cert.pem()),
            key.serialize_pem(),
            cert.der().clone(),
        )
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    // Written beside, then renamed into place, as a renewal tool does.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// The HTTPS address from turnout's "turnout is serving" line.
fn https_addr(turnout: &Turnout) -> SocketAddr {
    let line = turnout
        .find_log("turnout is serving")
        .expect("serving line");
    let at = line.find("https=").expect("https= in the serving line") + "https=".len();
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after https= in {line}"))
}

/// A TLS client trusting `roots`, offering `alpn`, TLS 1.3 and 1.2.
fn connector(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    connector_for(roots, alpn, rustls::DEFAULT_VERSIONS)
}

/// A TLS client trusting `roots`, offering `alpn` and only `versions`.
fn connector_for(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Each handshake a full one: a resumed session shows the certificate of the first.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| panic!("handshake with {name}: {e}"))
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a peer certificate")
        .clone()
        .into_owned()
}

/// An HTTP/1.1 connection over `stream`: a sender for several requests.
async fn h1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

async fn get_h1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, String) {
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `[tls]` lines for `[server]`'s extra text: a listener on any port and these pairs.
/// `cert.pem` and `key.pem` in `dir`: a leaf for `app.test` from `ca`, valid for `days`; and
/// the leaf's DER, to tell which certificate a handshake got.
fn app_test_files(ca: &Ca, dir: &Path, days: i64) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let (chain, key, der) = ca.leaf(&["app.test"], days);
    (
        write(dir, "cert.pem", &chain),
        write(dir, "key.pem", &key),
        der,
    )
}

fn tls_lines(pairs: &[(&Path, &Path)], extra: &str) -> String {
    let mut text = format!("{extra}\n[tls]\nlisten = \"127.0.0.1:0\"\n");
    for (cert, key) in pairs {
        text.push_str(&format!(
            "[[tls.certs]]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
    text
}

#[tokio::test]
async fn sni_alpn_forwarded_proto_redirect_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("turnout test CA");
    let (a_chain, a_key, a_der) = ca.leaf(&["a.test", "127.0.0.1"], 90);
    let (b_chain, b_key, b_der) = ca.leaf(&["*.b.test"], 30);
    let a = (
        write(dir.path(), "a.pem", &a_chain),
        write(dir.path(), "a.key", &a_key),
    );
    let b = (
        write(dir.path(), "b.pem", &b_chain),
        write(dir.path(), "b.key", &b_key),
    );
    let bg = BlueGreen::start_with(&tls_lines(
        &[(&a.0, &a.1), (&b.0, &b.1)],
        "redirect_https = true",
    ))
    .await;
    let https = https_addr(&bg.turnout);
    let roots = [ca.der()];

    // SNI picks the wildcard certificate; ALPN offers h2 first and gets it.
    let tls = connector(&roots, &[b"h2", b"http/1.1"]);
    let stream = handshake(&tls, https, "shop.b.test").await;
    assert_eq!(peer_leaf(&stream), b_der, "*.b.test serves shop.b.test");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://shop.b.test/headers")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 answer");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let headers: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(headers["x-forwarded-proto"][0], "https", "{headers}");

    // An exact name, and a client that asks for HTTP/1.1 only.
    let tls_h1 = connector(&roots, &[b"http/1.1"]);
    let stream = handshake(&tls_h1, https, "a.test").await;
    assert_eq!(peer_leaf(&stream), a_der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut sender = h1(stream).await;
    let (status, body) = get_h1(&mut sender, "a.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "blue\n"));

    // A WebSocket over the TLS listener (wss), tunneled as over the plain one.
    let stream = handshake(&tls_h1, https, "a.test").await;
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async("wss://a.test/ws", stream),
    )
    .await
    .expect("ws upgrade in time")
    .expect("ws upgrade");
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await
        .expect("ws send");
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("ws echo in time")
        .expect("a message")
        .expect("ws read");
    assert_eq!(echo.into_text().expect("text").as_str(), "blue:hello");

    // A client that speaks TLS 1.2 only is served TLS 1.2.
    let tls12 = connector_for(&roots, &[b"http/1.1"], &[&rustls::version::TLS12]);
    let stream = handshake(&tls12, https, "a.test").await;
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut sender = h1(stream).await;
    let (status, body) = get_h1(&mut sender, "a.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "blue\n"));

    // No SNI at all (an IP address): the first certificate.
    let stream = handshake(&tls_h1, https, "127.0.0.1").await;
    assert_eq!(peer_leaf(&stream), a_der, "the default certificate");

    // The plain listener redirects, but for the health path.
    let plain = turnout_testkit::client::http_client();
    let resp = turnout_testkit::client::get(&plain, &bg.turnout.url("/shop/cart?id=7"))
        .await
        .expect("plain answer");
    assert_eq!(resp.status, 308);
    let location = resp.headers.get("location").expect("location");
    assert_eq!(
        location,
        &format!("https://127.0.0.1:{}/shop/cart?id=7", https.port())
    );
    let health = turnout_testkit::client::get(&plain, &bg.turnout.url("/health-check"))
        .await
        .expect("health answer");
    assert_eq!(
        health.status, 200,
        "the load balancer's plain check still works"
    );

    // Status and metrics describe both certificates.
    let status = bg.status().await;
    let certs = status["tls"].as_array().expect("tls in status");
    assert_eq!(certs.len(), 2, "{status}");
    assert_eq!(
        certs[0]["names"],
        serde_json::json!(["a.test", "127.0.0.1"])
    );
    assert_eq!(certs[1]["names"], serde_json::json!(["*.b.test"]));
    let days = certs[1]["days_left"].as_i64().expect("days_left");
    assert!((29..=30).contains(&days), "{status}");
    let metrics = reqwest_text(&bg.turnout.admin_url("/metrics")).await;
    assert!(
        metrics.contains("turnout_tls_cert_not_after_seconds{cert=")
            && metrics.contains("name=\"*.b.test\""),
        "{metrics}"
    );
}

async fn reqwest_text(url: &str) -> String {
    let client = turnout_testkit::client::http_client();
    turnout_testkit::client::get(&client, url)
        .await
        .expect("GET")
        .body
}

/// `POST /v1/tls/reload`, expected to be refused with `status`: the error it gives.
async fn reload_refused(bg: &BlueGreen, status: u16) -> String {
    let (got, json) = bg.post("/v1/tls/reload", "").await;
    assert_eq!(got, status, "{json}");
    json["error"].as_str().expect("an error").to_owned()
}

#[tokio::test]
async fn renewal_keeps_open_connections_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("turnout test CA");
    let (chain1, key1, der1) = ca.leaf(&["app.test"], 20);
    let cert = write(dir.path(), "fullchain.pem", &chain1);
    let key = write(dir.path(), "privkey.pem", &key1);
    let bg = BlueGreen::start_with(&tls_lines(&[(&cert, &key)], "")).await;
    let https = https_addr(&bg.turnout);
    let tls = connector(&[ca.der()], &[b"http/1.1"]);

    let old = handshake(&tls, https, "app.test").await;
    assert_eq!(peer_leaf(&old), der1);
    let mut old = h1(old).await;
    assert_eq!(get_h1(&mut old, "app.test", "/").await.0, 200);

    // Renewed: a new key and serial, written in place; the admin API reloads.
    let (chain2, key2, der2) = ca.leaf(&["app.test"], 90);
    write(dir.path(), "fullchain.pem", &chain2);
    write(dir.path(), "privkey.pem", &key2);
    let (status, json) = bg.post("/v1/tls/reload", "").await;
    assert_eq!(status, 200, "{json}");
    let days = json["certs"][0]["days_left"].as_i64().expect("days_left");
    assert!((89..=90).contains(&days), "{json}");
    let fresh = handshake(&tls, https, "app.test").await;
    assert_eq!(
        peer_leaf(&fresh),
        der2,
        "new handshakes get the renewed certificate"
    );
    // The connection opened before the reload carries on.
    assert_eq!(get_h1(&mut old, "app.test", "/").await.0, 200);

    // A key that is not the certificate's: refused, naming both files; still serving der2.
    let (_, other_key, _) = ca.leaf(&["app.test"], 90);
    write(dir.path(), "privkey.pem", &other_key);
    let error = reload_refused(&bg, 400).await;
    assert!(
        error.contains("privkey.pem") && error.contains("fullchain.pem"),
        "{error}"
    );
    // Bad PEM: refused, naming the file.
    write(dir.path(), "privkey.pem", &key2);
    write(
        dir.path(),
        "fullchain.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    );
    let error = reload_refused(&bg, 400).await;
    assert!(error.contains("fullchain.pem"), "{error}");
    // A file that is gone: the host's fault, 500, still naming it.
    std::fs::remove_file(&cert).expect("remove");
    let error = reload_refused(&bg, 500).await;
    assert!(error.contains("fullchain.pem"), "{error}");
    let still = handshake(&tls, https, "app.test").await;
    assert_eq!(peer_leaf(&still), der2, "the last good set keeps serving");
    assert_eq!(get_h1(&mut old, "app.test", "/").await.0, 200);

    // SIGHUP with the file still missing: a log line names it, nothing changes.
    bg.turnout.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = bg.turnout.find_log("SIGHUP: not reloaded") {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line for the failed SIGHUP reload:\n{}",
            bg.turnout.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(line.contains("fullchain.pem"), "{line}");
    assert_eq!(peer_leaf(&handshake(&tls, https, "app.test").await), der2);

    // SIGHUP does the same as the admin call.
    let (chain3, key3, der3) = ca.leaf(&["app.test"], 60);
    write(dir.path(), "fullchain.pem", &chain3);
    write(dir.path(), "privkey.pem", &key3);
    // (A reload: a new process reads the files, and serves.)
    bg.turnout.signal("HUP");
    wait_served(&bg, &tls, https, &der3, "SIGHUP").await;
    let pid = bg.status().await["process"]["pid"].as_u64().expect("a pid");
    bg.turnout.adopt(u32::try_from(pid).expect("a pid"));
}

/// Handshakes with `https` until the certificate served is `want` (at most 15 s).
async fn wait_served(
    bg: &BlueGreen,
    tls: &tokio_rustls::TlsConnector,
    https: SocketAddr,
    want: &CertificateDer<'static>,
    after: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while peer_leaf(&handshake(tls, https, "app.test").await) != *want {
        assert!(
            Instant::now() < deadline,
            "{after} did not reload within 15 s:\n{}",
            bg.turnout.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn file_watch_reloads_and_bad_files_stop_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("turnout test CA");
    let (cert, key, _) = app_test_files(&ca, dir.path(), 20);
    let bg = BlueGreen::start_with(&tls_lines(&[(&cert, &key)], "").replace(
        "[tls]\n",
        "[tls]\nwatch = true\nhandshake_timeout = \"1s\"\nmax_handshakes = 1\n",
    ))
    .await;
    let https = https_addr(&bg.turnout);
    let tls = connector(&[ca.der()], &[b"http/1.1"]);

    let (chain2, key2, der2) = ca.leaf(&["app.test"], 50);
    write(dir.path(), "key.pem", &key2);
    write(dir.path(), "cert.pem", &chain2);
    wait_served(&bg, &tls, https, &der2, "the file watch").await;

    // A client that connects and never says hello holds the only handshake slot until the
    // handshake timeout closes it; a real client behind it still gets through.
    let mut silent = TcpStream::connect(https).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting = tokio::spawn({
        let tls = tls.clone();
        async move { handshake(&tls, https, "app.test").await }
    });
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the silent client is closed within 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not answered: {read:?}"
    );
    let stream = waiting.await.expect("the queued client's handshake");
    assert_eq!(peer_leaf(&stream), der2);
    let _ = silent.shutdown().await;

    // At start-up, each bad file stops turnout with the file named.
    let (_, other_key, _) = ca.leaf(&["app.test"], 50);
    let (expired_chain, expired_key, _) = ca.leaf(&["old.test"], -1);
    let cases = [
        ("mismatch", chain2.clone(), other_key, "", "does not belong"),
        (
            "expired",
            expired_chain,
            expired_key,
            "reject_expired = true\n",
            "expired",
        ),
        ("nocert", String::new(), key2.clone(), "", "no certificate"),
    ];
    for (name, chain, key, extra, why) in cases {
        let sandbox = Sandbox::new(BIN);
        let cert = write(dir.path(), &format!("{name}.pem"), &chain);
        let key = write(dir.path(), &format!("{name}.key"), &key);
        let upstream = TestUpstream::start("blue").await;
        let config = sandbox.config(
            &[("blue", &[upstream.server()])],
            "blue",
            &tls_lines(&[(&cert, &key)], "").replace("[tls]\n", &format!("[tls]\n{extra}")),
        );
        sandbox.write_config(&config);
        let config = sandbox.config_path().display().to_string();
        // `turnout check` finds the same as `serve`, without starting.
        for out in [
            sandbox.serve_to_exit(),
            sandbox
                .command(&["check", "--config", &config])
                .output()
                .expect("run turnout check"),
        ] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(65), "{name}:\n{stderr}");
            assert!(
                stderr.contains(&format!("{name}.pem")) && stderr.contains(why),
                "{name}: {stderr}"
            );
        }
    }
}

/// An upstream that speaks only TLS and answers with the SNI name it was asked for and the
/// `X-Forwarded-Proto` it got.
async fn tls_upstream(chain: &str, key: &str) -> SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = stream.get_ref().1.server_name().unwrap_or("").to_owned();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let xfp = req
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = format!("secure sni={sni} xfp={xfp}\n");
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from(body)),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstreams_are_trusted_through_the_pools_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app_ca = Ca::new("app CA");
    let (chain, key, _) = app_ca.leaf(&["localhost"], 30);
    let upstream = tls_upstream(&chain, &key).await;
    let ca_file = write(dir.path(), "app-ca.pem", &app_ca.cert.pem());
    let blue = TestUpstream::start("blue").await;
    let sandbox = Sandbox::new(BIN);
    let secure = format!("https://localhost:{}", upstream.port());
    let mut config = sandbox.config(
        &[
            ("blue", &[blue.server()]),
            ("green", std::slice::from_ref(&secure)),
            ("untrusted", std::slice::from_ref(&secure)),
        ],
        "blue",
        "",
    );
    config.push_str(&format!(
        "[pools.green.tls]\nca = {:?}\n",
        ca_file.display().to_string()
    ));
    // `[pools.green.tls]` after `[routing]` would land in routing: put it before.
    let config = {
        let at = config.find("[routing]").expect("routing");
        let (head, tail) = config.split_at(at);
        let tls_at = tail.find("[pools.green.tls]").expect("tls");
        format!("{head}{}{}", &tail[tls_at..], &tail[..tls_at])
    };
    sandbox.write_config(&config);
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));

    // Green's server passes its checks over TLS; the gated switch goes through.
    let (status, json) = turnout_testkit::client::admin(
        &format!("http://{}", turnout.admin),
        http::Method::POST,
        "/v1/switch",
        Some("{\"to\":\"green\"}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}\n{}", turnout.logs());
    let client = turnout_testkit::client::http_client();
    let answer = turnout_testkit::client::get(&client, &turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, "secure sni=localhost xfp=http\n");

    // The same server without the CA (the system's roots) is not trusted: its checks fail
    // and say why.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = turnout.status().await;
        let server = &status["pools"]["untrusted"]["servers"][0];
        if let Some(error) = server["last_error"].as_str() {
            assert!(error.to_lowercase().contains("certificate"), "{error}");
            if server["healthy"] == false {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not marked unhealthy within 15 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Hardening item 2: sockets that connect to the TLS port and send nothing hold no handshake
/// slot, so real clients keep handshaking under such a flood. (Before, each idle socket held a
/// slot for the whole handshake timeout and real clients waited behind them for it.)
#[tokio::test]
async fn idle_sockets_do_not_starve_real_handshakes() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, der) = app_test_files(&ca, dir.path(), 20);
    let bg = BlueGreen::start_with(&tls_lines(&[(&cert, &key)], "").replace(
        "[tls]\n",
        "[tls]\nhandshake_timeout = \"60s\"\nmax_handshakes = 4\n",
    ))
    .await;
    let https = https_addr(&bg.turnout);
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(https).await.expect("connect"));
    }
    // Some that start a ClientHello and stop mid-record hold no slot either.
    for _ in 0..8 {
        let mut s = TcpStream::connect(https).await.expect("connect");
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .expect("write");
        idle.push(s);
    }
    let tls = connector(&[ca.der()], &[b"http/1.1"]);
    for i in 0..5 {
        // `handshake` allows 10 s; the flood would hold every slot for 60 s.
        let stream = handshake(&tls, https, "app.test").await;
        assert_eq!(peer_leaf(&stream), der, "client {i}");
        let mut sender = h1(stream).await;
        assert_eq!(
            get_h1(&mut sender, "app.test", "/").await,
            (200, "blue\n".to_owned())
        );
    }
    drop(idle);
}

/// Hardening item 12: over TLS, turnout's cookies (here the preview cookie) are `Secure` as well
/// as `HttpOnly; SameSite=Lax`; over plain HTTP they stay usable (no `Secure`).
#[tokio::test]
async fn cookies_are_secure_over_tls() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = app_test_files(&ca, dir.path(), 20);
    let bg = BlueGreen::start_full(
        &tls_lines(&[(&cert, &key)], ""),
        "preview_header = \"X-Preview\"\n",
    )
    .await;
    let https = https_addr(&bg.turnout);
    let tls = connector(&[ca.der()], &[b"http/1.1"]);
    let mut sender = h1(handshake(&tls, https, "app.test").await).await;
    let req = Request::get("/")
        .header("host", "app.test")
        .header("x-preview", "green")
        .body(Empty::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    let plain = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    let (mut plain, conn) = hyper::client::conn::http1::handshake(TokioIo::new(plain))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "app.test")
        .header("x-preview", "green")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = plain.send_request(req).await.expect("answer");
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains("Secure"),
        "{cookie}"
    );
}

/// An in-place upgrade hands the HTTPS listener over too: the new process serves HTTPS on the
/// same port with the same certificate, and a TLS keep-alive connection opened before the
/// upgrade gets its next answer (from the old process) with `Connection: close`.
#[tokio::test]
async fn an_upgrade_hands_the_https_listener_over() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, der) = app_test_files(&ca, dir.path(), 20);
    let bg = BlueGreen::start_with(&tls_lines(&[(&cert, &key)], "")).await;
    let https = https_addr(&bg.turnout);
    let tls = connector(&[ca.der()], &[b"http/1.1"]);
    let mut before = h1(handshake(&tls, https, "app.test").await).await;
    assert_eq!(
        get_h1(&mut before, "app.test", "/").await,
        (200, "blue\n".into())
    );

    let (status, json) = bg.turnout.upgrade(None).await;
    assert_eq!(status, 200, "{json}");
    let new_pid = json["pid"].as_u64().expect("pid");

    let req = Request::get("/")
        .header("host", "app.test")
        .body(Empty::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), before.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer on the connection opened before");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["connection"], "close");

    let stream = handshake(&tls, https, "app.test").await;
    assert_eq!(peer_leaf(&stream), der);
    let mut after = h1(stream).await;
    assert_eq!(
        get_h1(&mut after, "app.test", "/").await,
        (200, "blue\n".into())
    );
    let s = bg.turnout.status().await;
    assert_eq!(s["process"]["pid"], new_pid, "{s}");
    assert_eq!(s["tls"][0]["names"][0], "app.test", "{s}");
}

/// A TLS client trusting `roots` that keeps its sessions (rustls's default cache) and offers
/// only `versions`: it resumes when the server lets it.
fn resuming_connector(
    roots: &[CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One GET over a new connection from `tls`: how the handshake went, and the status.
async fn get_over(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> (Option<rustls::HandshakeKind>, u16) {
    let stream = handshake(tls, addr, "app.test").await;
    let kind = stream.get_ref().1.handshake_kind();
    let mut sender = h1(stream).await;
    // The answer is read whole: TLS 1.3 tickets arrive after the handshake, with it.
    let (status, _) = get_h1(&mut sender, "app.test", "/").await;
    (kind, status)
}

/// A client that comes back resumes its session (no certificate, no signature): over TLS 1.3
/// with a ticket, over TLS 1.2 too, after hundreds of other clients, and from Python's ssl
/// module as a real client does it. A
/// ticket another turnout issued (another process, other keys) is not resumed: that client
/// gets a full handshake and its answer, never an error.
#[tokio::test]
async fn a_returning_client_resumes_its_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("turnout test CA");
    let (cert, key, _) = app_test_files(&ca, dir.path(), 30);
    let bg = BlueGreen::start_with(&tls_lines(&[(&cert, &key)], "")).await;
    let https = https_addr(&bg.turnout);
    let roots = [ca.der()];
    for versions in [&[&rustls::version::TLS13], &[&rustls::version::TLS12]] {
        let tls = resuming_connector(&roots, versions);
        let first = get_over(&tls, https).await;
        assert_eq!(
            first,
            (Some(rustls::HandshakeKind::Full), 200),
            "{versions:?}"
        );
        for _ in 0..2 {
            let again = get_over(&tls, https).await;
            assert_eq!(
                again,
                (Some(rustls::HandshakeKind::Resumed), 200),
                "{versions:?}"
            );
        }
    }

    // A client that comes back after 300 others: a server-side cache of recent sessions
    // (rustls keeps 256) has forgotten it; a ticket carries its own session.
    let returning = resuming_connector(&roots, &[&rustls::version::TLS13]);
    assert_eq!(get_over(&returning, https).await.1, 200);
    for _ in 0..300 {
        let one_time = resuming_connector(&roots, &[&rustls::version::TLS13]);
        let stream = handshake(&one_time, https, "app.test").await;
        assert_eq!(get_h1(&mut h1(stream).await, "app.test", "/").await.0, 200);
    }
    assert_eq!(
        get_over(&returning, https).await,
        (Some(rustls::HandshakeKind::Resumed), 200)
    );

    // Python's ssl: the session of the first connection handed to the second.
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile={ca:?})
def get(session=None):
    raw = socket.create_connection(("127.0.0.1", {port}), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="app.test", session=session)
    s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    session, reused = s.session, s.session_reused
    s.close()
    return data.split(b"\r\n")[0].decode(), session, reused
status1, session, reused1 = get()
status2, _, reused2 = get(session)
print(status1, reused1, status2, reused2)
"#,
        ca = ca_file.display().to_string(),
        port = https.port()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .expect("python3 runs");
    assert!(out.status.success(), "python: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "HTTP/1.1 200 OK False HTTP/1.1 200 OK True"
    );

    // A ticket from another turnout (the same certificate, other ticket keys).
    let other = BlueGreen::start_with(&tls_lines(&[(&cert, &key)], "")).await;
    let elsewhere = https_addr(&other.turnout);
    let tls = resuming_connector(&roots, &[&rustls::version::TLS13]);
    assert_eq!(
        get_over(&tls, https).await,
        (Some(rustls::HandshakeKind::Full), 200)
    );
    assert_eq!(
        get_over(&tls, elsewhere).await,
        (Some(rustls::HandshakeKind::Full), 200),
        "a foreign ticket is not resumed, and costs the client nothing but a full handshake"
    );
    drop(other);
    drop(bg);
}
