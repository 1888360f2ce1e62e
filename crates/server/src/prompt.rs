//! Connections that never make a small request wait for a timer.
//!
//! gRPC requests are small frames written one after another. A client that leaves Nagle's
//! algorithm on (the official Rust client does) holds its second frame until the first is
//! acknowledged, and Linux delays that acknowledgement up to 40 ms while the server has
//! nothing to send: a lone appender then manages about 20 requests a second. The server
//! cannot change the client's socket, so it acknowledges at once instead: `TCP_QUICKACK`
//! after every read (the kernel drops back to delayed acknowledgements on its own, so once
//! is not enough). Its own small frames go out at once too (`TCP_NODELAY`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections are [`PromptStream`]s.
pub(crate) struct PromptListener(pub(crate) TcpListener);

impl Listener for PromptListener {
    type Io = PromptStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %addr, "cannot set TCP_NODELAY on a connection");
        }
        (PromptStream(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// An accepted connection that acknowledges what it reads at once.
pub(crate) struct PromptStream(TcpStream);

impl PromptStream {
    fn acknowledge_now(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(e) = socket2::SockRef::from(&self.0).set_tcp_quickack(true) {
            tracing::trace!(error = %e, "cannot set TCP_QUICKACK");
        }
    }
}

impl AsyncRead for PromptStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
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
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
