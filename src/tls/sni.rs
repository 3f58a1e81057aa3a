//! A strict, bounds-checked TLS ClientHello parser for peeked bytes: tells TLS from other
//! protocols and extracts the SNI host name and the ALPN list before any handshake.
//!
//! It never panics and never reads out of bounds on hostile input (it is fuzzed); it allocates
//! only for its result, and for reassembly when a ClientHello is split across records.

/// The largest ClientHello (handshake message body) accepted.
pub const MAX_HELLO_LEN: usize = 16 * 1024;
/// The most TLS records a ClientHello may be split across.
pub const MAX_RECORDS: usize = 32;
/// The most bytes a caller ever needs to peek to get an answer other than `NeedMore`.
pub const MAX_PEEK: usize = MAX_HELLO_LEN + 4 + MAX_RECORDS * 5;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const MAX_RECORD_LEN: usize = 16 * 1024;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ECH: u16 = 0xfe0d;

/// What the peeked bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Possibly TLS, but incomplete: peek again with at least this many bytes.
    NeedMore { at_least: usize },
    /// Not TLS (the first byte is not a TLS handshake record): e.g. plain HTTP.
    NotTls,
    /// Starts like TLS but is not a valid ClientHello: refuse the connection.
    Malformed(&'static str),
    /// A complete, valid ClientHello.
    Hello(ClientHello),
}

/// The parts of a ClientHello the proxy decides on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` host name as sent (ASCII; may end with a dot), if any.
    pub sni: Option<String>,
    /// The ALPN protocol names offered, in the client's order; empty when none.
    pub alpn: Vec<Vec<u8>>,
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// Whether `supported_versions` offers TLS 1.3.
    pub offers_tls13: bool,
    /// Whether the hello carries Encrypted Client Hello (the SNI is then the outer, public name).
    pub ech: bool,
    /// How many bytes (records included) the ClientHello occupied.
    pub len: usize,
}

impl ClientHello {
    /// Whether `proto` (e.g. `b"h2"`) is among the offered ALPN protocols.
    #[cfg(test)]
    pub fn offers_alpn(&self, proto: &[u8]) -> bool {
        self.alpn.iter().any(|p| p == proto)
    }
}

/// Parses the start of a connection.
pub fn parse(buf: &[u8]) -> Peek {
    let Some(&first) = buf.first() else {
        return Peek::NeedMore { at_least: 5 };
    };
    if first != RECORD_HANDSHAKE {
        return Peek::NotTls;
    }
    match gather(buf) {
        Ok(Gathered::Need(n)) => Peek::NeedMore { at_least: n },
        Ok(Gathered::Contiguous(body, len)) => finish(parse_hello(body), len),
        Ok(Gathered::Reassembled(body, len)) => finish(parse_hello(&body), len),
        Err(why) => Peek::Malformed(why),
    }
}

fn finish(r: Result<ClientHello, &'static str>, len: usize) -> Peek {
    match r {
        Ok(mut h) => {
            h.len = len;
            Peek::Hello(h)
        }
        Err(why) => Peek::Malformed(why),
    }
}

enum Gathered<'a> {
    Need(usize),
    /// The handshake body, all in the first record; and the bytes consumed.
    Contiguous(&'a [u8], usize),
    Reassembled(Vec<u8>, usize),
}

