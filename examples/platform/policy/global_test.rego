package platform_test

import rego.v1

test_refunds_denied_even_when_a_namespace_allows_them if {
	d := data.intentgate.decision with input as {"scope": {"matched": true}, "request": {"host": "api.stripe.com", "method": "POST"}}
	d.reasons == ["no agent may move money"]
}

test_reads_pass if {
	data.intentgate.decision.allow with input as {"scope": {"matched": true}, "request": {"host": "api.stripe.com", "method": "GET", "path_segments": []}}
}
