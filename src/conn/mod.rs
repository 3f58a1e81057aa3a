//! What one client connection carries, below both the listeners and the proxy: the guard that
//! makes hyper's own answers speak our JSON, and the in-flight state its requests share with it.

mod answers;
mod framing;
pub mod guard;
pub(crate) mod park;
mod wait;
