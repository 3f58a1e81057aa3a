//! The client of bench/connections.py's latency phase: opens many HTTP/1.1 keep-alive
//! connections to 127.0.0.1 (through intentgate in absolute-form, or straight to the upstream),
//! sends one GET on each, then on every `run` line read from stdin (or once, `--after S`) sends an
//! open-loop schedule of GETs round-robin over them and prints the latencies as one JSON line.
//!
//! Two threads. The sender sleeps to each request's scheduled time (`nanosleep` with a timer
//! slack of 1 ns, to `--spin-us` before it, then a spin: tokio's timer ticks in whole
//! milliseconds, which would put 0–1 ms of the client's own lateness into every figure) and
//! writes the request on the next free connection (never two in flight on one). The runtime
//! thread (tokio, current-thread) only reads: one task per connection, waiting in epoll, that
//! reads its answer (Content-Length), stamps the time and frees the connection. Latency is
//! measured from the scheduled time (coordinated-omission correct: a late send counts) and from
//! the actual send; `late` is the difference (the client's own).
//!
//! cargo build --release --example connections-client; see bench/connections.py for its use.

use std::cell::RefCell;
use std::io::BufRead;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

#[derive(Parser, Clone)]
struct Args {
    /// The proxy's port on 127.0.0.1; without it the connections go straight to the upstream.
    #[arg(long)]
    proxy: Option<u16>,
    /// The upstream's port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The path requested.
    #[arg(long, default_value = "/small")]
    path: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    open_parallel: usize,
    /// Requests per second of a run (a `run RATE SECONDS` line overrides it).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of a run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The sender spins this many µs before each send instead of sleeping (a wake-up from a
    /// sleep is late by the scheduler's latency); 0: sleep only.
    #[arg(long, default_value_t = 20)]
    spin_us: u64,
    /// Run once this many seconds after the connections are open, then exit (no stdin).
    #[arg(long)]
    after: Option<f64>,
}

/// One connection: the sender writes on it, its reader task reads its answers.
struct Conn {
    stream: TcpStream,
    /// A request is in flight (set by the sender, cleared by the reader at the answer's end).
    busy: AtomicBool,
    /// The reader failed: never used again.
    dead: AtomicBool,
    /// Nanoseconds since `Clock`'s start: the request's scheduled and actual send times.
    scheduled: AtomicU64,
    sent: AtomicU64,
}

/// Nanoseconds since the client started (CLOCK_MONOTONIC, like `Instant`).
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// What the readers record for the current run: (scheduled, sent, answered) per request.
#[derive(Default)]
struct Record {
    times: Vec<[u64; 3]>,
    errors: u64,
    first_error: Option<String>,
}

/// What the sender counted in a run.
#[derive(Default)]
struct Sent {
    requests: u64,
    /// Requests whose connection in turn was busy (one further along was taken).
    skipped: u64,
    /// Times every connection was busy (the sender waited for one; the wait counts in the latency).
    all_busy: u64,
    write_errors: u64,
}

