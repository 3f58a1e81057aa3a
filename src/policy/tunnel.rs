//! The tunnel rule, native code in the policy step: an intercepted CONNECT opens only to a port
//! that some intent's rules name or `egress.connect_ports` lists (443 by default); in monitor
//! mode a refusal is recorded only. Nothing else is decided at such a CONNECT: its client sends no
//! request headers worth deciding on, so each request inside is decided on its own.

use std::time::Instant;

use super::decision::Decision;
use super::{PolicySet, RequestFacts, ScopeCode, ScopeVerdict};
use crate::config::Mode;
use crate::intent::Intent;
use crate::vocab::{ConnectionMode, ErrorCode};

/// The reason an opened tunnel's record carries.
const INTERCEPTED: &str = "tunnel intercepted: each inner request is decided on its own";

impl RequestFacts<'_> {
    /// Whether this is the CONNECT of a tunnel that will be intercepted: decided by the tunnel
    /// rule alone.
    pub fn opens_tunnel(&self) -> bool {
        self.method == "CONNECT" && self.connection.mode == ConnectionMode::Intercepted
    }
}

impl PolicySet {
    /// Decides the CONNECT of a tunnel that will be intercepted (`RequestFacts::opens_tunnel`).
    pub(super) fn decide_tunnel(&self, intent: &Intent, req: &RequestFacts<'_>) -> Decision {
        let start = Instant::now();
        let port = req.port;
        let mode = self.mode_for(intent.name.as_deref());
        let allow = self.connect_ports.contains(&port) || self.catalog.names_port(port);
        let why = if allow {
            INTERCEPTED.to_string()
        } else {
            let host = crate::hostport::Host(req.host);
            format!(
                "CONNECT {host}:{port}: port {port} is not allowed by any intent nor \
                 egress.connect_ports"
            )
        };
        let reasons = match (allow, mode) {
            (true, _) => vec![why.clone()],
            (false, Mode::Enforce) => vec![why.clone()],
            (false, Mode::Monitor) => vec![format!("would deny: {why}"), INTERCEPTED.into()],
        };
        Decision {
            allow,
            mode,
            reasons,
            headers: Vec::new(),
            code: (!allow).then_some(ErrorCode::PortNotInScope),
            hint: if allow {
                String::new()
            } else {
                "tunnels go to the ports the intents allow (443 by default); ask for an intent \
                 that allows this port, or add it to egress.connect_ports"
                    .into()
            },
            scope: ScopeVerdict {
                matched: allow,
                intent: intent.name.clone(),
                rule: None,
                why,
                code: if allow {
                    ScopeCode::Matched
                } else {
                    ScopeCode::PortNotInScope
                },
                mode,
                llm_allows: None,
                known: intent.known,
            },
            policy_micros: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            cached: false,
            credential: None,
        }
    }
}
