//! `turnout demo`: a blue/green deploy to try with nothing prepared. Two demo apps answer with
//! their colour (blue on 127.0.0.1:3000, green on 127.0.0.1:4000), turnout serves on
//! 127.0.0.1:8080 with its admin API on 127.0.0.1:9901, and the curl lines to try are printed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use turnout_config::Config;

const DEMO_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin = "127.0.0.1:9901"
shutdown_delay = "0s"
shutdown_timeout = "5s"

[pools.blue]
servers = ["127.0.0.1:3000"]

[pools.green]
servers = ["127.0.0.1:4000"]

[routing]
active = "blue"
"#;

/// `turnout demo`.
pub fn run() -> ExitCode {
    let config =
        Config::parse(DEMO_CONFIG, Path::new("<demo>")).expect("the built-in demo config is valid");
    let _log = crate::logbuf::init(config.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(async move {
        for (colour, port) in [("blue", 3000), ("green", 4000)] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    tokio::spawn(demo_app(listener, colour));
                }
                Err(e) => {
                    return crate::exit::fail(
                        1,
                        &format!(
                            "cannot start the {colour} demo app on {addr}: {e}. The demo needs \
                             ports 3000, 4000, 8080 and 9901 free on 127.0.0.1"
                        ),
                    );
                }
            }
        }
        let listeners = match crate::app::Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => return e.exit(),
        };
        let bound = listeners.bound();
        print_tour(bound.proxy, bound.admin);
        match crate::app::run(config, listeners, crate::signals::shutdown_signal()).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => e.exit(),
        }
    })
}

fn print_tour(proxy: SocketAddr, admin: SocketAddr) {
    let cli = cli_command();
    println!(
        r#"
turnout demo: blue app on 127.0.0.1:3000, green app on 127.0.0.1:4000,
proxy on http://{proxy}, admin API on http://{admin}. Ctrl-C to stop.

In another terminal:

  curl http://{proxy}/                                       # blue
  curl --json '{{"to":"green"}}' http://{admin}/v1/switch
  curl http://{proxy}/                                       # green
  curl -X POST http://{admin}/v1/rollback                   # back to blue
  curl http://{admin}/v1/status
  curl http://{proxy}/health-check                           # what the load balancer sees

or with the CLI:
  {cli} status
  {cli} switch green
  {cli} rollback
or in a browser:  http://{admin}/   (the dashboard)
"#
    );
}

/// How to run this very binary from another terminal: `turnout` when the one on PATH is this
/// one, else its full path (after `cargo run`, `target/debug/turnout`, which is on no PATH).
fn cli_command() -> String {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("turnout"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
    });
    match (me, on_path) {
        (Some(me), Some(found)) if me == found => "turnout".to_owned(),
        (Some(me), _) => shell_quote(&me.display().to_string()),
        (None, _) => "turnout".to_owned(),
    }
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A demo app: answers every request with its colour.
async fn demo_app(listener: TcpListener, colour: &'static str) {
    let body = Bytes::from(format!("Hello from {colour}\n"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let body = body.clone();
        let service = service_fn(move |_req| {
            let resp = Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header("x-color", colour)
                .body(Full::new(body.clone()))
                .expect("static headers are valid");
            async move { Ok::<_, Infallible>(resp) }
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
