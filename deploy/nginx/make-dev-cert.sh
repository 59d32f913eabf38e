#!/usr/bin/env sh
# A self-signed certificate for development and tests: make-dev-cert.sh DIR [HOSTNAME]
# writes DIR/tls.crt and DIR/tls.key (ECDSA P-256, 30 days, SAN for HOSTNAME, localhost and
# 127.0.0.1). Production certificates come from your CA or ACME client, under the same names.
set -eu
dir=${1:?usage: make-dev-cert.sh DIR [HOSTNAME]}
name=${2:-localhost}
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=$name" -addext "subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1" \
  -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
chmod 644 "$dir/tls.crt"
echo "$dir/tls.crt"
