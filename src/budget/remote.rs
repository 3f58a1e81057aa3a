//! Budget counters in Redis, shared by every replica of an agent (`budgets.redis_url`): one Lua
//! script per call checks and counts atomically in one round trip (queued at once, its answer
//! awaited later: the proxy dials the upstream meanwhile); bytes and tokens follow without
//! waiting for an answer. One connection per process, pipelined: the calls waiting when
//! a round trip starts go in one write. A lost connection fails the calls in flight (then
//! `budgets.on_store_error` decides) and is dialled again with backoff (50 ms doubling to 2 s).
//! The counters this process used are mirrored in process for `GET /v1/budgets`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::limits::{Limits, Over};
use super::local::Local;
use super::resp::{self, Reply};
use super::spec::BudgetWindow;
use super::{Admission, ChargeTo, Key, Measure, Refusal, State, StoreUnavailable, Used};

/// Checks the counts of window key KEYS[1] against the limits ARGV[1..4] (-1: none) and
/// `expires_after` ARGV[8] (-1: none; the first call's time kept in KEYS[2]); counts the call
/// unless it is over and ARGV[5] (enforce) is 1; the window key lives ARGV[6] ms (0: forever).
/// Returns {over (0, 1-4: that count, 5: expired), calls, bytes_out, bytes_in, llm_tokens, first}.
const ADMIT: &str = r"
local now = tonumber(ARGV[7])
local u = redis.call('HMGET', KEYS[1], 'calls', 'bytes_out', 'bytes_in', 'llm_tokens')
for i = 1, 4 do u[i] = tonumber(u[i]) or 0 end
local first = now
local exp = tonumber(ARGV[8])
if exp >= 0 then
  redis.call('SET', KEYS[2], now, 'NX', 'PX', exp + 2592000000)
  first = tonumber(redis.call('GET', KEYS[2]))
end
local over = 0
if exp >= 0 and now >= first + exp then
  over = 5
else
  for i = 1, 4 do
    local l = tonumber(ARGV[i])
    if l >= 0 and u[i] >= l then over = i break end
  end
end
if over == 0 or ARGV[5] == '0' then
  u[1] = redis.call('HINCRBY', KEYS[1], 'calls', 1)
  local ttl = tonumber(ARGV[6])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return {over, u[1], u[2], u[3], u[4], first}
";

/// Adds ARGV[1..3] to bytes_out, bytes_in and llm_tokens of window key KEYS[1], if it still
/// exists (a window that has ended is not brought back).
const CHARGE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'bytes_out', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'bytes_in', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'llm_tokens', ARGV[3])
end
return 0
";

/// How long one round trip (or a dial) may take before the store counts as unreachable.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// One command for the connection, and where its reply goes (none for charges).
struct Job {
    cmd: Vec<u8>,
    reply: Option<oneshot::Sender<Result<Reply, String>>>,
}

type Tx = mpsc::UnboundedSender<Job>;

/// The Redis store.
pub struct Remote {
    addr: String,
    db: u32,
    /// The connection task's queue, started at the first call (inside the runtime).
    tx: OnceLock<Tx>,
    /// The counters this process used, as of its last exchange with the store.
    mirror: Local,
    /// Names this process's sessions in `per_session` keys (sessions are per sidecar).
    session: AtomicU64,
}

/// Where a call's bytes go in Redis: its window key.
#[derive(Debug, Clone)]
pub struct Charge {
    tx: Tx,
    key: Arc<str>,
}

impl Charge {
    pub fn add(&self, u: Used) {
        let mut cmd = Vec::with_capacity(256);
        let (o, i, t) = (
            u.bytes_out.to_string(),
            u.bytes_in.to_string(),
            u.llm_tokens.to_string(),
        );
        resp::command(
            &mut cmd,
            &[
                b"EVAL",
                CHARGE.as_bytes(),
                b"1",
                self.key.as_bytes(),
                o.as_bytes(),
                i.as_bytes(),
                t.as_bytes(),
            ],
        );
        // A charge lost with the connection is lost (the call has gone already).
        let _ = self.tx.send(Job { cmd, reply: None });
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("addr", &self.addr).finish()
    }
}

