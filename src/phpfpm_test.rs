//! `php-fpm -t`: php-fpm's own check of a rendered file set, run before any
//! config is applied (DESIGN §6, "Validate, then apply").

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

/// How long `php-fpm -t` may take: it parses a few files, so anything
/// longer is a hung binary, and a hung check must not hang tqsup.
pub const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `<command> -t` (the `run` command with `-t` appended) and returns
/// php-fpm's complaint when it rejects the files. Killed after
/// [`TEST_TIMEOUT`].
pub async fn test(command: &[OsString], main_conf: &Path) -> Result<(), TestError> {
    let (program, args) = command
        .split_first()
        .expect("a php-fpm command has a program");
    let out = tokio::process::Command::new(program)
        .args(args)
        .arg("-t")
        .stdin(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(TEST_TIMEOUT, out).await {
        Ok(r) => r.map_err(|e| TestError::Spawn(program.to_string_lossy().into_owned(), e))?,
        Err(_) => {
            return Err(TestError::Spawn(
                program.to_string_lossy().into_owned(),
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {TEST_TIMEOUT:?}"),
                ),
            ));
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Err(TestError::Rejected(Rejected {
        conf: main_conf.to_path_buf(),
        message: complaint(&text, out.status),
    }))
}

/// php-fpm's own verdict on a rendered config (`php-fpm -t` failed).
#[derive(Debug, thiserror::Error)]
#[error("php-fpm rejected the rendered config {}: {message}; fix: correct the tqsup config (see `tqsup render`)", conf.display())]
pub struct Rejected {
    pub conf: std::path::PathBuf,
    /// php-fpm's ERROR/ALERT lines, without timestamps.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("cannot run {0} -t: {1}")]
    Spawn(String, #[source] std::io::Error),
    #[error(transparent)]
    Rejected(Rejected),
}

/// php-fpm's ERROR/ALERT lines with the timestamp cut, joined on one line.
pub fn complaint(output: &str, status: std::process::ExitStatus) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(strip_timestamp)
        .filter(|l| {
            l.starts_with("ERROR")
                || l.starts_with("ALERT")
                || l.starts_with("WARNING")
                || l.contains("error")
        })
        .filter(|l| !l.contains("FPM initialization failed"))
        .collect();
    if lines.is_empty() {
        let all: Vec<&str> = output
            .lines()
            .map(strip_timestamp)
            .filter(|l| !l.is_empty())
            .collect();
        if all.is_empty() {
            return format!("php-fpm exited with {status}");
        }
        return all.join(" | ");
    }
    lines.join(" | ")
}

/// `[25-Nov-2026 20:49:17] ERROR: x` → `ERROR: x`.
pub fn strip_timestamp(line: &str) -> &str {
    let line = line.trim_end();
    if line.starts_with('[')
        && let Some(end) = line.find("] ")
    {
        return &line[end + 2..];
    }
    line
}