/// Reads one answer (head, then a Content-Length body) into `buf`, which keeps what follows it.
async fn read_answer(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    filled: &mut usize,
) -> anyhow::Result<()> {
    loop {
        if let Some(end) = answer_end(&buf[..*filled])? {
            if !buf.starts_with(b"HTTP/1.1 200") {
                bail!("answered {}", String::from_utf8_lossy(&buf[..end.min(200)]));
            }
            buf.copy_within(end..*filled, 0);
            *filled -= end;
            return Ok(());
        }
        if *filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        stream.readable().await?;
        match stream.try_read(&mut buf[*filled..]) {
            Ok(0) => bail!("closed after {filled} bytes"),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The length of the complete answer at the start of `data`, if it is all there.
fn answer_end(data: &[u8]) -> anyhow::Result<Option<usize>> {
    let Some(head) = memchr::memmem::find(data, b"\r\n\r\n") else {
        return Ok(None);
    };
    let mut length = 0;
    for line in data[..head].split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            length = std::str::from_utf8(&line[15..])?.trim().parse::<usize>()?;
        }
    }
    let end = head + 4 + length;
    Ok((data.len() >= end).then_some(end))
}

/// Opens one connection and has it answer one request (a served keep-alive connection).
async fn open(args: &Args, request: &[u8]) -> anyhow::Result<(Conn, Vec<u8>, usize)> {
    let mut stream = TcpStream::connect(("127.0.0.1", args.proxy.unwrap_or(args.port))).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let (mut buf, mut filled) = (vec![0u8; 2048], 0);
    read_answer(&stream, &mut buf, &mut filled).await?;
    let conn = Conn {
        stream,
        busy: AtomicBool::new(false),
        dead: AtomicBool::new(false),
        scheduled: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    };
    Ok((conn, buf, filled))
}

/// A connection's reader: records each answer's times and frees the connection.
async fn reader(
    conn: Arc<Conn>,
    mut buf: Vec<u8>,
    mut filled: usize,
    clock: Clock,
    rec: Rc<RefCell<Record>>,
    done: Rc<Notify>,
) {
    loop {
        let result = read_answer(&conn.stream, &mut buf, &mut filled).await;
        let answered = clock.now();
        let ok = result.is_ok() && conn.busy.load(SeqCst);
        {
            let mut r = rec.borrow_mut();
            if ok {
                let (scheduled, sent) = (conn.scheduled.load(SeqCst), conn.sent.load(SeqCst));
                conn.busy.store(false, SeqCst);
                r.times.push([scheduled, sent, answered]);
            } else {
                conn.dead.store(true, SeqCst);
                r.errors += 1;
                let e = result
                    .err()
                    .map_or("an answer to no request".into(), |e| format!("{e:#}"));
                r.first_error.get_or_insert(e);
            }
        }
        done.notify_one();
        if !ok {
            return;
        }
    }
}

/// The sender's schedule: `rate` requests per second for `seconds`, round-robin from `cursor`.
fn send(
    conns: &[Arc<Conn>],
    request: &[u8],
    args: &Args,
    rate: u32,
    seconds: u32,
    clock: Clock,
    cursor: &mut usize,
) -> Sent {
    let mut out = Sent::default();
    // Wake at the time asked, not up to 50 µs later (the default timer slack).
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
    let spin = args.spin_us * 1000;
    let t0 = clock.now() + 20_000_000;
    for k in 0..u64::from(rate) * u64::from(seconds) {
        let due = t0 + k * 1_000_000_000 / u64::from(rate);
        loop {
            let now = clock.now();
            if now >= due {
                break;
            }
            if due - now > spin {
                std::thread::sleep(Duration::from_nanos(due - now - spin));
            } else {
                std::hint::spin_loop();
            }
        }
        let mut tries = 0;
        let conn = loop {
            let c = &conns[*cursor % conns.len()];
            *cursor += 1;
            if !c.busy.load(SeqCst) && !c.dead.load(SeqCst) {
                break c;
            }
            tries += 1;
            if tries % conns.len() == 0 {
                out.all_busy += 1;
                if conns.iter().all(|c| c.dead.load(SeqCst)) {
                    return out;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
        };
        out.skipped += u64::from(tries > 0);
        conn.scheduled.store(due, SeqCst);
        conn.busy.store(true, SeqCst);
        conn.sent.store(clock.now(), SeqCst);
        match conn.stream.try_write(request) {
            Ok(n) if n == request.len() => out.requests += 1,
            _ => {
                out.write_errors += 1;
                conn.dead.store(true, SeqCst);
            }
        }
    }
    out
}

/// p50 … max, in µs, of durations in ns, as JSON.
fn percentiles(ns: impl Iterator<Item = u64>) -> serde_json::Value {
    let mut us: Vec<f64> = ns.map(|n| n as f64 / 1000.0).collect();
    us.sort_by(f64::total_cmp);
    let at = |q: f64| {
        us.get(((us.len() as f64 * q) as usize).min(us.len().saturating_sub(1)))
            .map(|v| (v * 10.0).round() / 10.0)
    };
    json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p99_9": at(0.999), "max": us.last()})
}

/// Nanoseconds this process's threads have run (/proc/self/task/*/schedstat).
fn cpu_ns() -> u64 {
    let ran = |t: std::fs::DirEntry| -> Option<u64> {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        stat.split_whitespace().next()?.parse().ok()
    };
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    tasks.filter_map(|t| ran(t.ok()?)).sum()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let clock = Clock(Instant::now());
    let target = match args.proxy {
        Some(_) => format!("http://127.0.0.1:{}{}", args.port, args.path),
        None => args.path.clone(),
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        args.port
    )
    .into_bytes();
    let rec = Rc::new(RefCell::new(Record::default()));
    let done = Rc::new(Notify::new());

    // Open them all, each answering one request, `open_parallel` at a time.
    let opened_at = Instant::now();
    let permits = Arc::new(Semaphore::new(args.open_parallel));
    let mut opening = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let permit = permits.clone().acquire_owned().await?;
        let (args, request) = (args.clone(), request.clone());
        opening.push(tokio::task::spawn_local(async move {
            let opened = open(&args, &request).await;
            drop(permit);
            opened
        }));
    }
    let mut conns = Vec::with_capacity(args.conns);
    for task in opening {
        let (conn, buf, filled) = task.await?.context("opening a connection")?;
        let conn = Arc::new(conn);
        tokio::task::spawn_local(reader(
            conn.clone(),
            buf,
            filled,
            clock,
            rec.clone(),
            done.clone(),
        ));
        conns.push(conn);
    }
    let conns = Arc::new(conns);
    println!(
        "{}",
        json!({"event": "ready", "conns": conns.len(), "open_s": opened_at.elapsed().as_secs_f64()})
    );

    // Runs: `run [RATE SECONDS]` lines on stdin, or one after `--after`.
    let (tx, mut lines) = mpsc::unbounded_channel();
    match args.after {
        Some(s) => {
            tokio::time::sleep(Duration::from_secs_f64(s)).await;
            let _ = tx.send(String::from("run"));
            drop(tx);
        }
        None => {
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
    }
    // The sender: one thread for all runs, its cursor kept from one run to the next.
    let (to_sender, orders) = std::sync::mpsc::channel::<(u32, u32, oneshot::Sender<Sent>)>();
    let (c, req, a) = (conns.clone(), request.clone(), args.clone());
    std::thread::spawn(move || {
        let mut cursor = 0;
        for (rate, seconds, reply) in orders {
            let _ = reply.send(send(&c, &req, &a, rate, seconds, clock, &mut cursor));
        }
    });
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (rate, seconds) = match words.as_slice() {
            ["run"] => (args.rate, args.seconds),
            ["run", r, s] => (r.parse()?, s.parse()?),
            ["quit"] | [] => break,
            _ => bail!("unknown command {line:?}: run [RATE SECONDS] | quit"),
        };
        *rec.borrow_mut() = Record {
            times: Vec::with_capacity((rate * seconds) as usize),
            ..Record::default()
        };
        let start_cpu = cpu_ns();
        let (reply, sent) = oneshot::channel();
        to_sender.send((rate, seconds, reply))?;
        let sent = sent.await?;
        // Every answer in, or 10 s after the last send.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let answered = || {
                let r = rec.borrow();
                r.times.len() as u64 + r.errors
            };
            while answered() < sent.requests {
                done.notified().await;
            }
        })
        .await;
        let cpu = cpu_ns().saturating_sub(start_cpu);
        let r = rec.borrow();
        let n = r.times.len().max(1) as f64;
        println!(
            "{}",
            json!({
                "event": "run", "conns": conns.len(), "rate": rate, "seconds": seconds,
                "answered": r.times.len(), "sent": sent.requests,
                "errors": r.errors + sent.write_errors, "first_error": r.first_error,
                "skipped_busy": sent.skipped, "all_busy": sent.all_busy,
                "from_scheduled": percentiles(r.times.iter().map(|t| t[2].saturating_sub(t[0]))),
                "from_sent": percentiles(r.times.iter().map(|t| t[2].saturating_sub(t[1]))),
                "late": percentiles(r.times.iter().map(|t| t[1].saturating_sub(t[0]))),
                "client_cpu_us_per_request": (cpu as f64 / n / 100.0).round() / 10.0,
            })
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, run(args))
}