impl Remote {
    /// The store at `url` (checked at config load).
    pub fn new(url: &str) -> Option<Self> {
        let (addr, db) = super::spec::redis_address(url).ok()?;
        Some(Remote {
            addr,
            db,
            tx: OnceLock::new(),
            mirror: Local::default(),
            session: AtomicU64::new(crate::ids::boot_id() << 16),
        })
    }

    fn tx(&self) -> &Tx {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(self.addr.clone(), self.db, rx));
            tx
        })
    }

    /// `Budgets::admit` against the store: the script is queued for the connection at once (no
    /// await); its answer is awaited with `Pending::answer`, so the caller can do other work
    /// (dial the upstream) during the round trip.
    pub fn begin(
        &self,
        key: Key<'_>,
        limits: &Arc<Limits>,
        enforce: bool,
        now_ms: u64,
    ) -> Result<Pending, StoreUnavailable> {
        let index = limits.window_index(now_ms);
        let session = match limits.window {
            BudgetWindow::PerSession => format!(":s{}", self.session.load(Ordering::Relaxed)),
            _ => String::new(),
        };
        let base = format!(
            "intentgate:budget:{}:{}:{}{session}",
            key.agent, key.intent, key.scope
        );
        let window_key: Arc<str> = format!("{base}:w{index}").into();
        let first_key = format!("{base}:first");
        let arg = |v: Option<u64>| v.map_or_else(|| "-1".to_string(), |n| n.to_string());
        let ttl = limits.window_ms().map_or(0, |w| w.saturating_mul(2));
        let args = [
            arg(limits.calls),
            arg(limits.bytes_out),
            arg(limits.bytes_in),
            arg(limits.llm_tokens),
            if enforce { "1" } else { "0" }.to_string(),
            ttl.to_string(),
            now_ms.to_string(),
            arg(limits.expires_after_ms),
        ];
        let mut cmd = Vec::with_capacity(1024);
        let mut parts: Vec<&[u8]> = vec![
            b"EVAL",
            ADMIT.as_bytes(),
            b"2",
            window_key.as_bytes(),
            first_key.as_bytes(),
        ];
        parts.extend(args.iter().map(|a| a.as_bytes()));
        resp::command(&mut cmd, &parts);
        let (reply_tx, reply_rx) = oneshot::channel();
        let tx = self.tx();
        tx.send(Job {
            cmd,
            reply: Some(reply_tx),
        })
        .map_err(|_| StoreUnavailable("the connection task has stopped".into()))?;
        Ok(Pending {
            reply: reply_rx,
            deadline: tokio::time::Instant::now() + IO_TIMEOUT,
            key: [key.agent, key.intent, key.scope].map(Box::from),
            limits: limits.clone(),
            enforce,
            now_ms,
            index,
            charge: Charge {
                tx: tx.clone(),
                key: window_key,
            },
        })
    }

    /// A new session: `per_session` keys of this process start again.
    pub fn end_session(&self) {
        self.session.fetch_add(1, Ordering::Relaxed);
        self.mirror.forget(|l| l.window == BudgetWindow::PerSession);
    }

    pub fn states(&self, now_ms: u64) -> Vec<State> {
        self.mirror.states(now_ms)
    }
}

/// An admission whose script is on its way to the store.
pub struct Pending {
    reply: oneshot::Receiver<Result<Reply, String>>,
    /// The round trip's end at the latest (`IO_TIMEOUT` from when it was queued).
    deadline: tokio::time::Instant,
    /// Agent, intent, scope.
    key: [Box<str>; 3],
    limits: Arc<Limits>,
    enforce: bool,
    now_ms: u64,
    index: u64,
    charge: Charge,
}

