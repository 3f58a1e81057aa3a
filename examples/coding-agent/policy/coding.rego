# The coding agent reads; it never writes to the Git host.
package intentgate

import rego.v1

writes := {"POST", "PUT", "PATCH", "DELETE"}

deny contains "pushing to the Git host is not allowed" if {
	input.request.host == "github.com"
	endswith(input.request.path, "/git-receive-pack")
}

deny contains "the GitHub API is read-only for this agent" if {
	input.request.host == "api.github.com"
	input.request.method in writes
}
