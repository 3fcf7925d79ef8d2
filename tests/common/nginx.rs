//! Real nginx in front of tqsup's forward listener, the way production runs
//! it: upstream `keepalive 32` and `fastcgi_keep_conn on` (DESIGN §1).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Guard, Project, eventually, free_port};

/// A foreground nginx (one worker) on `127.0.0.1:port`, configured in
/// `<project>/nginx/`; killed with its workers when dropped.
pub struct Nginx {
    pub guard: Guard,
    /// The HTTP port on 127.0.0.1.
    pub port: u16,
    /// nginx's `error_log` (level info): upstream errors and PHP's stderr.
    pub error_log: PathBuf,
}

impl Nginx {
    /// Starts nginx serving `docroot`, passing `*.php` to the FastCGI server
    /// at `upstream` (`host:port` or a unix socket path) over kept-alive
    /// connections. `SCRIPT_FILENAME` is `$document_root$fastcgi_script_name`,
    /// so a symlinked root is passed unresolved.
    pub fn start(project: &Project, upstream: &str, docroot: &Path) -> Nginx {
        let dir = project.join("nginx");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let port = free_port();
        let error_log = dir.join("logs/error.log");
        let upstream = if upstream.starts_with('/') {
            format!("unix:{upstream}")
        } else {
            upstream.to_string()
        };
        let conf = project.write(
            "nginx/nginx.conf",
            &format!(
                "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {log} info;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_max_body_size 200m;\n\
                   upstream tqsup {{ server {upstream}; keepalive 32; }}\n\
                   server {{ listen 127.0.0.1:{port}; root {root};\n\
                     location ~ \\.php$ {{ include /etc/nginx/fastcgi_params;\n\
                       fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
                       fastcgi_keep_conn on; fastcgi_pass tqsup; }} }}\n}}\n",
                dir = dir.display(),
                log = error_log.display(),
                root = docroot.display(),
            ),
        );
        let guard = Guard::spawn(
            Command::new("/usr/sbin/nginx")
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(&dir),
            dir.join("stderr.log"),
        );
        let ok = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(ok.is_some(), "nginx did not start");
        Nginx {
            guard,
            port,
            error_log,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The error log so far ("" before nginx wrote one).
    pub fn error_log_text(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}
