//! Every stable error code intentgate writes: the `error` of a JSON refusal (proxy, admin API,
//! webhook and bundle server), of an audit record, and the label of `intentgate_refusals_total`
//! and `intentgate_upstream_errors_total`. docs/operations.md lists them all (a test below keeps
//! the two in step).

super::words! {
    /// A stable, machine-readable error code.
    pub enum ErrorCode {
        // The request itself (400-class, the client's).
        /// The request could not be used as sent (an invalid target, header or JSON body).
        BadRequest = "bad_request",
        /// An origin-form request on the proxy listener: someone mistook intentgate for the origin.
        NotAProxyRequest = "not_a_proxy_request",
        /// The request line or headers could not be parsed as HTTP/1.1.
        MalformedRequest = "malformed_request",
        /// The request head is over `limits.max_header_bytes` or `limits.max_headers`.
        HeadersTooLarge = "headers_too_large",
        /// The request target is too long.
        UriTooLong = "uri_too_long",
        /// A request in a tunnel names another host than the tunnel's.
        MisdirectedRequest = "misdirected_request",
        /// The request head did not arrive within `limits.header_read_timeout_ms` (408); the
        /// connection is closed.
        HeaderTimeout = "header_timeout",
        /// Where the request ends is ambiguous (Content-Length with Transfer-Encoding, a
        /// malformed chunk): the connection is closed.
        AmbiguousFraming = "ambiguous_framing",
        /// What the request is could be read two ways (a method override, a body on GET).
        AmbiguousRequest = "ambiguous_request",

        // Decided by policy (403).
        /// The policy denied the call: outside the declared intent's scope.
        IntentViolation = "intent_violation",
        /// The policy could not be evaluated (fails closed unless `policy.on_error: allow`).
        PolicyError = "policy_error",
        /// The agent has no owner or has expired (`agent.owner`, `agent.expires`).
        AgentRefused = "agent_refused",
        /// The declared intent's `claimable_by` does not admit this agent.
        IntentNotClaimable = "intent_not_claimable",
        /// A session intent that is not in the catalog (`PUT /v1/intent`, 422).
        UnknownIntent = "unknown_intent",
        /// An intercepted tunnel to a port that no intent nor `egress.connect_ports` allows.
        PortNotInScope = "port_not_in_scope",
        /// A destination in a forbidden address class (loopback, private, metadata, intentgate
        /// itself) unless `egress.allow_cidrs` allows it.
        DestinationForbidden = "destination_forbidden",

        // The upstream side (502/504): the call was let go but did not get an answer.
        /// The destination's name does not resolve.
        UpstreamUnresolvable = "upstream_unresolvable",
        /// The destination refused the connection or could not be reached.
        UpstreamUnreachable = "upstream_unreachable",
        /// The destination did not connect or answer in time (504).
        UpstreamTimeout = "upstream_timeout",
        /// The destination's answer was not valid HTTP, or the connection broke.
        UpstreamError = "upstream_error",
        /// The parent proxy (`upstream.proxy`) refused the tunnel.
        ParentProxyError = "parent_proxy_error",
        /// The destination's TLS certificate could not be verified, or its handshake failed.
        UpstreamTls = "upstream_tls",

        // intentgate's own limits.
        /// Over `limits.max_tunnels` or a connection cap (503, `Retry-After`).
        Overloaded = "overloaded",
        /// The agent is over `limits.requests_per_second` (429, `Retry-After`).
        RateLimited = "rate_limited",
        /// The audit log cannot be written and `audit.on_failure` is `block` (503).
        AuditUnavailable = "audit_unavailable",

        // Connections refused without an HTTP answer (`intentgate_refusals_total` only).
        /// A connection over `limits.max_connections` (answered 503 `overloaded`).
        TooManyConnections = "too_many_connections",
        /// An admin connection over `admin.max_connections` (answered 503 `overloaded`).
        TooManyAdminConnections = "too_many_admin_connections",
        /// A connection to the transparent listener that was not redirected to it.
        TransparentNotRedirected = "transparent_not_redirected",
        /// A tunnel whose TLS ClientHello could not be parsed.
        MalformedClientHello = "malformed_client_hello",
        /// An intercepted TLS client sent no server name (SNI) for a named host.
        SniMissing = "sni_missing",
        /// An intercepted TLS client named another host than its tunnel's.
        SniMismatch = "sni_mismatch",
        /// An intercepted TLS client's server name is not a valid host name.
        SniInvalid = "sni_invalid",

        // The admin API, the webhook and the bundle server.
        /// No such endpoint (404).
        NotFound = "not_found",
        /// The endpoint does not answer this method (405, `Allow`).
        MethodNotAllowed = "method_not_allowed",
        /// A request body did not arrive within `limits.header_read_timeout_ms` (408).
        BodyTimeout = "body_timeout",
        /// intentgate is stopping: the admin state is gone (503).
        ShuttingDown = "shutting_down",
        /// An admin endpoint that answers loopback peers only (403).
        AdminLoopbackOnly = "admin_loopback_only",
        /// `admin.token_file` is set and the bearer token is missing or wrong (401).
        AdminUnauthorized = "admin_unauthorized",
        /// A bundle request without a valid service-account token (401).
        Unauthenticated = "unauthenticated",
        /// A bundle request for another namespace than the caller's (403).
        Forbidden = "forbidden",
        /// The bundle server cannot verify tokens or read bundles right now (503).
        BundleUnavailable = "bundle_unavailable",

        // Signed intent tokens (403, src/proxy/intent_token.rs).
        /// A bare intent name where a signed intent token is required (`intent_tokens.required`, `intents.X.requires_token`).
        IntentTokenRequired = "intent_token_required",
        /// An intent token that is malformed, not valid yet, of a refused algorithm, or lacks or mistypes a claim.
        IntentTokenInvalid = "intent_token_invalid",
        /// An intent token past its `exp` (beyond `intent_tokens.clock_skew_seconds`).
        IntentTokenExpired = "intent_token_expired",
        /// An intent token whose signature does not verify with its issuer's keys (or names a key they do not have).
        IntentTokenBadSignature = "intent_token_bad_signature",
        /// An intent token from an issuer not in `intent_tokens.issuers`.
        IntentTokenUnknownIssuer = "intent_token_unknown_issuer",
        /// An intent token whose `aud` does not name this agent.
        IntentTokenWrongAudience = "intent_token_wrong_audience",
        /// An intent token whose `jti` is in `intent_tokens.revoked`.
        IntentTokenRevoked = "intent_token_revoked",
        /// An intent token whose `hosts`, `methods` or `paths` name more than its intent's catalog rules allow.
        IntentTokenWidening = "intent_token_widening",
        /// An intent token that declares an intent not in the catalog.
        IntentTokenUnknownIntent = "intent_token_unknown_intent",
        /// A bare intent name (header or session) that contradicts the intent token's intent.
        IntentTokenMismatch = "intent_token_mismatch",
        /// A call outside the intent token's narrowing claims (`hosts`, `methods`, `paths`).
        OutsideTokenScope = "outside_token_scope",
        /// A request's attestation could not be signed; it is not forwarded without one.
        AttestationFailed = "attestation_failed",
        // MCP awareness (issue 24).
        /// A request to an MCP server whose body is not JSON-RPC 2.0 intentgate can read: not
        /// JSON (400), malformed (400), or over `limits.inspect_body_bytes` (413).
        McpUnreadable = "mcp_unreadable",
        /// An LLM API call names a model, or asks for more output tokens, than its intent's
        /// `protocol: llm` rule allows (403).
        LlmNotInScope = "llm_not_in_scope",
        // Credentials brokered for the agent (src/cred/).
        /// The agent sent the credential its rule injects, and the rule has `require_absent`.
        CredentialPresent = "credential_present",
        /// A rule would inject a credential into plain HTTP without `allow_plaintext` (403).
        CredentialRequiresTls = "credential_requires_tls",
        /// A tunnel that is spliced, not intercepted, to a host whose rule binds a credential.
        CredentialRequiresInterception = "credential_requires_interception",
        /// The credential has no usable value (unreadable, expired, its token request failed).
        CredentialUnavailable = "credential_unavailable",
        // Budgets per intent (src/budget/).
        /// A count of the intent's budget is used up until its window resets (429, `Retry-After`).
        BudgetExhausted = "budget_exhausted",
        /// The intent's budget `expires_after` has passed: the intent has ended (429).
        BudgetExpired = "budget_expired",
        /// The budget store (`budgets.redis_url`) cannot be reached and `budgets.on_store_error`
        /// is `deny` (503).
        BudgetStoreUnavailable = "budget_store_unavailable",
        /// A credential exchanged for the call's own intent token (`subject_token:
        /// intent_token`, no fallback file), on a call that carries none (403).
        CredentialRequiresIntentToken = "credential_requires_intent_token",
        // Intent-token issuers' keys over HTTPS (issue 23).
        /// An intent token from an issuer whose `jwks_url` key set has not been fetched yet.
        IntentTokenKeysUnavailable = "intent_token_keys_unavailable",
    }
}

