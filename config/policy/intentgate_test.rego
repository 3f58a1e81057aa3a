# Unit tests of the default policy: `intentgate check` runs every `test_*` rule.
package intentgate_test

import rego.v1

test_allows_a_catalog_match if {
	data.intentgate.decision.allow with input as {"scope": {"matched": true}}
}

test_denies_outside_the_catalog if {
	d := data.intentgate.decision with input as {"scope": {"matched": false}}
	not d.allow
	d.reasons == ["scope"]
}

test_a_global_deny_wins_over_a_match if {
	d := data.intentgate.decision with input as {"scope": {"matched": true}}
		with data.intentgate.deny as {"no payments"}
	not d.allow
	d.reasons == ["no payments"]
}

test_a_namespace_deny_narrows if {
	d := data.intentgate.decision with input as {"scope": {"matched": true}}
		with data.intentgate.namespace.deny as {"read only here"}
	not d.allow
}
