//! Tests of header rewriting: hop-by-hop removal, Via, the agent claims stripped, method
//! overrides, single-valued headers.

use super::*;
use http::header::HeaderValue;

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-secret-hop"),
    );
    h.insert("x-secret-hop", HeaderValue::from_static("1"));
    h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert(
        header::PROXY_AUTHORIZATION,
        HeaderValue::from_static("Basic x"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    remove_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    add_via(&mut h);
    add_via(&mut h);
    assert_eq!(h[header::VIA], "1.1 intentgate, 1.1 intentgate");
}

#[test]
fn hop_by_hop_names_listed_in_connection_in_any_case_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("TE, X-Foo, Keep-Alive"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert("x-foo", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    h.insert(header::HOST, HeaderValue::from_static("a.example"));
    remove_hop_by_hop(&mut h);
    assert_eq!(h.keys().collect::<Vec<_>>(), [header::HOST]);
    // Without `Connection` the others still go.
    let mut h = HeaderMap::new();
    h.insert(header::TRAILER, HeaderValue::from_static("x"));
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    remove_hop_by_hop(&mut h);
    assert_eq!(h.keys().collect::<Vec<_>>(), [header::ACCEPT]);
}

/// `Connection`'s values are read as they are taken out (one lookup): a `keep-alive` one names
/// nothing, every other one's tokens go, whichever value they are in; a value that is not
/// visible ASCII names nothing (as before: a list's tokens are read with `to_str`).
#[test]
fn every_connection_value_names_headers_once_taken_out() {
    let mut h = HeaderMap::new();
    for v in [
        &b" Keep-Alive "[..],
        b"x-a, ,keep-alive",
        b"keep-alive",
        b"x-b \xc3\xa9, x-c",
        b"X-D,x-e",
    ] {
        h.append(header::CONNECTION, HeaderValue::from_bytes(v).unwrap());
    }
    for k in ["x-a", "x-b", "x-c", "x-d", "x-e", "x-f", "accept"] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static("1"));
    }
    h.append(
        HeaderName::from_static("x-a"),
        HeaderValue::from_static("2"),
    );
    remove_hop_by_hop(&mut h);
    let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["accept", "x-b", "x-c", "x-f"]);
    // Only `keep-alive`s: `Connection` alone goes.
    let mut h = HeaderMap::new();
    h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
    h.append(header::SERVER, HeaderValue::from_static("x"));
    remove_hop_by_hop_add_via(&mut h);
    let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["server", "via"]);
}

#[test]
fn one_pass_removals_do_what_the_steps_do_one_after_the_other() {
    let claims = [HeaderName::from_static("x-agent-id")];
    let heads: [&[(&str, &str)]; 6] = [
        &[("accept", "*/*"), ("host", "a.example")],
        &[
            ("connection", "keep-alive"),
            ("via", "1.0 other"),
            ("server", "x"),
        ],
        &[("connection", "close, via"), ("via", "1.0 other")],
        &[
            ("Connection", "Keep-Alive"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ],
        &[
            ("intentgate-agent", "root"),
            ("x-agent-id", "admin"),
            ("te", "trailers"),
        ],
        &[
            ("connection", "x-agent-id"),
            ("x-agent-id", "a"),
            ("keep-alive", "5"),
            ("upgrade", "w"),
        ],
    ];
    for head in heads {
        let mut h = HeaderMap::new();
        for &(k, v) in head {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let (mut one, mut other) = (h.clone(), h.clone());
        remove_hop_by_hop_add_via(&mut one);
        remove_hop_by_hop(&mut other);
        add_via(&mut other);
        assert_eq!(one, other, "{head:?}");
        let (mut one, mut other) = (h.clone(), h);
        let seen = crate::head::summary(&one, &claims).seen;
        remove_hop_by_hop_and_claims(&mut one, &claims, seen);
        remove_hop_by_hop(&mut other);
        strip_agent_claims(&mut other, &claims);
        assert_eq!(one, other, "{head:?}");
    }
}

#[test]
fn agent_claims_are_stripped() {
    let mut h = HeaderMap::new();
    h.insert("intentgate-agent", HeaderValue::from_static("root"));
    h.insert("intentgate-decision-id", HeaderValue::from_static("forged"));
    h.insert("x-agent-id", HeaderValue::from_static("admin"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    strip_agent_claims(&mut h, &[HeaderName::from_static("x-agent-id")]);
    assert_eq!(h.len(), 1);
}

#[test]
fn method_overrides_naming_another_method_are_ambiguous() {
    let post = http::Method::POST;
    let refused = |h: &[(&'static str, &'static str)], q: Option<&str>| {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.append(*k, HeaderValue::from_static(v));
        }
        check_method_override(&post, &m, q, crate::head::summary(&m, &[]).seen)
            .err()
            .map(|e| e.code().as_str())
    };
    for name in [
        "X-HTTP-Method-Override",
        "x-method-override",
        "X-HTTP-Method",
    ] {
        assert_eq!(
            refused(&[(name, "DELETE")], None),
            Some("ambiguous_request")
        );
        assert_eq!(refused(&[(name, " post ")], None), None, "{name}");
    }
    for q in [
        "_method=DELETE",
        "a=1&_method=put",
        "a=1;%5Fmethod=GET",
        "_METHOD=PATCH",
    ] {
        assert_eq!(refused(&[], Some(q)), Some("ambiguous_request"), "{q}");
    }
    for q in [
        "_method=POST",
        "my_method=DELETE",
        "method=DELETE",
        "a=_method",
    ] {
        assert_eq!(refused(&[], Some(q)), None, "{q}");
    }
}

#[test]
fn duplicate_intent_headers() {
    let mut h = HeaderMap::new();
    h.append("intentgate-intent", HeaderValue::from_static("a"));
    assert_eq!(
        single_value(&h, &HeaderName::from_static("intentgate-intent")).unwrap(),
        Some("a")
    );
    h.append("intentgate-intent", HeaderValue::from_static("a"));
    assert_eq!(
        single_value(&h, &HeaderName::from_static("intentgate-intent")).unwrap(),
        Some("a")
    );
    h.append("intentgate-intent", HeaderValue::from_static("b"));
    assert!(single_value(&h, &HeaderName::from_static("intentgate-intent")).is_err());
}

/// The override check walks the names only when step 1's summary saw `Seen::OVERRIDE`: each
/// name it refuses must be one the summary notes, and an override naming another method is
/// refused through it.
#[test]
fn every_override_name_is_seen_by_the_summary_and_checked() {
    for name in OVERRIDES {
        let mut h = HeaderMap::new();
        h.insert(name.clone(), HeaderValue::from_static("DELETE"));
        let seen = crate::head::summary(&h, &[]).seen;
        assert!(seen.any(Seen::OVERRIDE), "{name}");
        let refused = check_method_override(&http::Method::GET, &h, None, seen);
        assert!(refused.is_err(), "{name}");
    }
}
