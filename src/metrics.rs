//! Prometheus metrics on a registry of our own, with bounded label sets (no raw hosts or paths).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric intentgate exports.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub policy_seconds: Histogram,
    pub upstream_seconds: Histogram,
    pub active_connections: IntGauge,
    pub tunnels_active: IntGauge,
    pub upstream_errors: IntCounterVec,
    pub refusals: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    pub policy_info: IntGaugeVec,
    pub audit_queue_depth: IntGauge,
    /// `intentgate_decision_cache_total{result="hit"|"miss"}`, resolved once (every request).
    pub decision_cache: [IntCounter; 2],
    /// `intentgate_tls_leaf_certificates_total{result="mint"|"cache_hit"}`: the leaf cache keeps
    /// the counts; `sync_leaf_certs` brings these up to them at scrape time.
    leaf_certs: [IntCounter; 2],
    /// Serialises `sync_leaf_certs`, so two scrapes never add the same certificates twice.
    leaf_sync: std::sync::Mutex<()>,
    pub transparent_connections: IntCounterVec,
    pub websocket_upgrades: IntCounterVec,
    pub bodies_inspected: IntCounterVec,
    pub bundle_fetches: IntCounterVec,
    /// Records never written (`audit.on_failure: continue`, or a refusal's record that found the
    /// queue full while the log was blocked).
    pub audit_records_lost: IntCounter,
    /// 1 while `audit.on_failure: block` refuses requests because the log cannot be written.
    pub audit_blocked: IntGauge,
    /// `intentgate_otlp_calls_total{result}`: calls exported to OpenTelemetry, or dropped.
    pub otlp: IntCounterVec,
    /// `intentgate_shadow_disagreements_total{intent,live,shadow}` (`policy.shadow`).
    pub shadow_disagreements: IntCounterVec,
    /// `intentgate_llm_tokens_total{agent,intent,model,kind}`: tokens LLM responses reported.
    pub llm_tokens: IntCounterVec,
    /// `intentgate_credential_refresh_total{credential,result}` (src/cred/).
    pub credential_refresh: IntCounterVec,
    /// `intentgate_credential_expiry_seconds{credential}`: the current value's expiry (Unix).
    pub credential_expiry: prometheus::GaugeVec,
    /// `intentgate_jwks_fetches_total{issuer,result}`: intent-token issuers' `jwks_url` fetches.
    pub jwks_fetches: IntCounterVec,
}

