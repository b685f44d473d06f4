//! A TLS connection over a monoio TCP stream, driven by ringway on owned buffers: the server
//! side of a client's connection to a TLS listener, or the client side of a connection to an
//! `https://` upstream server.
//!
//! Reads take ciphertext into a buffer the connection owns (one receive of up to a full
//! record and more), hand it to rustls, and copy decrypted bytes straight into the caller's
//! buffer. Writes give the caller's bytes (a vectored write as one run, so a forwarded head's
//! slices become full records, not one record per slice) to rustls and send the records in one
//! write. A read that is cancelled through a [`CancelHandle`] keeps every byte it received: a
//! receive that completed before the cancel is handed to rustls before the cancel is reported.
//!
//! This is rustls's classic connection API: it copies ciphertext into its own deframer, and
//! each record's plaintext into a new buffer before encrypting it; the records are then copied
//! into the write buffer. rustls 0.23's unbuffered API encrypts through the same record path
//! and copies the record into the caller's buffer as well, so it would save nothing here. On
//! small requests the copies are a few percent of the CPU (`bench/results/tls.md`).

use std::io::{self, BufRead, Write};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConnection};

use super::{ClientIdentity, TlsState};

/// Ciphertext taken per receive: a full record (16 KiB of data, header and tag) with room to
/// spare, so a large body arrives a record per receive or better.
const RX_BYTES: usize = 16 * 1024 + 1024;

/// Why a handshake ended without a connection.
#[derive(Debug)]
pub enum HandshakeError {
    /// The client closed before the handshake ended.
    Closed,
    /// Not TLS, or TLS the configuration refuses (version, cipher, certificate).
    Tls(rustls::Error),
    Io(io::Error),
}

pub struct TlsStream {
    tcp: TcpStream,
    tls: Connection,
    /// Ciphertext received and not yet given to rustls: `rx[rx_start..]`.
    rx: Vec<u8>,
    rx_start: usize,
    /// Records to send (reused).
    tx: Vec<u8>,
    /// The client closed its side of the TCP connection.
    eof: bool,
    /// The verified client certificate's identity, when the client sent one.
    identity: Option<Box<ClientIdentity>>,
}

impl TlsStream {
    /// Run the server side of a handshake. The caller bounds it in time.
    pub async fn accept(tcp: TcpStream, state: &TlsState) -> Result<TlsStream, HandshakeError> {
        let tls = ServerConnection::new(state.config.clone()).map_err(HandshakeError::Tls)?;
        TlsStream::handshake(tcp, Connection::Server(tls)).await
    }

    /// Run the client side of a handshake with `name` (SNI and the name the server's
    /// certificate must carry). The caller bounds it in time.
    pub async fn connect(
        tcp: TcpStream,
        config: std::sync::Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsStream, HandshakeError> {
        let tls = ClientConnection::new(config, name).map_err(HandshakeError::Tls)?;
        TlsStream::handshake(tcp, Connection::Client(tls)).await
    }

    async fn handshake(tcp: TcpStream, tls: Connection) -> Result<TlsStream, HandshakeError> {
        let mut s = TlsStream {
            tcp,
            tls,
            rx: Vec::with_capacity(RX_BYTES),
            rx_start: 0,
            tx: Vec::new(),
            eof: false,
            identity: None,
        };
        loop {
            if s.tls.wants_write() {
                s.flush_tls().await.map_err(HandshakeError::Io)?;
            }
            if !s.tls.is_handshaking() {
                break;
            }
            if s.eof {
                return Err(HandshakeError::Closed);
            }
            if let Err(e) = s.receive(None).await {
                return Err(s.fail(e).await);
            }
        }
        if matches!(s.tls, Connection::Client(_)) {
            return Ok(s);
        }
        s.identity = s
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(ClientIdentity::of)
            .map(Box::new);
        Ok(s)
    }

    /// Send the alert rustls queued for a protocol error (best effort); the error to report.
    async fn fail(&mut self, e: io::Error) -> HandshakeError {
        if e.kind() != io::ErrorKind::InvalidData {
            return HandshakeError::Io(e);
        }
        let _ = self.flush_tls().await;
        match e
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls)) => HandshakeError::Tls(*tls),
            _ => HandshakeError::Io(io::ErrorKind::InvalidData.into()),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    pub fn connection(&self) -> &Connection {
        &self.tls
    }

    pub fn identity(&self) -> Option<&ClientIdentity> {
        self.identity.as_deref()
    }

    /// Decrypted or received bytes wait in the connection, or the client closed: a read
    /// would not block.
    pub fn has_buffered(&mut self) -> bool {
        self.rx_start < self.rx.len() || self.eof || self.tls.reader().fill_buf().is_ok()
    }

    /// Between requests, give back the receive buffer when it holds nothing.
    pub fn release_idle(&mut self) {
        if self.rx_start == self.rx.len() {
            self.rx = Vec::new();
            self.rx_start = 0;
        }
        self.tx = Vec::new();
    }

