//! TLS: the local CA (`ca`), leaf certificates minted per intercepted host (`leaf`), the
//! client-facing interception config (`server`), the ClientHello peeker that tells TLS from
//! plain HTTP and reads SNI/ALPN (`sni`), and the verifying upstream client (`client`).
//!
//! Everything runs on rustls with the aws-lc-rs provider, passed explicitly to every config.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub mod ca;
pub mod client;
pub mod leaf;
pub mod server;
pub mod sni;
#[cfg(test)]
mod test_support;

/// The crypto provider every intentgate TLS config is built with (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Installs the provider as the process default, for code that builds rustls configs without
/// naming one. Call once at start-up; later calls (or another default already set) are no-ops.
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}
