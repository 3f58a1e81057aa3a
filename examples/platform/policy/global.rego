# Global rules: every agent in every namespace. Namespaces cannot weaken them.
package intentgate

import rego.v1

deny contains "no agent may move money" if {
	input.request.host == "api.stripe.com"
	input.request.method != "GET"
}

deny contains "cloud metadata endpoints are off limits" if {
	input.request.host in {"169.254.169.254", "metadata.google.internal"}
}
