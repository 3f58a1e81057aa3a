//! A watch on the raw request heads of a client connection, for what hyper hides from us: it lets
//! `Transfer-Encoding` win over `Content-Length` and drops the latter before a request reaches the
//! proxy, so a head carrying both is recognised here, in the bytes, and the connection flagged
//! (the request is then refused with 400 `ambiguous_framing`, src/proxy/headers.rs).
//!
//! The scan follows the message framing as hyper reads it (a `Content-Length` body is skipped by
//! count, a chunked one chunk by chunk), pauses at a CONNECT or an upgrade until the response says
//! whether a tunnel follows, and stops for good in a tunnel or at HTTP/2. It allocates nothing:
//! lines are searched with `memchr`, and only a line split between two reads is carried, its
//! first `CARRY` bytes (all the scan needs).

/// How much of a line split between reads is kept.
const CARRY: usize = 64;

/// The scan of one connection's request stream.
pub(crate) struct Scan {
    state: State,
    /// The start of a line whose end has not been read yet.
    carry: [u8; CARRY],
    carried: usize,
    /// The carried line was longer than `CARRY`.
    cut: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request line (empty lines are skipped, as hyper does).
    Start,
    /// In the header lines of a head.
    Head(Head),
    /// Skipping this many more bytes of a `Content-Length` body.
    Body(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// Skipping this many more bytes of chunk data.
    ChunkData(u64),
    /// At the line end after chunk data.
    ChunkEnd,
    /// In the trailer lines after the last chunk.
    Trailers,
    /// After a CONNECT or an upgrade request: whether the connection becomes a tunnel is in the
    /// response. `early`: bytes arrived before it.
    Paused { connect: bool, early: bool },
    /// A tunnel, HTTP/2, or a stream that cannot be followed: nothing more is scanned.
    Done,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Head {
    connect: bool,
    upgrade: bool,
    te: bool,
    cl: Option<u64>,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            state: State::Start,
            carry: [0; CARRY],
            carried: 0,
            cut: false,
        }
    }
}

impl Scan {
    /// Whether there is anything left to watch (false in a tunnel).
    pub(crate) fn watching(&self) -> bool {
        self.state != State::Done
    }

    /// Between requests, with nothing of a next one read.
    pub(crate) fn at_rest(&self) -> bool {
        self.state == State::Start && self.carried == 0
    }

    /// In the middle of a request head: its request line or header lines begun, not ended.
    pub(crate) fn in_head(&self) -> bool {
        matches!(self.state, State::Head(_)) || (self.state == State::Start && self.carried > 0)
    }

    /// Follows the bytes just read from the client. True when the stream turned ambiguous: a
    /// head with both `Content-Length` and `Transfer-Encoding`, or a stream the scan can no
    /// longer follow (failing closed: the connection's chunked requests are then refused).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return false,
                State::Paused { early, .. } => {
                    *early = true;
                    return false;
                }
                State::Body(left) | State::ChunkData(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = match self.state {
                            State::Body(_) => State::Start,
                            _ => State::ChunkEnd,
                        };
                    }
                }
                _ => {
                    let Some(end) = memchr::memchr(b'\n', bytes) else {
                        self.keep(bytes);
                        return false;
                    };
                    let line = if self.carried == 0 {
                        &bytes[..end]
                    } else {
                        self.keep(&bytes[..end]);
                        &self.carry[..self.carried]
                    };
                    let cut = std::mem::take(&mut self.cut);
                    let flagged = line_ends(&mut self.state, line, cut);
                    self.carried = 0;
                    bytes = &bytes[end + 1..];
                    if flagged {
                        self.state = State::Done;
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Sees the start of what the proxy writes back: while paused, the response to the CONNECT
    /// or upgrade says whether the stream becomes a tunnel. True when the stream is lost (bytes
    /// came before a refusal, unscanned).
    pub(crate) fn on_response(&mut self, head: &[u8]) -> bool {
        let State::Paused { connect, early } = self.state else {
            return false;
        };
        let status = head
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| head.strip_prefix(b"HTTP/1.0 "))
            .and_then(|r| r.get(..3))
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok());
        match status {
            Some(101) => {
                self.state = State::Done;
                false
            }
            Some(s) if connect && (200..300).contains(&s) => {
                self.state = State::Done;
                false
            }
            // Not a final response head.
            None | Some(100..=199) => false,
            Some(_) => {
                self.state = if early { State::Done } else { State::Start };
                early
            }
        }
    }

    /// Carries (the start of) a line whose end is still to come.
    fn keep(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(CARRY - self.carried);
        self.carry[self.carried..self.carried + n].copy_from_slice(&bytes[..n]);
        self.carried += n;
        self.cut |= n < bytes.len();
    }
}

/// Moves `state` past one complete line (without its `\n`); `cut` when only its start is known.
/// True when the stream turned ambiguous.
fn line_ends(state: &mut State, line: &[u8], cut: bool) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match state {
        State::Start if line.is_empty() => {}
        State::Start if line.starts_with(b"PRI ") => *state = State::Done,
        State::Start => {
            *state = State::Head(Head {
                connect: line.starts_with(b"CONNECT "),
                ..Head::default()
            })
        }
        State::Head(head) if line.is_empty() => {
            let head = *head;
            if head.te && head.cl.is_some() {
                return true;
            }
            *state = if head.connect || head.upgrade {
                State::Paused {
                    connect: head.connect,
                    early: false,
                }
            } else if head.te {
                State::ChunkSize
            } else {
                match head.cl {
                    Some(n) if n > 0 => State::Body(n),
                    _ => State::Start,
                }
            };
        }
        State::Head(head) => {
            if let Some(value) = field(line, b"content-length") {
                // A value that is not a number: hyper refuses the request and closes. One cut
                // off (a line longer than CARRY) cannot be followed: fail closed.
                let value = value.trim_ascii();
                match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    _ if cut => return true,
                    None => *state = State::Done,
                    n => head.cl = n,
                }
            } else if field(line, b"transfer-encoding").is_some() {
                head.te = true;
            } else if field(line, b"upgrade").is_some() {
                head.upgrade = true;
            }
        }
        State::ChunkSize => {
            let mut size: Option<u64> = None;
            for d in line.iter().map_while(|&b| char::from(b).to_digit(16)) {
                size = Some(
                    size.unwrap_or(0)
                        .saturating_mul(16)
                        .saturating_add(d.into()),
                );
            }
            // Not a chunk size: hyper fails the body (400) and closes the connection.
            match size {
                None => *state = State::Done,
                Some(0) => *state = State::Trailers,
                Some(n) => *state = State::ChunkData(n),
            }
        }
        State::ChunkEnd => *state = State::ChunkSize,
        State::Trailers if line.is_empty() => *state = State::Start,
        State::Trailers => {}
        State::Body(_) | State::ChunkData(_) | State::Paused { .. } | State::Done => {}
    }
    false
}

/// The value of a header line whose name is `name` (lowercase, any case in the line). A name
/// ends at the line's first `:`, and no name we look for holds one, so comparing the line's start
/// is the same test as splitting it at its colon, without searching most lines for one.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.get(name.len()..)?;
    (rest.first() == Some(&b':') && line[..name.len()].eq_ignore_ascii_case(name))
        .then(|| &rest[1..])
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
