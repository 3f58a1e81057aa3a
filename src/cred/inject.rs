//! The request step (src/proxy/mod.rs, step 7b): after the decision, the credential bound to the
//! matched rule (or picked by `decision.credential`) replaces whatever the agent sent in its
//! place, only on a call the decision allows, and only where intentgate sees and protects the
//! request (HTTPS inside an interception, whose upstream certificate is verified; plain HTTP only
//! with `allow_plaintext`). A request whose rule binds nothing costs one catalog lookup.

use std::borrow::Cow;

use base64::Engine as _;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::{IntentToken, NoValue, Store};
use crate::audit::AuditRecord;
use crate::config::{Binding, Placement};
use crate::error::ProxyError;
use crate::policy::{Catalog, CredentialChoice, Decision};
use crate::vocab::{ErrorCode, Scheme, Verdict};

/// One request's injection: what the step reads and what it may change.
pub struct Injection<'a> {
    pub decision: &'a Decision,
    pub catalog: &'a Catalog,
    pub scheme: Scheme,
    pub headers: &'a mut HeaderMap,
    pub query: &'a mut Option<String>,
    /// For a refusal's body.
    pub agent: &'a str,
    pub intent: Option<&'a str>,
    /// The verified intent token of the call, if it carries one (a token exchange may trade it).
    pub intent_token: Option<IntentToken<'a>>,
}

impl Store {
    /// Applies the step to one request; the record names the credential injected. An `Err` is
    /// the refusal to answer (nothing is sent upstream).
    pub async fn inject(
        &self,
        call: Injection<'_>,
        rec: &mut AuditRecord,
    ) -> Result<(), ProxyError> {
        let d = call.decision;
        let bound = call.catalog.binding(&d.scope);
        let (binding, name): (Cow<'_, Binding>, Option<&str>) = match (&d.credential, bound) {
            (None, None) => return Ok(()),
            (None, Some(b)) => (Cow::Borrowed(&**b), Some(&*b.credential)),
            (Some(CredentialChoice::Veto), Some(b)) => (Cow::Borrowed(&**b), None),
            (Some(CredentialChoice::Veto), None) => return Ok(()),
            (Some(CredentialChoice::Use(n)), Some(b)) => (Cow::Borrowed(&**b), Some(&**n)),
            (Some(CredentialChoice::Use(n)), None) => (Cow::Owned(Binding::bearer(n)), Some(&**n)),
        };
        // What the agent sent in the credential's place never goes upstream: refused under
        // `require_absent` (it proves the agent holds a key), else removed.
        if remove_sent(&binding.placement, call.headers, call.query) && binding.require_absent {
            return Err(refuse(
                &call,
                rec,
                ErrorCode::CredentialPresent,
                format!(
                    "the request carries its own credential where intentgate injects '{}'",
                    binding.credential
                ),
                "send the request without credentials: intentgate adds the one this intent \
                 allows; an agent must hold no key of its own",
            ));
        }
        // Only a call the decision allows (never a monitor-mode would-deny), and not one the
        // policy vetoed.
        let Some(name) = name.filter(|_| d.allow) else {
            return Ok(());
        };
        if call.scheme != Scheme::Https && !binding.allow_plaintext {
            return Err(refuse(
                &call,
                rec,
                ErrorCode::CredentialRequiresTls,
                format!("credential '{name}' is never sent over plain HTTP"),
                "call the https:// URL (intentgate intercepts it and adds the credential), or \
                 ask the platform team to set allow_plaintext on the rule's inject",
            ));
        }
        let secret = match self
            .current(name, &binding.exchange, call.intent_token)
            .await
        {
            Ok(s) => s,
            Err(NoValue::Unavailable(why)) => {
                rec.decision = Some(Verdict::Error);
                return Err(ProxyError::CredentialUnavailable {
                    name: name.to_string(),
                    why,
                });
            }
            Err(NoValue::NeedsIntentToken) => {
                return Err(refuse(
                    &call,
                    rec,
                    ErrorCode::CredentialRequiresIntentToken,
                    format!(
                        "credential '{name}' is exchanged for the call's own signed intent \
                         token, and this call carries none"
                    ),
                    "send the call with the intent token the orchestrator issued for this task \
                     (in the intent token header, `intentgate-intent-token` by default, or on \
                     the session: PUT /v1/intent with {\"token\": …}); a bare intent name is \
                     not enough for this credential",
                ));
            }
        };
        match &binding.placement {
            Placement::Header {
                name: h,
                prefix,
                suffix,
            } => {
                let mut v = String::with_capacity(prefix.len() + secret.value.len() + suffix.len());
                v.push_str(prefix);
                v.push_str(&secret.value);
                v.push_str(suffix);
                insert(call.headers, h.clone(), v.into_bytes(), name)?;
            }
            Placement::Basic(user) => {
                let pair = format!("{user}:{}", secret.value);
                let mut v = String::from("Basic ");
                base64::engine::general_purpose::STANDARD.encode_string(pair, &mut v);
                insert(call.headers, AUTHORIZATION, v.into_bytes(), name)?;
            }
            Placement::Query(param) => {
                let q = call.query.get_or_insert_with(String::new);
                if !q.is_empty() {
                    q.push('&');
                }
                encode_into(q, param);
                q.push('=');
                encode_into(q, &secret.value);
            }
        }
        rec.credential = Some(secret.audit.clone());
        Ok(())
    }
}

