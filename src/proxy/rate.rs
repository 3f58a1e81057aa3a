//! Request rate per agent (`limits.requests_per_second`, `limits.burst`; off by default): a token
//! bucket keyed by agent id, so a reload that changes the agent starts it a bucket of its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// At most this many agents are tracked; beyond it the table is cleared (a sidecar serves one).
const MAX_AGENTS: usize = 1024;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per agent id.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one token for `agent`, or says how long until one is available. Always `Ok` when
    /// `limits.requests_per_second` is 0 (off).
    pub fn take(&self, agent: &str, limits: &Limits) -> Result<(), Duration> {
        let rate = limits.requests_per_second;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = if limits.burst == 0 {
            rate.ceil().max(1.0)
        } else {
            f64::from(limits.burst)
        };
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(agent) {
            if map.len() >= MAX_AGENTS {
                map.clear();
            }
            // The agent's id is copied once, when its bucket is made, not per request.
            map.insert(
                agent.to_string(),
                Bucket {
                    tokens: burst,
                    at: now,
                },
            );
        }
        let Some(b) = map.get_mut(agent) else {
            return Ok(());
        };
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_the_wait_per_agent() {
        let limits = Limits {
            requests_per_second: 0.5,
            burst: 3,
            ..Limits::default()
        };
        let r = RateLimiter::default();
        for _ in 0..3 {
            assert!(r.take("a", &limits).is_ok());
        }
        let wait = r.take("a", &limits).unwrap_err();
        assert!(wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2));
        assert!(
            r.take("b", &limits).is_ok(),
            "another agent has its own bucket"
        );
        assert!(r.take("a", &Limits::default()).is_ok(), "off by default");
    }
}
