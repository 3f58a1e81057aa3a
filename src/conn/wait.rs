//! How long a guarded client connection may wait for its client (src/conn/guard.rs): parked once
//! idle for a while (src/conn/park.rs), and, on the proxy listener, the request head bounded by
//! `limits.header_read_timeout_ms` in place of hyper's header-read timeout — hyper armed a boxed
//! timer for every request head and dropped it once the head was parsed (~640 instructions a
//! request). Here one timer per connection is set lazily: a deadline of an earlier wait that
//! fires early is moved then, and the timer is moved at once only when it would fire late.
//!
//! The clock runs from when the connection is ready for a head (its responses all ended and
//! written, no tunnel open) until the head is read: idle that long, the connection is closed
//! without a word, as hyper closed it; a head begun and not ended in time is answered 408
//! `header_timeout` (our JSON) and the connection closed.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Where a connection stands when a read finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stand {
    /// A request in flight, a tunnel open, a body being read, or bytes waiting to be written.
    Busy,
    /// Ready for a head, not a byte of it read.
    Idle,
    /// A head begun, not ended.
    InHead,
}

/// What a read that found nothing does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Waits for the client (woken by the socket, or by the timer to ask again).
    On,
    /// Idle for the parking delay: the connection is parked.
    Park,
    /// Idle for the whole head timeout: the connection is closed (an end of stream for hyper).
    Close,
    /// The head was not read in time: answered 408 and closed.
    TimedOut,
}

/// The waits of one connection.
#[derive(Default)]
pub(super) struct Clock {
    /// Parks the connection once idle this long (none: never).
    pub(super) park_after: Option<Duration>,
    /// A head, counted from when the connection is ready for it, is read within this (none:
    /// hyper bounds heads).
    pub(super) head: Option<Duration>,
    /// When the connection became ready for a head (the current wait's start).
    since: Option<Instant>,
    /// Wakes the connection to ask again; it may keep an earlier wait's deadline.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Clock {
    /// Whether the clock bounds anything (a guard with neither bound never looks at it).
    pub(super) fn runs(&self) -> bool {
        self.park_after.is_some() || self.head.is_some()
    }

    /// The connection is not waiting for a head (bytes read that ended it, or a response written):
    /// the next wait starts afresh.
    pub(super) fn restart(&mut self) {
        self.since = None;
    }

    /// A read found nothing: what to do, the connection standing at `stand`.
    pub(super) fn on_pending(&mut self, cx: &mut Context<'_>, stand: Stand) -> Wait {
        let (after, then) = match (stand, self.park_after, self.head) {
            (Stand::Busy, ..) => {
                self.since = None;
                return Wait::On;
            }
            (Stand::Idle, Some(park), Some(head)) if head < park => (head, Wait::Close),
            (Stand::Idle, Some(park), _) => (park, Wait::Park),
            (Stand::Idle, None, Some(head)) => (head, Wait::Close),
            (Stand::InHead, _, Some(head)) => (head, Wait::TimedOut),
            (Stand::Idle | Stand::InHead, ..) => return Wait::On,
        };
        if after.is_zero() {
            return then;
        }
        let due = *self.since.get_or_insert_with(Instant::now) + after;
        if self.passed(cx, due) { then } else { Wait::On }
    }

    /// Whether `due` has passed; if not, the timer is left or set to wake the connection no later
    /// than `due`.
    fn passed(&mut self, cx: &mut Context<'_>, due: Instant) -> bool {
        let timer = match &mut self.timer {
            Some(timer) => timer,
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(due))),
        };
        if timer.deadline() > due {
            // An earlier wait's longer bound: it would wake the connection too late.
            timer.as_mut().reset(due);
        }
        // An earlier wait's deadline wakes the connection early; it is moved then.
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if Instant::now() >= due {
            return true;
        }
        timer.as_mut().reset(due);
        timer.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
#[path = "wait_tests.rs"]
mod tests;