/// A tunnel that is spliced (its bytes opaque to intentgate) to a destination whose matched rule
/// binds a credential, or for which the policy picks one, is refused: no credential could be
/// added, and the agent would have to use a key of its own.
pub(crate) fn refuse_spliced(
    catalog: &Catalog,
    decision: &Decision,
    agent: &str,
    rec: &mut AuditRecord,
) -> Result<(), ProxyError> {
    let picked = matches!(decision.credential, Some(CredentialChoice::Use(_)));
    let vetoed = matches!(decision.credential, Some(CredentialChoice::Veto));
    let Some(name) = catalog
        .binding(&decision.scope)
        .map(|b| &*b.credential)
        .filter(|_| !vetoed)
        .or(picked.then_some("picked by the policy"))
    else {
        return Ok(());
    };
    rec.decision = Some(Verdict::Error);
    rec.error = Some(ErrorCode::CredentialRequiresInterception);
    Err(ProxyError::Denied {
        code: ErrorCode::CredentialRequiresInterception,
        reason: format!(
            "this destination takes a credential intentgate injects ({name}), and a tunnel that \
             is not intercepted cannot carry it"
        ),
        hint: "intentgate must intercept this tunnel to add the credential: the client must \
               trust intentgate's CA (tls.ca_cert, as `run` and injected pods do) and the host \
               must not be in tls.splice nor outside tls.intercept"
            .into(),
        agent: agent.to_string(),
        intent: decision.scope.intent.as_deref().map(str::to_string),
    })
}

/// Removes what the agent sent in the credential's place (and any `Authorization`: a host with a
/// bound credential takes no key from the agent); whether there was anything.
fn remove_sent(place: &Placement, headers: &mut HeaderMap, query: &mut Option<String>) -> bool {
    let mut found = headers.remove(AUTHORIZATION).is_some();
    match place {
        Placement::Header { name, .. } => found |= headers.remove(name).is_some(),
        Placement::Basic(_) => {}
        Placement::Query(param) => {
            if let Some(q) = query.as_mut() {
                let before = q.len();
                let kept: Vec<&str> = q
                    .split('&')
                    .filter(|pair| {
                        let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
                        !decoded_eq(key, param)
                    })
                    .collect();
                let kept = kept.join("&");
                found |= kept.len() != before;
                *query = (!kept.is_empty()).then_some(kept);
            }
        }
    }
    found
}

/// Whether a query key, percent-decoded (`+` as space), is `want`.
fn decoded_eq(key: &str, want: &str) -> bool {
    if !key.contains(['%', '+']) {
        return key == want;
    }
    let (mut out, b) = (Vec::with_capacity(key.len()), key.as_bytes());
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut i = 0;
    while i < b.len() {
        let pair = b.get(i + 1).zip(b.get(i + 2));
        match (b[i], pair.and_then(|(h, l)| hex(*h).zip(hex(*l)))) {
            (b'%', Some((h, l))) => {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    out == want.as_bytes()
}

/// Appends `text` percent-encoded (all but RFC 3986 unreserved characters).
pub(super) fn encode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Sets the header, marked sensitive (HTTP/2 never indexes it in its header tables).
fn insert(
    headers: &mut HeaderMap,
    name: http::HeaderName,
    value: Vec<u8>,
    credential: &str,
) -> Result<(), ProxyError> {
    let mut v = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).map_err(|_| {
        ProxyError::CredentialUnavailable {
            name: credential.to_string(),
            why: "its value cannot be written in a header".into(),
        }
    })?;
    v.set_sensitive(true);
    headers.insert(name, v);
    Ok(())
}

/// A refusal by the step: recorded as the call's error (the decision let it go; this did not).
fn refuse(
    call: &Injection<'_>,
    rec: &mut AuditRecord,
    code: ErrorCode,
    reason: String,
    hint: &str,
) -> ProxyError {
    rec.decision = Some(Verdict::Error);
    rec.error = Some(code);
    ProxyError::Denied {
        code,
        reason,
        hint: hint.to_string(),
        agent: call.agent.to_string(),
        intent: call.intent.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_compare_decoded_and_values_encode() {
        assert!(decoded_eq("api_key", "api_key"));
        assert!(decoded_eq("api%5Fkey", "api_key"));
        assert!(decoded_eq("a+b", "a b"));
        assert!(!decoded_eq("api%5", "api_key"));
        let mut q = String::new();
        encode_into(&mut q, "a b&c=d/é");
        assert_eq!(q, "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn what_the_agent_sent_is_removed() {
        let mut h = HeaderMap::new();
        let mut q = Some("page=2&api%5Fkey=mine&x=1".to_string());
        assert!(remove_sent(
            &Placement::Query("api_key".into()),
            &mut h,
            &mut q
        ));
        assert_eq!(q.as_deref(), Some("page=2&x=1"));
        let mut q = Some("api_key=mine".to_string());
        assert!(remove_sent(
            &Placement::Query("api_key".into()),
            &mut h,
            &mut q
        ));
        assert_eq!(q, None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer mine"));
        h.insert("x-api-key", HeaderValue::from_static("mine"));
        let place = Placement::Header {
            name: http::HeaderName::from_static("x-api-key"),
            prefix: "".into(),
            suffix: "".into(),
        };
        assert!(remove_sent(&place, &mut h, &mut None));
        assert!(h.is_empty());
        assert!(!remove_sent(&place, &mut h, &mut None));
    }

    #[test]
    fn a_secret_never_prints() {
        let s = super::super::Secret::new("gh", "s3cr3t-value".into(), 2);
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("gh"), "{shown}");
    }
}
