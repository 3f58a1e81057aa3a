# intentgate's default policy: enforce the intent catalog, let platform rules deny on top.
#
# The catalog is matched natively (fast) and its verdict arrives as `input.scope`. This module turns
# it into the decision document. Other modules add refusals without touching this file:
#   - global modules (any package) add to `data.intentgate.deny` (package intentgate, `deny contains msg if ...`);
#   - namespace modules (package intentgate.namespace) add to `data.intentgate.namespace.deny`.
# A deny anywhere wins over a catalog match; a namespace cannot remove a global deny.
#
# Reasons are plain strings; the reason "scope" stands for the catalog's own explanation
# (input.scope.why), which intentgate writes into the response for you.
package intentgate

import rego.v1

decision := {"allow": false, "reasons": global} if {
	global := [r | some r in data.intentgate.deny]
	count(global) > 0
} else := {"allow": false, "reasons": local} if {
	local := [r | some r in data.intentgate.namespace.deny]
	count(local) > 0
} else := {"allow": true, "reasons": []} if {
	input.scope.matched
} else := {"allow": false, "reasons": ["scope"]}
