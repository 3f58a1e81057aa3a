//! Configuration: the typed document, the embedded default, loading and validation with errors
//! that name the file, the field and the line.

mod budget;
mod chunked;
mod credentials;
mod evidence;
mod llm;
mod mcp;
mod operations;
mod tls;
mod tokens;
mod types;
mod validate;

pub use validate::check_bundle;
pub(crate) use validate::dns_server;
use validate::validate;

use std::path::{Path, PathBuf};

pub use crate::budget::spec::*;
pub use budget::*;
pub use credentials::*;
pub use evidence::*;
pub use llm::*;
pub use mcp::*;
pub use operations::*;
pub use tls::*;
pub use tokens::*;
pub use types::*;

use crate::target::{self, Authority};

/// The default configuration compiled into the binary (`config/default.yaml`).
pub const DEFAULT_YAML: &str = include_str!("../../config/default.yaml");

/// The name used for the embedded default in messages.
pub const EMBEDDED: &str = "<embedded config/default.yaml>";

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        file: String,
        line: Option<usize>,
        msg: String,
    },
    #[error("{file}{}: field `{field}`: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        field: String,
        line: Option<usize>,
        msg: String,
    },
}

/// A loaded, validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file name, or `EMBEDDED`.
    pub source: String,
}

/// Loads `path`, or the embedded default when `None`.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    match path {
        None => parse(EMBEDDED, DEFAULT_YAML, Path::new(".")),
        Some(p) => {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            let base = p
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let base = if base.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                base
            };
            parse(&file, &text, &base)
        }
    }
}

/// Parses and validates a configuration document; relative paths are resolved against `base`.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Loaded, ConfigError> {
    // A document with no content (empty, whitespace, comments, a bare `---` or `null`) is
    // refused, not read as "all defaults": a file truncated mid-write must not replace the agent
    // and the catalog on reload. `{}` says "all defaults" on purpose.
    let parsed: Option<Config> = if text.trim().is_empty() {
        None // also tabs, which YAML itself refuses
    } else {
        chunked::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            line: e.location().map(|l| l.line()),
            msg: e.to_string(),
        })?
    };
    let mut config = parsed.ok_or_else(|| ConfigError::Parse {
        file: file.to_string(),
        line: None,
        msg: "the configuration is empty (only whitespace or comments); write at least one \
              key (`{}` for all defaults), or leave out --config for the embedded default"
            .into(),
    })?;
    let tls = &mut config.tls;
    for p in config
        .policy
        .paths
        .iter_mut()
        .chain(config.admin.token_file.as_mut())
        .chain(config.policy.bundle_token_file.as_mut())
        .chain(
            [&mut tls.ca_cert, &mut tls.ca_key, &mut tls.upstream_ca]
                .into_iter()
                .flatten(),
        )
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    let tokens = &mut config.intent_tokens;
    for p in tokens
        .issuers
        .iter_mut()
        .flat_map(|i| [i.jwks_file.as_mut(), i.ca_file.as_mut()])
        .flatten()
        .chain(tokens.revoked.as_mut())
        .chain(config.attestation.key_file.as_mut())
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    for p in config
        .credentials
        .values_mut()
        .flat_map(credentials::paths_mut)
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    if let Some(ca) = config.policy.bundle_ca.as_mut() {
        if !ca.trim_start().starts_with("-----BEGIN") && Path::new(ca.as_str()).is_relative() {
            *ca = base.join(ca.as_str()).display().to_string();
        }
    }
    let loaded = Loaded {
        config,
        source: file.to_string(),
    };
    validate(&loaded, text)?;
    Ok(loaded)
}

/// Parses `upstream.proxy` (`http://host:port`).
pub fn parent_proxy(raw: &str) -> Result<Authority, String> {
    let rest = raw.strip_prefix("http://").ok_or_else(|| {
        format!("'{raw}' must start with http:// (the parent proxy is spoken to in plain HTTP)")
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!("'{raw}' must be http://host:port with no path"));
    }
    target::parse_authority(rest, Some(3128)).map_err(|e| format!("'{raw}': {e}"))
}

