//! The patterns of catalog rules: host names (exact or a leading `*.`, or an IP literal) and
//! paths (`*` one segment, `**` any number), checked at load and matched per request.

/// One segment of a path pattern, borrowed from the pattern's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seg<'a> {
    Lit(&'a str),
    One,
    Any,
}

/// Normalises a host pattern: lowercase, no trailing dot, IDNA to punycode; only an exact name
/// or a leading `*.` wildcard. Returns `(is_wildcard, name)`.
pub(super) fn host_pattern(raw: &str) -> Result<(bool, String), String> {
    let t = raw.trim().trim_end_matches('.');
    let (wild, name) = match t.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    if name.is_empty() {
        return Err(format!("host pattern '{raw}' is empty"));
    }
    // An IP literal (raw TCP destinations in transparent mode): canonical form, no brackets,
    // matched exactly against the address the client dialled.
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
    if let Ok(ip) = bare.unwrap_or(name).parse::<std::net::IpAddr>() {
        if wild {
            return Err(format!(
                "host pattern '{raw}': an IP address takes no wildcard"
            ));
        }
        return Ok((false, ip.to_string()));
    }
    if name.contains('*') {
        return Err(format!(
            "host pattern '{raw}' is not allowed: use an exact name or a leading '*.' \
             (e.g. '*.example.com'); other wildcards are refused"
        ));
    }
    // IP literals returned above; what is left must be a plain name.
    if name.contains(['/', ':', ' ', '[', ']']) {
        return Err(format!(
            "host pattern '{raw}' must be a host name only (ports go in `ports`, paths in `paths`)"
        ));
    }
    let ascii = idna::domain_to_ascii(name)
        .map_err(|_| format!("host pattern '{raw}' is not a valid host name"))?;
    Ok((wild, ascii))
}

/// Compiles a path pattern into segments: `*` one segment, `**` any number, else literal.
pub(super) fn path_pattern(raw: &str) -> Result<Vec<Seg<'_>>, String> {
    if !raw.starts_with('/') {
        return Err(format!("path pattern '{raw}' must start with '/'"));
    }
    raw.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "*" => Ok(Seg::One),
            "**" => Ok(Seg::Any),
            s if s.contains('*') => Err(format!(
                "path pattern '{raw}': '*' must be a whole segment ('*' one segment, '**' any number)"
            )),
            s => Ok(Seg::Lit(s)),
        })
        .collect()
}

/// Whether path `segs` matches the pattern written `raw` (one [`path_pattern`] accepted at
/// load): a compiled rule keeps only the text, and its segments are read here, on the stack.
pub(super) fn text_matches(raw: &str, segs: &[&str]) -> bool {
    let mut buf = [Seg::Any; 16];
    let mut n = 0;
    for s in Segments::of(raw) {
        let Some(slot) = buf.get_mut(n) else {
            // A pattern of more than 16 segments: rare enough to be read into a vector.
            return path_pattern(raw).is_ok_and(|p| path_matches(&p, segs));
        };
        *slot = match s {
            "*" => Seg::One,
            "**" => Seg::Any,
            s => Seg::Lit(s),
        };
        n += 1;
    }
    path_matches(&buf[..n], segs)
}

/// The non-empty `/`-separated segments of a path or a path pattern, as
/// `text.split('/').filter(|s| !s.is_empty())` gives them, found by a byte scan (std's `split`
/// on a `char` sets up a searcher per call: most of the cost for a path of a few segments).
#[derive(Debug, Clone)]
pub(crate) struct Segments<'a> {
    rest: &'a str,
}

impl<'a> Segments<'a> {
    pub(crate) fn of(text: &'a str) -> Self {
        Segments { rest: text }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.rest.as_bytes();
        let start = bytes.iter().position(|&b| b != b'/')?;
        let len = bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .unwrap_or(bytes.len() - start);
        // Both ends are next to a `/` or at an end of the text: character boundaries.
        let (segment, rest) = self.rest[start..].split_at(len);
        self.rest = rest;
        Some(segment)
    }
}

/// A path's segments, on the stack unless there are many (`input::segments_into`, else
/// `input::segments`).
pub(crate) struct PathSegments<'a> {
    on_stack: [&'a str; 16],
    n: usize,
    spilled: Vec<&'a str>,
}

impl<'a> PathSegments<'a> {
    pub(crate) fn of(path: &'a str) -> Self {
        let mut on_stack = [""; 16];
        match super::input::segments_into(path, &mut on_stack) {
            Some(n) => PathSegments {
                on_stack,
                n,
                spilled: Vec::new(),
            },
            None => PathSegments {
                on_stack,
                n: 0,
                spilled: super::input::segments(path),
            },
        }
    }

    pub(crate) fn get(&self) -> &[&'a str] {
        match self.on_stack.get(..self.n) {
            Some(s) if self.spilled.is_empty() => s,
            _ => &self.spilled,
        }
    }
}

/// Segment glob: `*` exactly one segment, `**` zero or more. Greedy with one backtrack point.
pub(super) fn path_matches(pat: &[Seg], segs: &[&str]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while s < segs.len() {
        match pat.get(p) {
            Some(Seg::Any) => {
                back = Some((p, s));
                p += 1;
            }
            Some(Seg::One) => {
                p += 1;
                s += 1;
            }
            Some(Seg::Lit(l)) if *l == segs[s] => {
                p += 1;
                s += 1;
            }
            _ => match back {
                Some((bp, bs)) => {
                    p = bp + 1;
                    s = bs + 1;
                    back = Some((bp, bs + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|x| *x == Seg::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the stack or spilled, the segments are `segments`'s.
    #[test]
    fn path_segments_are_segments_s() {
        for n in [0, 1, 3, 15, 16, 17, 40] {
            for path in [
                "/a".repeat(n),
                "/a/".repeat(n),
                "x//".repeat(n),
                format!("{}/", "/é".repeat(n)),
            ] {
                let s = PathSegments::of(&path);
                assert_eq!(
                    s.get(),
                    super::super::input::segments(&path).as_slice(),
                    "{path:?}"
                );
            }
        }
    }

    /// Every string of up to six of `/`, `a`, `b`, `*` and `é`: the byte scan's segments are
    /// `split`'s; and a pattern accepted at load matches its own text as a path (what the
    /// catalog's comparison of a pattern's text with the path relies on).
    #[test]
    fn segments_are_split_s_and_a_pattern_matches_its_own_text() {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|s| ["/", "a", "b", "*", "é"].map(|c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        for s in &all {
            let want: Vec<&str> = s.split('/').filter(|x| !x.is_empty()).collect();
            assert_eq!(Segments::of(s).collect::<Vec<_>>(), want, "{s:?}");
            if path_pattern(s).is_ok() {
                assert!(text_matches(s, &want), "{s:?}");
            }
        }
        let long = "/a".repeat(20) + "/**/*";
        assert!(text_matches(
            &long,
            &Segments::of(&long).collect::<Vec<_>>()
        ));
    }
}
