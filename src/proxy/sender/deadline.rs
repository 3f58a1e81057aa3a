//! The upstream response timeout with one timer per client connection (or tunnel), reused from
//! one request to the next instead of a new one per request (`tokio::time::timeout` makes,
//! registers and removes a timer in tokio's wheel every time, ~500 instructions a request).
//!
//! Lazy, as the guard's idle timer (src/conn/guard.rs): a request leaves the timer's deadline
//! where an earlier request put it when that is sooner than its own. That deadline then wakes it
//! early; it sees its own deadline is still ahead and moves the timer there (at most once per
//! timeout, however many requests go by). A request the timer is already lent to (concurrent
//! requests of a tunnel's HTTP/2) gets a timer of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// The timer a client connection or tunnel keeps between its requests.
#[derive(Default)]
pub(crate) struct ResponseTimer(Mutex<Option<Pin<Box<Sleep>>>>);

/// The bound ran out before the future was ready.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl ResponseTimer {
    /// `fut`, or `Err(Elapsed)` once `deadline` has passed (as `tokio::time::timeout_at`: `fut`
    /// is polled first). Unpin: a large future is pinned where it lies, not copied in here.
    pub(crate) async fn bound<F: Future + Unpin>(
        &self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let lent = self.0.lock().ok().and_then(|mut kept| kept.take());
        let sleep = match lent {
            // Sooner than ours and not passed: left where it is (it wakes us early).
            Some(s) if s.deadline() <= deadline && !s.is_elapsed() => s,
            Some(mut s) => {
                s.as_mut().reset(deadline);
                s
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let mut bounded = Bounded {
            fut,
            lent: Lent {
                sleep: Some(sleep),
                home: self,
            },
            deadline,
        };
        std::future::poll_fn(move |cx| bounded.poll(cx)).await
    }
}

/// The timer, given back to its connection however the request ends (also when dropped).
struct Lent<'a> {
    sleep: Option<Pin<Box<Sleep>>>,
    home: &'a ResponseTimer,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let (Some(sleep), Ok(mut kept)) = (self.sleep.take(), self.home.0.lock()) {
            kept.get_or_insert(sleep);
        }
    }
}

struct Bounded<'a, F> {
    fut: F,
    lent: Lent<'a>,
    deadline: Instant,
}

impl<F: Future + Unpin> Bounded<'_, F> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<F::Output, Elapsed>> {
        if let Poll::Ready(out) = Pin::new(&mut self.fut).poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let Some(sleep) = self.lent.sleep.as_mut() else {
            return Poll::Pending;
        };
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.deadline {
                return Poll::Ready(Err(Elapsed));
            }
            // An earlier request's deadline: moved to ours (and polled again to be woken).
            sleep.as_mut().reset(self.deadline);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_reused_timer_bounds_each_request_by_its_own_deadline() {
        let timer = ResponseTimer::default();
        // The first request sets the timer to 100 ms from now and is answered at once.
        let first = Instant::now() + 100 * MS;
        let r = timer.bound(first, Box::pin(async { 1 })).await;
        assert_eq!(r.unwrap(), 1);
        // The second, 50 ms later, keeps the earlier deadline: woken early at the first's
        // deadline, it must not time out before its own.
        tokio::time::sleep(50 * MS).await;
        let second = Instant::now() + 100 * MS;
        let r = timer.bound(second, std::future::pending::<()>()).await;
        assert!(r.is_err());
        assert!(Instant::now() >= second);
        // After the timer fired: bounded again, by the new deadline.
        let third = Instant::now() + 20 * MS;
        let slow = Box::pin(tokio::time::sleep(300 * MS));
        assert!(timer.bound(third, slow).await.is_err());
        let now = Instant::now();
        assert!(now >= third && now < third + 250 * MS);
        let r = timer
            .bound(Instant::now() + 20 * MS, Box::pin(async { 2 }))
            .await;
        assert_eq!(r.unwrap(), 2);
        // A later request with a sooner deadline (a shorter timeout after a reload) is bounded
        // by its own.
        let long = timer.bound(Instant::now() + 10_000 * MS, Box::pin(async { 3 }));
        assert_eq!(long.await.unwrap(), 3);
        let short = Instant::now() + 30 * MS;
        assert!(
            timer
                .bound(short, std::future::pending::<()>())
                .await
                .is_err()
        );
        assert!(Instant::now() < short + 5_000 * MS);
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_a_timer() {
        let timer = ResponseTimer::default();
        let (da, db) = (Instant::now() + 40 * MS, Instant::now() + 120 * MS);
        let (a, b) = tokio::join!(
            async {
                let r = timer.bound(da, std::future::pending::<()>()).await;
                (r.is_err(), Instant::now() >= da)
            },
            async {
                let r = timer.bound(db, std::future::pending::<()>()).await;
                (r.is_err(), Instant::now() >= db)
            }
        );
        assert_eq!((a, b), ((true, true), (true, true)));
        // One of them is kept for the next request.
        assert!(timer.0.lock().unwrap().is_some());
    }
}
