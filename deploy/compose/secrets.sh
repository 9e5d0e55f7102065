#!/bin/sh
# Writes the NATS credentials that compose.yaml mounts as secrets (`make compose-secrets`):
# a random password per role (kept if present, so re-running does not lock out running
# services) and the nats-server authorization made from them by `moemesh nats-config`.
# The directory is git-ignored; nothing here is ever committed.
#
#   deploy/compose/secrets.sh [moemesh binary] [directory]
set -eu
bin=${1:-bin/moemesh}
dir=${2:-deploy/compose/secrets}
model=${MOEMESH_MODEL_NAME:-builtin-tiny}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
for role in gateway router expertd admin; do
	f="$dir/$role.password"
	if [ ! -s "$f" ]; then
		# 32 random bytes as hex: nothing a config file or a shell would need quoted.
		od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$f"
	fi
done
"$bin" nats-config --model "$model" --out "$dir/nats-auth.conf" \
	--password-file "gateway=$dir/gateway.password" \
	--password-file "router=$dir/router.password" \
	--password-file "expertd=$dir/expertd.password" \
	--password-file "admin=$dir/admin.password"
# Compose bind-mounts file secrets with their host mode, and the services run as uid
# 65532: the files must be readable by others. The 0700 directory keeps other users of
# this host out.
chmod 644 "$dir"/*.password "$dir/nats-auth.conf"
echo "NATS credentials in $dir (admin: moemesh status --nats nats://127.0.0.1:4222 --nats-user admin --nats-password-file $dir/admin.password)"
