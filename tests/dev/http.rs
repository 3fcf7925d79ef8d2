//! The dev HTTP front against real php-fpm.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_static_files_and_php() {
    with_timeout(async {
        let site = Site::start(vec![]).await;

        let r = site.get("/").await;
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["script_name"], "/index.php");
        assert_eq!(j["path_info"], serde_json::Value::Null);
        let root = site.project.join("public");
        assert_eq!(j["document_root"], root.to_str().unwrap());
        assert_eq!(
            j["script_filename"],
            root.join("index.php").to_str().unwrap()
        );

        let r = site.get("/style.css").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/css"));
        assert_eq!(r.text(), "body { color: red }\n");
        let etag = r.header("etag").expect("an ETag").to_string();
        let modified = r
            .header("last-modified")
            .expect("Last-Modified")
            .to_string();

        let r = request(
            site.port,
            &format!("GET /style.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"),
            b"",
        )
        .await;
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        let r = request(
            site.port,
            &format!("GET /style.css HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {modified}\r\n\r\n"),
            b"",
        )
        .await;
        assert_eq!(r.status, 304);

        let r = request(
            site.port,
            "GET /blog/42?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Test: hello\r\n\r\n",
            b"",
        )
        .await;
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["script_name"], "/index.php");
        assert_eq!(j["path_info"], "/blog/42");
        assert_eq!(j["request_uri"], "/blog/42?x=1");
        assert_eq!(j["query_string"], "x=1");
        assert_eq!(j["x"], "1");
        assert_eq!(j["http_x_test"], "hello");

        let r = site.get("/redirect.php").await;
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some("/x"));

        for bad in ["/../etc/passwd", "/%2e%2e/etc/passwd", "/.env", "/%2eenv"] {
            let r = site.get(bad).await;
            // 403 from the router: the request got through hyper as sent.
            assert_eq!(r.status, 403, "{bad}: {}", r.text());
            assert!(
                !r.text().contains("root:") && !r.text().contains("SECRET"),
                "{bad} leaked"
            );
        }
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_bodies_reach_php_intact() {
    with_timeout(async {
        let site = Site::start(vec![]).await;
        // 1 MiB of varied bytes: many FastCGI records.
        let body = common::varied_bytes(1024 * 1024);
        let expected = format!("{} {} application/octet-stream", body.len(), crc32(&body));

        let head = format!(
            "POST /post.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let r = request(site.port, &head, &body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), expected);

        // The same body chunked (no Content-Length).
        let mut chunked = Vec::new();
        for c in body.chunks(100_000) {
            chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            chunked.extend_from_slice(c);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = "POST /post.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = request(site.port, head, &chunked).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), expected);
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_as_php_flushes() {
    with_timeout(async {
        let site = Site::start(vec![]).await;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", site.port))
            .await
            .unwrap();
        let started = Instant::now();
        s.write_all(b"GET /stream.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let mut first_at = None;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if first_at.is_none() && raw.windows(5).any(|w| w == b"first") {
                first_at = Some(started.elapsed());
            }
        }
        let total = started.elapsed();
        let first_at = first_at.expect("first part arrived");
        assert!(
            first_at < Duration::from_millis(600),
            "first part after {first_at:?}"
        );
        assert!(
            total >= Duration::from_millis(800),
            "whole response after {total:?}"
        );
        let r = parse(&raw).unwrap();
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.text(), "firstsecond");
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_index_php_changes_the_next_response() {
    with_timeout(async {
        let site = Site::start(vec![]).await;
        assert_eq!(site.get("/").await.json()["version"], 1);
        // A person's edit comes more than a second after the last request;
        // opcache compares whole-second timestamps.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        site.project.write(
            "public/index.php",
            &INDEX_PHP.replace("'version' => 1", "'version' => 2"),
        );
        assert_eq!(site.get("/").await.json()["version"], 2);
        assert_eq!(site.get("/blog/1").await.json()["version"], 2);
        site.stop().await;
    })
    .await;
}

/// Byte ranges on a 10 MiB file: the first bytes, a middle slice, a
/// suffix, an open range, one past the end (416), several ranges (the
/// whole file), HEAD, and If-Range with a stale and a current ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_answer_range_requests() {
    with_timeout(async {
        let site = Site::start(vec![]).await;
        const LEN: usize = 10 * 1024 * 1024;
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let file = site.project.join("public/big.bin");
        std::fs::write(&file, &data).unwrap();
        common::set_mode(&file, 0o644);
        let port = site.port;
        let get = |range: &str, extra: &str| {
            let head = format!("GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: {range}\r\n{extra}\r\n");
            async move { request(port, &head, b"").await }
        };

        let r = get("bytes=0-99", "").await;
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some(&*format!("bytes 0-99/{LEN}"))
        );
        assert_eq!(r.header("content-length"), Some("100"));
        assert_eq!(r.body, &data[..100]);

        let (a, b) = (5_000_000, 5_999_999);
        let r = get(&format!("bytes={a}-{b}"), "").await;
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some(&*format!("bytes {a}-{b}/{LEN}"))
        );
        assert_eq!(r.body, &data[a..=b]);

        let r = get("bytes=-1000", "").await;
        assert_eq!(r.status, 206);
        let from = LEN - 1000;
        assert_eq!(
            r.header("content-range"),
            Some(&*format!("bytes {from}-{}/{LEN}", LEN - 1))
        );
        assert_eq!(r.body, &data[from..]);

        let r = get(&format!("bytes={}-", LEN - 10), "").await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &data[LEN - 10..]);

        let r = get(&format!("bytes={LEN}-"), "").await;
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some(&*format!("bytes */{LEN}")));
        assert!(r.body.is_empty());

        let r = get("bytes=0-1,10-11", "").await;
        assert_eq!(r.status, 200, "several ranges: the whole file");
        assert_eq!(r.body.len(), LEN);

        let head = "HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n";
        let r = request(site.port, head, b"").await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-length"), Some("10"));
        assert!(r.body.is_empty());

        let whole = site.get("/big.bin").await;
        assert_eq!(whole.status, 200);
        assert_eq!(whole.header("accept-ranges"), Some("bytes"));
        let etag = whole.header("etag").unwrap().to_string();
        let r = get("bytes=0-9", &format!("If-Range: {etag}\r\n")).await;
        assert_eq!(r.status, 206);
        let r = get("bytes=0-9", "If-Range: \"stale\"\r\n").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), LEN);
        site.stop().await;
    })
    .await;
}
