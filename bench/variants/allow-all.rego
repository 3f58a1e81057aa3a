# The benchmark's "policy off" rule: allow everything (the passthrough used by the base config of
# bench/load.py, so the plain `intentgate` variant measures the proxy without a real policy).
package intentgate

import rego.v1

decision := {"allow": true, "reasons": []}
