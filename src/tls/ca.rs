//! The local certificate authority that signs interception leaf certificates: generated
//! (ECDSA P-256), written to and loaded from PEM files, or ephemeral in memory.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What signs the leaf certificates (`super::leaf::LeafMinter`): the local CA
/// (`CertificateAuthority`) is the only production implementation; tests may sign with a CA of
/// their own making. Asked once per mint (leaves are cached), never per request.
pub trait SignLeaf: Send + Sync + fmt::Debug {
    /// `params` signed for the public key of `leaf_key`: the leaf, then the chain to send
    /// after it.
    fn sign(
        &self,
        params: CertificateParams,
        leaf_key: &KeyPair,
    ) -> Result<Vec<CertificateDer<'static>>, String>;

    /// No leaf outlives this (Unix seconds).
    fn not_after(&self) -> Result<i64, String>;
}

impl SignLeaf for CertificateAuthority {
    fn sign(
        &self,
        params: CertificateParams,
        leaf_key: &KeyPair,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        let leaf = params
            .signed_by(leaf_key, &self.issuer)
            .map_err(|e| e.to_string())?;
        Ok(vec![leaf.der().clone(), self.cert_der.clone()])
    }

    fn not_after(&self) -> Result<i64, String> {
        Ok(self.not_after_unix)
    }
}

/// File names `init` writes into its directory.
pub const CERT_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca-key.pem";

/// Lifetime of a CA made by `init` (kept on disk, installed in trust stores).
pub const PERSISTENT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of an ephemeral CA (lives as long as the process).
pub const EPHEMERAL_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a CA could not be made, read or written. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {detail}", file.display())]
    Parse { file: PathBuf, detail: String },
    #[error("{}: not a CA certificate (basicConstraints CA:TRUE is missing)", file.display())]
    NotCa { file: PathBuf },
    #[error("{}: the certificate expired or is not yet valid (valid {not_before} to {not_after})", file.display())]
    OutsideValidity {
        file: PathBuf,
        not_before: String,
        not_after: String,
    },
    #[error("{}: the private key does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: already exists; remove it or choose another directory", file.display())]
    Exists { file: PathBuf },
    #[error("{}: cannot write: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate the CA: {0}")]
    Generate(String),
}

/// A SHA-256 certificate fingerprint; displays as `AB:CD:…` (the form `openssl x509
/// -fingerprint -sha256` prints).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The SHA-256 of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }

    /// Lowercase hex without separators.
    #[cfg(test)]
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Where a CA came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaOrigin {
    Generated,
    Files { cert: PathBuf, key: PathBuf },
}

