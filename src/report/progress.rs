//! The progress bar of `report` on stderr, drawn only when stderr is a terminal and at most a few
//! times a second (a clock read every 64 Ki lines, not per line).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const EVERY: u64 = 1 << 16;
const REDRAW: Duration = Duration::from_millis(200);
const WIDTH: u64 = 30;

pub(crate) struct Progress {
    on: bool,
    total: u64,
    done: u64,
    lines: u64,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    /// A bar for `total` bytes (0: unknown, e.g. stdin).
    pub(crate) fn new(total: u64) -> Self {
        Progress {
            on: std::io::stderr().is_terminal(),
            total,
            done: 0,
            lines: 0,
            started: Instant::now(),
            drawn: None,
        }
    }

    /// One line of `bytes` read.
    pub(crate) fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        self.lines += 1;
        if !self.on || !self.lines.is_multiple_of(EVERY) {
            return;
        }
        let now = Instant::now();
        if self.drawn.is_some_and(|d| now - d < REDRAW) {
            return;
        }
        self.drawn = Some(now);
        let rate = self.lines as f64 / (now - self.started).as_secs_f64().max(1e-6);
        let line = match (self.done.min(self.total) * 100).checked_div(self.total) {
            Some(pct) => {
                let filled = (pct * WIDTH / 100) as usize;
                format!(
                    "\r[{}{}] {pct:>3}%  {} lines  {rate:.0} lines/s ",
                    "#".repeat(filled),
                    ".".repeat(WIDTH as usize - filled),
                    self.lines
                )
            }
            None => format!("\r{} lines  {rate:.0} lines/s ", self.lines),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// Removes the bar (before any other output).
    pub(crate) fn clear(&mut self) {
        if self.on && self.drawn.take().is_some() {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }
}
