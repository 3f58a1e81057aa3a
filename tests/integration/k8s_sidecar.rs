//! The injected sidecar reads what it is given: the real `intentgate serve` started as UID 15700
//! (setpriv) with the rendered args, against the CA Secret and token files laid out with the
//! modes the rendered pod asks the kubelet for (root-owned; with and without an `fsGroup`), and
//! fetching its bundle from a real control deployment with that token.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::bundles::{Control, WAIT, setup, write_catalog};
use super::issuer::Issuer;
use super::k8s::{Webhook, agent_pod, apply_and_validate, decode};
use crate::common::*;

const UID: u32 = 15700;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes `files` into `dir` as the kubelet would: owned by root (group `fs_group`, with group
/// read added, when the pod has one), each with `mode`.
fn lay_out(dir: &Path, files: &[(&str, &str)], mode: u32, fs_group: Option<u32>) {
    std::fs::create_dir_all(dir).unwrap();
    chmod(dir, 0o755);
    for (name, text) in files {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        chown(&f, Some(0), Some(fs_group.unwrap_or(0))).unwrap();
        chmod(
            &f,
            if fs_group.is_some() {
                mode | 0o440
            } else {
                mode
            },
        );
    }
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("volume {name}"))
}

#[test]
fn the_sidecar_reads_its_ca_and_token_as_uid_15700_with_the_rendered_modes() {
    let hook = Webhook::start();
    let pod = agent_pod(json!(null));
    let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&hook.review(&pod)));
    let ca_mode = volume(&patched, "intentgate-ca")["secret"]["defaultMode"]
        .as_u64()
        .unwrap() as u32;
    let token_mode = volume(&patched, "intentgate-token")["projected"]["defaultMode"]
        .as_u64()
        .unwrap() as u32;
    let side = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "intentgate")
        .unwrap()
        .clone();
    assert_eq!(side["securityContext"]["runAsUser"], UID);

    // A control deployment serving support's bundle to the issuer's tokens.
    let up = Upstream::start();
    let ctl = setup();
    chmod(ctl.path(), 0o755);
    write_catalog(
        &ctl.path().join("policy"),
        "support",
        up.addr.port(),
        &["/ok/**"],
    );
    let control = Control::launch(
        ctl.path(),
        &ctl.path().join("tls.crt"),
        &ctl.path().join("tls.key"),
        &{
            let f = ctl.path().join("inject.yaml");
            std::fs::write(&f, super::bundles::inject_config(ctl.path())).unwrap();
            f
        },
        0,
    );
    let token = Issuer {
        dir: ctl.path().join("issuer"),
    }
    .token("support");

    let ca_dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(&["ca", "init", "--out", ca_dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let read = |n: &str| std::fs::read_to_string(ca_dir.path().join(n)).unwrap();
    let (crt, key) = (read("ca.pem"), read("ca-key.pem"));

    for fs_group in [None, Some(3000)] {
        let root = tempfile::tempdir().unwrap();
        chmod(root.path(), 0o755);
        // The mounts of the rendered sidecar, under `root`.
        let at = |mount: &str| {
            let m = side["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == mount)
                .unwrap();
            root.path()
                .join(m["mountPath"].as_str().unwrap().trim_start_matches('/'))
        };
        let (ca, tok) = (at("intentgate-ca"), at("intentgate-token"));
        lay_out(
            &ca,
            &[("tls.crt", &crt), ("tls.key", &key)],
            ca_mode,
            fs_group,
        );
        lay_out(&tok, &[("token", &token)], token_mode, fs_group);
        let work = root.path().join("work");
        std::fs::create_dir(&work).unwrap();
        chmod(&work, 0o777);
        let config = work.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: {{proxy: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
                 agent: {{namespace: support, owner: team}}\n\
                 egress: {{allow_cidrs: [127.0.0.0/8]}}\n\
                 policy: {{bundle_wait_ms: 8000}}\n\
                 tls: {{ca_cert: {}/tls.crt, ca_key: {}/tls.key}}\naudit: {{path: stdout}}\n",
                ca.display(),
                ca.display()
            ),
        )
        .unwrap();
        // The rendered args, with the pod's paths mapped under `root`.
        let args: Vec<String> = side["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap();
                match a {
                    "/etc/intentgate/config.yaml" => config.display().to_string(),
                    "0.0.0.0:15701" => "127.0.0.1:0".into(),
                    _ if a.ends_with("/bundles/$(POD_NAMESPACE)") => control.url("support"),
                    _ if a.starts_with("/var/run/") => root
                        .path()
                        .join(a.trim_start_matches('/'))
                        .display()
                        .to_string(),
                    _ => a.to_string(),
                }
            })
            .collect();
        let ready = work.join("ready.json");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", &UID.to_string(), "--regid", &UID.to_string()]);
        match fs_group {
            // The kubelet gives every container of the pod the fsGroup as a supplementary group.
            Some(g) => cmd.args(["--groups", &g.to_string()]),
            None => cmd.arg("--clear-groups"),
        };
        let mut child = cmd
            .arg(BIN)
            .args(&args)
            .args(["--intent", "fetch", "--bundle-ca"])
            .arg(ctl.path().join("ca.pem"))
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let info: Value = eventually("the sidecar ready as UID 15700", WAIT, || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "fsGroup {fs_group:?}: the sidecar exited {st}: {}",
                    std::fs::read_to_string(work.join("stderr")).unwrap_or_default()
                );
            }
            serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()
        });
        // It runs with support's bundle, fetched with the token.
        let proxy = format!("http://{}", info["proxy"].as_str().unwrap());
        assert_eq!(curl(&["-x", &proxy, &up.url("/ok/1")]).status, 200);
        assert_eq!(curl(&["-x", &proxy, &up.url("/no/1")]).status, 403);
        let _ = child.kill();
        let _ = child.wait();
    }
}
