//! Signed intent tokens (in) and request attestations (out): the core, tested on its own.
//!
//! An orchestrator that assigns a task signs an *intent token* (a compact JWS: EdDSA, ES256 or
//! RS256) naming the intent, the task and the agent it is for; [`verify::Verifier`] checks it
//! against the configured issuers' JWK Sets (`intent_tokens:`), with a revocation list and a
//! cache keyed by the token's hash. Outward, [`attest::Attester`] signs a short-lived statement
//! of what was vetted for one request (Ed25519), bound to its method, authority and path, that an
//! upstream verifies against our JWKS. [`mint`] holds the signing keys (also used by
//! `intentgate token mint`). The request pipeline uses them in src/proxy/intent_token.rs and
//! src/proxy/attest.rs.

pub mod attest;
pub mod cache;
pub mod claims;
pub mod keys;
pub mod mint;
pub mod narrow;
pub mod remote;
pub mod verify;

pub use claims::{IntentClaims, TokenError};
