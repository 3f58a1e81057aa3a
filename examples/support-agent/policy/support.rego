# Tickets are never deleted by the support bot, whatever its intent says.
package intentgate

import rego.v1

deny contains "support agents never delete tickets" if {
	input.request.method == "DELETE"
	input.request.path_segments[2] == "tickets"
}