/// The local CA: its certificate and the issuer (name, key identifier, key) that signs leaves.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_after_unix: i64,
    fingerprint: Fingerprint,
    origin: CaOrigin,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new ECDSA P-256 CA named `intentgate {label} CA {random}`, valid from a minute ago for
    /// `lifetime`. It may only sign end-entity certificates (path length 0).
    pub fn generate(label: &str, lifetime: Duration) -> Result<Self, CaError> {
        let gen_err = |e: rcgen::Error| CaError::Generate(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        let mut tag = [0u8; 4];
        getrandom::fill(&mut tag).map_err(|e| CaError::Generate(e.to_string()))?;
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("intentgate {label} CA {tag}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "intentgate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(super::leaf::random_serial()?);
        let now = unix_now();
        params.not_before = datetime(now - 60)?;
        params.not_after = datetime(now + lifetime.as_secs() as i64)?;
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let not_after_unix = params.not_after.unix_timestamp();
        let der = cert.der().clone();
        Ok(Self {
            fingerprint: Fingerprint::of(&der),
            cert_pem: cert.pem(),
            cert_der: der,
            issuer: Issuer::new(params, key),
            not_after_unix,
            origin: CaOrigin::Generated,
        })
    }

    /// An in-memory CA for a process that was given none.
    pub fn ephemeral() -> Result<Self, CaError> {
        Self::generate("ephemeral", EPHEMERAL_LIFETIME)
    }

    /// Loads `tls.ca_cert` / `tls.ca_key`: the first certificate in `cert`, which must be a CA
    /// valid now, and its private key (PKCS#8, SEC1 or PKCS#1 PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CaError> {
        let cert_text = read(cert)?;
        let key_text = read(key)?;
        let mut ca = Self::from_pem(&cert_text, &key_text, cert, key)?;
        ca.origin = CaOrigin::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        Ok(ca)
    }

    /// Builds a CA from PEM text; `cert_name`/`key_name` are used in errors.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_name: &Path,
        key_name: &Path,
    ) -> Result<Self, CaError> {
        let parse = |file: &Path, detail: String| CaError::Parse {
            file: file.to_path_buf(),
            detail,
        };
        let der = first_certificate(cert_pem, cert_name)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| parse(cert_name, format!("not a valid X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(CaError::NotCa {
                file: cert_name.to_path_buf(),
            });
        }
        let validity = x509.validity();
        if !validity.is_valid() {
            return Err(CaError::OutsideValidity {
                file: cert_name.to_path_buf(),
                not_before: validity.not_before.to_string(),
                not_after: validity.not_after.to_string(),
            });
        }
        let not_after_unix = validity.not_after.timestamp();
        let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            parse(
                key_name,
                format!("no PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY): {e}"),
            )
        })?;
        let key = KeyPair::try_from(&key_der)
            .map_err(|e| parse(key_name, format!("unsupported or invalid private key: {e}")))?;
        if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch {
                cert: cert_name.to_path_buf(),
                key: key_name.to_path_buf(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| parse(cert_name, format!("cannot use as issuer: {e}")))?;
        Ok(Self {
            fingerprint: Fingerprint::of(&der),
            cert_pem: pem_encode(&der),
            cert_der: der,
            issuer,
            not_after_unix,
            origin: CaOrigin::Generated,
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate as PEM: what clients are given to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    #[cfg(test)]
    pub fn origin(&self) -> &CaOrigin {
        &self.origin
    }

    /// When the CA stops being valid (Unix seconds); leaves never outlive it.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after_unix
    }

    /// Writes the certificate (mode 0644), replacing any file there atomically; for handing
    /// an ephemeral CA to clients.
    pub fn write_cert(&self, path: &Path) -> Result<(), CaError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        write_new(&tmp, self.cert_pem.as_bytes(), 0o644)?;
        std::fs::rename(&tmp, path).map_err(|source| CaError::Write {
            file: path.to_path_buf(),
            source,
        })
    }

    /// Writes certificate (0644) and key (0600) to new files; refuses to overwrite either.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), CaError> {
        for f in [cert, key] {
            if f.exists() {
                return Err(CaError::Exists {
                    file: f.to_path_buf(),
                });
            }
        }
        let key_pem = self.issuer.key().serialize_pem();
        write_new(key, key_pem.as_bytes(), 0o600)?;
        write_new(cert, self.cert_pem.as_bytes(), 0o644)
    }
}

/// The files `init` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub fingerprint: Fingerprint,
}

/// `intentgate ca init --out DIR`: a new persistent CA in `DIR/ca.pem` and `DIR/ca-key.pem`
/// (key mode 0600). Creates `DIR` if needed; never overwrites.
pub fn init(out_dir: &Path) -> Result<CaFiles, CaError> {
    std::fs::create_dir_all(out_dir).map_err(|source| CaError::Write {
        file: out_dir.to_path_buf(),
        source,
    })?;
    let ca = CertificateAuthority::generate("local", PERSISTENT_LIFETIME)?;
    let files = CaFiles {
        cert: out_dir.join(CERT_FILE),
        key: out_dir.join(KEY_FILE),
        fingerprint: ca.fingerprint(),
    };
    ca.write(&files.cert, &files.key)?;
    Ok(files)
}

/// What `intentgate ca show` prints about a CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSummary {
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    pub subject: String,
    pub not_after: String,
}

/// `intentgate ca show`: the certificate's path, SHA-256 fingerprint, subject and expiry.
pub fn show(cert_path: &Path) -> Result<CaSummary, CaError> {
    let der = first_certificate(&read(cert_path)?, cert_path)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::Parse {
        file: cert_path.to_path_buf(),
        detail: format!("not a valid X.509 certificate: {e}"),
    })?;
    Ok(CaSummary {
        path: cert_path.to_path_buf(),
        fingerprint: Fingerprint::of(&der),
        subject: x509.subject().to_string(),
        not_after: x509.validity().not_after.to_string(),
    })
}

fn read(file: &Path) -> Result<Vec<u8>, CaError> {
    std::fs::read(file).map_err(|source| CaError::Read {
        file: file.to_path_buf(),
        source,
    })
}

fn first_certificate(pem: &[u8], file: &Path) -> Result<CertificateDer<'static>, CaError> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| CaError::Parse {
            file: file.to_path_buf(),
            detail: "no PEM CERTIFICATE block found".into(),
        })?
        .map_err(|e| CaError::Parse {
            file: file.to_path_buf(),
            detail: format!("invalid PEM: {e}"),
        })
}

fn pem_encode(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Creates `file` exclusively (never following a symlink or truncating), with `mode` on Unix.
fn write_new(file: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        file: file.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(mode);
        let mut f = opts.open(file).map_err(err)?;
        // The umask may have narrowed the mode; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        f.sync_all().map_err(err)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut f = opts.open(file).map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        f.sync_all().map_err(err)
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn datetime(unix: i64) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CaError::Generate(e.to_string()))
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