impl ErrorCode {
    /// Whether the code says the upstream side failed a call that was let go (no upstream
    /// answer: 502/504). The audit record then keeps its decision and carries the code, and the
    /// `run` summary counts the call as failed.
    pub fn upstream_failure(self) -> bool {
        matches!(
            self,
            ErrorCode::UpstreamUnresolvable
                | ErrorCode::UpstreamUnreachable
                | ErrorCode::UpstreamTimeout
                | ErrorCode::UpstreamError
                | ErrorCode::ParentProxyError
                | ErrorCode::UpstreamTls
        )
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// The codes in the error-code table of docs/operations.md (its rows start with a code).
    fn documented() -> Vec<String> {
        let doc = include_str!("../../docs/operations.md");
        let table = doc
            .split_once("## Error codes")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .expect("docs/operations.md has a section `## Error codes`");
        table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`'))
            .map(|(code, _)| code.to_string())
            .collect()
    }

    #[test]
    fn docs_operations_lists_every_error_code_and_no_other() {
        let doc = documented();
        let missing: Vec<&str> = ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .filter(|c| !doc.iter().any(|d| d == c))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/operations.md (## Error codes) does not list {missing:?}"
        );
        let unknown: Vec<&String> = doc
            .iter()
            .filter(|d| !ErrorCode::ALL.iter().any(|c| c.as_str() == d.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "docs/operations.md lists codes that do not exist: {unknown:?}"
        );
    }
}
