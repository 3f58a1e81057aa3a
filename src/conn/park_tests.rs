//! The guard parks a connection only when hyper has nothing left to do on it.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use crate::conn::guard::{Guard, InFlight};

/// One read as hyper makes it: `Some(n)` bytes read (0: the end of the stream), `None`: pending.
fn read(guard: &mut Guard<DuplexStream>) -> Option<usize> {
    let mut space = [0u8; 256];
    let mut buf = ReadBuf::new(&mut space);
    match Pin::new(guard).poll_read(&mut Context::from_waker(Waker::noop()), &mut buf) {
        Poll::Ready(r) => r.map(|()| buf.filled().len()).ok(),
        Poll::Pending => None,
    }
}

/// A read that waits to be woken (by the idle timer) and then ends: the connection parked.
async fn woken_read(guard: &mut Guard<DuplexStream>) {
    std::future::poll_fn(|cx| {
        let mut space = [0u8; 16];
        let mut buf = ReadBuf::new(&mut space);
        Pin::new(&mut *guard).poll_read(cx, &mut buf)
    })
    .await
    .unwrap();
}

const HEAD: &[u8] = b"GET http://a.example/ HTTP/1.1\r\nhost: a.example\r\n\r\n";

#[tokio::test]
async fn parks_once_every_response_ended_and_nothing_more_was_read() {
    let (mut client, server) = tokio::io::duplex(1024);
    let in_flight = InFlight::default();
    let mut guard = Guard::parking(server, in_flight.clone(), Duration::ZERO);
    client.write_all(HEAD).await.unwrap();
    assert_eq!(read(&mut guard), Some(HEAD.len()));
    let pending = in_flight.request();
    // The response has not ended: hyper waits for the next request as usual.
    assert_eq!(read(&mut guard), None);
    assert!(!in_flight.take_parked());
    drop(pending);
    // Idle now: an end of stream for hyper, and its shutdown leaves the socket open.
    assert_eq!(read(&mut guard), Some(0));
    assert!(in_flight.take_parked());
}

#[tokio::test]
async fn never_parks_in_the_middle_of_a_head() {
    let (mut client, server) = tokio::io::duplex(1024);
    let in_flight = InFlight::default();
    let mut guard = Guard::parking(server, in_flight.clone(), Duration::ZERO);
    client.write_all(&HEAD[..10]).await.unwrap();
    assert_eq!(read(&mut guard), Some(10));
    assert_eq!(read(&mut guard), None);
    assert!(!in_flight.take_parked());
}

#[tokio::test]
async fn a_shutdown_after_parking_leaves_the_socket_open() {
    let (mut client, server) = tokio::io::duplex(1024);
    let in_flight = InFlight::default();
    let mut guard = Guard::parking(server, in_flight.clone(), Duration::ZERO);
    assert_eq!(read(&mut guard), Some(0));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(Pin::new(&mut guard).poll_shutdown(&mut cx).is_ready());
    assert!(in_flight.take_parked());
    // The client can still send, and the socket is read again once hyper starts over.
    client.write_all(HEAD).await.unwrap();
    assert_eq!(read(&mut guard), Some(HEAD.len()));
}

#[tokio::test]
async fn a_guard_that_does_not_park_waits() {
    let (_client, server) = tokio::io::duplex(1024);
    let in_flight = InFlight::default();
    let mut guard = Guard::new(server, in_flight.clone());
    assert_eq!(read(&mut guard), None);
    assert!(!in_flight.take_parked());
}

#[tokio::test]
async fn parks_only_after_being_idle_for_the_delay() {
    let (_client, server) = tokio::io::duplex(1024);
    let in_flight = InFlight::default();
    let mut guard = Guard::parking(server, in_flight.clone(), Duration::from_millis(50));
    assert_eq!(read(&mut guard), None);
    assert!(!in_flight.take_parked());
    // The idle timer wakes the connection; hyper then reads again.
    woken_read(&mut guard).await;
    assert!(in_flight.take_parked());
}

/// The idle timer keeps the deadline of an earlier idle spell (it is not moved on every
/// request): when it fires during a later, shorter spell, the connection does not park, and
/// it parks once that spell has lasted the whole delay. (Real time, with margins of 250 ms.)
#[tokio::test]
async fn an_earlier_spell_s_deadline_does_not_park_a_later_spell_early() {
    let (mut client, server) = tokio::io::duplex(1024);
    let in_flight = InFlight::default();
    let mut guard = Guard::parking(server, in_flight.clone(), Duration::from_millis(400));
    // A first spell of 300 ms (the timer set for 400 ms), then a request, then idle again.
    assert_eq!(read(&mut guard), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(HEAD).await.unwrap();
    assert_eq!(read(&mut guard), Some(HEAD.len()));
    assert_eq!(read(&mut guard), None);
    let second = std::time::Instant::now();
    // The first spell's deadline passes ~100 ms into the second: not parked then.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(read(&mut guard), None);
    assert!(!in_flight.take_parked());
    // The second spell's own deadline wakes and parks it.
    woken_read(&mut guard).await;
    assert!(in_flight.take_parked());
    assert!(second.elapsed() >= Duration::from_millis(400));
}
