//! `[compression]`: answers compressed by what the client accepts decode to the original byte
//! for byte (gzip, br, zstd); a client without `Accept-Encoding`, a small body, an app's own
//! encoding, a range request, `no-transform` are sent as they are; a streamed body comes out
//! as it goes in; cached assets are compressed once per version and served from the cache.

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncReadExt;
use turnout_testkit::client::{http_client, send};

use crate::harness::Running;

const ON: &str = "\n[compression]\n";

/// `data` decoded from `encoding`.
pub async fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipDecoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(data).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(data).read_to_end(&mut out).await,
        other => panic!("no decoder for {other}"),
    }
    .expect("decodes");
    out
}

#[tokio::test]
async fn each_encoding_decodes_to_the_original_and_a_plain_client_gets_the_original() {
    let t = Running::start(ON).await;
    let plain = t.get("/json?bytes=16384", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body_bytes.len(), 16384);
    assert_eq!(
        &plain.body_bytes[..],
        &turnout_testkit::upstream::json_body("blue", 16384)[..]
    );
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(plain.headers[header::CONTENT_LENGTH], "16384");
    assert_eq!(plain.headers[header::VARY], "accept-encoding");
    assert_eq!(plain.headers[header::ETAG], "\"blue-json-16384\"");
    for (accept, chosen) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "br"),
        ("br;q=0.1, gzip;q=0.8", "gzip"),
        ("zstd, gzip;q=0.5", "zstd"),
    ] {
        let a = t
            .get("/json?bytes=16384", &[("accept-encoding", accept)])
            .await;
        assert_eq!(a.status, 200, "{accept}");
        assert_eq!(a.headers[header::CONTENT_ENCODING], chosen, "{accept}");
        assert_eq!(a.headers[header::VARY], "accept-encoding");
        assert_eq!(a.headers[header::ETAG], "W/\"blue-json-16384\"", "{accept}");
        assert!(a.headers.get(header::CONTENT_LENGTH).is_none(), "{accept}");
        assert!(
            a.body_bytes.len() < 16384 / 3,
            "{accept}: {} bytes",
            a.body_bytes.len()
        );
        assert_eq!(
            decode(chosen, &a.body_bytes).await,
            plain.body_bytes,
            "{accept}"
        );
    }
    // Refused encodings, or only unknown ones: the original.
    for accept in ["identity", "deflate", "br;q=0, gzip;q=0, zstd;q=0", "*;q=0"] {
        let a = t
            .get("/json?bytes=16384", &[("accept-encoding", accept)])
            .await;
        assert!(
            a.headers.get(header::CONTENT_ENCODING).is_none(),
            "{accept}"
        );
        assert_eq!(a.body_bytes, plain.body_bytes, "{accept}");
    }
    t.stop().await;
}

#[tokio::test]
async fn small_bodies_app_encodings_ranges_heads_and_other_types_are_left_alone() {
    let t = Running::start("\n[compression]\nmin_size = \"2KiB\"\nencodings = [\"gzip\"]\n").await;
    let gz = [("accept-encoding", "gzip, br")];
    // Under min_size.
    let a = t.get("/json?bytes=1000", &gz).await;
    assert!(a.headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(a.body_bytes.len(), 1000);
    // The app set its own Content-Encoding: passed through, not compressed twice.
    let a = t.get("/json?bytes=8000&encoded=gzip", &gz).await;
    assert_eq!(a.headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(a.body_bytes.len(), 8000);
    // A range request gets the identity representation.
    let a = t
        .get(
            "/json?bytes=8000",
            &[("accept-encoding", "gzip"), ("range", "bytes=0-99")],
        )
        .await;
    assert!(a.headers.get(header::CONTENT_ENCODING).is_none());
    // Only the offered encodings: br is not in the list, gzip is.
    let a = t
        .get("/json?bytes=8000", &[("accept-encoding", "br")])
        .await;
    assert!(a.headers.get(header::CONTENT_ENCODING).is_none());
    // Not a listed type (an octet stream).
    let a = t.get("/download?bytes=8000", &gz).await;
    assert!(a.headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(a.body_bytes.len(), 8000);
    // HEAD: the headers a GET would get, no body.
    let req = Request::head(t.url("/json?bytes=8000"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send(&http_client(), req).await.expect("an answer");
    assert_eq!(a.headers[header::CONTENT_ENCODING], "gzip");
    assert!(a.body_bytes.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn a_streamed_body_is_compressed_as_it_streams() {
    let t = Running::start(ON).await;
    let client = http_client();
    let req = Request::get(t.url("/json?bytes=65536&chunks=8&ms=50"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    // Chunks arrive before the upstream has sent its last one.
    let mut body = resp.into_body();
    let mut frames = 0;
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.expect("a frame").into_data() {
            frames += 1;
            data.extend_from_slice(&d);
        }
    }
    assert!(frames > 1, "{frames} frames");
    assert_eq!(
        decode("gzip", &data).await,
        turnout_testkit::upstream::json_body("blue", 65536)
    );
    t.stop().await;
}

#[tokio::test]
async fn cached_assets_are_compressed_once_per_version_and_served_from_memory() {
    let t = Running::start("\n[cache]\nprefixes = [\"/assets/\"]\n\n[compression]\n").await;
    t.wait_healthy("green").await;
    let gz = [("accept-encoding", "gzip")];
    let first = t.get("/assets/app.js?bytes=20000", &gz).await;
    assert_eq!(first.headers[header::CONTENT_ENCODING], "gzip");
    let original = decode("gzip", &first.body_bytes).await;
    assert!(original.starts_with(b"blue /assets/app.js"));
    // The variant is made in the background: once made, a hit sends it with its length.
    let made = turnout_testkit::eventually(10, "the gzip variant is kept", || async {
        let a = t.get("/assets/app.js?bytes=20000", &gz).await;
        a.headers.get(header::CONTENT_LENGTH).is_some() && a.headers["x-cache"] == "HIT"
    });
    made.await;
    let hit = t.get("/assets/app.js?bytes=20000", &gz).await;
    assert_eq!(hit.headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(hit.headers[header::ETAG], "W/\"blue-1\"");
    assert_eq!(decode("gzip", &hit.body_bytes).await, original);
    assert_eq!(t.blue.requests(), 1, "one fetch from blue");
    // A client without Accept-Encoding still gets the original from the cache.
    let plain = t.get("/assets/app.js?bytes=20000", &[]).await;
    assert_eq!(plain.body_bytes, original);
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
    // After the switch, green's asset: never blue's variant.
    t.switch("green").await;
    let after = t.get("/assets/app.js?bytes=20000", &gz).await;
    let decoded = decode("gzip", &after.body_bytes).await;
    assert!(
        decoded.starts_with(b"green /assets/app.js"),
        "{:?}",
        &decoded[..20]
    );
    let metrics = t.get("/nothing", &[]).await;
    drop(metrics);
    t.stop().await;
}
