//! docs/kubernetes.md's install walk, command by command: every command of its `sh` block must
//! have a check here (a new command without one fails the test). What runs without a cluster is
//! run (`kubectl kustomize`, `intentgate ca init`, `webhook-cert.sh --dry-run`, kubectl's client
//! dry runs, `kubectl get --raw` against the API server's stand-in); the rest is rendered and
//! validated, or checked against the rendered objects, the log of the rendered control Deployment
//! running here and a pod it injects.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use super::cluster::{Installation, config_map};
use super::{find, parse_yaml, render, repo, validate_all};
use crate::common::*;

/// The commands of the "Install" section's `sh` block.
fn walk_commands() -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/kubernetes.md")).unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Install: from nothing to enforce in one namespace"))
        .expect("docs/kubernetes.md has the install walk");
    let block = section
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A command line split as the shell would (Python's shlex).
fn words(cmd: &str) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))",
        ])
        .arg(cmd)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs a program in `dir`: its stdout, asserting success.
fn run_in(dir: &Path, program: &str, args: &[String]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `intentgate ARGS[0] --config <the example's sidecar config> ARGS[1..]` with the bundle the
/// control Deployment serves to namespace support, as the injected sidecar of support-bot gets it
/// (presenting its projected service-account token).
pub(super) fn with_bundle(control: &Installation, args: &[&str]) -> (i32, String, String) {
    let sidecar = control.root.path().join("sidecar.yaml");
    let cm = config_map(&control.docs, "intentgate-sidecar");
    std::fs::write(&sidecar, cm["config.yaml"].as_str().unwrap()).unwrap();
    let (url, ca) = (control.bundle_url("support"), control.etc("tls/ca.crt"));
    let token = control.token_file("support");
    let mut all = vec![args[0], "--config", sidecar.to_str().unwrap()];
    all.extend_from_slice(&[
        "--bundle-url",
        &url,
        "--bundle-ca",
        ca.to_str().unwrap(),
        "--bundle-token-file",
        token.to_str().unwrap(),
        "--namespace",
        "support",
        "--agent",
        "support-bot",
        "--owner",
        "team-helpdesk",
    ]);
    all.extend_from_slice(&args[1..]);
    run_cli(&all)
}

/// The Service the webhook calls, as `NAME.NAMESPACE.svc`.
fn service_dns(docs: &[Value]) -> String {
    let hook = find(docs, "MutatingWebhookConfiguration", "intentgate-inject");
    let svc = &hook["webhooks"][0]["clientConfig"]["service"];
    format!(
        "{}.{}.svc",
        svc["name"].as_str().unwrap(),
        svc["namespace"].as_str().unwrap()
    )
}

/// The Secret the control Deployment mounts its serving certificate from.
fn tls_secret(docs: &[Value]) -> String {
    let d = find(docs, "Deployment", "intentgate-inject");
    let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let tls = volumes.iter().find(|v| v["name"] == "tls").unwrap();
    tls["secret"]["secretName"].as_str().unwrap().to_string()
}

/// cert-manager.yaml (CRDs, so no schema here): the certificate lands in the Secret the
/// Deployment mounts, names the Service the webhook and the sidecars call, is issued by the CA
/// defined beside it, and the webhook's CA-injection annotation points at it.
fn check_cert_manager(file: &Path, docs: &[Value]) {
    let cm = parse_yaml(&std::fs::read_to_string(file).unwrap());
    for d in &cm {
        assert_eq!(d["metadata"]["namespace"], "intentgate-system");
        for l in super::LABELS {
            assert!(
                d["metadata"]["labels"][l].is_string(),
                "{l} on {}",
                d["metadata"]
            );
        }
    }
    let cert = find(&cm, "Certificate", "intentgate-inject");
    assert_eq!(cert["spec"]["secretName"], tls_secret(docs).as_str());
    let names = cert["spec"]["dnsNames"].to_string();
    assert!(
        names.contains(&format!("\"{}\"", service_dns(docs))),
        "{names}"
    );
    let issuer = find(
        &cm,
        "Issuer",
        cert["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    let ca = find(&cm, "Certificate", "intentgate-ca");
    assert_eq!(issuer["spec"]["ca"]["secretName"], ca["spec"]["secretName"]);
    assert_eq!(ca["spec"]["isCA"], true);
    let hook = find(docs, "MutatingWebhookConfiguration", "intentgate-inject");
    assert_eq!(
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "intentgate-system/intentgate-inject"
    );
}

/// `webhook-cert.sh --dry-run`: the Secret it would apply validates, is the one the Deployment
/// mounts, and holds a certificate for the Service signed by the ca.crt beside it.
fn check_webhook_cert_script(work: &Path, docs: &[Value]) {
    let script = repo().join("deploy/kubernetes/webhook-cert.sh");
    let out = run_in(work, script.to_str().unwrap(), &["--dry-run".into()]);
    let secret = parse_yaml(&out);
    assert_eq!(secret.len(), 1, "{out}");
    validate_all(&secret);
    let s = &secret[0];
    assert_eq!(s["metadata"]["name"], tls_secret(docs).as_str());
    assert_eq!(s["metadata"]["namespace"], "intentgate-system");
    assert_eq!(s["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(s["data"][key].as_str().unwrap())
            .unwrap();
        std::fs::write(work.join(key), pem).unwrap();
    }
    run_in(
        work,
        "openssl",
        &["verify", "-CAfile", "ca.crt", "tls.crt"].map(String::from),
    );
    let san = run_in(
        work,
        "openssl",
        &["x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"].map(String::from),
    );
    assert!(san.contains(&format!("DNS:{}", service_dns(docs))), "{san}");
}

/// `kubectl … --dry-run=client -o json`: runs without a cluster; the object it would create.
fn client_dry_run(work: &Path, args: &[String]) -> Value {
    let mut all = args[1..].to_vec();
    all.extend(["--dry-run=client", "-o", "json"].map(String::from));
    let obj: Value = serde_json::from_str(&run_in(work, "kubectl", &all)).unwrap();
    validate_all(std::slice::from_ref(&obj));
    obj
}

/// What the control container logs once it serves: the docs' walk quotes these.
const CONTROL_LOG: [&str; 4] = [
    "serving certificate loaded",
    "policy directory loaded",
    "service-account issuer keys fetched",
    "Kubernetes version supports native sidecars",
];

#[test]
fn docs_install_walk_every_command_is_checked() {
    let commands = walk_commands();
    assert!(commands.len() >= 12, "{commands:?}");
    let work = tempfile::tempdir().unwrap();
    let base = super::base();
    let example = super::example();
    let inject_yaml = config_map(&example, "intentgate-inject")["inject.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let mut control: Option<Installation> = None;
    let doc = std::fs::read_to_string(repo().join("docs/kubernetes.md")).unwrap();
    for cmd in &commands {
        let w = words(cmd);
        let a: Vec<&str> = w.iter().map(String::as_str).collect();
        // What a cluster would run: the control Deployment here, and the pod it injects.
        let mut injected = |deployment: &str| {
            let c = control.get_or_insert_with(|| Installation::start(example.clone()));
            c.inject("support", deployment)
        };
        match a.as_slice() {
            ["kubectl", "kustomize", dir] | ["kubectl", "apply", "-k", dir] => {
                let docs = render(&repo().join(dir));
                validate_all(&docs);
            }
            [
                "kubectl",
                "apply",
                "-f",
                "deploy/kubernetes/cert-manager.yaml",
            ] => {
                check_cert_manager(&repo().join(a[3]), &base);
            }
            ["deploy/kubernetes/webhook-cert.sh"] => check_webhook_cert_script(work.path(), &base),
            [
                "kubectl",
                "get",
                "--raw",
                "/.well-known/openid-configuration",
            ] => {
                // Run against the API server's stand-in: the issuer it reports is the one the
                // overlay's bundle auth expects, and the docs name it.
                let c = control.get_or_insert_with(|| Installation::start(example.clone()));
                let out = Command::new("kubectl")
                    .args(&a[1..])
                    .env("KUBECONFIG", c.kubeconfig())
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{cmd}: {stderr}");
                let discovery: Value = serde_json::from_slice(&out.stdout).unwrap();
                let inject: Value = serde_yaml::from_str(&inject_yaml).unwrap();
                let issuer = &inject["bundles"]["auth"]["issuer"];
                assert_eq!(discovery["issuer"], *issuer, "{discovery}");
                assert!(
                    doc.contains(issuer.as_str().unwrap()),
                    "the docs name {issuer}"
                );
            }
            [
                "kubectl",
                "-n",
                "intentgate-system",
                "logs",
                "deployment/intentgate-inject",
            ] => {
                // The base's control container, as installed so far: what the docs quote. The
                // version line comes when the API server has answered, after start-up.
                let c = Installation::start(base.clone());
                let what = format!("the control container to log {CONTROL_LOG:?}");
                eventually(&what, Duration::from_secs(30), || {
                    let log = c.log();
                    CONTROL_LOG.iter().all(|l| log.contains(l)).then_some(())
                });
                for line in CONTROL_LOG {
                    assert!(doc.contains(&format!("`{line}`")), "the docs quote {line}");
                }
            }
            ["kubectl", "-n", ns, "rollout", "status", target] => {
                let name = target.strip_prefix("deployment/").unwrap();
                assert_eq!(
                    find(&example, "Deployment", name)["metadata"]["namespace"],
                    *ns
                );
            }
            ["kubectl", "create", "namespace", name] => {
                let ns = client_dry_run(work.path(), &w);
                assert_eq!(ns["metadata"]["name"], *name);
                find(&example, "Namespace", name);
            }
            ["intentgate", ..] => {
                let out = Command::new(BIN)
                    .args(&a[1..])
                    .current_dir(work.path())
                    .output();
                assert!(out.unwrap().status.success(), "{cmd}");
            }
            ["kubectl", "-n", ns, "create", "secret", "tls", name, ..] => {
                let s = client_dry_run(work.path(), &w);
                assert_eq!(s["metadata"]["namespace"], *ns);
                assert!(
                    inject_yaml.contains(&format!("ca_secret: {name}")),
                    "{inject_yaml}"
                );
                assert!(
                    inject_yaml.contains(&format!("\n  {ns}:\n")),
                    "a floor for {ns}"
                );
                assert!(s["data"]["tls.crt"].is_string() && s["data"]["tls.key"].is_string());
            }
            [
                "kubectl",
                "-n",
                "support",
                "get",
                "pods",
                "-l",
                "app=support-bot",
                "-o",
                path,
            ] => {
                assert_eq!(*path, "jsonpath={.items[0].spec.initContainers[*].name}");
                let pod = injected("support-bot");
                assert_eq!(pod["metadata"]["labels"]["app"], "support-bot");
                let names: Vec<&str> = pod["spec"]["initContainers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap())
                    .collect();
                let shown = names.join(" ");
                assert!(doc.contains(&format!("`{shown}`")), "the docs show {shown}");
            }
            [
                "kubectl",
                "-n",
                "support",
                "exec",
                "deployment/support-bot",
                "-c",
                container,
                "--",
                "python",
                "-c",
                code,
            ] => {
                let pod = injected("support-bot");
                assert!(
                    pod["spec"]["containers"]
                        .to_string()
                        .contains(&format!("\"name\":\"{container}\""))
                );
                let url = code
                    .split("urlopen('")
                    .nth(1)
                    .unwrap()
                    .split('\'')
                    .next()
                    .unwrap();
                let c = control.as_ref().unwrap();
                let (code, stdout, stderr) =
                    with_bundle(c, &["explain", "--intent", "triage-tickets", "GET", url]);
                assert_eq!(code, 1, "refused: {stdout}{stderr}");
                let decision: Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(decision["decision"]["mode"], "enforce", "{decision}");
            }
            [
                "kubectl",
                "-n",
                "support",
                "logs",
                "deployment/support-bot",
                "-c",
                container,
            ] => {
                let pod = injected("support-bot");
                let sidecar = &pod["spec"]["initContainers"][1];
                assert_eq!(sidecar["name"], *container);
                assert_eq!(sidecar["restartPolicy"], "Always");
                let cm = config_map(&example, "intentgate-sidecar");
                let cfg: Value = serde_yaml::from_str(cm["config.yaml"].as_str().unwrap()).unwrap();
                assert_eq!(
                    cfg["audit"]["path"], "stdout",
                    "the audit log is the container's log"
                );
            }
            _ => panic!("the walk's command `{cmd}` has no check in {}", file!()),
        }
    }
}
