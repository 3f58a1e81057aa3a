//! Tests of the request-stream scan: every split of a stream into two reads gives one answer.

use super::*;

/// Feeds `stream` split at every position (and whole); all give the same answer, returned.
fn scan(stream: &[u8]) -> bool {
    let mut whole = Scan::default();
    let answer = whole.feed(stream);
    for at in 0..=stream.len() {
        let mut s = Scan::default();
        let split = s.feed(&stream[..at]) || s.feed(&stream[at..]);
        assert_eq!(
            split,
            answer,
            "split at {at} of {:?}",
            String::from_utf8_lossy(stream)
        );
    }
    answer
}

#[test]
fn content_length_with_transfer_encoding_is_flagged_in_either_order() {
    assert!(scan(
        b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ));
    assert!(scan(
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n"
    ));
}

#[test]
fn plain_requests_bodies_and_pipelines_are_not() {
    // The bodies carry header-like lines: skipped by count or chunk, never read as heads.
    let body = b"x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut stream = format!(
        "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nPOST http://a/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    stream.extend_from_slice(body);
    stream.extend_from_slice(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    stream.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
    stream.extend_from_slice(body);
    stream.extend_from_slice(b"\r\n0\r\nx-trailer: 1\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert!(!scan(&stream));
    // ... and the head after them is read as one.
    stream.extend_from_slice(
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(scan(&stream));
}

#[test]
fn streams_that_cannot_be_followed_fail_closed() {
    // hyper refuses these itself and closes the connection: nothing more to watch.
    for refused in [
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ] {
        let mut s = Scan::default();
        assert!(!s.feed(refused));
        assert!(!s.watching());
    }
    // A Content-Length line too long to carry, split between reads: its value is unknown.
    let long = format!(
        "POST / HTTP/1.1\r\nContent-Length:{}1\r\n\r\n",
        " ".repeat(80)
    );
    let mut s = Scan::default();
    let at = long.find("Content").unwrap() + 20;
    assert!(s.feed(&long.as_bytes()[..at]) || s.feed(&long.as_bytes()[at..]));
}

#[test]
fn tunnels_and_upgrades_end_the_scan_only_when_answered_so() {
    let connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
    let smuggle = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    // Accepted: what follows is tunnel bytes.
    let mut s = Scan::default();
    assert!(!s.feed(connect));
    assert!(!s.on_response(b"HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!s.feed(smuggle));
    assert!(!s.watching());
    // Refused: the next request is scanned again.
    let mut s = Scan::default();
    assert!(!s.feed(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
    assert!(!s.on_response(b"HTTP/1.1 403 Forbidden\r\n"));
    assert!(s.feed(smuggle));
    // Refused after the client sent more: those bytes were not scanned, so the stream is lost.
    let mut s = Scan::default();
    assert!(!s.feed(connect));
    assert!(!s.feed(smuggle));
    assert!(s.on_response(b"HTTP/1.1 403 Forbidden\r\n"));
    // An upgrade answered 101 is a tunnel; HTTP/2 is not scanned.
    let mut s = Scan::default();
    assert!(!s.feed(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
    assert!(!s.on_response(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(!s.watching());
    let mut s = Scan::default();
    assert!(!s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    assert!(!s.watching());
}

#[test]
fn a_head_is_in_progress_from_its_first_byte_to_its_empty_line() {
    let head = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
    for at in 1..head.len() {
        let mut s = Scan::default();
        s.feed(&head[..at]);
        assert!(s.in_head(), "after {at} bytes");
        assert!(!s.at_rest(), "after {at} bytes");
        s.feed(&head[at..]);
        assert!(!s.in_head() && s.at_rest(), "split at {at}");
    }
    // Empty lines before a request are skipped, as hyper does: not a head yet.
    let mut s = Scan::default();
    s.feed(b"\r\n");
    assert!(!s.in_head() && s.at_rest());
    // A body is not a head.
    s.feed(b"POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nab");
    assert!(!s.in_head() && !s.at_rest());
}
