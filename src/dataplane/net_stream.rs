//! A connection as the data plane sees it, to a client or to an upstream server: plain TCP,
//! or TLS (terminated by ringway on a TLS listener, or spoken to an `https://` server). Both
//! read and write through monoio's owned-buffer traits; only plain TCP offers the socket
//! itself for splicing bodies.

use std::io;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::tls::stream::TlsStream;
use crate::tls::ClientIdentity;

pub enum NetStream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl NetStream {
    /// The socket, when bytes on it are the request's own bytes (plain TCP): bodies may be
    /// spliced.
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            NetStream::Plain(s) => Some(s),
            NetStream::Tls(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, NetStream::Tls(_))
    }

    /// The verified client certificate's identity (TLS with a client certificate).
    pub fn identity(&self) -> Option<&ClientIdentity> {
        match self {
            NetStream::Plain(_) => None,
            NetStream::Tls(t) => t.identity(),
        }
    }

    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            NetStream::Plain(s) => s,
            NetStream::Tls(t) => t.tcp(),
        }
    }

    /// Reads on the connection poll before their first receive attempt (io_uring's
    /// `IORING_RECVSEND_POLL_FIRST`): for a read issued before its data can have arrived.
    pub fn set_recv_poll_first(&mut self, on: bool) {
        match self {
            NetStream::Plain(s) => s.set_recv_poll_first(on),
            NetStream::Tls(t) => t.tcp_mut().set_recv_poll_first(on),
        }
    }

    /// Bytes (or the client's close) wait inside a TLS connection already: a read would not
    /// block even if the socket has nothing. Never for plain TCP.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            NetStream::Plain(_) => false,
            NetStream::Tls(t) => t.has_buffered(),
        }
    }

    /// Between requests: a TLS connection gives back its empty receive buffers.
    pub fn release_idle(&mut self) {
        if let NetStream::Tls(t) = self {
            t.release_idle();
        }
    }
}

// The TLS arms' futures are boxed: they are several hundred bytes larger than plain TCP's,
// and an unboxed arm sizes every caller's state (and each move of it) for TLS even on plain
// connections. One allocation per TLS operation is small beside its record encryption.
impl AsyncReadRent for NetStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            NetStream::Plain(s) => s.read(buf).await,
            NetStream::Tls(t) => Box::pin(t.read(buf)).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            NetStream::Plain(s) => s.readv(buf).await,
            NetStream::Tls(t) => Box::pin(t.readv(buf)).await,
        }
    }
}

impl CancelableAsyncReadRent for NetStream {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            NetStream::Plain(s) => s.cancelable_read(buf, c).await,
            NetStream::Tls(t) => Box::pin(t.cancelable_read(buf, c)).await,
        }
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            NetStream::Plain(s) => s.cancelable_readv(buf, c).await,
            NetStream::Tls(t) => Box::pin(t.cancelable_readv(buf, c)).await,
        }
    }
}

impl AsyncWriteRent for NetStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            NetStream::Plain(s) => s.write(buf).await,
            NetStream::Tls(t) => Box::pin(t.write(buf)).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            NetStream::Plain(s) => s.writev(buf).await,
            NetStream::Tls(t) => Box::pin(t.writev(buf)).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.flush().await,
            NetStream::Tls(t) => Box::pin(t.flush()).await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            NetStream::Plain(s) => s.shutdown().await,
            NetStream::Tls(t) => Box::pin(t.shutdown()).await,
        }
    }
}
