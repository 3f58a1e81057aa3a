//! Peek and rewind: read the first bytes of a client stream (a CONNECT tunnel, a transparent
//! connection) until the ClientHello parser can say what they are, then replay them to whoever
//! handles the stream next (the TLS acceptor, the HTTP server, or the splice).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::sni::{self, Peek};

/// A stream whose first bytes were already read: they are returned again before the rest.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Vec<u8>,
    pos: usize,
    inner: IO,
}

impl<IO> Rewind<IO> {
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The bytes that will be replayed (all of them, including any already replayed).
    #[cfg(test)]
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    #[cfg(test)]
    pub fn into_inner(self) -> (Vec<u8>, IO) {
        let rest = self.prefix.get(self.pos..).unwrap_or_default().to_vec();
        (rest, self.inner)
    }
}

/// Reads from `io` until its start is classified (`NotTls` needs one byte; a ClientHello needs
/// all of it, at most `sni::MAX_PEEK` bytes) and returns the verdict with a stream that replays
/// what was read. At end of stream the verdict is whatever the bytes so far gave (`NeedMore`
/// for an empty or cut-off stream). Clients that wait for the server to speak first never
/// answer: the caller bounds this with a timeout.
pub async fn sniff<IO: AsyncRead + Unpin>(mut io: IO) -> io::Result<(Peek, Rewind<IO>)> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let verdict = sni::parse(&buf);
        let want = match verdict {
            Peek::NeedMore { at_least } => at_least,
            other => return Ok((other, Rewind::new(buf, io))),
        };
        let room = want.saturating_sub(buf.len()).clamp(1, chunk.len());
        let n = io.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok((verdict, Rewind::new(buf, io)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(out.remaining());
            out.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls_pki_types::ServerName;
    use tokio::io::AsyncWriteExt;
    use tokio_rustls::TlsConnector;

    use crate::tls::leaf::LeafName;
    use crate::tls::server::Interceptor;
    use crate::tls::test_support::{ca, client_config, minter};

    #[tokio::test]
    async fn plain_http_is_classified_after_one_byte_and_replayed() {
        let (mut c, s) = tokio::io::duplex(1024);
        c.write_all(b"G").await.unwrap(); // the rest has not arrived yet
        let (verdict, mut stream) = sniff(s).await.unwrap();
        assert_eq!(verdict, Peek::NotTls);
        c.write_all(b"ET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(c);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_sniffed_client_hello_is_replayed_into_the_handshake() {
        let ca = ca();
        let ic = Interceptor::new(minter(&ca)).unwrap();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let connector = TlsConnector::from(client_config(&ca, &[b"h2"]));
        let name = ServerName::try_from("api.example.com").unwrap().to_owned();
        let server = async {
            let (verdict, stream) = sniff(s).await.unwrap();
            let Peek::Hello(hello) = verdict else {
                panic!("{verdict:?}")
            };
            assert_eq!(hello.sni.as_deref(), Some("api.example.com"));
            assert_eq!(stream.prefix().len(), hello.len);
            let tunnel = LeafName::parse("api.example.com").unwrap();
            ic.accept(stream, &tunnel).await
        };
        let (server, client) = tokio::join!(server, connector.connect(name, c));
        assert!(server.unwrap().is_h2());
        client.unwrap();
    }

    #[tokio::test]
    async fn end_of_stream_leaves_need_more() {
        let (mut c, s) = tokio::io::duplex(1024);
        c.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        drop(c);
        let (verdict, stream) = sniff(s).await.unwrap();
        assert!(matches!(verdict, Peek::NeedMore { .. }), "{verdict:?}");
        assert_eq!(stream.into_inner().0, vec![0x16, 0x03, 0x01]);
    }
}