impl Metrics {
    /// Builds and registers every metric. Registration can only fail on a duplicate name, which
    /// would be a programming error caught by the unit test below.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "intentgate_requests_total",
                "Requests decided, by decision, mode and intent.",
            ),
            &["decision", "mode", "intent"],
        )?;
        let lat_buckets = vec![
            0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
            0.025,
        ];
        let policy_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "intentgate_policy_evaluation_seconds",
                "Time to evaluate one policy decision.",
            )
            .buckets(lat_buckets),
        )?;
        let upstream_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "intentgate_upstream_request_duration_seconds",
                "Time from sending a request upstream to its response head.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let active_connections = IntGauge::new(
            "intentgate_active_connections",
            "Client connections open now.",
        )?;
        let tunnels_active =
            IntGauge::new("intentgate_tunnels_active", "CONNECT tunnels open now.")?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "intentgate_upstream_errors_total",
                "Upstream failures, by kind.",
            ),
            &["kind"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "intentgate_refusals_total",
                "Requests refused before policy (malformed, over limits), by error code.",
            ),
            &["error"],
        )?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "intentgate_policy_reloads_total",
                "Policy reload attempts, by result.",
            ),
            &["result"],
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new(
                "intentgate_policy_info",
                "The policy revision in force (value 1).",
            ),
            &["revision"],
        )?;
        let audit_queue_depth = IntGauge::new(
            "intentgate_audit_queue_depth",
            "Audit records waiting to be written.",
        )?;
        let audit_records_lost = IntCounter::new(
            "intentgate_audit_records_lost_total",
            "Audit records that could not be written and were dropped.",
        )?;
        let audit_blocked = IntGauge::new(
            "intentgate_audit_blocked",
            "1 while requests are refused because the audit log cannot be written.",
        )?;
        let decision_cache = IntCounterVec::new(
            Opts::new(
                "intentgate_decision_cache_total",
                "Decision cache lookups, by result.",
            ),
            &["result"],
        )?;
        let leaf_certs = IntCounterVec::new(
            Opts::new(
                "intentgate_tls_leaf_certificates_total",
                "Leaf certificates minted and served from the cache.",
            ),
            &["result"],
        )?;
        let transparent_connections = IntCounterVec::new(
            Opts::new(
                "intentgate_transparent_connections_total",
                "Redirected connections, by what their first bytes were: http, tls (an SNI), tcp.",
            ),
            &["protocol"],
        )?;
        let websocket_upgrades = IntCounterVec::new(
            Opts::new(
                "intentgate_websocket_upgrades_total",
                "Allowed WebSocket upgrades, by result: upgraded, declined (no 101), failed.",
            ),
            &["result"],
        )?;
        let bodies_inspected = IntCounterVec::new(
            Opts::new(
                "intentgate_bodies_inspected_total",
                "Request bodies read for a policy that reads input.request.body (or for an LLM \
                 call's model), by truncated.",
            ),
            &["truncated"],
        )?;
        let bundle_fetches = IntCounterVec::new(
            Opts::new(
                "intentgate_bundle_fetches_total",
                "Policy bundle polls, by result: updated, unchanged, refused (bad bundle or \
                 policy), error (server unreachable or not 200/304).",
            ),
            &["result"],
        )?;
        let llm_tokens = IntCounterVec::new(
            Opts::new(
                "intentgate_llm_tokens_total",
                "Tokens LLM API responses reported (usage), by agent, intent, model and kind: \
                 input or output.",
            ),
            &["agent", "intent", "model", "kind"],
        )?;
        let credential_refresh = IntCounterVec::new(
            Opts::new(
                "intentgate_credential_refresh_total",
                "Credential values loaded (a file read, a token fetched), by credential and \
                 result: ok, error.",
            ),
            &["credential", "result"],
        )?;
        let credential_expiry = prometheus::GaugeVec::new(
            Opts::new(
                "intentgate_credential_expiry_seconds",
                "When the credential's current token expires (Unix seconds).",
            ),
            &["credential"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("intentgate_build_info", "Build information (value 1)."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(policy_seconds.clone()))?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        registry.register(Box::new(active_connections.clone()))?;
        registry.register(Box::new(tunnels_active.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(policy_info.clone()))?;
        registry.register(Box::new(audit_queue_depth.clone()))?;
        registry.register(Box::new(decision_cache.clone()))?;
        registry.register(Box::new(leaf_certs.clone()))?;
        registry.register(Box::new(transparent_connections.clone()))?;
        registry.register(Box::new(websocket_upgrades.clone()))?;
        registry.register(Box::new(bodies_inspected.clone()))?;
        registry.register(Box::new(bundle_fetches.clone()))?;
        registry.register(Box::new(audit_records_lost.clone()))?;
        registry.register(Box::new(audit_blocked.clone()))?;
        let otlp = IntCounterVec::new(
            Opts::new(
                "intentgate_otlp_calls_total",
                "Calls exported as OTLP spans and log records (`exported`), or dropped (`queue_full`, `export_failed`).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(otlp.clone()))?;
        let shadow_disagreements = IntCounterVec::new(
            Opts::new(
                "intentgate_shadow_disagreements_total",
                "Calls the shadow policy decided differently from the live one, by intent and both verdicts.",
            ),
            &["intent", "live", "shadow"],
        )?;
        registry.register(Box::new(shadow_disagreements.clone()))?;
        registry.register(Box::new(llm_tokens.clone()))?;
        registry.register(Box::new(credential_refresh.clone()))?;
        registry.register(Box::new(credential_expiry.clone()))?;
        registry.register(Box::new(build_info))?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "intentgate_jwks_fetches_total",
                "Fetches of intent-token issuers' key sets (jwks_url), by issuer and result: ok, \
                 error (the last good set is kept).",
            ),
            &["issuer", "result"],
        )?;
        registry.register(Box::new(jwks_fetches.clone()))?;
        Ok(Self {
            registry,
            requests,
            policy_seconds,
            upstream_seconds,
            active_connections,
            tunnels_active,
            upstream_errors,
            refusals,
            policy_reloads,
            policy_info,
            audit_queue_depth,
            decision_cache: [
                decision_cache.with_label_values(&["hit"]),
                decision_cache.with_label_values(&["miss"]),
            ],
            leaf_certs: [
                leaf_certs.with_label_values(&["mint"]),
                leaf_certs.with_label_values(&["cache_hit"]),
            ],
            leaf_sync: std::sync::Mutex::new(()),
            transparent_connections,
            websocket_upgrades,
            bodies_inspected,
            bundle_fetches,
            audit_records_lost,
            audit_blocked,
            otlp,
            shadow_disagreements,
            llm_tokens,
            credential_refresh,
            credential_expiry,
            jwks_fetches,
        })
    }

    /// Counts a credential load in `intentgate_credential_refresh_total` (names are config keys:
    /// a bounded set).
    pub fn credential_refreshed(&self, credential: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.credential_refresh
            .with_label_values(&[credential, result])
            .inc();
    }

    /// Counts a refusal in `intentgate_refusals_total{error}`.
    pub fn refused(&self, code: crate::vocab::ErrorCode) {
        self.refusals.with_label_values(&[code.as_str()]).inc();
    }

    /// Records the revision now in force (the previous one's series is removed).
    pub fn set_policy_revision(&self, revision: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[revision]).set(1);
    }

    /// Brings the leaf certificate counters up to the leaf cache's totals since start.
    pub fn sync_leaf_certs(&self, mints: u64, hits: u64) {
        let _one = self.leaf_sync.lock().unwrap_or_else(|p| p.into_inner());
        for (counter, total) in self.leaf_certs.iter().zip([mints, hits]) {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let m = Metrics::new().unwrap();
        m.requests
            .with_label_values(&["allow", "enforce", "triage"])
            .inc();
        m.set_policy_revision("abc");
        m.set_policy_revision("def");
        let text = m.render();
        assert!(text.contains(
            "intentgate_requests_total{decision=\"allow\",intent=\"triage\",mode=\"enforce\"} 1"
        ));
        assert!(text.contains("intentgate_policy_info{revision=\"def\"} 1"));
        assert!(!text.contains("revision=\"abc\""));
        assert!(text.contains("intentgate_build_info"));
        // The leaf certificate counts are counters that follow the cache's totals.
        m.sync_leaf_certs(2, 5);
        m.sync_leaf_certs(3, 5);
        let text = m.render();
        assert!(text.contains("# TYPE intentgate_tls_leaf_certificates_total counter"));
        assert!(text.contains("intentgate_tls_leaf_certificates_total{result=\"mint\"} 3"));
        assert!(text.contains("intentgate_tls_leaf_certificates_total{result=\"cache_hit\"} 5"));
    }
}
