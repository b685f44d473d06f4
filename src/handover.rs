//! Zero-downtime upgrade: a running node hands its listening sockets to a newer process over a
//! unix socket (`[node] handover_socket`), then stops accepting and drains.
//!
//! Plain SO_REUSEPORT is not enough for this: each socket of a reuseport group has its own
//! accept queue, and the connections queued on the old process's sockets are reset when it
//! closes them. Passing the sockets themselves (SCM_RIGHTS) keeps every queue alive: the
//! kernel socket outlives the old process because the new one holds it too.
//!
//! The exchange, over a `SOCK_SEQPACKET` unix socket (one message each, so a descriptor always
//! travels with the line that names it):
//!
//! ```text
//! new → old   ringway-handover/1
//! old → new   socket <name> <addr>          + one listening socket (SCM_RIGHTS), repeated
//! old → new   end <count>
//! new → old   ready                         (its workers serve on the sockets)
//! old → new   draining                      (the old one stopped accepting)
//! ```
//!
//! Until `ready` the old process keeps accepting, so a new process that dies half-way costs
//! nothing: the old one logs the aborted handover and carries on. The new process then binds
//! the handover socket itself (bind to a temporary name, rename over the path), ready for the
//! next upgrade.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use thiserror::Error;

use crate::dataplane::{Inherited, ListeningSocket};

const HELLO: &[u8] = b"ringway-handover/1";
/// How long either side waits for the other's next message. The new process sends `ready`
/// once its workers run, which takes milliseconds; this only bounds a stuck peer.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum HandoverError {
    #[error("handover socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("handover socket {path}: unexpected message {message:?}")]
    Protocol { path: PathBuf, message: String },
}

/// The listening sockets received from the running node; [`Taken::ready`] tells it to drain.
pub struct Taken {
    conn: Socket,
    path: PathBuf,
    pub sockets: Inherited,
}

/// Ask the node listening on `path` for its sockets. `Ok(None)` when no node answers there
/// (no socket file, or a stale one): start afresh.
pub fn take_over(path: &Path) -> Result<Option<Taken>, HandoverError> {
    let io_err = |source| HandoverError::Io {
        path: path.to_path_buf(),
        source,
    };
    let conn = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(io_err)?;
    let addr = SockAddr::unix(path).map_err(io_err)?;
    match conn.connect(&addr) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(io_err(e)),
    }
    conn.set_read_timeout(Some(STEP_TIMEOUT)).map_err(io_err)?;
    conn.set_write_timeout(Some(STEP_TIMEOUT)).map_err(io_err)?;
    send(&conn, HELLO, None).map_err(io_err)?;
    let mut sockets = Vec::new();
    loop {
        let (text, fd) = recv(&conn).map_err(io_err)?;
        let protocol = || HandoverError::Protocol {
            path: path.to_path_buf(),
            message: text.clone(),
        };
        if let Some(rest) = text.strip_prefix("socket ") {
            let (name, addr) = rest.rsplit_once(' ').ok_or_else(protocol)?;
            let addr: SocketAddr = addr.parse().map_err(|_| protocol())?;
            let fd = fd.ok_or_else(protocol)?;
            sockets.push(ListeningSocket {
                name: name.to_string(),
                addr,
                socket: std::net::TcpListener::from(fd),
            });
        } else if let Some(n) = text.strip_prefix("end ") {
            if n.parse::<usize>().ok() != Some(sockets.len()) {
                return Err(protocol());
            }
            break;
        } else {
            return Err(protocol());
        }
    }
    Ok(Some(Taken {
        conn,
        path: path.to_path_buf(),
        sockets: Inherited { sockets },
    }))
}

impl Taken {
    /// Take the sockets out (for the data plane); the connection stays for [`Taken::ready`].
    pub fn sockets(&mut self) -> Inherited {
        std::mem::take(&mut self.sockets)
    }

    /// Tell the old node that this one serves; it stops accepting and drains.
    pub fn ready(self) -> Result<(), HandoverError> {
        let io_err = |source| HandoverError::Io {
            path: self.path.clone(),
            source,
        };
        send(&self.conn, b"ready", None).map_err(io_err)?;
        let (text, _) = recv(&self.conn).map_err(io_err)?;
        if text != "draining" {
            return Err(HandoverError::Protocol {
                path: self.path.clone(),
                message: text,
            });
        }
        Ok(())
    }
}

