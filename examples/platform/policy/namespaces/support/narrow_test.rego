package support_namespace_test

import rego.v1

test_users_denied if {
	d := data.intentgate.decision with input as {"scope": {"matched": true}, "request": {"host": "api.zendesk.com", "method": "GET", "path_segments": ["api", "v2", "users"]}}
	d.reasons == ["the support namespace does not touch user records"]
}
