//! Reading /proc: whether a process group still has live members.

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
