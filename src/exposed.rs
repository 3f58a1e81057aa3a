//! The one door from the other targets of this package into the library: the binary, the
//! benches (`benches/`) and the integration tests reach the private modules only through these
//! re-exports (the fuzz targets through `fuzzing`). Not an API: nothing here is promised to
//! anyone outside this repository. Re-export only what another target uses, under the path of
//! the module it lives in, so a bench's `use intentgate::exposed::tls::sni` reads like the source.

pub use crate::cli::main;

pub mod audit {
    pub use crate::audit::AuditRecord;
}

pub mod budget {
    pub use crate::budget::{Admission, Admit, Budgets, Key, Limits, StoreUnavailable};
}

pub mod bundle {
    pub use crate::bundle::Bundle;
}

pub mod config {
    pub use crate::config::{
        BudgetSpec, BudgetWindow, BudgetsConfig, Config, IntentSpec, IntentTokensConfig, Mode,
        ScopeRule, TokenIssuer,
    };
}

pub mod cred {
    pub use crate::cred::{Injection, IntentToken, Store};
}

pub mod identity {
    pub use crate::identity::Agent;
}

pub mod intent {
    pub use crate::intent::{Intent, IntentSource};
}

pub mod metrics {
    pub use crate::metrics::Metrics;
}

pub mod policy {
    pub use crate::policy::{ConnectionFacts, Decision, PolicySet, RequestFacts};

    pub mod catalog {
        pub use crate::policy::catalog::{Catalog, ScopeCode, ScopeVerdict};
    }

    pub mod input {
        pub use crate::policy::input::{agent_value, build, segments};
    }
}

pub mod proxy {
    pub mod headers {
        pub use crate::proxy::headers::{add_via, remove_hop_by_hop, strip_agent_claims};
    }
}

pub mod target {
    pub use crate::target::absolute_target;
}

pub mod tls {
    pub use crate::tls::{Tls, provider};

    pub mod ca {
        pub use crate::tls::ca::CertificateAuthority;
    }

    pub mod leaf {
        pub use crate::tls::leaf::{LeafMinter, LeafName, LeafSettings};
    }

    pub mod sni {
        pub use crate::tls::sni::parse;
    }
}

pub mod token {
    pub mod attest {
        pub use crate::token::attest::{Attester, Statement};
    }

    pub mod mint {
        pub use crate::token::mint::{MintRequest, SigningKey, jwks_json, mint};
    }

    pub mod verify {
        pub use crate::token::verify::Verifier;
    }
}

pub mod vocab {
    pub use crate::vocab::{ConnectionMode, Protocol, Scheme};
}
