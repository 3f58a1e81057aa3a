# Unit tests of the default policy (run by `cargo test` and `intentgate check`).
package intentgate_test

import rego.v1

import data.intentgate

matched := {"scope": {"matched": true}}

unmatched := {"scope": {"matched": false}}

test_catalog_match_allows if {
	d := intentgate.decision with input as matched
	d.allow
	d.reasons == []
}

test_no_match_denies_with_scope_reason if {
	d := intentgate.decision with input as unmatched
	not d.allow
	d.reasons == [{"code": "scope"}]
}

test_namespace_deny_wins_over_match if {
	d := intentgate.decision with input as matched with data.intentgate.namespace.deny as {"no"}
	not d.allow
	d.reasons == ["no"]
}

test_global_deny_wins_over_match if {
	d := intentgate.decision with input as matched with intentgate.deny as {"blocked"}
	not d.allow
	d.reasons == ["blocked"]
}

test_grant_permits_unmatched if {
	d := intentgate.decision with input as unmatched with intentgate.grant as {"ok"}
	d.allow
}

test_missing_fields_still_decide if {
	d := intentgate.decision with input as {}
	not d.allow
}
