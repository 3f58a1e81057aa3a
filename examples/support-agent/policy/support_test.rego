package support_test

import rego.v1

test_ticket_read_allowed if {
	data.intentgate.decision.allow with input as {"scope": {"matched": true}, "request": {"method": "GET", "path_segments": ["api", "v2", "tickets", "1"]}}
}

test_ticket_delete_denied_even_when_in_scope if {
	d := data.intentgate.decision with input as {"scope": {"matched": true}, "request": {"method": "DELETE", "path_segments": ["api", "v2", "tickets", "1"]}}
	not d.allow
	d.reasons == ["support agents never delete tickets"]
}
