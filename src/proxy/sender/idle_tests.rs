//! The registry lists only the slots that may lend a connection: a search for an idle one
//! looks at those, not at every client connection that once had one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;

use super::Registry;
use crate::proxy::sender::OutBody;
use crate::proxy::sender::conn::{Conn, Idle, Key};
use crate::proxy::sender::kept::Slot;
use crate::target::Authority;

fn authority() -> Authority {
    Authority::new("up.example".into(), 80)
}

/// An HTTP/1.1 connection to `authority()`, ready for a request; its far end is returned too.
async fn connection() -> (Idle, DuplexStream) {
    let (near, far) = tokio::io::duplex(1024);
    let (mut sender, conn) = http1::handshake::<_, OutBody>(TokioIo::new(near))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.ready().await.unwrap();
    let idle = Idle::new(Key::new(&authority(), false), Conn::H1(sender, None));
    (idle, far)
}

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(Duration::from_secs(90), 32))
}

#[tokio::test]
async fn a_connection_lent_from_slot_to_slot_leaves_only_its_holder_listed() {
    let registry = registry();
    let (idle, _far) = connection().await;
    let slots: Vec<Arc<Slot>> = (0..500).map(|_| Arc::default()).collect();
    slots[0].put(idle, &registry, Instant::now());
    // As 500 idle keep-alive clients sending in turn: each borrows the one connection.
    for pair in slots.windows(2) {
        let idle = registry.take(&authority(), false, &pair[1]).unwrap();
        pair[1].put(idle, &registry, Instant::now());
    }
    assert_eq!(registry.listed(), 1, "the slot that holds it, not all 500");
}

#[tokio::test]
async fn a_slot_unlisted_while_its_own_request_has_its_connection_lends_it_again() {
    let registry = registry();
    let (idle, _far) = connection().await;
    let [a, b, c]: [Arc<Slot>; 3] = Default::default();
    a.put(idle, &registry, Instant::now());
    // a's own request has it out: b finds none to borrow, and a is unlisted.
    let out = a
        .take(
            &authority(),
            false,
            registry.max_idle(),
            true,
            Instant::now(),
        )
        .unwrap();
    assert!(registry.take(&authority(), false, &b).is_none());
    assert_eq!(registry.listed(), 0);
    // Kept again after that request: listed again, and lent to the next who asks.
    a.put(out, &registry, Instant::now());
    assert_eq!(registry.listed(), 1);
    assert!(registry.take(&authority(), false, &c).is_some());
}
