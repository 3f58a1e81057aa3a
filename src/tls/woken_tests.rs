//! Tests of the woken-reads wrapper: a read that cannot progress is not passed on again until
//! the stream woke, every wake reaches the task, and bytes flow as through the bare stream.

use super::*;

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::tls::leaf::LeafName;
use crate::tls::server::Interceptor;
use crate::tls::test_support::{ca, client_config, minter};

/// A stream whose reads are counted and answer `Pending` until bytes are fed, keeping the waker
/// of the last read as a socket does.
#[derive(Default)]
struct Fed {
    reads: AtomicUsize,
    bytes: Mutex<(Vec<u8>, Option<Waker>)>,
}

impl Fed {
    fn feed(&self, b: &[u8]) {
        let mut g = self.bytes.lock().unwrap();
        g.0.extend_from_slice(b);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

struct FedIo(Arc<Fed>);

impl AsyncRead for FedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.reads.fetch_add(1, Ordering::SeqCst);
        let mut g = self.0.bytes.lock().unwrap();
        if g.0.is_empty() {
            g.1 = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = g.0.len().min(buf.remaining());
        buf.put_slice(&g.0[..n]);
        g.0.drain(..n);
        Poll::Ready(Ok(()))
    }
}

/// A task waker that counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn read(io: &mut WokenReads<FedIo>, cx: &mut Context<'_>) -> Poll<Vec<u8>> {
    let mut space = [0u8; 16];
    let mut buf = ReadBuf::new(&mut space);
    match Pin::new(io).poll_read(cx, &mut buf) {
        Poll::Ready(r) => {
            r.unwrap();
            Poll::Ready(buf.filled().to_vec())
        }
        Poll::Pending => Poll::Pending,
    }
}

#[test]
fn a_read_waits_for_a_wake_and_the_wake_reaches_the_task() {
    let fed = Arc::new(Fed::default());
    let mut io = WokenReads::new(FedIo(fed.clone()));
    let count = Arc::new(Count::default());
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);

    assert!(read(&mut io, &mut cx).is_pending());
    assert_eq!(fed.reads(), 1);
    // Polled again for other reasons: the stream is not asked again.
    for _ in 0..5 {
        assert!(read(&mut io, &mut cx).is_pending());
    }
    assert_eq!(fed.reads(), 1);
    assert_eq!(count.0.load(Ordering::SeqCst), 0);

    fed.feed(b"hello");
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "the wake reached the task"
    );
    assert_eq!(read(&mut io, &mut cx), Poll::Ready(b"hello".to_vec()));
    assert_eq!(fed.reads(), 2);
    // After bytes, the next read is passed on (there may be more).
    assert!(read(&mut io, &mut cx).is_pending());
    assert_eq!(fed.reads(), 3);
    assert!(read(&mut io, &mut cx).is_pending());
    assert_eq!(fed.reads(), 3);
}

#[test]
fn a_new_task_waker_is_the_one_woken() {
    let fed = Arc::new(Fed::default());
    let mut io = WokenReads::new(FedIo(fed.clone()));
    let first = Arc::new(Count::default());
    let second = Arc::new(Count::default());
    let w1 = Waker::from(first.clone());
    let w2 = Waker::from(second.clone());

    assert!(read(&mut io, &mut Context::from_waker(&w1)).is_pending());
    // Moved to another task (an upgrade): it waits there.
    assert!(read(&mut io, &mut Context::from_waker(&w2)).is_pending());
    assert_eq!(fed.reads(), 1);
    fed.feed(b"x");
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
    assert_eq!(second.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        read(&mut io, &mut Context::from_waker(&w2)),
        Poll::Ready(b"x".to_vec())
    );
}

#[test]
fn a_wake_before_the_task_waker_is_set_is_not_lost() {
    /// Wakes its reader during the read that answers `Pending` (a stream waking itself).
    struct SelfWaking;
    impl AsyncRead for SelfWaking {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    let mut io = WokenReads::new(SelfWaking);
    let count = Arc::new(Count::default());
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    let mut space = [0u8; 4];
    let mut buf = ReadBuf::new(&mut space);
    assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_pending());
    assert!(count.0.load(Ordering::SeqCst) >= 1, "the task was woken");
    // And the next read is passed on.
    assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_pending());
    assert!(count.0.load(Ordering::SeqCst) >= 2);
}

/// Both ends of an intercepted TLS connection wrapped, over a real runtime: requests and
/// answers cross it in turns, with foreign wakes (a timer) in between.
#[tokio::test]
async fn tls_streams_carry_bytes_both_ways() {
    let ca = ca();
    let ic = Interceptor::new(minter(&ca)).unwrap();
    let (c, s) = tokio::io::duplex(64 * 1024);
    let tunnel = LeafName::parse("api.example.com").unwrap();
    let name = ServerName::try_from("api.example.com").unwrap();
    let connector = TlsConnector::from(client_config(&ca, &[b"http/1.1"]));
    let (server, client) = tokio::join!(ic.accept(s, &tunnel), connector.connect(name, c));
    let mut server = WokenReads::new(server.unwrap().stream);
    let mut client = WokenReads::new(client.unwrap());
    assert!(server.is_write_vectored());
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        for _ in 0..20 {
            let n = server.read(&mut buf).await.unwrap();
            server.write_all(&buf[..n]).await.unwrap();
            server.flush().await.unwrap();
        }
        server
            .get_ref()
            .get_ref()
            .1
            .alpn_protocol()
            .map(<[u8]>::to_vec)
    });
    for i in 0..20u8 {
        let mut buf = [0u8; 8];
        // The client's task polls its read before anything is sent, and is woken by a timer.
        let pending = tokio::time::timeout(Duration::from_millis(1), client.read(&mut buf)).await;
        assert!(pending.is_err(), "nothing was sent yet");
        client.write_all(&[i; 8]).await.unwrap();
        client.flush().await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [i; 8]);
    }
    assert_eq!(echo.await.unwrap().as_deref(), Some(&b"http/1.1"[..]));
}
