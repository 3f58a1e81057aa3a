//! The guard bounds a request head in hyper's place: 408 JSON for a head begun and not ended in
//! time, a silent close for a connection idle that long, nothing while a request is in flight.

use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use crate::conn::guard::{Guard, InFlight};

const HEAD: &[u8] = b"GET http://a.example/ HTTP/1.1\r\nhost: a.example\r\n\r\n";

/// Reads as hyper does, waiting to be woken, until something is read or the read fails: each
/// turn a read and then a flush (hyper flushes on every turn of its loop, written or not).
async fn read(guard: &mut Guard<DuplexStream>) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut space = [0u8; 256];
        let mut buf = ReadBuf::new(&mut space);
        let read = Pin::new(&mut *guard).poll_read(cx, &mut buf);
        let _ = Pin::new(&mut *guard).poll_flush(cx);
        read.map(|r| r.map(|()| buf.filled().len()))
    })
    .await
}

fn bounded(server: DuplexStream, in_flight: &InFlight, head: u64) -> Guard<DuplexStream> {
    Guard::parking(server, in_flight.clone(), Duration::from_secs(60))
        .bounding_heads(Duration::from_millis(head))
}

#[tokio::test]
async fn a_head_not_ended_in_time_is_answered_408_json_and_the_read_fails() {
    let (mut client, server) = tokio::io::duplex(4096);
    let in_flight = InFlight::default();
    let mut guard = bounded(server, &in_flight, 100);
    client.write_all(&HEAD[..40]).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(read(&mut guard).await.unwrap(), 40);
    let err = read(&mut guard).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(!in_flight.take_parked());
    drop(guard); // the connection closed
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "header_timeout");
    assert_eq!(body["error"]["type"], "invalid_request");
}

#[tokio::test]
async fn an_idle_connection_is_closed_without_a_word_after_the_head_timeout() {
    let (mut client, server) = tokio::io::duplex(4096);
    let in_flight = InFlight::default();
    let mut guard = bounded(server, &in_flight, 100);
    // An end of stream for hyper (not a park: the head timeout is shorter than the delay).
    assert_eq!(read(&mut guard).await.unwrap(), 0);
    assert!(!in_flight.take_parked());
    drop(guard);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert!(answer.is_empty());
}

#[tokio::test]
async fn a_request_in_flight_is_not_timed_and_the_next_head_has_the_whole_bound() {
    let (mut client, server) = tokio::io::duplex(4096);
    let in_flight = InFlight::default();
    let mut guard = bounded(server, &in_flight, 200);
    client.write_all(HEAD).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), HEAD.len());
    let pending = in_flight.request();
    // The response takes longer than the bound: not the client's wait.
    let slow = tokio::time::timeout(Duration::from_millis(400), read(&mut guard)).await;
    assert!(slow.is_err(), "{slow:?}");
    drop(pending);
    // The next head, begun at once and ended 120 ms later, is in time.
    client.write_all(&HEAD[..10]).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), 10);
    tokio::time::sleep(Duration::from_millis(120)).await;
    client.write_all(&HEAD[10..]).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), HEAD.len() - 10);
}

#[tokio::test]
async fn a_guard_that_does_not_bound_heads_lets_a_head_take_its_time() {
    let (mut client, server) = tokio::io::duplex(4096);
    let in_flight = InFlight::default();
    let mut guard = Guard::parking(server, in_flight.clone(), Duration::from_millis(50));
    client.write_all(&HEAD[..10]).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), 10);
    let waited = tokio::time::timeout(Duration::from_millis(300), read(&mut guard)).await;
    assert!(waited.is_err(), "{waited:?}");
}