/// Collects the ClientHello handshake message body from one or more handshake records.
fn gather(buf: &[u8]) -> Result<Gathered<'_>, &'static str> {
    let mut pos = 0;
    let mut records = 0;
    let mut joined: Vec<u8> = Vec::new();
    let mut first: Option<&[u8]> = None;
    // The handshake message length, once its 4-byte header has been seen.
    let mut msg_len: Option<usize> = None;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else {
            return Ok(Gathered::Need(pos + 5));
        };
        if header[0] != RECORD_HANDSHAKE {
            return Err("a non-handshake record arrived before the ClientHello was complete");
        }
        if header[1] != 0x03 || header[2] > 0x04 {
            return Err("unknown TLS record version");
        }
        let rlen = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if rlen == 0 {
            return Err("empty handshake record");
        }
        if rlen > MAX_RECORD_LEN {
            return Err("record longer than 16 KiB");
        }
        records += 1;
        if records > MAX_RECORDS {
            return Err("ClientHello split across too many records");
        }
        if let Some(n) = msg_len {
            // Known length: never wait for bytes the ClientHello cannot contain.
            let have = if joined.is_empty() {
                first.map_or(0, <[u8]>::len)
            } else {
                joined.len()
            };
            if have + rlen > 4 + n {
                return Err("unexpected data after the ClientHello in its record");
            }
        }
        let start = pos + 5;
        let Some(fragment) = buf.get(start..start + rlen) else {
            return Ok(Gathered::Need(start + rlen));
        };
        pos = start + rlen;
        match first {
            None => first = Some(fragment),
            Some(f) => {
                if joined.is_empty() {
                    joined.extend_from_slice(f);
                }
                joined.extend_from_slice(fragment);
            }
        }
        let have: &[u8] = if joined.is_empty() { fragment } else { &joined };
        if msg_len.is_none() && have.len() >= 4 {
            if have[0] != HANDSHAKE_CLIENT_HELLO {
                return Err("the first handshake message is not a ClientHello");
            }
            let n = usize::from(have[1]) << 16 | usize::from(have[2]) << 8 | usize::from(have[3]);
            if n > MAX_HELLO_LEN {
                return Err("ClientHello too large");
            }
            msg_len = Some(n);
        }
        if let Some(n) = msg_len {
            if have.len() > 4 + n {
                return Err("unexpected data after the ClientHello in its record");
            }
            if have.len() == 4 + n {
                return Ok(if joined.is_empty() {
                    Gathered::Contiguous(&fragment[4..], pos)
                } else {
                    joined.drain(..4);
                    Gathered::Reassembled(joined, pos)
                });
            }
        }
    }
}

/// A bounds-checked reader over a complete message: running short is malformed input.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("length field points past the end of the ClientHello");
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn parse_hello(body: &[u8]) -> Result<ClientHello, &'static str> {
    let mut r = Reader { buf: body };
    let mut hello = ClientHello {
        legacy_version: r.u16()?,
        ..ClientHello::default()
    };
    if !(0x0301..=0x0303).contains(&hello.legacy_version) {
        return Err("unsupported ClientHello version (SSL 3.0 or unknown)");
    }
    r.take(32)?; // random
    if r.vec8()?.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("invalid cipher suite list");
    }
    if r.vec8()?.is_empty() {
        return Err("empty compression method list");
    }
    if r.is_empty() {
        return Ok(hello); // no extensions (TLS 1.2 and older may omit them)
    }
    let mut exts = Reader { buf: r.vec16()? };
    if !r.is_empty() {
        return Err("unexpected data after the extensions");
    }
    let (mut seen_sni, mut seen_alpn, mut seen_versions) = (false, false, false);
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        let seen = match ty {
            EXT_SERVER_NAME => &mut seen_sni,
            EXT_ALPN => &mut seen_alpn,
            EXT_SUPPORTED_VERSIONS => &mut seen_versions,
            EXT_ECH => {
                hello.ech = true;
                continue;
            }
            _ => continue,
        };
        if std::mem::replace(seen, true) {
            return Err("duplicate extension");
        }
        match ty {
            EXT_SERVER_NAME => hello.sni = parse_sni(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            _ => hello.offers_tls13 = parse_versions(data)?,
        }
    }
    Ok(hello)
}

/// `server_name`: a list with at most one `host_name` (type 0) entry.
fn parse_sni(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut outer = Reader { buf: data };
    let mut list = Reader {
        buf: outer.vec16()?,
    };
    if !outer.is_empty() || list.is_empty() {
        return Err("malformed server_name extension");
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type != 0 {
            continue;
        }
        if host.is_some() {
            return Err("more than one host name in server_name");
        }
        let valid = !name.is_empty()
            && name.len() <= 254
            && name[0] != b'.'
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err("server_name is not a valid host name");
        }
        host = Some(String::from_utf8_lossy(name).into_owned());
    }
    Ok(host)
}

/// `application_layer_protocol_negotiation`: a non-empty list of non-empty names.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut outer = Reader { buf: data };
    let mut list = Reader {
        buf: outer.vec16()?,
    };
    if !outer.is_empty() || list.is_empty() {
        return Err("malformed ALPN extension");
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let proto = list.vec8()?;
        if proto.is_empty() {
            return Err("empty ALPN protocol name");
        }
        out.push(proto.to_vec());
    }
    Ok(out)
}

/// `supported_versions` (client form): whether TLS 1.3 (0x0304) is offered.
fn parse_versions(data: &[u8]) -> Result<bool, &'static str> {
    let mut outer = Reader { buf: data };
    let list = outer.vec8()?;
    if !outer.is_empty() || list.is_empty() || list.len() % 2 != 0 {
        return Err("malformed supported_versions extension");
    }
    Ok(list.chunks_exact(2).any(|v| v == [0x03, 0x04]))
}

#[cfg(test)]
#[path = "sni_tests.rs"]
mod tests;
