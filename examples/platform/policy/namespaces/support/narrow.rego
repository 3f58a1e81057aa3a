# The support namespace narrows its own catalog: no user records.
package intentgate.namespace

import rego.v1

deny contains "the support namespace does not touch user records" if {
	input.request.path_segments[2] == "users"
}
