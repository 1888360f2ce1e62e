//! Connections that never make a small request wait for a timer.
//!
//! gRPC requests are small frames written one after another. A client that leaves Nagle's
//! algorithm on (the official Rust client does) holds its second frame until the first is
//! acknowledged, and Linux delays that acknowledgement up to 40 ms while the server has
//! nothing to send: a lone appender then manages about 20 requests a second. The server
//! cannot change the client's socket, so it acknowledges at once instead: `TCP_QUICKACK`
//! after every read (the kernel drops back to delayed acknowledgements on its own, so once
//! is not enough). Its own small frames go out at once too (`TCP_NODELAY`).
//!
//! The listener also lets the server close the connections it accepted, which the HTTP
//! stack would otherwise keep serving after the server stopped, and tells when they and
//! everything serving them are gone (see [`Connections`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A TCP listener whose connections are [`PromptStream`]s.
pub(crate) struct PromptListener {
    listener: TcpListener,
    closing: watch::Receiver<bool>,
    in_use: InUse,
}

/// Held by the listener, each of its connections and whatever serves them (the handlers'
/// shared state, so also the tasks a call spawns): [`Connections::close_all`] waits until
/// every one is dropped.
#[derive(Clone)]
pub(crate) struct InUse {
    _held: mpsc::Sender<()>,
}

/// The server's hold on the connections its [`PromptListener`] accepted.
pub(crate) struct Connections {
    closing: watch::Sender<bool>,
    /// Yields `None` once every [`InUse`] is gone.
    in_use: mpsc::Receiver<()>,
}

impl PromptListener {
    pub(crate) fn new(listener: TcpListener) -> (Self, Connections) {
        let (closing_tx, closing) = watch::channel(false);
        let (held, in_use) = mpsc::channel(1);
        let listener = Self {
            listener,
            closing,
            in_use: InUse { _held: held },
        };
        let connections = Connections {
            closing: closing_tx,
            in_use,
        };
        (listener, connections)
    }

    /// For what serves the connections to hold.
    pub(crate) fn in_use(&self) -> InUse {
        self.in_use.clone()
    }
}

impl Connections {
    /// Closes every connection still open (their next read or write fails) and waits up to
    /// `bound` until every [`InUse`] is dropped; false if some were still held.
    pub(crate) async fn close_all(mut self, bound: Duration) -> bool {
        let _ = self.closing.send(true);
        tokio::time::timeout(bound, self.in_use.recv())
            .await
            .is_ok()
    }
}

impl Listener for PromptListener {
    type Io = PromptStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.listener).await;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %addr, "cannot set TCP_NODELAY on a connection");
        }
        let mut closing = self.closing.clone();
        let stream = PromptStream {
            stream,
            closing: Some(Box::pin(async move {
                // Also when the server is gone without saying so.
                let _ = closing.wait_for(|closing| *closing).await;
            })),
            _in_use: self.in_use(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accepted connection that acknowledges what it reads at once, and fails its reads and
/// writes once the server closes it.
pub(crate) struct PromptStream {
    stream: TcpStream,
    /// Completes when the server closes its connections; `None` once it has.
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    _in_use: InUse,
}

impl PromptStream {
    fn acknowledge_now(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(e) = socket2::SockRef::from(&self.stream).set_tcp_quickack(true) {
            tracing::trace!(error = %e, "cannot set TCP_QUICKACK");
        }
    }

    /// The error every read and write returns once the server closed the connection; polls
    /// the closing signal, so the connection's task is woken when it comes.
    fn closed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if let Some(closing) = &mut self.closing {
            if closing.as_mut().poll(cx).is_pending() {
                return None;
            }
            self.closing = None;
        }
        Some(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the server stopped and closed the connection",
        ))
    }
}

impl AsyncRead for PromptStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(closed) = self.closed(cx) {
            return Poll::Ready(Err(closed));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.acknowledge_now();
        }
        polled
    }
}

impl AsyncWrite for PromptStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(closed) = self.closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(closed) = self.closed(cx) {
            return Poll::Ready(Err(closed));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
