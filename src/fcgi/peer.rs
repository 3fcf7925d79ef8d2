//! Which php-fpm child holds the other end of a pooled connection
//! (DESIGN §6, worker recycling): tqsup must stop lending the connection
//! of a child it is about to recycle, and know when that child holds none.
//!
//! How: our socket's inode (fstat), the inode of its peer — for a unix
//! socket from the kernel's `sock_diag` netlink interface (`UNIX_DIAG_PEER`,
//! what `ss -xp` uses), for TCP from `/proc/net/tcp{,6}` (the row whose
//! local and remote addresses are ours swapped) — then the child among the
//! candidates whose `/proc/PID/fd` has `socket:[peer]`. A few syscalls and
//! one small directory per child, done once per new pooled connection and
//! only when recycling is on.

use std::os::fd::{AsFd, AsRawFd};

use super::io::Stream;

/// The child among `candidates` that holds the other end of `stream`.
pub fn holder(stream: &Stream, candidates: &[u32]) -> Option<u32> {
    let peer = match stream {
        Stream::Unix(s) => unix_peer_inode(socket_inode(s)?)?,
        Stream::Tcp(s) => tcp_peer_inode(s.local_addr().ok()?, s.peer_addr().ok()?)?,
    };
    pid_holding(&[peer], candidates.iter().copied())
}

/// The inode of the socket behind `fd`.
fn socket_inode(fd: impl AsFd) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|st| st.st_ino)
}

/// `sock_diag` constants (linux/sock_diag.h, linux/unix_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UNIX_DIAG_PEER: u16 = 2;
const NLMSG_ERROR: u16 = 2;

/// The inode of the peer of unix socket `inode`, asked of the kernel.
fn unix_peer_inode(inode: u64) -> Option<u64> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    // struct nlmsghdr (16) + struct unix_diag_req (24).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(nix::libc::AF_UNIX as u8); // sdiag_family
    req.push(0); // sdiag_protocol
    req.extend_from_slice(&0u16.to_ne_bytes()); // pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // udiag_states: all
    req.extend_from_slice(&u32::try_from(inode).ok()?.to_ne_bytes());
    req.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // cookie: none
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 1024];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    parse_unix_diag(&buf[..n])
}

/// The `UNIX_DIAG_PEER` attribute of a `sock_diag` answer.
fn parse_unix_diag(msg: &[u8]) -> Option<u64> {
    let u16_at = |i: usize| Some(u16::from_ne_bytes(msg.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |i: usize| Some(u32::from_ne_bytes(msg.get(i..i + 4)?.try_into().ok()?));
    let len = u32_at(0)? as usize;
    if u16_at(4)? == NLMSG_ERROR || len > msg.len() {
        return None;
    }
    // nlmsghdr (16) + unix_diag_msg (16), then 4-aligned attributes.
    let mut at = 32;
    while at + 4 <= len {
        let alen = u16_at(at)? as usize;
        if alen < 4 {
            return None;
        }
        if u16_at(at + 2)? == UNIX_DIAG_PEER {
            return u32_at(at + 4).map(u64::from);
        }
        at += (alen + 3) & !3;
    }
    None
}

/// The inode of the server side of a TCP connection from `local` to
/// `peer`: the row of /proc/net/tcp(6) whose local address is `peer` and
/// whose remote address is `local`.
fn tcp_peer_inode(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> Option<u64> {
    let table = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    let (want_local, want_remote) = (proc_addr(&peer), proc_addr(&local));
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// An address as /proc/net/tcp writes it: the address's 32-bit words in
/// host order as hex, `:`, the port as hex.
fn proc_addr(a: &std::net::SocketAddr) -> String {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        std::net::IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", a.port())
}

/// The children of `pid`, over all its threads.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The first of `candidates` with a descriptor on one of the sockets
/// `inodes` (its /proc/PID/fd links read `socket:[inode]`).
pub fn pid_holding(inodes: &[u64], candidates: impl IntoIterator<Item = u32>) -> Option<u32> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    candidates.into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|t| wanted.iter().any(|w| t.as_os_str() == w.as_str()))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_holder_of_a_unix_connection_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (_server, _) = l.accept().await.unwrap();
        // This process holds both ends: our pid is the holder.
        let me = std::process::id();
        assert_eq!(holder(&Stream::Unix(client), &[1, me]), Some(me));
    }

    #[tokio::test]
    async fn the_holder_of_a_tcp_connection_is_found() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (_server, _) = l.accept().await.unwrap();
        let me = std::process::id();
        assert_eq!(holder(&Stream::Tcp(client), &[me]), Some(me));
    }

    #[test]
    fn a_foreign_or_garbled_answer_says_nothing() {
        assert_eq!(parse_unix_diag(&[]), None);
        let mut err = vec![0u8; 36];
        err[0..4].copy_from_slice(&36u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse_unix_diag(&err), None);
    }
}
