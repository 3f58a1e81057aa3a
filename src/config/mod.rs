//! Configuration: the typed document, the embedded default, loading and validation.

mod types;

pub use types::*;
