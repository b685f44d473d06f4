//! A client connection as the data plane sees it: plain TCP, or TLS terminated by ringway.
//! Both read and write through monoio's owned-buffer traits; only plain TCP offers the socket
//! itself for splicing bodies.

use std::io;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::tls::stream::TlsStream;
use crate::tls::ClientIdentity;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl ClientStream {
    /// The socket, when bytes on it are the request's own bytes (plain TCP): bodies may be
    /// spliced.
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The verified client certificate's identity (TLS with a client certificate).
    pub fn identity(&self) -> Option<&ClientIdentity> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(t) => t.identity(),
        }
    }

    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(t) => t.tcp(),
        }
    }

    /// Bytes (or the client's close) wait inside a TLS connection already: a read would not
    /// block even if the socket has nothing. Never for plain TCP.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(t) => t.has_buffered(),
        }
    }

    /// Between requests: a TLS connection gives back its empty receive buffers.
    pub fn release_idle(&mut self) {
        if let ClientStream::Tls(t) = self {
            t.release_idle();
        }
    }
}

impl AsyncReadRent for ClientStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(t) => t.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.readv(buf).await,
            ClientStream::Tls(t) => t.readv(buf).await,
        }
    }
}

impl CancelableAsyncReadRent for ClientStream {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.cancelable_read(buf, c).await,
            ClientStream::Tls(t) => t.cancelable_read(buf, c).await,
        }
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.cancelable_readv(buf, c).await,
            ClientStream::Tls(t) => t.cancelable_readv(buf, c).await,
        }
    }
}

impl AsyncWriteRent for ClientStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write(buf).await,
            ClientStream::Tls(t) => t.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.writev(buf).await,
            ClientStream::Tls(t) => t.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush().await,
            ClientStream::Tls(t) => t.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(t) => t.shutdown().await,
        }
    }
}