/// The handover socket of a running node.
pub struct HandoverServer {
    path: PathBuf,
    /// Inode of the socket file this node bound: on exit the file is removed only if it is
    /// still ours (a newer node renames its own over it).
    inode: u64,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HandoverServer {
    /// Listen on `path` (atomically replacing a stale or older node's socket file) and hand
    /// `sockets` to the first process that asks; `handed_over` receives one message once it
    /// said `ready`.
    pub fn start(
        path: &Path,
        sockets: Arc<Mutex<Vec<ListeningSocket>>>,
        handed_over: mpsc::Sender<()>,
    ) -> io::Result<HandoverServer> {
        let tmp = path.with_extension(format!("{}.new", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        listener.bind(&SockAddr::unix(&tmp)?)?;
        listener.listen(4)?;
        std::fs::rename(&tmp, path)?;
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path)?);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let shown = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ringway-handover".into())
            .spawn(move || serve(listener, &shown, &sockets, &handed_over, &flag))?;
        Ok(HandoverServer {
            path: path.to_path_buf(),
            inode,
            stop,
            thread: Some(thread),
        })
    }

    /// Stop answering; remove the socket file unless a newer node replaced it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let ours = std::fs::metadata(&self.path)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn serve(
    listener: Socket,
    path: &Path,
    sockets: &Mutex<Vec<ListeningSocket>>,
    handed_over: &mpsc::Sender<()>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        if !readable(listener.as_raw_fd(), 100) {
            continue;
        }
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!(socket = %path.display(), "handover accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match hand_over(&conn, sockets) {
            Ok(n) => {
                tracing::info!(
                    sockets = n,
                    "listeners handed over to a new process; draining"
                );
                let _ = handed_over.send(());
                let _ = send(&conn, b"draining", None);
                return;
            }
            Err(e) => {
                tracing::warn!(socket = %path.display(), "handover aborted, still serving: {e}")
            }
        }
    }
}

/// One handover on an accepted connection; returns the number of sockets passed.
fn hand_over(conn: &Socket, sockets: &Mutex<Vec<ListeningSocket>>) -> io::Result<usize> {
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    let (hello, _) = recv(conn)?;
    if hello.as_bytes() != HELLO {
        return Err(io::Error::other(format!("unexpected greeting {hello:?}")));
    }
    let n = {
        let sockets = sockets
            .lock()
            .map_err(|_| io::Error::other("socket list poisoned"))?;
        if sockets.is_empty() {
            return Err(io::Error::other("this node is stopping"));
        }
        for s in sockets.iter() {
            let line = format!("socket {} {}", s.name, s.addr);
            send(conn, line.as_bytes(), Some(s.socket.as_raw_fd()))?;
        }
        send(conn, format!("end {}", sockets.len()).as_bytes(), None)?;
        sockets.len()
    };
    let (ready, _) = recv(conn)?;
    if ready != "ready" {
        return Err(io::Error::other(format!(
            "the new process did not become ready ({ready:?})"
        )));
    }
    Ok(n)
}

fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) > 0 }
}

/// Send one message, with a descriptor attached when `fd` is set.
fn send(sock: &Socket, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let fd_len = std::mem::size_of::<RawFd>() as u32;
        // SAFETY: CMSG_* compute sizes and positions inside `control`, which has room for one
        // cmsghdr with one descriptor (CMSG_SPACE(4) is 24 bytes on Linux).
        unsafe {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_len) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: `msg` is fully initialised and points at live buffers.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::other("short handover message"));
    }
    Ok(())
}

/// Receive one message and the descriptor that came with it, if any.
fn recv(sock: &Socket) -> io::Result<(String, Option<OwnedFd>)> {
    let mut buf = [0u8; 1024];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` describes valid, writable buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` with `msg_controllen` bytes of cmsghdrs; the CMSG_*
    // walk stays inside it, and every SCM_RIGHTS descriptor is now ours to own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::other("handover message truncated"));
    }
    if fds.len() > 1 {
        return Err(io::Error::other("more than one descriptor in a message"));
    }
    let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    Ok((text, fds.pop()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_cross_the_handover_socket_and_keep_their_queue() {
        let dir = std::env::temp_dir().join(format!("ringway-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.sock");
        assert!(take_over(&path).unwrap().is_none(), "nobody listens yet");

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let list = Arc::new(Mutex::new(vec![ListeningSocket {
            name: "public edge".into(),
            addr,
            socket: tcp,
        }]));
        let (tx, rx) = mpsc::channel();
        let server = HandoverServer::start(&path, list.clone(), tx).unwrap();
        // A connection queued before the handover...
        let mut early = std::net::TcpStream::connect(addr).unwrap();

        let mut taken = take_over(&path).unwrap().expect("the server answers");
        let mut got = taken.sockets();
        assert_eq!(got.sockets.len(), 1);
        assert_eq!(got.sockets[0].name, "public edge");
        assert_eq!(got.sockets[0].addr, addr);
        taken.ready().unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("handed over");
        // ...survives the old side closing its copy, and the new side accepts it.
        list.lock().unwrap().clear();
        server.stop();
        let received = got.sockets.pop().unwrap().socket;
        let (mut accepted, _) = received.accept().unwrap();
        use std::io::{Read, Write};
        early.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        accepted.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
