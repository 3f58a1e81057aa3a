//! Leaf certificates for intercepted hosts: minted on demand for one DNS name or IP address,
//! signed by the local CA with ONE key pair reused for every leaf (so a mint is a signature),
//! and kept in a bounded LRU cache whose TTL is shorter than the certificates' lifetime.
//! Handshakes ask `get`: a cache hit is answered in place; a miss is minted once per name
//! (later handshakes for the name wait for that mint) on tokio's blocking pool, never on a
//! runtime thread, with at most as many mints at once as there are cores.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lru::LruCache;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{Semaphore, watch};

use super::ca::{CaError, SignLeaf, datetime, unix_now};

/// Why a leaf certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("'{0}' is not a host name or IP address a certificate can be made for")]
    InvalidName(String),
    #[error("cannot mint a certificate for {name}: {detail}")]
    Mint { name: String, detail: String },
    #[error("invalid leaf settings: {0}")]
    Settings(String),
}

/// The name a leaf certificate is for: a DNS name (lowercase ASCII, no trailing dot) or an IP.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum LeafName {
    Dns(String),
    Ip(IpAddr),
}

impl LeafName {
    /// Normalizes a host as it appears in a CONNECT authority or SNI: IP literals (with or
    /// without brackets) become `Ip`; names are lowercased, a trailing dot removed, and checked
    /// as DNS names (no wildcards, no empty labels; IDNA must already be punycode).
    pub fn parse(host: &str) -> Result<Self, LeafError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(LeafName::Ip(ip));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        // An all-numeric dotted name would be read as an IPv4 address by some clients.
        let numeric = name
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()));
        if !ok || numeric {
            return Err(LeafError::InvalidName(host.to_string()));
        }
        Ok(LeafName::Dns(name))
    }

    pub fn is_ip(&self) -> bool {
        matches!(self, LeafName::Ip(_))
    }
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafName::Dns(n) => f.write_str(n),
            LeafName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Debug for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeafName({self})")
    }
}

/// Lifetimes and cache size of leaf certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafSettings {
    /// How long a minted certificate is valid (from `backdate` before minting).
    pub lifetime: Duration,
    /// How far `notBefore` is set in the past, for clients whose clocks run a little behind.
    pub backdate: Duration,
    /// How long a cached certificate is served; must be shorter than `lifetime`.
    pub cache_ttl: Duration,
    /// How many certificates the cache keeps (least recently used go first).
    pub cache_entries: usize,
}

impl Default for LeafSettings {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(24 * 3600),
            backdate: Duration::from_secs(60),
            cache_ttl: Duration::from_secs(12 * 3600),
            cache_entries: 1000,
        }
    }
}

/// Counters for tests, metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeafStats {
    /// Certificates signed.
    pub mints: u64,
    /// Requests answered without a mint of their own: from the cache, or by waiting for the
    /// mint another handshake for the name had under way.
    pub hits: u64,
    /// Entries dropped because the cache was full.
    pub evictions: u64,
    /// Entries dropped because they were older than the TTL.
    pub expirations: u64,
    /// Entries in the cache now.
    pub entries: usize,
}

struct Entry {
    key: Arc<CertifiedKey>,
    minted: Instant,
}

/// The outcome of a mint in flight, `None` until it is known.
type Flight = watch::Receiver<Option<Result<Arc<CertifiedKey>, LeafError>>>;

/// Mints and caches leaf certificates; shared by every connection (`Send + Sync`).
pub struct LeafMinter {
    /// The local CA in production.
    ca: Arc<dyn SignLeaf>,
    /// The one leaf key pair, made at the first mint (on the blocking pool, like the mint).
    key: OnceLock<LeafKey>,
    settings: LeafSettings,
    cache: Mutex<LruCache<LeafName, Entry>>,
    /// Mints under way, by name: a second handshake for the name waits for the first's.
    inflight: Mutex<HashMap<LeafName, Flight>>,
    /// Bounds the blocking-pool threads minting at once (one per core).
    minting: Arc<Semaphore>,
    mints: AtomicU64,
    hits: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    /// The threads certificates were signed on (tests check it is not the runtime's).
    #[cfg(test)]
    minted_on: Mutex<Vec<std::thread::ThreadId>>,
}

