//! Reading /proc: who holds a listen address (named in a conflict message),
//! and whether a process group still has live members.

use std::path::Path;

use crate::config::Endpoint;

/// The pid and name of the process listening on `endpoint`, when /proc
/// tells (same user, or root).
pub fn find(endpoint: &Endpoint) -> Option<(u32, String)> {
    let inodes = match endpoint {
        Endpoint::Unix(path) => {
            unix_listen_inodes(&std::fs::read_to_string("/proc/net/unix").ok()?, path)
        }
        Endpoint::Tcp(addr) => {
            let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
            let mut all = Vec::new();
            for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                if let Ok(text) = std::fs::read_to_string(table) {
                    all.extend(tcp_listen_inodes(&text, port));
                }
            }
            all
        }
    };
    if inodes.is_empty() {
        return None;
    }
    let pid = pid_with_socket(&inodes)?;
    // Any process may put anything in its command line: it goes into a
    // one-line error, so control characters (newlines) are escaped.
    let name = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let text = String::from_utf8_lossy(&c).replace('\0', " ");
            super::logs::escape_controls(text.trim()).into_owned()
        })
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "?".into());
    Some((pid, name))
}

/// Inodes of listening unix sockets bound to `path` (`/proc/net/unix`).
pub fn unix_listen_inodes(table: &str, path: &Path) -> Vec<u64> {
    let want = path.to_string_lossy();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            let listening = u32::from_str_radix(f.get(3)?, 16).ok()? & 0x10000 != 0;
            (listening && *f.get(7)? == want).then(|| f[6].parse().ok())?
        })
        .collect()
}

/// Inodes of TCP sockets listening on `port` (`/proc/net/tcp{,6}`).
pub fn tcp_listen_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// The first process with an open fd on one of these socket inodes.
fn pid_with_socket(inodes: &[u64]) -> Option<u32> {
    let pids = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok());
    crate::fcgi::peer::pid_holding(inodes, pids)
}

/// Whether any process of group `pgid` is alive (zombies do not count).
pub fn group_has_live_members(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            return false;
        }
        std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
    })
}

/// (state, pgrp) from `/proc/<pid>/stat` (the name may hold spaces and parens).
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_listeners_are_found_by_path() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000000c9c3bf2: 00000002 00000000 00010000 0001 01 750898 /tmp/x/s.sock\n\
            000000000c9c3bf3: 00000003 00000000 00000000 0001 03 750899 /tmp/x/s.sock\n\
            000000000c9c3bf4: 00000002 00000000 00010000 0001 01 750900 /tmp/y.sock\n";
        assert_eq!(
            unix_listen_inodes(table, Path::new("/tmp/x/s.sock")),
            vec![750898]
        );
    }

    #[test]
    fn tcp_listeners_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
            1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 100 0 0 10 0\n";
        assert_eq!(tcp_listen_inodes(table, 8080), vec![12345]);
        assert!(tcp_listen_inodes(table, 8081).is_empty());
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(
            parse_stat("42 (php-fpm: pool (x)) S 1 42 42 0"),
            Some(('S', 42))
        );
        assert!(group_has_live_members(
            nix::unistd::getpgrp().as_raw() as u32
        ));
    }
}
