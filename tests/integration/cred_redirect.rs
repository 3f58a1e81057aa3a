//! A redirect is never followed with a credential (docs/credentials.md): an upstream whose rule
//! binds a credential answers 302 to another host; intentgate passes the 302 to the client and
//! makes no request to the `Location` itself. A client that follows it (curl -L) makes a new
//! call, decided on its own: the new host gets a credential only if its own rule binds one.

use std::time::Duration;

use crate::common::tls::TestCa;
use crate::common::*;

const S1: &str = "s3cr3t-origin-41c9";
const S2: &str = "s3cr3t-landing-d07e";

#[test]
fn a_redirect_is_passed_to_the_client_and_never_followed_with_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("cred redirect CA");
    let up_ca = test_ca.write_pem(dir.path());
    // The origin (`localhost`) and two other hosts (`127.0.0.1`, other ports): one whose rule
    // binds no credential, one whose rule binds another.
    let origin = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let unbound = Upstream::start_tls(test_ca.server_config(&["127.0.0.1"]));
    let bound = Upstream::start_tls(test_ca.server_config(&["127.0.0.1"]));
    std::fs::write(dir.path().join("s1"), S1).unwrap();
    std::fs::write(dir.path().join("s2"), S2).unwrap();
    let (o, u, b) = (origin.addr.port(), unbound.addr.port(), bound.addr.port());
    let ca = dir.path().join("ca");
    let bearer =
        |c: &str| format!("{{credential: {c}, header: Authorization, format: \"Bearer {{}}\"}}");
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: r, owner: o}}\nintent: work\n\
         tls: {{ca_cert: \"{c}/ca.pem\", ca_key: \"{c}/ca-key.pem\", upstream_ca: \"{}\"}}\n\
         credentials: {{origin: {{file: \"{d}/s1\"}}, landing: {{file: \"{d}/s2\"}}}}\n\
         intents:\n  work:\n    allow:\n\
         \x20     - {{hosts: [localhost], ports: [{o}], inject: {}}}\n\
         \x20     - {{hosts: [\"127.0.0.1\"], ports: [{u}]}}\n\
         \x20     - {{hosts: [\"127.0.0.1\"], ports: [{b}], inject: {}}}\n",
        up_ca.display(),
        bearer("origin"),
        bearer("landing"),
        c = ca.display(),
        d = dir.path().display(),
    ));
    let cacert = ca.join("ca.pem").display().to_string();
    let purl = proxy.url();
    let call = |to: &str, extra: &[&str]| {
        let url = format!("https://localhost:{o}/redirect?to={to}");
        let mut args = vec!["-x", &purl, "--cacert", &cacert];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let auth = |up: &Upstream| -> Vec<Option<String>> {
        let seen = up.seen();
        seen.iter()
            .map(|s| s.header("authorization").map(str::to_string))
            .collect()
    };

    // Not followed by the client: the 302 and its Location come back; the origin got its
    // credential; nothing went to the Location.
    let to_unbound = format!("https://127.0.0.1:{u}/landing/unbound");
    let moved = call(&to_unbound, &["-D", "-"]);
    assert_eq!(moved.status, 302, "{moved:?}");
    assert!(
        moved
            .body
            .to_ascii_lowercase()
            .contains(&format!("location: {to_unbound}")),
        "{moved:?}"
    );
    assert_eq!(auth(&origin), [Some(format!("Bearer {S1}"))]);
    assert_eq!(unbound.connections(), 0, "the proxy followed the redirect");

    // Followed by the client (curl -L): a new call to a host whose rule binds nothing; it
    // gets no Authorization, the origin's credential least of all.
    let followed = call(&to_unbound, &["-L"]);
    assert_eq!(followed.status, 200, "{followed:?}");
    assert_eq!(auth(&unbound), [None]);
    // To a host whose rule binds another credential: that one, never the origin's.
    let to_bound = format!("https://127.0.0.1:{b}/landing/bound");
    let followed = call(&to_bound, &["-L"]);
    assert_eq!(followed.status, 200, "{followed:?}");
    assert_eq!(auth(&bound), [Some(format!("Bearer {S2}"))]);
    assert_eq!(auth(&origin).len(), 3);

    // Each call's record names its own credential (none for the unbound host).
    let recs = eventually("the records", Duration::from_secs(10), || {
        let r = proxy.audit();
        let landed = r.iter().filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/landing/"))
        });
        (landed.count() == 2).then_some(r)
    });
    let landing = |p: &str| recs.iter().find(|r| r["path"] == p).unwrap();
    assert!(
        landing("/landing/unbound").get("credential").is_none(),
        "{recs:?}"
    );
    assert_eq!(landing("/landing/bound")["credential"]["name"], "landing");
    let origins: Vec<_> = recs.iter().filter(|r| r["path"] == "/redirect").collect();
    assert_eq!(origins.len(), 3, "{recs:?}");
    assert!(origins.iter().all(|r| r["credential"]["name"] == "origin"));
}
