//! The words intentgate writes on the wire, in the policy input and in the audit log — how a call
//! arrived, its scheme and protocol, the decision's label, and every error code — as enums, each
//! spelled once (`words!`), so code compares values and never strings. Layer 0: imports nothing
//! of the crate.

mod error_code;

pub use error_code::ErrorCode;

/// Declares an enum of words: each variant with its spelling, serialised with that spelling
/// (`#[serde(rename)]`), plus `ALL` (every value, in order), `as_str` and `Display`.
macro_rules! words {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as written on the wire, in the policy input and in the audit log.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use words;

words! {
    /// How a call reached intentgate: `connection` in the audit record, `input.connection.mode`.
    pub enum ConnectionMode {
        /// Plain HTTP in absolute form on the proxy listener.
        Forward = "forward",
        /// A CONNECT tunnel decided at the CONNECT and spliced.
        Connect = "connect",
        /// A request inside an intercepted tunnel, or the CONNECT that opened one.
        Intercepted = "intercepted",
        /// A connection redirected to the transparent listener.
        Transparent = "transparent",
    }
}

words! {
    /// `scheme` in the record and `input.request.scheme`: `tcp` for a spliced CONNECT, `tcp` or
    /// `tls` for a transparent connection decided on its destination alone.
    pub enum Scheme {
        Http = "http",
        Https = "https",
        Tcp = "tcp",
        Tls = "tls",
    }
}

words! {
    /// `input.request.protocol`: the HTTP version, or `tcp` / `tls` for a transparent connection
    /// decided on its destination alone (no HTTP seen).
    pub enum Protocol {
        Http10 = "HTTP/1.0",
        Http11 = "HTTP/1.1",
        Http2 = "HTTP/2",
        Tcp = "tcp",
        Tls = "tls",
    }
}

impl Protocol {
    /// `input.connection.protocol`: `tcp` or `tls` as they are, `http` for every HTTP version.
    pub fn transport(self) -> &'static str {
        match self {
            Protocol::Tcp | Protocol::Tls => self.as_str(),
            Protocol::Http10 | Protocol::Http11 | Protocol::Http2 => "http",
        }
    }
}

impl From<http::Version> for Protocol {
    /// The version a request arrived in (HTTP/3 never does; it reads as HTTP/1.1).
    fn from(v: http::Version) -> Self {
        match v {
            http::Version::HTTP_2 => Protocol::Http2,
            http::Version::HTTP_10 => Protocol::Http10,
            _ => Protocol::Http11,
        }
    }
}

words! {
    /// `decision` in the audit record and the `decision` label of `intentgate_requests_total`.
    pub enum Verdict {
        /// The policy allowed it: forwarded.
        Allow = "allow",
        /// The policy denied it: refused.
        Deny = "deny",
        /// Monitor mode: enforce would have denied it; forwarded.
        WouldDeny = "would_deny",
        /// Refused before (or instead of) the policy's answer, with `error` set.
        Error = "error",
    }
}

/// An optional word written as `""` while it is not known (a request refused before its target
/// or decision was known), as the audit log has always written it; `""` reads back as `None`.
pub mod blank {
    use serde::de::{DeserializeOwned, Error, IntoDeserializer};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        let de: serde::de::value::StrDeserializer<'_, D::Error> = text.as_str().into_deserializer();
        T::deserialize(de).map(Some).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_serialises_as_it_is_spelled_and_reads_back() {
        fn check<T>(all: &[T], text: fn(&T) -> &'static str)
        where
            T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            for w in all {
                let json = serde_json::to_string(w).unwrap();
                assert_eq!(json, format!("\"{}\"", text(w)));
                assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), w);
            }
        }
        check(ConnectionMode::ALL, |w| w.as_str());
        check(Scheme::ALL, |w| w.as_str());
        check(Protocol::ALL, |w| w.as_str());
        check(Verdict::ALL, |w| w.as_str());
        check(ErrorCode::ALL, |w| w.as_str());
        assert_eq!(Verdict::WouldDeny.to_string(), "would_deny");
        assert_eq!(Protocol::from(http::Version::HTTP_2).transport(), "http");
        assert_eq!(Protocol::Tls.transport(), "tls");
    }

    #[test]
    fn a_blank_word_is_none_and_an_unknown_one_an_error() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct R {
            #[serde(with = "blank")]
            v: Option<Verdict>,
        }
        for (v, json) in [
            (None, r#"{"v":""}"#),
            (Some(Verdict::WouldDeny), r#"{"v":"would_deny"}"#),
        ] {
            assert_eq!(serde_json::to_string(&R { v }).unwrap(), json);
            assert_eq!(serde_json::from_str::<R>(json).unwrap(), R { v });
        }
        assert!(serde_json::from_str::<R>(r#"{"v":"maybe"}"#).is_err());
    }
}
