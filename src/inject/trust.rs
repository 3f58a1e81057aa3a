//! CA trust for app containers, so an intercepted connection verifies without the app losing
//! the roots it had. By default (`intentgate.io/ca-trust: bundle`) one init step per app
//! container runs in that container's own image and writes a PEM bundle into a shared emptyDir:
//! the image's system roots — or, when the app sets `SSL_CERT_FILE` or `REQUESTS_CA_BUNDLE`,
//! copies of those files — then the app's `NODE_EXTRA_CA_CERTS`, then intentgate's CA. The app's
//! `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` and `NODE_EXTRA_CA_CERTS` then name that bundle (its own
//! entries replaced, never duplicated). The step needs `/bin/sh` in the image: for images
//! without one, and for Java, `intentgate.io/ca-trust: manual` leaves trust to the app, which
//! finds the CA at `INTENTGATE_CA_FILE` (docs/kubernetes.md).

use serde_json::{Value, json};

use super::template::{CA_CERT_VOLUME, append};

pub const ANN_TRUST: &str = "intentgate.io/ca-trust";
/// The emptyDir the trust bundles are written to.
pub const TRUST_VOLUME: &str = "intentgate-trust";
pub const TRUST_DIR: &str = "/var/run/intentgate/trust";
/// Where containers find the CA certificate (never the key).
pub const CA_TRUST_DIR: &str = "/var/run/intentgate/ca-trust";
pub const CA_FILE: &str = "/var/run/intentgate/ca-trust/ca.pem";
/// Names of the trust init containers: the prefix and the app container's index.
pub const INIT_PREFIX: &str = "intentgate-trust-";
/// The variables TLS stacks read their trust from (OpenSSL and Go, Python requests, Node).
const VARS: [&str; 3] = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"];

/// How app containers get the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// The init step builds each container's bundle.
    #[default]
    Bundle,
    /// The CA file only; the app sets up trust itself.
    Manual,
}

impl Trust {
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("bundle") => Ok(Trust::Bundle),
            Some("manual") => Ok(Trust::Manual),
            Some(other) => Err(format!(
                "annotation {ANN_TRUST}: '{other}' is not bundle or manual"
            )),
        }
    }
}

/// Builds one bundle in POSIX sh with builtins only (`read`, `printf`, `[`), so any image with
/// a shell will do. The app's files come first; a missing one fails the pod with a message.
const SCRIPT: &str = r#"set -u
emit() {
  [ -r "$2" ] || { echo "intentgate: $1=$2 cannot be read" >&2; exit 1; }
  while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done < "$2" >> "$IG_OUT"
}
: > "$IG_OUT" || exit 1
own=0
if [ -n "${SSL_CERT_FILE:-}" ]; then emit SSL_CERT_FILE "$SSL_CERT_FILE"; own=1; fi
if [ -n "${REQUESTS_CA_BUNDLE:-}" ] && [ "$REQUESTS_CA_BUNDLE" != "${SSL_CERT_FILE:-}" ]; then
  emit REQUESTS_CA_BUNDLE "$REQUESTS_CA_BUNDLE"; own=1
fi
if [ "$own" = 0 ]; then
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt \
           /etc/ssl/ca-bundle.pem /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem \
           /etc/ssl/cert.pem; do
    if [ -r "$f" ]; then emit system "$f"; own=1; break; fi
  done
  [ "$own" = 1 ] || echo "intentgate: no system CA bundle in this image; trusting intentgate's CA only" >&2
fi
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ]; then emit NODE_EXTRA_CA_CERTS "$NODE_EXTRA_CA_CERTS"; fi
emit "intentgate CA" "$IG_CA"
"#;

/// The bundle file of the app container `name`.
pub fn bundle_file(name: &str) -> String {
    format!("{TRUST_DIR}/{name}.pem")
}

/// The emptyDir for the bundles (`Bundle` only).
pub fn volume(t: Trust) -> Option<Value> {
    (t == Trust::Bundle).then(|| json!({"name": TRUST_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}}))
}