impl fmt::Debug for LeafMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafMinter")
            .field("ca", &self.ca)
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl LeafMinter {
    /// A minter with an empty cache; the leaf key pair (ECDSA P-256) is made at the first mint.
    pub fn new(ca: Arc<dyn SignLeaf>, settings: LeafSettings) -> Result<Self, LeafError> {
        if settings.cache_ttl >= settings.lifetime {
            return Err(LeafError::Settings(
                "the cache TTL must be shorter than the certificate lifetime".into(),
            ));
        }
        let cap = NonZeroUsize::new(settings.cache_entries)
            .ok_or_else(|| LeafError::Settings("the cache needs at least one entry".into()))?;
        Ok(Self {
            ca,
            key: OnceLock::new(),
            settings,
            cache: Mutex::new(LruCache::new(cap)),
            inflight: Mutex::new(HashMap::new()),
            minting: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, NonZeroUsize::get),
            )),
            mints: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            #[cfg(test)]
            minted_on: Mutex::default(),
        })
    }

    #[cfg(test)]
    pub fn settings(&self) -> LeafSettings {
        self.settings
    }

    /// The certificate and key for `name`, for a handshake on the runtime: from the cache when
    /// fresh; else minted on the blocking pool, once however many handshakes ask at the same
    /// time (the mint runs to its end, and fills the cache, even if they all go away).
    pub async fn get(self: &Arc<Self>, name: &LeafName) -> Result<Arc<CertifiedKey>, LeafError> {
        if let Some(hit) = self.lookup(name, Instant::now()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let (mut flight, started) = self.flight(name);
        if !started {
            // Answered without a mint of its own, like a cache hit.
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = flight.wait_for(Option::is_some).await;
        match outcome.as_deref() {
            Ok(Some(r)) => r.clone(),
            _ => Err(LeafError::Mint {
                name: name.to_string(),
                detail: "the minting task ended without an answer".into(),
            }),
        }
    }

    /// The mint in flight for `name`, and whether this call started it (there was none).
    fn flight(self: &Arc<Self>, name: &LeafName) -> (Flight, bool) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = inflight.get(name) {
            return (f.clone(), false);
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(name.clone(), rx.clone());
        drop(inflight);
        let (me, name) = (self.clone(), name.clone());
        tokio::spawn(async move {
            let permit = me.minting.clone().acquire_owned().await;
            let (minter, n) = (me.clone(), name.clone());
            // `certified_key` looks in the cache again: a flight that ended between our miss
            // and this one's start has filled it.
            let done = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                minter.certified_key(&n)
            })
            .await
            .unwrap_or_else(|e| {
                Err(LeafError::Mint {
                    name: name.to_string(),
                    detail: format!("the minting task failed: {e}"),
                })
            });
            me.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            let _ = tx.send(Some(done));
        });
        (rx, true)
    }

    /// The certificate and key for `name`, minted on this thread on a miss (for callers off
    /// the runtime; handshakes use `get`). The lock is not held while signing.
    pub fn certified_key(&self, name: &LeafName) -> Result<Arc<CertifiedKey>, LeafError> {
        self.certified_key_at(name, Instant::now())
    }

    /// `certified_key` as if the time were `now` (tests move the clock forward).
    pub(crate) fn certified_key_at(
        &self,
        name: &LeafName,
        now: Instant,
    ) -> Result<Arc<CertifiedKey>, LeafError> {
        if let Some(hit) = self.lookup(name, now) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let key = Arc::new(self.mint(name)?);
        self.mints.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        self.minted_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(std::thread::current().id());
        let mut cache = self.lock();
        let entry = Entry {
            key: key.clone(),
            minted: now,
        };
        if let Some((old, _)) = cache.push(name.clone(), entry) {
            if &old != name {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(key)
    }

    fn lookup(&self, name: &LeafName, now: Instant) -> Option<Arc<CertifiedKey>> {
        let mut cache = self.lock();
        let fresh = cache.get(name).map(|e| {
            (
                now.saturating_duration_since(e.minted) < self.settings.cache_ttl,
                e.key.clone(),
            )
        });
        match fresh {
            Some((true, key)) => Some(key),
            Some((false, _)) => {
                cache.pop(name);
                self.expirations.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => None,
        }
    }

    /// Signs a new certificate for `name` (no caching).
    pub fn mint(&self, name: &LeafName) -> Result<CertifiedKey, LeafError> {
        let mint_err = |detail: String| LeafError::Mint {
            name: name.to_string(),
            detail,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cn = name.to_string();
        params
            .distinguished_name
            .push(DnType::CommonName, cn.as_str());
        params.subject_alt_names = vec![match name {
            LeafName::Dns(d) => SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| mint_err(e.to_string()))?,
            ),
            LeafName::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        // Unique serials: clients reject two certificates with the same issuer and serial.
        params.serial_number = Some(random_serial().map_err(|e| mint_err(e.to_string()))?);
        let now = unix_now();
        let not_after = (now + self.settings.lifetime.as_secs() as i64)
            .min(self.ca.not_after().map_err(mint_err)?);
        params.not_before = datetime(now - self.settings.backdate.as_secs() as i64)
            .map_err(|e| mint_err(e.to_string()))?;
        params.not_after = datetime(not_after).map_err(|e| mint_err(e.to_string()))?;
        let key = self.key().map_err(mint_err)?;
        let chain = self.ca.sign(params, &key.pair).map_err(mint_err)?;
        Ok(CertifiedKey::new(chain, key.signing.clone()))
    }

    /// The leaf key pair, made now if it was not yet (a failure is not kept).
    fn key(&self) -> Result<&LeafKey, String> {
        super::lazy_ca::get_or_make(&self.key, || {
            LeafKey::generate().map_err(|e| format!("leaf key: {e}"))
        })
    }

    pub fn stats(&self) -> LeafStats {
        LeafStats {
            mints: self.mints.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<LeafName, Entry>> {
        // A panic while holding the lock cannot leave the cache inconsistent: recover it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key pair every leaf certificate is made for: rcgen signs certificates for its public
/// key, and rustls signs handshakes with it.
struct LeafKey {
    pair: KeyPair,
    signing: Arc<dyn rustls::sign::SigningKey>,
}

impl LeafKey {
    fn generate() -> Result<Self, String> {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
        let signing =
            rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der).map_err(|e| e.to_string())?;
        Ok(Self { pair, signing })
    }
}

/// A random positive 16-byte serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| CaError::Generate(format!("random serial: {e}")))?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(SerialNumber::from_slice(&b))
}

#[cfg(test)]
#[path = "leaf_tests.rs"]
mod tests;
