//! The Debian package, installed for real: `scripts/package.sh` builds it,
//! `dpkg -i` installs it into a clean Debian 12 root made by debootstrap
//! (minbase + the distribution's php-fpm and man-db), and inside that root
//! (chroot) the files are where Debian wants them with the right modes,
//! `tqsup check` passes on the shipped /etc/tqsup/tqsup.yaml with the
//! distribution's php-fpm, `systemd-analyze verify` accepts the unit, the
//! man page renders and the bash completion loads and completes.
//!
//! Needs root (chroot, mount) and the Debian mirror of /etc/apt/sources.list
//! (or `$TQSUP_DEBIAN_MIRROR`) the first time: the bootstrapped root is kept
//! as a tarball under target/package-test/, so later runs need no network.
//! Without either, the test prints why and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Ran, run_with_timeout};

const SUITE: &str = "bookworm";
/// Packages added to minbase: what the checks run inside the root.
const INCLUDE: &str = "php-fpm,man-db";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    repo().join("target/package-test")
}

/// The first Debian mirror apt is configured with (deb822 `URIs:` or a
/// one-line `deb` entry), else deb.debian.org.
fn mirror() -> String {
    if let Ok(m) = std::env::var("TQSUP_DEBIAN_MIRROR") {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let uri = line
                .strip_prefix("URIs:")
                .and_then(|u| u.split_whitespace().next())
                .or_else(|| {
                    let mut w = line.split_whitespace().filter(|w| !w.starts_with('['));
                    (w.next() == Some("deb")).then(|| w.next()).flatten()
                });
            if let Some(uri) = uri.filter(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return uri.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// The bootstrapped root as a tarball, made once. Err(why) when it cannot
/// be made for a reason outside this repository (no debootstrap and no
/// way to install it, the mirror unreachable).
fn rootfs_tarball() -> Result<PathBuf, String> {
    let tarball = work_dir().join(format!("{SUITE}-minbase-{}.tar", INCLUDE.replace(',', "-")));
    if tarball.exists() {
        return Ok(tarball);
    }
    if !Path::new("/usr/sbin/debootstrap").exists() {
        let o = run_with_timeout(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "debootstrap"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(300),
        );
        if !o.status.success() {
            return Err(format!(
                "debootstrap is missing and could not be installed:\n{}",
                o.text()
            ));
        }
    }
    let build = work_dir().join(format!("debootstrap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(work_dir()).unwrap();
    let mirror = mirror();
    let started = Instant::now();
    say(&format!(
        "package test: debootstrap {SUITE} from {mirror} (first run only; takes minutes)"
    ));
    let o = run_with_timeout(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={INCLUDE}"))
            .arg(SUITE)
            .arg(&build)
            .arg(&mirror),
        Duration::from_secs(900),
    );
    if !o.status.success() {
        let log =
            std::fs::read_to_string(build.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&build);
        let all = format!("{}{}", String::from_utf8_lossy(&o.stderr), log);
        let unreachable = [
            "Failed getting release file",
            "Couldn't download",
            "Temporary failure resolving",
            "Could not resolve",
            "Connection refused",
            "unable to connect",
        ];
        if unreachable.iter().any(|m| all.contains(m)) {
            return Err(format!(
                "debootstrap cannot reach the mirror {mirror}:\n{all}"
            ));
        }
        panic!("{}\n{log}", o.text());
    }
    say(&format!(
        "package test: debootstrap took {:?}",
        started.elapsed()
    ));
    let partial = tarball.with_extension("tar.partial");
    let o = run_with_timeout(
        Command::new("tar")
            .arg("-C")
            .arg(&build)
            .args(["-cf"])
            .arg(&partial)
            .arg("."),
        Duration::from_secs(300),
    );
    assert_ok!(o);
    std::fs::rename(&partial, &tarball).unwrap();
    std::fs::remove_dir_all(&build).unwrap();
    Ok(tarball)
}

/// A fresh root unpacked from the tarball, with /proc mounted. Dropping it
/// unmounts /proc (also when a check panicked) and removes the root, and
/// refuses to remove anything while a mount is still inside.
struct Root {
    path: PathBuf,
    proc_mounted: bool,
}

impl Root {
    fn unpack(tarball: &Path) -> Root {
        let path = work_dir().join(format!("root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let mut root = Root {
            path,
            proc_mounted: false,
        };
        let o = run_with_timeout(
            Command::new("tar")
                .arg("-C")
                .arg(&root.path)
                .arg("-xf")
                .arg(tarball),
            Duration::from_secs(300),
        );
        assert_ok!(o);
        let o = run_with_timeout(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(root.path.join("proc")),
            Duration::from_secs(30),
        );
        assert_ok!(o);
        root.proc_mounted = true;
        root
    }

    fn join(&self, abs: &str) -> PathBuf {
        self.path.join(abs.trim_start_matches('/'))
    }

    /// `sh -c script` inside the root, as root, with a plain environment.
    fn sh(&self, script: &str) -> Ran {
        run_with_timeout(
            Command::new("chroot")
                .arg(&self.path)
                .args(["/bin/sh", "-c", script])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("LANG", "C.UTF-8")
                .env("HOME", "/root")
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(120),
        )
    }

    /// Like [`Root::sh`], but it must succeed; returns stdout.
    fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert_ok!(o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Whether anything is still mounted at or below the root.
    fn has_mounts(&self) -> bool {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.path.to_string_lossy().into_owned();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| m == root || m.starts_with(&format!("{root}/")))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.proc_mounted {
            let _ = run_with_timeout(
                Command::new("umount").arg(self.join("/proc")),
                Duration::from_secs(30),
            );
        }
        if self.has_mounts() {
            eprintln!(
                "not removing {}: something is still mounted inside it",
                self.path.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A line on the real stderr: libtest captures `eprintln!` of passing
/// tests, and a skip or the timings must be seen.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn skip(why: &str) {
    say(&format!("SKIPPED package test: {why}"));
}

/// Every packaged file with its mode and owner.
const FILES: &[(&str, &str)] = &[
    ("/usr/bin/tqsup", "755 root:root"),
    ("/etc/tqsup/tqsup.yaml", "644 root:root"),
    ("/lib/systemd/system/tqsup.service", "644 root:root"),
    ("/usr/share/man/man8/tqsup.8.gz", "644 root:root"),
    (
        "/usr/share/bash-completion/completions/tqsup",
        "644 root:root",
    ),
    ("/usr/share/zsh/vendor-completions/_tqsup", "644 root:root"),
    (
        "/usr/share/fish/vendor_completions.d/tqsup.fish",
        "644 root:root",
    ),
    (
        "/usr/share/doc/tqsup/examples/tqsup.example.yaml",
        "644 root:root",
    ),
    (
        "/usr/share/doc/tqsup/examples/tqsup.example.toml",
        "644 root:root",
    ),
    (
        "/usr/share/doc/tqsup/examples/webservers/nginx.conf",
        "644 root:root",
    ),
    (
        "/usr/share/doc/tqsup/examples/webservers/apache.conf",
        "644 root:root",
    ),
    (
        "/usr/share/doc/tqsup/examples/webservers/Caddyfile",
        "644 root:root",
    ),
    (
        "/usr/share/doc/tqsup/examples/webservers/haproxy.cfg",
        "644 root:root",
    ),
    ("/usr/share/doc/tqsup/DEPLOYMENT.md", "644 root:root"),
    ("/usr/share/doc/tqsup/copyright", "644 root:root"),
];

#[test]
fn the_deb_installs_into_a_clean_debian_12_and_works_there() {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (debootstrap, chroot, mount); run as root to test the package");
    }
    let started = Instant::now();
    let tarball = match rootfs_tarball() {
        Ok(t) => t,
        Err(why) => return skip(&why),
    };
    let t_rootfs = started.elapsed();

    let o = run_with_timeout(
        &mut Command::new(repo().join("scripts/package.sh")),
        Duration::from_secs(1200),
    );
    assert_ok!(o);
    let deb = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(
        deb.is_absolute() || repo().join(&deb).is_file(),
        "package.sh printed {deb:?}"
    );
    let deb = repo().join(deb);
    // Where the docs' `apt install ./target/debian/tqsup_*.deb` finds it.
    assert_eq!(deb.parent(), Some(repo().join("target/debian").as_path()));
    let name = deb.file_name().unwrap().to_string_lossy();
    assert!(
        name.starts_with("tqsup_") && name.ends_with(".deb"),
        "{name}"
    );
    let t_package = started.elapsed() - t_rootfs;

    let root = Root::unpack(&tarball);
    std::fs::copy(&deb, root.join("/tmp/tqsup.deb")).unwrap();
    // dpkg, not apt: the dependencies (php-fpm, libc6) must already be met
    // by the distribution's packages, and no network is needed.
    let install = root.ok("dpkg -i /tmp/tqsup.deb 2>&1");

    // Files in place, with their modes.
    let stat = root.ok(&format!(
        "stat -c '%n %a %U:%G' {}",
        FILES.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(" ")
    ));
    for (file, want) in FILES {
        assert!(
            stat.lines().any(|l| l == format!("{file} {want}")),
            "{file}: want {want}\n{stat}"
        );
    }
    let conffiles = root.ok("dpkg-query -W -f='${Conffiles}' tqsup");
    assert!(conffiles.contains("/etc/tqsup/tqsup.yaml"), "{conffiles}");
    let depends = root.ok("dpkg-query -W -f='${Depends}' tqsup");
    assert!(depends.contains("php-fpm | php8.4-fpm"), "{depends}");
    assert!(depends.contains("libc6"), "{depends}");

    // The unit is the repository's, running the packaged binary, and it is
    // enabled (not started: no systemd runs in a chroot).
    let unit = std::fs::read_to_string(root.join("/lib/systemd/system/tqsup.service")).unwrap();
    let source = std::fs::read_to_string(repo().join("systemd/tqsup.service")).unwrap();
    let settings = |u: &str| -> Vec<String> {
        u.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.replace("ExecStart=/usr/local/bin/", "ExecStart=/usr/bin/"))
            .collect()
    };
    assert_eq!(settings(&unit), settings(&source));
    assert!(unit.contains("\nExecStart=/usr/bin/tqsup run -c /etc/tqsup/tqsup.yaml\n"));
    assert!(
        root.join("/etc/systemd/system/multi-user.target.wants/tqsup.service")
            .is_symlink(),
        "not enabled:\n{install}"
    );
    let o = run_with_timeout(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path.display()))
            .arg("tqsup.service"),
        Duration::from_secs(60),
    );
    assert!(o.status.success() && o.stderr.is_empty(), "{}", o.text());
    // The unit's Group= exists there.
    root.ok("getent group www-data");

    // The shipped config works with the distribution's php-fpm.
    let check = root.ok("tqsup check -c /etc/tqsup/tqsup.yaml");
    assert!(
        check.contains("config ok") && check.contains("/usr/sbin/php-fpm8.2"),
        "{check}"
    );
    assert!(root.join("/var/www/html").is_dir());
    let explain = root.ok("tqsup print-cmd -c /etc/tqsup/tqsup.yaml --explain");
    assert!(
        explain.contains("# php-fpm: /usr/sbin/php-fpm8.2"),
        "{explain}"
    );

    // The man page renders, without groff warnings.
    let o = root.sh("MANWIDTH=80 man -P cat -l /usr/share/man/man8/tqsup.8.gz");
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", o.text());
    for s in [
        "tqsup(8)",
        "SYNOPSIS",
        "COMMANDS",
        "print-cmd",
        "EXIT STATUS",
    ] {
        assert!(page.contains(s), "no {s} in the man page:\n{page}");
    }
    let man_k = root.ok("man -w tqsup");
    assert_eq!(man_k.trim(), "/usr/share/man/man8/tqsup.8.gz");

    // The bash completion loads and completes subcommands.
    let complete = root.ok(
        "bash -c 'source /usr/share/bash-completion/completions/tqsup; complete -p tqsup; \
         COMP_WORDS=(tqsup pr); COMP_CWORD=1; _tqsup tqsup pr tqsup; echo \"${COMPREPLY[*]}\"'",
    );
    assert!(complete.contains("-F _tqsup tqsup"), "{complete}");
    assert!(
        complete.lines().any(|l| l.trim() == "print-cmd"),
        "{complete}"
    );

    // Removal keeps the edited conffile; purge removes it.
    root.ok("echo '# edited' >> /etc/tqsup/tqsup.yaml && dpkg -r tqsup");
    assert!(!root.join("/usr/bin/tqsup").exists());
    assert!(root.join("/etc/tqsup/tqsup.yaml").exists());
    root.ok("dpkg -P tqsup");
    assert!(!root.join("/etc/tqsup/tqsup.yaml").exists());
    assert!(
        !root
            .join("/etc/systemd/system/multi-user.target.wants/tqsup.service")
            .exists()
    );

    say(&format!(
        "package test: root filesystem {t_rootfs:?}, package {t_package:?}, total {:?}",
        started.elapsed()
    ));
}

/// The install sections of README.md and docs/DEPLOYMENT.md start with the
/// package, in the commands this test runs; from source comes after.
#[test]
fn the_install_docs_lead_with_the_package() {
    for (doc, heading) in [
        ("README.md", "## Install"),
        ("docs/DEPLOYMENT.md", "## 1. Install"),
    ] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        let section = text
            .split_once(&format!("{heading}\n"))
            .unwrap_or_else(|| panic!("{doc}: no {heading:?}"))
            .1;
        let section = section.split("\n## ").next().unwrap();
        let package = section.find("scripts/package.sh").expect(doc);
        let apt = section
            .find("apt install ./target/debian/tqsup_*.deb")
            .expect(doc);
        let source = section.find("cargo build --release").expect(doc);
        assert!(package < apt && apt < source, "{doc}: package, then source");
    }
}
