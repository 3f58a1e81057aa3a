#!/usr/bin/env bash
# Creates the webhook's serving certificate without cert-manager: a private CA and a leaf for
# intentgate-inject.intentgate-system.svc (openssl), stored as Secret intentgate-inject-tls, and the
# CA patched into the MutatingWebhookConfiguration's caBundle. Re-run before the 1-year expiry.
# usage: deploy/kubernetes/webhook-cert.sh [--dry-run]
#   --dry-run touches no cluster: the certificate's subject and names on stderr, the Secret on stdout.
set -euo pipefail
ns=intentgate-system
svc=intentgate-inject
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=intentgate-webhook-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$svc.$ns.svc" -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc\nextendedKeyUsage=serverAuth\n' \
    "$svc" "$svc" "$ns" "$svc" "$ns" >"$dir/ext.cnf"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 365 -extfile "$dir/ext.cnf" -out "$dir/tls.crt" 2>/dev/null
openssl verify -CAfile "$dir/ca.crt" "$dir/tls.crt" >/dev/null
# ca.crt too: injected sidecars trust it for policy bundles (bundles.ca_file in the inject config).
secret() {
    kubectl -n "$ns" create secret generic intentgate-inject-tls --type=kubernetes.io/tls \
        --from-file=tls.crt="$dir/tls.crt" --from-file=tls.key="$dir/tls.key" \
        --from-file=ca.crt="$dir/ca.crt" --dry-run=client -o yaml
}
if [[ "${1:-}" == "--dry-run" ]]; then
    openssl x509 -in "$dir/tls.crt" -noout -subject -ext subjectAltName >&2
    secret
    exit 0
fi
secret | kubectl apply -f -
bundle=$(base64 <"$dir/ca.crt" | tr -d '\n')
for i in 0 1; do
    kubectl patch mutatingwebhookconfiguration intentgate-inject --type=json \
        -p "[{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$bundle\"}]"
done
