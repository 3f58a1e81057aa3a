//! `intentgate report` over the audit log the real proxy wrote (curl through `serve`).

use crate::common::*;

/// The page's `data-` attribute `attr` on the element that has `anchor` (the report's own markup).
fn attr_after<'a>(html: &'a str, anchor: &str, attr: &str) -> &'a str {
    let at = html
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} not in the page"));
    let rest = &html[at..];
    let from = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
    &rest[from..from + rest[from..].find('"').unwrap()]
}

/// From the real proxy's audit log (curl through `serve`: allowed, denied and monitor-mode calls),
/// the report counts what happened and takes the owner, service account and expiry from the
/// records.
#[test]
fn report_reads_the_audit_log_the_proxy_writes() {
    let up = Upstream::start();
    let proxy = ProxyProc::start(&format!(
        r#"agent: {{id: support-bot, namespace: support, owner: team-helpdesk, service_account: support-sa, expires: "2031-01-01T00:00:00Z"}}
intents:
  triage:
    allow:
      - hosts: [localhost]
        ports: [{port}]
        methods: [GET]
        paths: ["/echo/tickets/**"]
  watch:
    mode: monitor
    allow:
      - hosts: [localhost]
        ports: [{port}]
        methods: [GET]
"#,
        port = up.addr.port()
    ));
    let url = |p: &str| format!("http://localhost:{}{p}", up.addr.port());
    let call = |intent: &str, method: &str, path: &str| {
        let h = format!("intentgate-intent: {intent}");
        curl(&["-x", &proxy.url(), "-X", method, "-H", &h, &url(path)]).status
    };
    for i in 0..3 {
        assert_eq!(call("triage", "GET", &format!("/echo/tickets/{i}")), 200);
    }
    assert_eq!(call("triage", "DELETE", "/echo/tickets/1"), 403);
    assert_eq!(call("watch", "POST", "/echo/hooks"), 200);
    assert_eq!(call("watch", "POST", "/echo/hooks"), 200);
    proxy.audit_n(6);

    let html = proxy.path("report.html");
    let log = proxy.path("audit.log");
    let (code, out, err) = run_cli(&[
        "report",
        "--audit",
        log.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("report: 6 records (6 calls, 1 agents)"),
        "{err}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    for (card, n) in [
        ("calls", "6"),
        ("allowed", "3"),
        ("would-deny", "2"),
        ("denied", "1"),
    ] {
        assert_eq!(
            attr_after(&page, &format!("id=\"total-{card}\""), "data-count"),
            n,
            "{card}"
        );
    }
    let row = &page[page.find("data-agent=\"support-bot\" data-flags").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    for cell in [
        "team-helpdesk",
        "support",
        "support-sa",
        "2031-01-01 00:00",
        ">triage<",
        ">watch<",
    ] {
        assert!(row.contains(cell), "{cell} not in {row}");
    }
    assert_eq!(
        attr_after(&page, "data-agent=\"support-bot\" data-flags", "data-flags"),
        ""
    );
    assert_eq!(
        attr_after(&page, "data-code=\"intent_violation\"", "data-count"),
        "1"
    );
    assert_eq!(
        attr_after(
            &page,
            "<tr data-agent=\"support-bot\" data-intent=\"watch\"",
            "data-count"
        ),
        "2"
    );
}