    /// Give rustls the ciphertext received so far, stopping once decrypted bytes wait to be
    /// read (rustls holds a bounded amount of them).
    fn feed(&mut self) -> io::Result<()> {
        while self.rx_start < self.rx.len() {
            let n = self.tls.read_tls(&mut &self.rx[self.rx_start..])?;
            self.rx_start += n;
            let state = self
                .tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if n == 0 || state.plaintext_bytes_to_read() > 0 {
                break;
            }
        }
        if self.rx_start == self.rx.len() {
            self.rx.clear();
            self.rx_start = 0;
        }
        Ok(())
    }

    /// Receive more ciphertext and give it to rustls. With `cancel`, a cancelled receive is
    /// reported as an error after any bytes it got were handed over.
    async fn receive(&mut self, cancel: Option<&CancelHandle>) -> io::Result<()> {
        if self.rx_start < self.rx.len() {
            return self.feed();
        }
        let mut rx = std::mem::take(&mut self.rx);
        rx.clear();
        self.rx_start = 0;
        if rx.capacity() < RX_BYTES {
            rx.reserve_exact(RX_BYTES);
        }
        let cap = rx.capacity();
        let (res, back) = match cancel {
            None => self.tcp.read(rx.slice_mut(0..cap)).await,
            Some(c) => {
                self.tcp
                    .cancelable_read(rx.slice_mut(0..cap), c.clone())
                    .await
            }
        };
        self.rx = back.into_inner();
        match res? {
            0 => {
                self.eof = true;
                Ok(())
            }
            _ => self.feed(),
        }
    }

    /// Send every record rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut tx = std::mem::take(&mut self.tx);
            tx.clear();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut tx)?;
            }
            let (res, back) = self.tcp.write_all(tx).await;
            self.tx = back;
            res?;
        }
        Ok(())
    }

    /// Copy decrypted bytes into `buf`: `None` when none wait (more must be received),
    /// `Some(0)` when the client ended the TLS session.
    fn take_plaintext<T: IoBufMut>(&mut self, buf: &mut T) -> Option<io::Result<usize>> {
        let mut reader = self.tls.reader();
        match reader.fill_buf() {
            Ok(chunk) => {
                let n = chunk.len().min(buf.bytes_total());
                // SAFETY: `write_ptr` has room for `bytes_total` bytes; `n` fits in it.
                unsafe {
                    buf.write_ptr().copy_from_nonoverlapping(chunk.as_ptr(), n);
                    buf.set_init(n);
                }
                reader.consume(n);
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(Ok(0)),
            Err(e) => Some(Err(e)),
        }
    }

    async fn read_into<T: IoBufMut>(
        &mut self,
        mut buf: T,
        cancel: Option<&CancelHandle>,
    ) -> BufResult<usize, T> {
        if buf.bytes_total() == 0 {
            return (Ok(0), buf);
        }
        loop {
            if let Some(r) = self.take_plaintext(&mut buf) {
                return (r, buf);
            }
            if self.tls.wants_write() {
                // A key update or an alert to answer.
                if let Err(e) = self.flush_tls().await {
                    return (Err(e), buf);
                }
            }
            if self.eof && self.rx_start == self.rx.len() {
                return (Ok(0), buf);
            }
            if let Err(e) = self.receive(cancel).await {
                // A cancelled receive may still have completed a record.
                if let Some(Ok(n)) = self.take_plaintext(&mut buf) {
                    if n > 0 {
                        return (Ok(n), buf);
                    }
                }
                if e.kind() == io::ErrorKind::InvalidData {
                    let _ = self.flush_tls().await;
                }
                return (Err(e), buf);
            }
        }
    }

    async fn write_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.tls.writer().write(data)?;
        self.flush_tls().await?;
        Ok(n)
    }
}

impl AsyncReadRent for TlsStream {
    fn read<T: IoBufMut>(
        &mut self,
        buf: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.read_into(buf, None)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer points into `buf`, which outlives the read.
        let Some(raw) = (unsafe { RawBuf::new_from_iovec_mut(&mut buf) }) else {
            return (Ok(0), buf);
        };
        let (res, _) = self.read_into(raw, None).await;
        if let Ok(n) = res {
            // SAFETY: `n` bytes were written into the first iovec.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }
}

impl CancelableAsyncReadRent for TlsStream {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.read_into(buf, Some(&c)).await
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        _c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.readv(buf).await
    }
}

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` points at `bytes_init` initialised bytes owned by `buf`, which is
        // held (and not touched) until the data has been given to rustls.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let res = self.write_plain(data).await;
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `iovec` and `IoSlice` share their layout on Unix (std documents it); the
        // iovecs point into memory `buf` owns while it is held here.
        let slices = unsafe {
            std::slice::from_raw_parts(
                buf.read_iovec_ptr() as *const io::IoSlice<'_>,
                buf.read_iovec_len(),
            )
        };
        let res = match self.tls.writer().write_vectored(slices) {
            Ok(n) => self.flush_tls().await.map(|()| n),
            Err(e) => Err(e),
        };
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.flush_tls().await?;
        self.tcp.shutdown().await
    }
}
