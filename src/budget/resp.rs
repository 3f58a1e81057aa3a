//! The little of RESP2 (the Redis protocol) the budget store speaks: commands as arrays of bulk
//! strings, and replies (simple strings, errors, integers, bulk strings, arrays) read back.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Appends `args` as one command.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The most elements or bytes one reply may claim (ours are tiny).
const MAX_LEN: usize = 1 << 20;

/// Reads one reply.
pub async fn read<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Reply> {
    Box::pin(read_inner(r)).await
}

async fn read_inner<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Reply> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).await?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") || line.len() > 64 * 1024 {
        return Err(bad("a RESP line without CRLF"));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let len = || -> std::io::Result<i64> { text.parse().map_err(|_| bad("a bad RESP length")) };
    Ok(match line[0] {
        b'+' => Reply::Simple(text),
        b'-' => Reply::Error(text),
        b':' => Reply::Int(len()?),
        b'$' => match usize::try_from(len()?) {
            Err(_) => Reply::Bulk(None),
            Ok(n) if n > MAX_LEN => return Err(bad("a RESP bulk string too long")),
            Ok(n) => {
                let mut b = vec![0; n + 2];
                r.read_exact(&mut b).await?;
                b.truncate(n);
                Reply::Bulk(Some(b))
            }
        },
        b'*' => match usize::try_from(len()?) {
            Err(_) => Reply::Array(Vec::new()),
            Ok(n) if n > MAX_LEN => return Err(bad("a RESP array too long")),
            Ok(n) => {
                let mut v = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    v.push(Box::pin(read_inner(r)).await?);
                }
                Reply::Array(v)
            }
        },
        _ => return Err(bad("not a RESP reply")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_and_replies() {
        let mut out = Vec::new();
        command(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut input: &[u8] = b"*3\r\n:1\r\n$2\r\nhi\r\n$-1\r\n-ERR no\r\n";
        let r = read(&mut input).await.unwrap();
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Int(1),
                Reply::Bulk(Some(b"hi".to_vec())),
                Reply::Bulk(None)
            ])
        );
        assert_eq!(
            read(&mut input).await.unwrap(),
            Reply::Error("ERR no".into())
        );
        assert!(read(&mut input).await.is_err());
    }
}
