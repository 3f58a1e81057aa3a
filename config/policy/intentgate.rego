# intentgate's default policy: turns the catalog verdict (input.scope, matched natively by
# intentgate) into the decision document. It is written for speed: few rules, no helpers, and
# structured reasons ({"code": ...}) that intentgate renders as sentences.
#
# Global modules extend it in package intentgate:
#   deny contains REASON   refuse; a deny always wins, over the catalog and over grant
#   grant contains REASON  permit what the catalog did not match (global modules only)
# Namespace modules (package intentgate.namespace, loaded only for agents in that namespace)
# add to data.intentgate.namespace.deny: they can narrow, never widen.
# REASON is a string, or an object {"code": CODE, "message": TEXT}.
package intentgate

import rego.v1

# No "mode" here: intentgate applies the intent's mode (input.scope.mode) unless a custom
# decision sets one, and the --mode flag over both.
decision := {"allow": true, "reasons": []} if {
	count(deny) == 0
	count(grant) > 0
} else := {
	"allow": false,
	"reasons": array.concat([r | some r in deny], [{"code": "scope"} | count(grant) == 0]),
}

# The catalog's match is the ordinary grant.
grant contains {"code": "scope"} if input.scope.matched

# A namespace's denies join the global ones.
deny contains r if some r in data.intentgate.namespace.deny