fn apps(pod: &Value) -> impl Iterator<Item = (usize, &Value)> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
}

/// The init step for each app container (`Bundle` only), in the app's image, as the app's user.
pub fn init_containers(pod: &Value, t: Trust) -> Vec<Value> {
    if t == Trust::Manual {
        return Vec::new();
    }
    apps(pod)
        .map(|(i, app)| {
            let name = app["name"].as_str().unwrap_or("app");
            let mut env = vec![
                json!({"name": "IG_OUT", "value": bundle_file(name)}),
                json!({"name": "IG_CA", "value": CA_FILE}),
            ];
            // The app's own trust variables, exactly as it declares them (value or valueFrom).
            env.extend(
                app["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["name"].as_str().is_some_and(|n| VARS.contains(&n)))
                    .cloned(),
            );
            // The app's mounts (its own CA files may live there), read-only.
            let mut mounts: Vec<Value> = app["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["subPathExpr"].is_null())
                .map(|m| {
                    let mut m = m.clone();
                    if let Some(o) = m.as_object_mut() {
                        o.remove("mountPropagation");
                        o.remove("recursiveReadOnly");
                        o.insert("readOnly".into(), json!(true));
                    }
                    m
                })
                .collect();
            mounts.push(json!({"name": TRUST_VOLUME, "mountPath": TRUST_DIR}));
            mounts.push(json!({"name": CA_CERT_VOLUME, "mountPath": CA_TRUST_DIR, "readOnly": true}));
            // The app's user and settings, without anything that grants more.
            let mut sc = app["securityContext"].clone();
            if !sc.is_object() {
                sc = json!({});
            }
            for (k, v) in [
                ("allowPrivilegeEscalation", json!(false)),
                ("privileged", json!(false)),
                ("readOnlyRootFilesystem", json!(true)),
                ("capabilities", json!({"drop": ["ALL"]})),
            ] {
                sc[k] = v;
            }
            let mut c = json!({
                "name": format!("{INIT_PREFIX}{i}"),
                "image": app["image"],
                "command": ["/bin/sh", "-c", SCRIPT],
                "env": env,
                "volumeMounts": mounts,
                "securityContext": sc,
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
            });
            if let Some(p) = app["imagePullPolicy"].as_str() {
                c["imagePullPolicy"] = json!(p);
            }
            c
        })
        .collect()
}

/// Points each app container at its trust: the variables set (an app's own entries replaced),
/// the volumes mounted read-only.
pub fn app_containers(ops: &mut Vec<Value>, pod: &Value, t: Trust) {
    for (i, app) in apps(pod) {
        let base = format!("/spec/containers/{i}");
        let mut vars: Vec<(&str, String)> = vec![("INTENTGATE_CA_FILE", CA_FILE.to_string())];
        if t == Trust::Bundle {
            let file = bundle_file(app["name"].as_str().unwrap_or("app"));
            vars.extend(VARS.iter().map(|v| (*v, file.clone())));
        }
        let existing = app["env"].as_array();
        let mut new = Vec::new();
        for (name, value) in vars {
            let entry = json!({"name": name, "value": value});
            let at: Vec<usize> = existing
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, e)| e["name"] == name)
                .map(|(j, _)| j)
                .collect();
            for j in &at {
                let path = format!("{base}/env/{j}");
                ops.push(json!({"op": "replace", "path": path, "value": entry}));
            }
            if at.is_empty() {
                new.push(entry);
            }
        }
        if !new.is_empty() {
            append(ops, pod, &format!("{base}/env"), new);
        }
        let mut mounts =
            vec![json!({"name": CA_CERT_VOLUME, "mountPath": CA_TRUST_DIR, "readOnly": true})];
        if t == Trust::Bundle {
            mounts.push(json!({"name": TRUST_VOLUME, "mountPath": TRUST_DIR, "readOnly": true}));
        }
        append(ops, pod, &format!("{base}/volumeMounts"), mounts);
    }
}
