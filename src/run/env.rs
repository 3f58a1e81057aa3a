//! What the child is told so that its runtime sends every call through the proxy and trusts
//! intentgate's CA: the runtime table of docs/local-development.md, one row per entry below.
//! CA files get the system roots *plus* our CA (a bundle that replaces the roots); "extra CA"
//! settings get our CA alone.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::tls::ca::CertificateAuthority;

/// Where the system's trusted roots usually are (the bundle given to the child adds our CA).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

/// Proxy variables: curl, Python (requests, httpx, urllib; aiohttp with `trust_env=True`), Go,
/// git, Ruby, Rust's reqwest, Deno and Bun read these (curl wants `http_proxy` in lower case).
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Variables naming a CA file that *replaces* the default roots, so they get the bundle:
/// OpenSSL and Go (`SSL_CERT_FILE`: Python's ssl, httpx, aiohttp, urllib, Ruby, .NET, Go),
/// Python requests, curl, git, AWS SDKs/CLI.
const BUNDLE_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
];

/// Variables naming a CA *added* to the runtime's own roots, so they get our CA alone: Node.js
/// and Bun (`NODE_EXTRA_CA_CERTS`), Deno (`DENO_CERT`).
const EXTRA_CA_VARS: [&str; 2] = ["NODE_EXTRA_CA_CERTS", "DENO_CERT"];

/// The files the child is pointed at.
pub(crate) struct Trust {
    /// intentgate's CA certificate alone (PEM).
    pub ca: PathBuf,
    /// The system roots plus our CA (PEM).
    pub bundle: PathBuf,
    /// The same roots as a PKCS#12 trust store, for Java (when Java is installed).
    pub java: Option<PathBuf>,
}

/// Whether a Java runtime can be started here (`JAVA_HOME`, or `java` on `PATH`): only then is
/// its trust store worth writing.
fn java_installed() -> bool {
    std::env::var_os("JAVA_HOME").is_some()
        || std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("java").is_file()))
}

/// Writes the CA, the bundle and (when Java is installed) the Java trust store into `dir`.
pub(crate) fn write_trust(ca: &CertificateAuthority, dir: &Path) -> Result<Trust, String> {
    let trust = Trust {
        ca: dir.join("intentgate-ca.pem"),
        bundle: dir.join("ca-bundle.pem"),
        java: java_installed().then(|| dir.join("truststore.p12")),
    };
    ca.write_cert(&trust.ca).map_err(|e| e.to_string())?;
    // The roots the child would have trusted without us: its SSL_CERT_FILE, else the system's.
    let mut text = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(ca.cert_pem());
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&trust.bundle, text.as_bytes())?;
    if let Some(java) = &trust.java {
        write(java, &super::pkcs12::trust_store(&text))?;
    }
    Ok(trust)
}

/// The variables set for the child (added to the environment it inherits).
pub(crate) fn child_env(
    proxy: SocketAddr,
    admin: Option<SocketAddr>,
    trust: &Trust,
) -> Vec<(&'static str, OsString)> {
    let proxy_url = OsString::from(format!("http://{proxy}"));
    let mut env: Vec<(&'static str, OsString)> =
        PROXY_VARS.iter().map(|k| (*k, proxy_url.clone())).collect();
    let mut no_proxy: Vec<String> = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(a) = admin {
        // The agent reaches the admin API (its session intent) directly.
        no_proxy.push(a.to_string());
        env.push(("INTENTGATE_ADMIN_URL", format!("http://{a}").into()));
    }
    let no_proxy = OsString::from(no_proxy.join(","));
    env.push(("NO_PROXY", no_proxy.clone()));
    env.push(("no_proxy", no_proxy));
    env.extend(
        BUNDLE_VARS
            .iter()
            .map(|k| (*k, trust.bundle.clone().into())),
    );
    env.extend(EXTRA_CA_VARS.iter().map(|k| (*k, trust.ca.clone().into())));
    // Node.js 24+ (and 22.21+) send fetch and http(s) through HTTP(S)_PROXY only when told.
    env.push(("NODE_USE_ENV_PROXY", "1".into()));
    if let Some(store) = &trust.java {
        env.push(("JAVA_TOOL_OPTIONS", java_options(proxy, store)));
    }
    env
}

/// `JAVA_TOOL_OPTIONS`: what the child already had, then the proxy and trust-store properties
/// (read by `HttpURLConnection`, `java.net.http.HttpClient`, and the JSSE default trust
/// manager). Java keeps its own `http.nonProxyHosts` default (loopback goes direct).
fn java_options(proxy: SocketAddr, store: &Path) -> OsString {
    let (host, port) = (proxy.ip(), proxy.port());
    let mut opts = std::env::var_os("JAVA_TOOL_OPTIONS").unwrap_or_default();
    if !opts.is_empty() {
        opts.push(" ");
    }
    opts.push(format!(
        "-Dhttp.proxyHost={host} -Dhttp.proxyPort={port} \
         -Dhttps.proxyHost={host} -Dhttps.proxyPort={port} \
         -Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStore="
    ));
    opts.push(store);
    opts
}
