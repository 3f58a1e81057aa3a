package coding_test

import rego.v1

test_clone_allowed if {
	data.intentgate.decision.allow with input as {"scope": {"matched": true}, "request": {"host": "github.com", "method": "POST", "path": "/o/r.git/git-upload-pack"}}
}

test_push_denied if {
	d := data.intentgate.decision with input as {"scope": {"matched": true}, "request": {"host": "github.com", "method": "POST", "path": "/o/r.git/git-receive-pack"}}
	not d.allow
}

test_api_delete_denied if {
	d := data.intentgate.decision with input as {"scope": {"matched": true}, "request": {"host": "api.github.com", "method": "DELETE", "path": "/repos/o/r"}}
	d.reasons == ["the GitHub API is read-only for this agent"]
}
