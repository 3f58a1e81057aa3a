//! What a token request is made of: the client secret, read when it is needed, and the
//! `application/x-www-form-urlencoded` body.

use crate::config::SecretRef;

/// A `SecretRef`'s value, read now.
pub(super) fn read_ref(r: &SecretRef) -> Result<Box<str>, String> {
    match (&r.file, &r.env) {
        (Some(f), _) => crate::cred::source::read_clean(f),
        (None, Some(v)) => std::env::var(v)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().into())
            .ok_or_else(|| format!("the environment variable {v} is not set or empty")),
        (None, None) => Err("no file or env".into()),
    }
}

/// An `application/x-www-form-urlencoded` body.
#[derive(Default)]
pub(super) struct Form(pub(super) String);

impl Form {
    pub(super) fn add(&mut self, k: &str, v: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(&form_encode(k));
        self.0.push('=');
        self.0.push_str(&form_encode(v));
    }

    pub(super) fn opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.add(k, v);
        }
    }
}

pub(super) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    crate::cred::inject::encode_into(&mut out, s);
    out
}
