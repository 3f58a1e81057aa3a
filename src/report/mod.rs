//! `intentgate report`: one self-contained HTML page (inline CSS, charts drawn as inline SVG by
//! `svg`, no script, nothing fetched) from audit logs, for people: calls over time per agent and
//! intent, refusals by code and reason, top destinations per intent, what monitor mode let
//! through that enforcing would refuse, the catalog `learn` would suggest, and an inventory of the
//! agents seen with flags for those without an owner, past expiry or idle.
//!
//! The logs are streamed: one line buffer, records borrowed from it (`record`), every table capped
//! (`stats`), so a day of a fleet's audit (millions of records) is read in bounded memory. A
//! progress bar goes to stderr when it is a terminal; a summary line is always printed.

mod agents;
mod html;
mod progress;
mod record;
mod sections;
mod stats;
mod svg;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use progress::Progress;
use stats::Stats;

/// What `intentgate report` was asked to do.
pub struct Options {
    /// Audit logs (JSON lines); `-` is stdin.
    pub audit: Vec<PathBuf>,
    /// Where the HTML goes.
    pub out: PathBuf,
    /// The time the flags are judged at (seconds since the epoch); default now.
    pub as_of: Option<i64>,
    /// An agent not seen for this long is flagged idle.
    pub idle: Duration,
}

/// Parses `--as-of` (RFC 3339).
pub fn parse_time(s: &str) -> Result<i64, String> {
    record::epoch_secs(s).ok_or_else(|| format!("not an RFC 3339 time: {s:?}"))
}

/// Runs `intentgate report`: exit 0 written, 2 an input unreadable or the output not writable.
pub fn main(opts: &Options) -> ExitCode {
    let started = Instant::now();
    let mut stats = Stats::default();
    let total: u64 = opts
        .audit
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress::new(total);
    for path in &opts.audit {
        if let Err(e) = read(path, &mut stats, &mut progress) {
            progress.clear();
            eprintln!("intentgate: {}: cannot read: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    progress.clear();
    let as_of = opts.as_of.unwrap_or_else(now);
    let page = html::page(
        &stats,
        &html::Context {
            files: &opts.audit,
            as_of,
            idle: opts.idle,
        },
    );
    if let Err(e) = std::fs::write(&opts.out, &page) {
        eprintln!("intentgate: cannot write {}: {e}", opts.out.display());
        return ExitCode::from(2);
    }
    eprintln!(
        "intentgate: {}",
        summary(&stats, &opts.out, page.len(), started.elapsed())
    );
    ExitCode::SUCCESS
}

/// Reads one log (or stdin for `-`) line by line into `stats`.
fn read(path: &Path, stats: &mut Stats, progress: &mut Progress) -> std::io::Result<()> {
    let input: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(path)?)
    };
    read_lines(
        BufReader::with_capacity(1 << 20, input),
        path,
        stats,
        progress,
    )
}

fn read_lines(
    mut input: impl BufRead,
    path: &Path,
    stats: &mut Stats,
    progress: &mut Progress,
) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(4096);
    let mut n = 0u64;
    loop {
        line.clear();
        let len = input.read_until(b'\n', &mut line)?;
        if len == 0 {
            return Ok(());
        }
        n += 1;
        progress.advance(len as u64);
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let at = || format!("{}:{n}", path.display());
        match serde_json::from_slice::<record::Record<'_>>(text) {
            Ok(r) => stats.add(&r, at),
            Err(_) => stats.unreadable(at),
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The line printed when done: what was read, how fast, and where the report went.
fn summary(stats: &Stats, out: &Path, bytes: usize, took: Duration) -> String {
    let rate = stats.records as f64 / took.as_secs_f64().max(1e-6);
    let mut s = format!(
        "report: {} records ({} calls, {} agents) in {:.1}s ({:.0} records/s); wrote {} ({} KiB)",
        stats.records,
        stats.calls(),
        stats.agents.len(),
        took.as_secs_f64(),
        rate,
        out.display(),
        bytes.div_ceil(1024)
    );
    if let Some(at) = &stats.first_unreadable {
        s.push_str(&format!(
            "; {} lines were not audit records and were skipped (the first at {at})",
            stats.unreadable
        ));
    }
    s
}
