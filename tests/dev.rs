//! Dev mode against a real php-fpm: the test renders a config with tqsup's
//! own renderer, starts php-fpm itself, and drives `run_dev` in-process with
//! an mpsc receiver standing in for the supervisor.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{Reply, parse};
use common::{Guard, Project, TqsupProject, Value, free_port, json, php_fpm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tqsup::config;
use tqsup::control::Control;
use tqsup::dev::{PhpTarget, run_dev};
use tqsup::render;
use tqsup::render::InternalPaths;

/// Every test's hard limit.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

const INDEX_PHP: &str = r#"<?php
header('Content-Type: application/json');
echo json_encode([
    'version' => 1,
    'pid' => getmypid(),
    'script_name' => $_SERVER['SCRIPT_NAME'] ?? null,
    'script_filename' => $_SERVER['SCRIPT_FILENAME'] ?? null,
    'path_info' => $_SERVER['PATH_INFO'] ?? null,
    'request_uri' => $_SERVER['REQUEST_URI'] ?? null,
    'query_string' => $_SERVER['QUERY_STRING'] ?? null,
    'x' => $_GET['x'] ?? null,
    'method' => $_SERVER['REQUEST_METHOD'] ?? null,
    'http_x_test' => $_SERVER['HTTP_X_TEST'] ?? null,
    'document_root' => $_SERVER['DOCUMENT_ROOT'] ?? null,
]);
"#;

/// A project, its php-fpm, and `run_dev` serving it.
struct Site {
    php: Guard,
    port: u16,
    control: mpsc::Receiver<Control>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _rundir: tempfile::TempDir,
    /// Last, so php-fpm is gone before the directory is removed.
    project: TqsupProject,
}

/// One `dev.hooks` entry.
fn hook(name: &str, run: &str, paths: &str, then: &str) -> Value {
    json!({ "name": name, "run": run, "paths": [paths], "then": then })
}

impl Site {
    async fn start(hooks: Vec<Value>) -> Site {
        Self::start_with(hooks, json!({})).await
    }

    /// `watch`: more `dev.watch` keys.
    async fn start_with(hooks: Vec<Value>, watch: Value) -> Site {
        let mut project = TqsupProject::new();
        project.write("public/index.php", INDEX_PHP);
        project.write("public/style.css", "body { color: red }\n");
        project.write(
            "public/post.php",
            "<?php $in = file_get_contents('php://input');\n\
             echo strlen($in), ' ', sprintf('%u', crc32($in)), ' ', $_SERVER['CONTENT_TYPE'] ?? '-';\n",
        );
        project.write(
            "public/redirect.php",
            "<?php header('Location: /x', true, 302); echo 'moved';\n",
        );
        project.write(
            "public/stream.php",
            "<?php echo 'first'; ob_flush(); flush(); usleep(800000); echo 'second';\n",
        );
        project.write("public/.env", "SECRET=1\n");
        project.write("src/keep.txt", "");
        std::fs::create_dir_all(project.join(".tqserver")).unwrap();
        let port = free_port();
        project
            .merge(json!({
                "php_fpm": {
                    "document_root": "public",
                    "pool": { "type": "static", "max_children": 2 },
                },
                "forward": { "enabled": false },
                "dev": {
                    "http_listen": format!("127.0.0.1:{port}"),
                    "watch": { "debounce_ms": 150 },
                    "hooks": hooks,
                },
            }))
            .merge(json!({ "dev": { "watch": watch } }));
        let (config, _) = config::load(&project.write_config()).expect("config loads");
        Self::launch(project, config, port).await
    }

    /// Starts php-fpm for `config` (rendered by tqsup's renderer) and
    /// `run_dev` with the front on `port`, sending PHP straight to php-fpm.
    async fn launch(project: TqsupProject, mut config: config::Config, port: u16) -> Site {
        config.dev.http_listen = Some(format!("127.0.0.1:{port}"));
        let rundir = tempfile::Builder::new()
            .prefix("tqsup-dev-run-")
            .tempdir()
            .unwrap();
        let identity = render::resolve_identity(&config, true);
        let files = render::render(
            &config,
            &InternalPaths::generate(),
            &identity,
            rundir.path(),
            true,
        )
        .unwrap();
        files.write().unwrap();
        let cmd = render::php_fpm_command(&php_fpm(), &config, &identity, &files.main_path());
        let php = Guard::spawn(
            std::process::Command::new(&cmd[0]).args(&cmd[1..]),
            rundir.path().join("php-fpm.log"),
        );
        let render::RenderedFiles { endpoint, .. } = &files;
        let socket = match endpoint {
            config::Endpoint::Unix(p) => p.clone(),
            other => panic!("expected a unix socket, got {other}"),
        };
        wait_for(Duration::from_secs(10), || async { socket.exists() }).await;

        // No forward listener on this branch: straight to php-fpm.
        config.forward.enabled = false;
        let target = PhpTarget::for_config(&config, endpoint);
        assert_eq!(target.endpoint, *endpoint);
        let (tx, control) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_dev(
            Arc::new(config),
            tx,
            target,
            Default::default(),
            shutdown.clone(),
        ));
        let site = Site {
            php,
            port,
            control,
            shutdown,
            task,
            _rundir: rundir,
            project,
        };
        let ok = eventually(Duration::from_secs(10), || async {
            try_get(site.port, "/")
                .await
                .is_some_and(|r| r.status == 200)
        })
        .await;
        assert!(ok, "site never served /");
        site
    }

    async fn get(&self, path: &str) -> Reply {
        request(
            self.port,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
            b"",
        )
        .await
    }

    fn count(&self, name: &str) -> usize {
        std::fs::read_to_string(self.project.join(&format!(".tqserver/{name}")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The next supervisor request within `within`, if any.
    async fn next_control(&mut self, within: Duration) -> Option<Control> {
        tokio::time::timeout(within, self.control.recv())
            .await
            .ok()
            .flatten()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run_dev stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for<F, Fut>(timeout: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        eventually(timeout, f).await,
        "condition not met within {timeout:?}"
    );
}

async fn try_get(port: u16, path: &str) -> Option<Reply> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(head.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    parse(&raw)
}

/// Sends `head` (its `Connection: close` added) and `body`, reads the whole
/// response.
async fn request(port: u16, head: &str, body: &[u8]) -> Reply {
    let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("response within 20 s")
        .unwrap();
    parse(&raw).unwrap_or_else(|| panic!("bad response: {}", String::from_utf8_lossy(&raw)))
}

/// CRC-32 (IEEE), as PHP's crc32().
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

async fn with_timeout(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its hard timeout");
}

#[path = "dev/demo.rs"]
mod demo;
#[path = "dev/http.rs"]
mod http;
#[path = "dev/watch.rs"]
mod watch;
#[path = "dev/zero_config.rs"]
mod zero_config;
