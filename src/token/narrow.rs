//! The narrowing claims of an intent token (`hosts`, `methods`, `paths`) matched against one
//! request, without allocating: a host is exact or `*.parent`, a method is compared without
//! case, a path pattern is the catalog's (`*` one segment, `**` any number).

use super::IntentClaims;

/// Which narrowing claim a request falls outside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    Host,
    Method,
    Path,
}

impl Outside {
    /// The claim's name.
    pub fn claim(self) -> &'static str {
        match self {
            Outside::Host => "hosts",
            Outside::Method => "methods",
            Outside::Path => "paths",
        }
    }
}

impl IntentClaims {
    /// Whether the token narrows anything.
    pub fn narrows(&self) -> bool {
        self.hosts.is_some() || self.methods.is_some() || self.paths.is_some()
    }

    /// Whether the token narrows what cannot be seen in a tunnel that is not intercepted.
    pub fn narrows_inside(&self) -> bool {
        self.methods.is_some() || self.paths.is_some()
    }

    /// Checks a request (`host` lowercase punycode, `path` canonical; `None` for a tunnel that
    /// is not intercepted, where only the host is known) against the narrowing claims.
    pub fn permits(&self, host: &str, request: Option<(&str, &str)>) -> Result<(), Outside> {
        if let Some(hosts) = &self.hosts {
            if !hosts.iter().any(|h| host_matches(h, host)) {
                return Err(Outside::Host);
            }
        }
        let Some((method, path)) = request else {
            return Ok(());
        };
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return Err(Outside::Method);
            }
        }
        if let Some(paths) = &self.paths {
            if !paths.iter().any(|p| glob(segments(p), segments(path))) {
                return Err(Outside::Path);
            }
        }
        Ok(())
    }
}

/// `pattern` (exact, or `*.parent` for any name below `parent`) matches `host`, without case.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            let Some(cut) = host.len().checked_sub(parent.len() + 1) else {
                return false;
            };
            cut > 0
                && host.as_bytes().get(cut) == Some(&b'.')
                && host
                    .get(cut + 1..)
                    .is_some_and(|p| p.eq_ignore_ascii_case(parent))
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

type Segments<'a> = std::iter::Filter<std::str::Split<'a, char>, fn(&&str) -> bool>;

fn segments(path: &str) -> Segments<'_> {
    fn present(s: &&str) -> bool {
        !s.is_empty()
    }
    path.split('/').filter(present as fn(&&str) -> bool)
}

/// Segment glob over iterators (cloned, not collected): `*` one segment, `**` zero or more.
fn glob(mut pat: Segments<'_>, mut path: Segments<'_>) -> bool {
    loop {
        match pat.next() {
            None => return path.next().is_none(),
            Some("**") => loop {
                if glob(pat.clone(), path.clone()) {
                    return true;
                }
                if path.next().is_none() {
                    return false;
                }
            },
            Some(p) => match path.next() {
                Some(s) if p == "*" || p == s => {}
                _ => return false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(
        hosts: Option<&[&str]>,
        methods: Option<&[&str]>,
        paths: Option<&[&str]>,
    ) -> IntentClaims {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        IntentClaims {
            iss: "i".into(),
            aud: vec!["a".into()],
            sub: None,
            intent: "x".into(),
            task: None,
            exp: 1,
            iat: None,
            nbf: None,
            jti: None,
            hosts: list(hosts),
            methods: list(methods),
            paths: list(paths),
            max_calls: None,
            max_bytes: None,
        }
    }

    #[test]
    fn each_claim_narrows() {
        let c = claims(
            Some(&["api.example.com", "*.svc.example"]),
            Some(&["get"]),
            Some(&["/v1/tickets/*", "/v2/**"]),
        );
        assert!(c.narrows() && c.narrows_inside());
        assert_eq!(
            c.permits("api.example.com", Some(("GET", "/v1/tickets/7"))),
            Ok(())
        );
        assert_eq!(c.permits("a.svc.example", Some(("GET", "/v2"))), Ok(()));
        assert_eq!(
            c.permits("a.b.svc.example", Some(("GET", "/v2/a/b"))),
            Ok(())
        );
        assert_eq!(c.permits("svc.example", None), Err(Outside::Host));
        assert_eq!(c.permits("evil.com", None), Err(Outside::Host));
        assert_eq!(c.permits("xsvc.example", None), Err(Outside::Host));
        assert_eq!(
            c.permits("api.example.com", Some(("POST", "/v1/tickets/7"))),
            Err(Outside::Method)
        );
        assert_eq!(
            c.permits("api.example.com", Some(("GET", "/v1/tickets/7/x"))),
            Err(Outside::Path)
        );
        assert_eq!(
            c.permits("api.example.com", Some(("GET", "/v1/tickets"))),
            Err(Outside::Path)
        );
        let none = claims(None, None, None);
        assert!(!none.narrows());
        assert_eq!(none.permits("any", Some(("DELETE", "/"))), Ok(()));
    }

    #[test]
    fn double_star_in_the_middle() {
        let p = |pat, path| glob(segments(pat), segments(path));
        assert!(p("/a/**/z", "/a/z"));
        assert!(p("/a/**/z", "/a/b/c/z"));
        assert!(!p("/a/**/z", "/a/b/c"));
        assert!(p("/**", "/"));
        assert!(!p("/*", "/"));
    }
}
