//! The front door as a user meets it, with real clients against the real binary: a users file
//! made with `turnout hash-password` (the password on stdin), curl and Python's http.client
//! through basic auth; curl `--compressed` and Python decompressing gzip, byte for byte; curl
//! seeing 429 and its `Retry-After` past a rate.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::{BlueGreen, BIN};

/// curl with `args` against turnout: its stdout, failing the test if curl fails.
async fn curl(args: &[&str]) -> Vec<u8> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    out.stdout
}

/// Python's http.client running `script` (a program printing its findings): its stdout.
async fn python(script: &str) -> String {
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .await
        .expect("python3 runs");
    assert!(out.status.success(), "python: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `turnout hash-password` with `password` on its stdin: the hash.
async fn hash_password(password: &str) -> String {
    let mut child = tokio::process::Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("turnout hash-password");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .expect("write the password");
    drop(stdin);
    let out = child.wait_with_output().await.expect("it ends");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("text")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn curl_and_python_meet_auth_compression_and_limits() {
    let dir = tempfile::tempdir().expect("dir");
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!("ann:{}\n", hash_password("correct horse").await),
    )
    .expect("users file");
    let bg = BlueGreen::start_with(&format!(
        "\n[compression]\n\
         [limits]\n[[limits.rate]]\nname = \"search\"\nrate = \"1/h\"\nburst = 3\npath_prefix = \"/search\"\n\
         [[auth]]\nname = \"staff\"\nkind = \"basic\"\nhost = \"staff.test\"\nusers_file = {:?}\nuser_header = \"X-Auth-User\"\n",
        users.display().to_string()
    ))
    .await;
    let base = format!("http://{}", bg.turnout.proxy);
    let port = bg.turnout.proxy.port();

    // Basic auth, with curl's -u and without.
    let code = |out: Vec<u8>| String::from_utf8_lossy(&out).trim().to_owned();
    let url = format!("{base}/headers");
    let none = code(
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: staff.test",
            &url,
        ])
        .await,
    );
    assert_eq!(none, "401");
    let wrong = code(
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: staff.test",
            "-u",
            "ann:battery staple",
            &url,
        ])
        .await,
    );
    assert_eq!(wrong, "401");
    let seen =
        String::from_utf8(curl(&["-H", "Host: staff.test", "-u", "ann:correct horse", &url]).await)
            .expect("text");
    assert!(seen.contains("\"x-auth-user\":[\"ann\"]"), "{seen}");
    let py = python(&format!(
        "import http.client, base64\n\
         c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=10)\n\
         c.request('GET', '/headers', headers={{'Host': 'staff.test'}})\n\
         r = c.getresponse(); r.read(); print(r.status, r.getheader('WWW-Authenticate'))\n\
         t = base64.b64encode(b'ann:correct horse').decode()\n\
         c.request('GET', '/headers', headers={{'Host': 'staff.test', 'Authorization': 'Basic ' + t, 'X-Auth-User': 'root'}})\n\
         r = c.getresponse(); print(r.status, r.read().decode())\n"
    ))
    .await;
    assert!(
        py.starts_with("401 Basic realm=\"staff\", charset=\"UTF-8\"\n200 "),
        "{py}"
    );
    assert!(
        py.contains("\"x-auth-user\":[\"ann\"]") && !py.contains("root"),
        "{py}"
    );

    // Compression: curl asks for and decodes what it can; Python decompresses gzip itself.
    let original = turnout_testkit::upstream::json_body("blue", 20_000);
    let json = format!("{base}/json?bytes=20000");
    assert_eq!(curl(&["--compressed", &json]).await, original);
    let head =
        String::from_utf8(curl(&["--compressed", "-D", "-", "-o", "/dev/null", &json]).await)
            .expect("text")
            .to_ascii_lowercase();
    assert!(head.contains("content-encoding: "), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert_eq!(
        curl(&[&json]).await,
        original,
        "no Accept-Encoding: as it is"
    );
    let decoded = dir.path().join("decoded");
    let py = python(&format!(
        "import http.client, gzip\n\
         c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=10)\n\
         c.request('GET', '/json?bytes=20000', headers={{'Accept-Encoding': 'gzip'}})\n\
         r = c.getresponse(); raw = r.read()\n\
         open({:?}, 'wb').write(gzip.decompress(raw))\n\
         print(r.getheader('Content-Encoding'), len(raw))\n",
        decoded.display().to_string()
    ))
    .await;
    let mut fields = py.split_whitespace();
    assert_eq!(fields.next(), Some("gzip"), "{py}");
    let size: usize = fields.next().expect("a size").parse().expect("a number");
    assert!(
        size < original.len() / 2,
        "gzip sent {size} of {} bytes",
        original.len()
    );
    assert!(
        std::fs::read(&decoded).expect("python wrote it") == original,
        "python decoded what blue sent"
    );

    // Limits: the fourth search in the hour is refused, with when to come back.
    let search = format!("{base}/search");
    for _ in 0..3 {
        assert_eq!(
            code(curl(&["-o", "/dev/null", "-w", "%{http_code}", &search]).await),
            "200"
        );
    }
    let refused = String::from_utf8(curl(&["-D", "-", &search]).await)
        .expect("text")
        .to_ascii_lowercase();
    assert!(refused.starts_with("http/1.1 429"), "{refused}");
    let retry: u64 = refused
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "Retry-After: {retry}");
    // Other paths are not under the rate.
    assert_eq!(
        code(curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/")]).await),
        "200"
    );
}