/// The 1-based line where a dotted field path (`a.b.c`) is written, following the nesting of
/// the YAML keys; `None` when the field is not in the text (a default value).
pub fn locate(text: &str, field: &str) -> Option<usize> {
    let mut from = 0;
    let mut found = None;
    let lines: Vec<&str> = text.lines().collect();
    for key in field.split('.') {
        let hit = lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| {
                let t = l.trim_start().trim_start_matches("- ");
                t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
                    || t.contains(&format!("{{{key}:"))
                    || t.contains(&format!(" {key}:"))
            })
            .map(|(i, _)| i);
        match hit {
            Some(i) => {
                found = Some(i + 1);
                from = i;
            }
            None => return found,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_loads() {
        let l = load(None).unwrap();
        assert_eq!(l.config.listen.proxy.port(), 15700);
    }

    #[test]
    fn an_empty_document_is_refused_and_names_the_file() {
        for text in [
            "",
            "  \n\t\n",
            "# only\n  # comments\n",
            "---\n",
            "--- # c\n...\n",
            "~\n",
        ] {
            let msg = parse("c.yaml", text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                msg.starts_with("c.yaml: the configuration is empty"),
                "{text:?}: {msg}"
            );
        }
        // `{}` asks for the defaults on purpose.
        assert_eq!(
            parse("c.yaml", "{}\n", Path::new(".")).unwrap().config,
            Config::default()
        );
    }

    #[test]
    fn unknown_field_names_file_field_and_line() {
        let err = parse(
            "c.yaml",
            "listen:\n  proxy: 127.0.0.1:1\n  prxy: 1\n",
            Path::new("."),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.yaml:3"), "{msg}");
        assert!(msg.contains("prxy"), "{msg}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let text = "mode: enforce\nupstream:\n  proxy: socks5://x:1\n";
        let msg = parse("c.yaml", text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("c.yaml:3: field `upstream.proxy`"), "{msg}");
        let msg = parse(
            "c.yaml",
            "limits: {connect_timeout_ms: 0}\n",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("limits.connect_timeout_ms"), "{msg}");
    }

    #[test]
    fn tls_section_types_and_checks() {
        let l = parse(
            "c.yaml",
            "tls:\n  ca_cert: ca.pem\n  ca_key: ca-key.pem\n  intercept: [api.example.com, '*.corp.example']\n  upstream_roots: system\n",
            Path::new("/etc/ig"),
        )
        .unwrap();
        let t = &l.config.tls;
        assert_eq!(t.ca_cert.as_deref(), Some(Path::new("/etc/ig/ca.pem")));
        assert_eq!(t.upstream_roots, UpstreamRoots::System);
        assert!(t.intercept.intercepts("api.example.com", false));
        assert!(t.intercept.intercepts("a.b.corp.example", false));
        assert!(!t.intercept.intercepts("corp.example", true));
        assert!(!t.intercept.intercepts("xcorp.example", true));
        for (text, want) in [
            ("auto", Intercept::Auto),
            ("all", Intercept::All),
            ("none", Intercept::None),
        ] {
            let l = parse(
                "c.yaml",
                &format!("tls: {{intercept: {text}}}\n"),
                Path::new("."),
            )
            .unwrap();
            assert_eq!(l.config.tls.intercept, want);
        }
        assert_eq!(Config::default().tls.intercept, Intercept::Auto);
        let msg = parse("c.yaml", "tls:\n  intercept: sometimes\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("auto, all, none, or a list of host patterns"),
            "{msg}"
        );
        let msg = parse("c.yaml", "tls:\n  ca_cert: x.pem\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("tls.ca_key"), "{msg}");
        let msg = parse("c.yaml", "tls:\n  intercept: ['a.*.com']\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("c.yaml:2: field `tls.intercept`"), "{msg}");
        let msg = parse("c.yaml", "tls:\n  upstream_roots: os\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("webpki"), "{msg}");
        let l = parse(
            "c.yaml",
            "tls:\n  intercept: all\n  splice: ['*.pinned.example']\n",
            Path::new("."),
        )
        .unwrap();
        assert!(l.config.tls.intercepts("api.example.com", false));
        assert!(!l.config.tls.intercepts("app.pinned.example", true));
        let msg = parse("c.yaml", "tls:\n  splice: ['a b']\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("field `tls.splice`"), "{msg}");
    }

    #[test]
    fn parent_proxy_forms() {
        assert_eq!(parent_proxy("http://proxy.corp:3128").unwrap().port, 3128);
        assert_eq!(parent_proxy("http://proxy.corp").unwrap().port, 3128);
        assert!(parent_proxy("proxy.corp:3128").is_err());
        assert!(parent_proxy("http://p:1/x").is_err());
    }
}
