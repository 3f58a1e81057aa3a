//! The control connection between `run` and its namespace helper (a Unix socket in the run's
//! private folder): the helper's hello with the listening sockets it bound inside the namespace
//! (`SCM_RIGHTS`), `run`'s go-ahead, and the helper's closing count.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use crate::run::summary::Isolation;

/// A listening socket the helper bound inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Listener {
    Proxy,
    Admin,
    Transparent,
}

/// The helper's first message; the sockets travel with it in this order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Hello {
    Ready {
        privilege: Isolation,
        listeners: Vec<Listener>,
    },
    Failed {
        error: String,
    },
}

/// The helper's last message, after the command exited.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Done {
    /// Packets the kernel found no route for (`OutNoRoutes`, IPv4 + IPv6): connection attempts,
    /// datagrams and DNS queries that did not go through intentgate.
    pub refused: u64,
}

/// At most this many sockets travel with the hello.
const MAX_FDS: usize = 3;

/// Sends the hello and its sockets in one message (blocking socket).
pub(crate) fn send_hello(sock: impl AsFd, hello: &Hello, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let json = serde_json::to_vec(hello).map_err(io::Error::other)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many sockets for one message"));
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&json)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receives one hello and its sockets, if one is waiting (non-blocking socket: `WouldBlock`).
pub(crate) fn recv_hello(sock: impl AsFd) -> io::Result<(Hello, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the helper closed the connection",
        ));
    }
    let hello = serde_json::from_slice(&buf[..got.bytes]).map_err(io::Error::other)?;
    Ok((hello, fds))
}