impl Pending {
    /// The store's answer (`remote` is the store that `begin` queued it on).
    pub async fn answer(self, remote: &Remote) -> Result<Admission, StoreUnavailable> {
        let reply = match tokio::time::timeout_at(self.deadline, self.reply).await {
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(e))) => return Err(StoreUnavailable(e)),
            Ok(Err(_)) => return Err(StoreUnavailable("the connection was lost".into())),
            Err(_) => return Err(StoreUnavailable("no answer within 2 s".into())),
        };
        let n: Vec<i64> = match &reply {
            Reply::Array(v) if v.len() == 6 => v.iter().filter_map(Reply::int).collect(),
            Reply::Error(e) => return Err(StoreUnavailable(format!("Redis answered: {e}"))),
            _ => Vec::new(),
        };
        let [over, calls, bytes_out, bytes_in, llm_tokens, first] = n[..] else {
            return Err(StoreUnavailable(format!("an unexpected answer: {reply:?}")));
        };
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        let used = Used {
            calls: u(calls),
            bytes_out: u(bytes_out),
            bytes_in: u(bytes_in),
            llm_tokens: u(llm_tokens),
        };
        let first_ms = u(first);
        let [agent, intent, scope] = &self.key;
        let key = Key {
            agent,
            intent,
            scope,
        };
        let (limits, index, now_ms) = (&self.limits, self.index, self.now_ms);
        remote
            .mirror
            .mirror(key, limits, used, index, first_ms, now_ms);
        let over = match over {
            1 => Some(Over::Exhausted(Measure::Calls)),
            2 => Some(Over::Exhausted(Measure::BytesOut)),
            3 => Some(Over::Exhausted(Measure::BytesIn)),
            4 => Some(Over::Exhausted(Measure::LlmTokens)),
            5 => Some(Over::Expired),
            _ => None,
        };
        let refused = over.map(|o| {
            let state = State::of(
                (agent, intent, scope),
                limits,
                used,
                index,
                Some(first_ms),
                now_ms,
            );
            Box::new(Refusal::new(o, state, limits.resets_at_ms(index), now_ms))
        });
        let go = over.is_none() || !self.enforce;
        Ok(Admission {
            refused,
            charge: go.then(|| super::Charge(ChargeTo::Remote(self.charge))),
        })
    }
}

/// The connection task: dials, serves jobs in pipelined batches, and dials again with backoff
/// when the connection fails (jobs arriving meanwhile fail at once). Ends with the queue.
async fn run(addr: String, db: u32, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let failed = match connect(&addr, db).await {
            Ok(conn) => {
                backoff = Duration::from_millis(50);
                match serve(conn, &mut rx).await {
                    Ok(()) => return,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        tracing::warn!(store = %addr, error = %failed, "budget store unreachable; dialling again");
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                job = rx.recv() => match job {
                    None => return,
                    Some(j) => fail(j, &failed),
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn fail(job: Job, why: &str) {
    if let Some(r) = job.reply {
        let _ = r.send(Err(why.to_string()));
    }
}

async fn connect(addr: &str, db: u32) -> Result<BufReader<TcpStream>, String> {
    let dial = async {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut s = BufReader::new(s);
        if db != 0 {
            let mut cmd = Vec::new();
            resp::command(&mut cmd, &[b"SELECT", db.to_string().as_bytes()]);
            s.get_mut().write_all(&cmd).await?;
            if let Reply::Error(e) = resp::read(&mut s).await? {
                return Err(std::io::Error::other(e));
            }
        }
        Ok::<_, std::io::Error>(s)
    };
    match tokio::time::timeout(IO_TIMEOUT, dial).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
        Err(_) => Err(format!("cannot connect to {addr} within 2 s")),
    }
}

/// Serves jobs until the queue ends (`Ok`) or the connection fails (`Err`, the batch in flight
/// failed with it).
async fn serve(
    mut conn: BufReader<TcpStream>,
    rx: &mut mpsc::UnboundedReceiver<Job>,
) -> Result<(), String> {
    let mut batch = Vec::new();
    let mut buf = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        buf.clear();
        for j in &batch {
            buf.extend_from_slice(&j.cmd);
        }
        let trip = async {
            conn.get_mut().write_all(&buf).await?;
            let mut replies = Vec::with_capacity(batch.len());
            for _ in 0..batch.len() {
                replies.push(resp::read(&mut conn).await?);
            }
            Ok::<_, std::io::Error>(replies)
        };
        match tokio::time::timeout(IO_TIMEOUT, trip).await {
            Ok(Ok(replies)) => {
                for (j, r) in batch.drain(..).zip(replies) {
                    if let Some(tx) = j.reply {
                        let _ = tx.send(Ok(r));
                    }
                }
            }
            Ok(Err(e)) => {
                let why = format!("the connection to the store failed: {e}");
                batch.drain(..).for_each(|j| fail(j, &why));
                return Err(why);
            }
            Err(_) => {
                let why = "the store did not answer within 2 s".to_string();
                batch.drain(..).for_each(|j| fail(j, &why));
                return Err(why);
            }
        }
    }
}
