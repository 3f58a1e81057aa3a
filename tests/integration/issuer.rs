//! A service-account token issuer for the tests: keys and tokens made by PyPI `joserfc`
//! (tests/clients/issuer.py, code we did not write), and an HTTPS stand-in for the API server's
//! discovery, key and version endpoints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::common::eventually;

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const AUDIENCE: &str = "intentgate-bundles";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/issuer.py")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Keys in `dir` (made on `init`): `keys.json` (private) and `jwks.json` (public).
pub struct Issuer {
    pub dir: PathBuf,
}

impl Issuer {
    pub fn init(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("python3")
            .arg(script())
            .arg("init")
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "issuer.py init");
        Issuer {
            dir: dir.to_path_buf(),
        }
    }

    pub fn jwks(&self) -> PathBuf {
        self.dir.join("jwks.json")
    }

    /// A compact JWS of `claims`, signed RS256 or ES256.
    pub fn mint(&self, alg: &str, claims: &Value) -> String {
        let out = Command::new("python3")
            .arg(script())
            .args(["mint"])
            .arg(&self.dir)
            .args([alg, &claims.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The claims the kubelet's projected token for a pod of `namespace` carries.
    pub fn claims(namespace: &str) -> Value {
        json!({"iss": ISSUER, "aud": [AUDIENCE], "exp": now() + 600, "iat": now(),
               "nbf": now(), "sub": format!("system:serviceaccount:{namespace}:bot"),
               "kubernetes.io": {"namespace": namespace,
                                 "serviceaccount": {"name": "bot", "uid": "5d5b3a61"},
                                 "pod": {"name": "bot-1", "uid": "9a8c1f02"}}})
    }

    /// An RS256 token for a pod of `namespace`.
    pub fn token(&self, namespace: &str) -> String {
        self.mint("RS256", &Self::claims(namespace))
    }

    /// Writes `token` to `file` as the kubelet would (a new file renamed over the old).
    pub fn write_token(file: &Path, token: &str) {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, token).unwrap();
        std::fs::rename(tmp, file).unwrap();
    }
}

/// The HTTPS stand-in for the API server, serving what its directory holds; killed on drop.
pub struct FakeApi {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeApi {
    /// Serves `dir` with the certificate `cert`/`key` (for 127.0.0.1).
    pub fn start(dir: &Path, cert: &Path, key: &Path) -> Self {
        let ready = dir.join("api.port");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new("python3")
            .arg(script())
            .arg("serve")
            .args([dir, cert, key, &ready])
            .spawn()
            .unwrap();
        let port = eventually("fake API server", Duration::from_secs(20), || {
            std::fs::read_to_string(&ready).ok()?.trim().parse().ok()
        });
        FakeApi {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The request lines seen: `PATH token|no-token`.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}
