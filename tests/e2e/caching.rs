//! Static files and the in-memory asset cache through the real binary: validators, ranges,
//! precompressed siblings, no way out of the root, HIT after MISS, one upstream request for many
//! concurrent misses, no cross-version hit after a switch, a warm hit after a rollback, purge,
//! and the byte bound.

use std::path::Path;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use turnout_testkit::client::{http_client, send, Answer};

use crate::BlueGreen;

async fn request(bg: &BlueGreen, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::builder().method(method).uri(bg.turnout.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(
        &http_client(),
        req.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
    .unwrap_or_else(|e| panic!("{path}: {e}\n{}", bg.turnout.logs()))
}

async fn get(bg: &BlueGreen, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(bg, Method::GET, path, headers).await
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .map_or("", |v| v.to_str().expect("ascii"))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_come_with_validators_ranges_and_precompressed_siblings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("public");
    write(&root.join("app.js"), b"console.log('v1');\n");
    write(&root.join("app.js.br"), b"BROTLI");
    write(&root.join("app.js.gz"), b"GZIP");
    write(&root.join("docs/index.html"), b"<h1>docs</h1>\n");
    let big: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 251) as u8).collect();
    write(&root.join("big.bin"), &big);
    write(&dir.path().join("secret.txt"), b"TOP SECRET\n");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt"))
        .expect("symlink");
    write(&root.join("evil.js"), b"fine\n");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("evil.js.gz"))
        .expect("symlink");

    let bg = BlueGreen::start_with(&format!(
        "\n[[static]]\nprefix = \"/static/\"\nroot = {:?}\nindex = \"index.html\"\n\
         cache_control = \"public, max-age=31536000, immutable\"\n\
         [cache]\nmax_bytes = \"1MiB\"\nmax_object = \"16KiB\"\n",
        root.display().to_string()
    ))
    .await;

    let a = get(&bg, "/static/app.js", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "console.log('v1');\n");
    assert_eq!(header(&a, "content-type"), "text/javascript");
    assert_eq!(header(&a, "content-length"), "19");
    assert_eq!(
        header(&a, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&a, "vary"), "Accept-Encoding");
    let etag = header(&a, "etag").to_owned();
    let last_modified = header(&a, "last-modified").to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");

    // Conditional requests.
    assert_eq!(
        get(&bg, "/static/app.js", &[("if-none-match", &etag)])
            .await
            .status,
        304
    );
    assert_eq!(
        get(&bg, "/static/app.js", &[("if-none-match", "\"other\"")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(
            &bg,
            "/static/app.js",
            &[("if-modified-since", &last_modified)]
        )
        .await
        .status,
        304
    );

    // Ranges, HEAD.
    let r = get(&bg, "/static/app.js", &[("range", "bytes=0-6")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (206, "console"));
    assert_eq!(header(&r, "content-range"), "bytes 0-6/19");
    let r = get(&bg, "/static/app.js", &[("range", "bytes=500-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(header(&r, "content-range"), "bytes */19");
    let h = request(&bg, Method::HEAD, "/static/app.js", &[]).await;
    assert_eq!(
        (
            h.status.as_u16(),
            header(&h, "content-length"),
            h.body.as_str()
        ),
        (200, "19", "")
    );
    assert_eq!(
        request(&bg, Method::POST, "/static/app.js", &[])
            .await
            .status,
        405
    );

    // Precompressed siblings by Accept-Encoding.
    let br = get(&bg, "/static/app.js", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(
        (br.body.as_str(), header(&br, "content-encoding")),
        ("BROTLI", "br")
    );
    assert_eq!(header(&br, "content-type"), "text/javascript");
    assert_ne!(header(&br, "etag"), etag);
    let gz = get(&bg, "/static/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (gz.body.as_str(), header(&gz, "content-encoding")),
        ("GZIP", "gzip")
    );
    let none = get(&bg, "/static/app.js", &[("accept-encoding", "br;q=0")]).await;
    assert_eq!(none.body, "console.log('v1');\n");

    // Index, missing files, and every way out of the root.
    assert_eq!(get(&bg, "/static/docs/", &[]).await.body, "<h1>docs</h1>\n");
    assert_eq!(get(&bg, "/static/nope.js", &[]).await.status, 404);
    for path in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/docs/../../secret.txt",
        "/static/..%5csecret.txt",
        "/static/app.js%00.png",
        "/static/link.txt",
    ] {
        let a = get(&bg, path, &[]).await;
        assert!(
            matches!(a.status.as_u16(), 403 | 404),
            "{path}: {}",
            a.status
        );
        assert!(!a.body.contains("SECRET"), "{path} leaked the file");
    }

    // Nor through a precompressed sibling that is a symlink out of the root.
    let a = get(&bg, "/static/evil.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (a.body.as_str(), header(&a, "content-encoding")),
        ("fine\n", "")
    );

    // A file larger than max_object streams from disk, ranges included.
    let a = get(&bg, "/static/big.bin", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(header(&a, "content-length"), "102400");
    assert_eq!(a.body.as_bytes(), String::from_utf8_lossy(&big).as_bytes());
    let r = get(&bg, "/static/big.bin", &[("range", "bytes=-3")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(header(&r, "content-range"), "bytes 102397-102399/102400");

    // A file replaced by a symlink out of the root after it was served: refused at once.
    write(&root.join("swap.txt"), b"plain\n");
    assert_eq!(get(&bg, "/static/swap.txt", &[]).await.body, "plain\n");
    std::fs::remove_file(root.join("swap.txt")).expect("rm");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("swap.txt"))
        .expect("symlink");
    let a = get(&bg, "/static/swap.txt", &[]).await;
    assert_eq!(a.status, 404, "{}", a.body);

    // Small files are held in memory, and re-read when they change on disk.
    let status = bg.status().await;
    assert!(
        status["cache"]["hits"].as_u64().expect("hits") > 0,
        "{status}"
    );
    write(&root.join("app.js"), b"console.log('version 2');\n");
    assert_eq!(
        get(&bg, "/static/app.js", &[]).await.body,
        "console.log('version 2');\n"
    );
}

/// BlueGreen with assets under /assets/ cached.
async fn cached_pools(extra: &str) -> BlueGreen {
    BlueGreen::start_with(&format!("\n[cache]\nprefixes = [\"/assets/\"]\n{extra}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_never_serves_the_other_versions_copy_and_a_rollback_finds_its_own_warm() {
    let bg = cached_pools("").await;
    let a = get(&bg, "/assets/app.js", &[]).await;
    assert_eq!(
        (a.body.as_str(), header(&a, "x-cache")),
        ("blue /assets/app.js\n", "MISS")
    );
    let a = get(&bg, "/assets/app.js", &[]).await;
    assert_eq!(
        (a.body.as_str(), header(&a, "x-cache")),
        ("blue /assets/app.js\n", "HIT")
    );
    assert_eq!(bg.blue.requests(), 1);
    // The client's validator against the kept copy: 304 from memory.
    let etag = header(&a, "etag").to_owned();
    assert_eq!(
        get(&bg, "/assets/app.js", &[("if-none-match", &etag)])
            .await
            .status,
        304
    );

    bg.switch("green").await;
    let a = get(&bg, "/assets/app.js", &[]).await;
    assert_eq!(
        (a.body.as_str(), header(&a, "x-cache")),
        ("green /assets/app.js\n", "MISS")
    );
    assert_eq!(
        header(&get(&bg, "/assets/app.js", &[]).await, "x-cache"),
        "HIT"
    );

    // Blue's servers are gone, and yet the rollback serves blue's copy from memory.
    bg.blue.kill();
    let (status, json) = bg.post("/v1/rollback", r#"{"force":true}"#).await;
    assert_eq!(status, 200, "{json}");
    let a = get(&bg, "/assets/app.js", &[]).await;
    assert_eq!(
        (a.body.as_str(), header(&a, "x-cache")),
        ("blue /assets/app.js\n", "HIT")
    );

    // A redeploy of blue (new servers) bumps its generation: cold again.
    bg.put_pool("blue", &[bg.green.server()]).await;
    let a = get(&bg, "/assets/app.js", &[]).await;
    assert_eq!(
        (a.body.as_str(), header(&a, "x-cache")),
        ("green /assets/app.js\n", "MISS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_cache_control_allows_is_kept_and_vary_and_purge_work() {
    let bg = cached_pools("").await;
    for cc in ["no-store", "private,%20max-age=60", "no-cache", "max-age=0"] {
        let path = format!("/assets/x.js?cc={cc}");
        for _ in 0..2 {
            assert_eq!(
                header(&get(&bg, &path, &[]).await, "x-cache"),
                "MISS",
                "{cc}"
            );
        }
    }
    assert_eq!(bg.blue.requests(), 8);
    // Outside the prefixes nothing is cached.
    get(&bg, "/other", &[]).await;
    assert_eq!(header(&get(&bg, "/other", &[]).await, "x-cache"), "");

    // Vary: the first answer teaches the header names, then each value has its own copy.
    let vary = [("x-test-vary", "Accept-Language")];
    let with = |lang: &'static str| {
        [
            ("x-test-vary", "Accept-Language"),
            ("accept-language", lang),
        ]
    };
    assert_eq!(
        header(&get(&bg, "/assets/v.js", &vary).await, "x-cache"),
        "MISS"
    );
    assert_eq!(
        header(&get(&bg, "/assets/v.js", &with("en")).await, "x-cache"),
        "MISS"
    );
    assert_eq!(
        header(&get(&bg, "/assets/v.js", &with("en")).await, "x-cache"),
        "HIT"
    );
    assert_eq!(
        header(&get(&bg, "/assets/v.js", &with("fr")).await, "x-cache"),
        "MISS"
    );

    // Purge by prefix, by pool, and everything.
    get(&bg, "/assets/a.js", &[]).await;
    get(&bg, "/assets/b.js", &[]).await;
    let base = bg.admin_base();
    let delete = |q: &'static str| {
        let base = base.clone();
        async move {
            turnout_testkit::client::admin(
                &base,
                Method::DELETE,
                &format!("/v1/cache{q}"),
                None,
                None,
            )
            .await
        }
    };
    let (status, json) = delete("?prefix=/assets/a").await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["purged"], 1, "{json}");
    assert_eq!(
        header(&get(&bg, "/assets/a.js", &[]).await, "x-cache"),
        "MISS"
    );
    assert_eq!(
        header(&get(&bg, "/assets/b.js", &[]).await, "x-cache"),
        "HIT"
    );
    assert_eq!(delete("?pool=purple").await.0, 404);
    assert_eq!(delete("?prefix=assets").await.0, 400);
    let (_, json) = delete("?pool=green").await;
    assert_eq!(json["purged"], 0, "{json}");
    let (_, json) = delete("").await;
    assert!(json["purged"].as_u64().expect("count") >= 3, "{json}");
    assert_eq!(json["cache"]["entries"], 0, "{json}");
    assert_eq!(
        header(&get(&bg, "/assets/b.js", &[]).await, "x-cache"),
        "MISS"
    );

    let metrics = bg.turnout.metrics().await;
    assert!(metrics.contains("turnout_cache_hits_total"), "{metrics}");
    assert!(metrics.contains("turnout_cache_bytes"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_upstream_request_and_a_flood_stays_within_the_bound() {
    let bg = cached_pools("max_bytes = \"256KiB\"\nmax_object = \"64KiB\"\n").await;
    let client = http_client();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            let url = bg.turnout.url("/assets/slow.js?ms=500");
            tokio::spawn(async move { turnout_testkit::client::get(&client, &url).await })
        })
        .collect();
    for t in tasks {
        let a = turnout_testkit::within(20, "a coalesced answer", t)
            .await
            .expect("join")
            .expect("answer");
        assert_eq!(
            (a.status.as_u16(), a.body.as_str()),
            (200, "blue /assets/slow.js\n")
        );
    }
    assert_eq!(
        bg.blue.requests(),
        1,
        "20 concurrent misses, one upstream request"
    );

    // 400 distinct 60 kB assets (24 MB) through a 256 KiB cache: the bytes held stay within
    // the bound, and so does the process (its peak grows by far less than what went through).
    let peak_before = bg.turnout.peak_rss_kib();
    for i in 0..400 {
        let a = get(&bg, &format!("/assets/k{i}.js?bytes=60000"), &[]).await;
        assert_eq!(a.body.len(), 60000);
    }
    let status = bg.status().await;
    let bytes = status["cache"]["bytes"].as_u64().expect("bytes");
    assert!(bytes <= 256 * 1024, "{bytes} bytes held: {status}");
    assert!(
        status["cache"]["entries"].as_u64().expect("entries") <= 5,
        "{status}"
    );
    let grew = bg.turnout.peak_rss_kib().saturating_sub(peak_before);
    assert!(
        grew < 12 * 1024,
        "peak RSS grew {grew} KiB for a 256 KiB cache"
    );
    // Larger than max_object: streamed, never kept.
    let a = get(&bg, "/assets/huge.js?bytes=100000", &[]).await;
    assert_eq!(a.body.len(), 100_000);
    assert_eq!(
        header(
            &get(&bg, "/assets/huge.js?bytes=100000", &[]).await,
            "x-cache"
        ),
        "MISS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_one_fetch_get_only_what_fits_their_own_request() {
    let bg = cached_pools("").await;
    let base = bg.turnout.url("");
    let send_one = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let url = format!("{base}{path}");
        tokio::spawn(async move {
            let mut req = Request::get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            send(
                &http_client(),
                req.body(Full::new(Bytes::new())).expect("req"),
            )
            .await
            .expect("answer")
        })
    };
    // One client revalidating, one not, at the same moment: the fetch asks for the whole
    // answer, the revalidating client gets 304 and the other the body.
    let a = send_one("/assets/c.js?ms=300", vec![("if-none-match", "\"blue-1\"")]);
    let b = send_one("/assets/c.js?ms=300", vec![]);
    let (a, b) = (a.await.expect("join"), b.await.expect("join"));
    assert_eq!(a.status, 304, "{a:?}");
    assert_eq!(
        (b.status.as_u16(), b.body.as_str()),
        (200, "blue /assets/c.js\n")
    );
    assert_eq!(bg.blue.requests(), 1);

    // An answer that is not kept, varying on a header the two clients sent differently: each
    // gets its own fetch; with the same value, they share one.
    let vary = ("x-test-vary", "Accept-Language");
    let path = "/assets/v.js?cc=no-store&ms=300";
    let en = send_one(path, vec![vary, ("accept-language", "en")]);
    let fr = send_one(path, vec![vary, ("accept-language", "fr")]);
    assert_eq!(en.await.expect("join").status, 200);
    assert_eq!(fr.await.expect("join").status, 200);
    assert_eq!(bg.blue.requests(), 3, "en and fr were fetched apart");
}
