//! The four web servers, each started for real in the foreground from a
//! minimal main config generated in the project dir that includes (or, for
//! Caddy and HAProxy, is followed by) the snippet of `config/webservers/`.

use std::process::Command;

use super::stack::{WebStack, wait_listening};
use crate::common::Guard;

/// nginx: `-c main.conf -p dir`, the snippet included inside `http {}`.
pub fn nginx(tq: &WebStack) -> Guard {
    let dir = tq.server_dir("nginx");
    let snippet = tq
        .project
        .write("nginx/app.conf", &tq.snippet("nginx.conf"));
    let conf = tq.project.write(
        "nginx/nginx.conf",
        &format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  include /etc/nginx/mime.types;\n\
               client_body_temp_path {d}/tmp/body;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
               include {snippet};\n}}\n",
            d = dir.display(),
            snippet = snippet.display(),
        ),
    );
    make_tmp(&dir);
    let g = Guard::spawn(
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir),
        dir.join("stderr.log"),
    );
    wait_listening(tq.site_port(), "nginx");
    g
}

/// Apache 2.4: `-f httpd.conf -DFOREGROUND`, only the modules the snippet
/// needs, then `Include` of the snippet.
pub fn apache(tq: &WebStack) -> Guard {
    let dir = tq.server_dir("apache");
    let snippet = tq
        .project
        .write("apache/app.conf", &tq.snippet("apache.conf"));
    let modules: String = [
        ("mpm_event_module", "mod_mpm_event.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("dir_module", "mod_dir.so"),
        ("mime_module", "mod_mime.so"),
        ("proxy_module", "mod_proxy.so"),
        ("proxy_fcgi_module", "mod_proxy_fcgi.so"),
    ]
    .iter()
    .map(|(m, so)| format!("LoadModule {m} /usr/lib/apache2/modules/{so}\n"))
    .collect();
    let conf = tq.project.write(
        "apache/httpd.conf",
        &format!(
            "{modules}ServerRoot {d}\nServerName localhost\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\n\
             ErrorLog {d}/logs/error.log\nLogLevel warn\nUser www-data\nGroup www-data\n\
             TypesConfig /etc/mime.types\nStartServers 1\nServerLimit 1\nThreadsPerChild 25\nMaxRequestWorkers 25\n\
             Include {snippet}\n",
            d = dir.display(),
            snippet = snippet.display(),
        ),
    );
    let g = Guard::spawn(
        Command::new("/usr/sbin/apache2")
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND"),
        dir.join("stderr.log"),
    );
    wait_listening(tq.site_port(), "apache2");
    g
}

/// Caddy: `run --config Caddyfile --adapter caddyfile`, a global block that
/// keeps it off the admin endpoint, out of $HOME and off HTTPS, then the snippet.
pub fn caddy(tq: &WebStack) -> Guard {
    let dir = tq.server_dir("caddy");
    let conf = tq.project.write(
        "caddy/Caddyfile",
        &format!(
            "{{\n  admin off\n  storage file_system {d}/data\n  auto_https off\n}}\n\n{snippet}",
            d = dir.display(),
            snippet = tq.snippet("Caddyfile"),
        ),
    );
    let g = Guard::spawn(
        Command::new("/usr/bin/caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("xdg-data"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config")),
        dir.join("stderr.log"),
    );
    wait_listening(tq.site_port(), "caddy");
    g
}

/// HAProxy: `-db -f haproxy.cfg`, generated global/defaults, then the snippet.
pub fn haproxy(tq: &WebStack) -> Guard {
    let dir = tq.server_dir("haproxy");
    let conf = tq.project.write(
        "haproxy/haproxy.cfg",
        &format!(
            "global\n    log stderr format raw local0 info\n    pidfile {d}/haproxy.pid\n\n\
             defaults\n    mode http\n    log global\n    option httplog\n\
             \x20   timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n{snippet}",
            d = dir.display(),
            snippet = tq.snippet("haproxy.cfg"),
        ),
    );
    let g = Guard::spawn(
        Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf),
        dir.join("stderr.log"),
    );
    wait_listening(tq.site_port(), "haproxy");
    g
}

fn make_tmp(dir: &std::path::Path) {
    for sub in ["tmp", "tmp/body", "tmp/fastcgi"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).unwrap();
        crate::common::set_mode(&p, 0o777);
    }
}
