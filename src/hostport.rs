//! `host:port` as reasons, logs and records write it: an IPv6 literal in brackets, so its port
//! cannot be read as part of it (`[::1]:8080`, not `::1:8080`).

use std::fmt;

/// A host as written before a port: an IPv6 literal in brackets.
pub(crate) struct Host<'a>(pub &'a str);

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') {
            write!(f, "[{}]", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

/// `host:port`, the host as `Host` writes it.
pub(crate) struct HostPort<'a>(pub &'a str, pub u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Host(self.0), self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_literals_are_bracketed_names_and_ipv4_are_not() {
        assert_eq!(HostPort("::1", 8080).to_string(), "[::1]:8080");
        assert_eq!(HostPort("127.0.0.1", 80).to_string(), "127.0.0.1:80");
        assert_eq!(HostPort("api.example", 443).to_string(), "api.example:443");
        assert_eq!(Host("fe80::1").to_string(), "[fe80::1]");
    }
}
