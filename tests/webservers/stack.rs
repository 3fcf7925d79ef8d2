//! The tqsup side of the web-server tests: a temp project with the PHP
//! scripts the assertions need, `tqsup run` supervising real php-fpm (the
//! shared harness), and the snippets of `config/webservers/` with only their
//! addresses substituted.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Tqsup, TqsupProject, free_addr, json, unique_name};

/// The addresses every snippet is written with (DEPLOYMENT.md says so too).
pub const SNIPPET_TQSUP: &str = "/run/tqsup-web/php.sock";
pub const SNIPPET_SITE: &str = "127.0.0.1:8080";
pub const SNIPPET_DOCROOT: &str = "/srv/app/public";

/// Size of the streamed response, and of the POST body.
pub const BIG_MIB: usize = 20;
pub const POST_MIB: usize = 5;

/// `tqsup run` (real php-fpm under it) with its forward listener on a unix
/// socket in the project, and a free port for the web server in front.
pub struct WebStack {
    pub tqsup: Tqsup,
    /// `forward.listen`, a unix socket path (mode 0666: the web servers'
    /// workers run as other users).
    pub forward: String,
    /// Where the web server listens, `127.0.0.1:port`.
    pub site: String,
    /// Last, so the processes are gone before the directory is removed.
    pub project: TqsupProject,
}

impl WebStack {
    pub fn start() -> WebStack {
        let mut project = TqsupProject::new();
        write_scripts(&project);
        let forward = project.join("fwd.sock").display().to_string();
        project.merge(json!({
            "php_fpm": {
                "document_root": "public",
                "pool": { "name": unique_name("ws"), "type": "static", "max_children": 4 },
            },
            "forward": { "listen": forward, "socket_mode": "0666" },
            "supervisor": { "stop_timeout_ms": 3000, "ready_timeout_ms": 10000 },
            "log": { "level": "info" },
        }));
        let tqsup = project.start();
        WebStack {
            tqsup,
            forward,
            site: free_addr(),
            project,
        }
    }

    pub fn docroot(&self) -> PathBuf {
        self.project.join("public")
    }

    /// A private directory for the web server's config, pid and logs.
    pub fn server_dir(&self, name: &str) -> PathBuf {
        let d = self.project.join(name);
        std::fs::create_dir_all(d.join("logs")).unwrap();
        crate::common::set_mode(&d, 0o755);
        crate::common::set_mode(&d.join("logs"), 0o777);
        d
    }

    /// `config/webservers/<file>` verbatim, addresses and root substituted.
    /// Each of the three must occur, so a snippet cannot drift away from what
    /// the docs tell operators to adapt.
    pub fn snippet(&self, file: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("config/webservers")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for needle in [SNIPPET_TQSUP, SNIPPET_SITE, SNIPPET_DOCROOT] {
            assert!(text.contains(needle), "{file} does not mention {needle}");
        }
        text.replace(SNIPPET_TQSUP, &self.forward)
            .replace(SNIPPET_SITE, &self.site)
            .replace(SNIPPET_DOCROOT, &self.docroot().display().to_string())
    }

    /// The site's port.
    pub fn site_port(&self) -> u16 {
        self.site.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// One 1 KiB block of the streamed response: its index, then a letter.
pub fn big_block(i: usize) -> Vec<u8> {
    let mut b = format!("{i:08}").into_bytes();
    b.resize(1024, b'a' + (i % 26) as u8);
    b
}

/// The PHP scripts the assertions need.
fn write_scripts(p: &crate::common::Project) {
    p.write(
        "public/index.php",
        "<?php header('Content-Type: text/plain; charset=utf-8'); header('X-Served-By: php');\n\
         echo 'hello ', $_GET['n'] ?? 'front', ' ', $_SERVER['REQUEST_METHOD'], \"\\n\";\n",
    );
    p.write(
        "public/echo.php",
        "<?php header('Content-Type: text/plain');\n\
         $h = hash_init('sha256'); $n = 0; $in = fopen('php://input', 'rb');\n\
         while (!feof($in)) { $c = fread($in, 65536); if ($c === false) break; $n += strlen($c); hash_update($h, $c); }\n\
         echo $n, ' ', hash_final($h), \"\\n\";\n",
    );
    // 20 MiB in 1 KiB blocks, flushed as it goes, no Content-Length: the web
    // server streams it (chunked). The hash of what was sent is a header.
    p.write(
        "public/big.php",
        &format!(
            "<?php while (ob_get_level()) ob_end_flush();\n\
             $blocks = {blocks};\n\
             function block($i) {{ return str_pad(sprintf('%08d', $i), 1024, chr(97 + $i % 26)); }}\n\
             $h = hash_init('sha256'); for ($i = 0; $i < $blocks; $i++) hash_update($h, block($i));\n\
             header('Content-Type: application/octet-stream'); header('X-Body-Sha256: ' . hash_final($h));\n\
             $buf = ''; for ($i = 0; $i < $blocks; $i++) {{ $buf .= block($i); if (strlen($buf) >= 65536) {{ echo $buf; flush(); $buf = ''; }} }}\n\
             echo $buf;\n",
            blocks = BIG_MIB * 1024
        ),
    );
    p.write(
        "public/redirect.php",
        "<?php header('Location: /landing.php?from=redirect', true, 302); echo \"moved\\n\";\n",
    );
    p.write(
        "public/missing.php",
        "<?php http_response_code(404); header('Content-Type: text/plain; charset=utf-8');\n\
         echo 'no such page: ', $_GET['p'] ?? '', \"\\n\";\n",
    );
    // FastCGI STDERR records before the headers and in the middle of the body.
    p.write(
        "public/stderr.php",
        "<?php error_log('tqsup-stderr-before ' . str_repeat('e', 2000));\n\
         header('Content-Type: text/plain'); echo \"part one\\n\"; flush();\n\
         error_log('tqsup-stderr-middle'); trigger_error('tqsup-warning', E_USER_WARNING);\n\
         echo \"part two\\n\";\n",
    );
}

/// Waits until something accepts on `port`.
/// (A failure prints the server's log as its guard drops.)
pub fn wait_listening(port: u16, name: &str) {
    let ok = crate::common::eventually(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(ok.is_some(), "{name} did not start listening");
}
