#!/usr/bin/env bash
# Applies the mailnode role for real on this machine, inside a network
# namespace with only loopback up, with a private state tree and loopback
# ports, so nothing the deployed node does can reach off the machine.
# Then: a second run must report changed=0, and an SMTP smoke test runs
# against the deployed node. The same for a null client beside it, and for
# a two-node tier, each node in namespaces of its own (see "A tier" below).
# Needs root, ansible, and the Debian packages (installed by make deps /
# .ci/run). Usage: ansible/tests/run.sh [--keep]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
keep=${1:-}

[[ $(id -u) == 0 ]] || { echo "ansible test: needs root (network namespace, postfix)" >&2; exit 1; }
for c in ansible-playbook ansible-lint swaks smtp-sink dkimverify ip postfix dovecot redis-server redis-cli nsenter unshare; do
  command -v "$c" >/dev/null || { echo "ansible test: $c not found (run make deps)" >&2; exit 1; }
done

T=$(mktemp -d /tmp/mailnode-ansible.XXXXXX)
chmod 755 "$T"
NS=mnansible$$
log() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
in_ns() { ip netns exec "$NS" "$@"; }

TI=$T/tier  # the tier scenario (below): one directory per node, bind-mounted at $TI/node

# node_exec I CMD...: run CMD on tier node I, inside its network and mount
# namespaces (its own addresses; its own tree at $TI/node).
node_exec() { local i=$1; shift; nsenter -t "$(cat "$TI/holder$i.pid")" -m -n "$@"; }

cleanup() {
  set +e
  for i in 1 2; do
    [[ -f $TI/holder$i.pid ]] || continue
    node_exec "$i" postfix -c "$TI/node/postfix" stop >/dev/null 2>&1
    node_exec "$i" doveadm -c "$TI/node/dovecot/dovecot.conf" stop >/dev/null 2>&1
    for p in "$TI/mx$i"/state/*.pid "$TI/mx$i"/redis/*.pid; do [[ -f $p ]] && kill "$(cat "$p")" 2>/dev/null; done
    ip netns pids "$NS-$i" 2>/dev/null | xargs -r kill 2>/dev/null
    sleep 0.3
    ip netns pids "$NS-$i" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$NS-$i" 2>/dev/null
    rm -rf "/etc/netns/$NS-$i"
  done
  if [[ -d $T/postfix ]]; then in_ns postfix -c "$T/postfix" stop >/dev/null 2>&1; fi
  if [[ -d $T/nc/postfix ]]; then in_ns postfix -c "$T/nc/postfix" stop >/dev/null 2>&1; fi
  if [[ -f $T/dovecot/dovecot.conf ]]; then in_ns doveadm -c "$T/dovecot/dovecot.conf" stop >/dev/null 2>&1; fi
  for p in "$T"/state/*.pid "$T"/nc/state/*.pid "$T"/sink.pid; do [[ -f $p ]] && kill "$(cat "$p")" 2>/dev/null; done
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.5
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "/etc/netns/$NS"
  if [[ $keep != --keep ]]; then rm -rf "$T"; else echo "kept $T"; fi
}
trap cleanup EXIT

log "lint"
(cd "$top/ansible" && ansible-lint -p site.yml roles/mailnode >/dev/null) || { (cd "$top/ansible" && ansible-lint -p); fail "ansible-lint"; }
(cd "$top/ansible" && ansible-playbook --syntax-check site.yml >/dev/null) || fail "syntax-check"

log "build"
(cd "$top" && go build -ldflags=-linkmode=internal -o "$T/mailnode.build" ./cmd/mailnode)  # as make build

ip netns add "$NS"
in_ns ip link set lo up
mkdir -p "/etc/netns/$NS"
echo "nameserver 127.0.0.1" >"/etc/netns/$NS/resolv.conf"

# The relay domain's next hop: Postfix's own smtp-sink, dumping each message.
mkdir -p "$T/sink"
chmod 777 "$T/sink"
in_ns smtp-sink -u postfix -d "$T/sink/%M." -h sink.test 127.0.0.1:2625 64 &
echo $! >"$T/sink.pid"

# TLS certificate for STARTTLS.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mx1.example.com" \
  -keyout "$T/tls.key" -out "$T/tls.crt" >/dev/null 2>&1
chmod 600 "$T/tls.key"

/usr/bin/python3 -I - "$top/examples/inventory.yaml" "$T" >"$T/vars.yml" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(sys.argv[1]))
T = sys.argv[2]
inv['node']['resolver'] = '127.0.0.1:53'
# unbound's root trust anchor in the test's tree, not the host's /var/lib/unbound.
inv['node']['resolver_anchor_file'] = f'{T}/unbound-anchor/root.key'
# 127.0.0.1 plays an outside client; 127.0.0.2 would be a trust host.
inv['node']['trusted_networks'] = ['127.0.0.2/32']
inv['postfix'].update({
    'config_directory': f'{T}/postfix', 'queue_directory': f'{T}/queue', 'data_directory': f'{T}/data',
    'smtp_listen': ['127.0.0.1:2525'], 'submission_listen': ['127.0.0.1:2587'], 'submissions_listen': ['127.0.0.1:2465'],
    'tls': {'cert_file': f'{T}/tls.crt', 'key_file': f'{T}/tls.key'},
    'inet_interfaces': '127.0.0.1', 'inet_protocols': 'ipv4',
    'maillog_file': f'{T}/maillog', 'instance_name': 'postfix-ansible',
    'outbound_tls': 'mta-sts',
})
inv['policy'].update({'listen': f'unix:{T}/queue/mailnode/policy.sock',
                      'state': {'backend': 'bbolt', 'path': f'{T}/state/state.db'}})
inv['policy'].pop('greylist', None)
inv['milter'] = {'listen': f'unix:{T}/queue/mailnode/milter.sock'}
inv['forwarding']['srs_secret_file'] = f'{T}/etc/srs.secret'
inv['dovecot'].update({'config_directory': f'{T}/dovecot', 'base_dir': f'{T}/dovecot-run',
                       'mail_location': f'maildir:{T}/vmail/%d/%n', 'log_path': f'{T}/dovecot.log',
                       'imap_listen': ['127.0.0.1:2143'], 'pop3_listen': ['127.0.0.1:2110']})
inv['dkim'] = {'key_dir': f'{T}/dkim'}
for d in inv['domains']:
    if d['class'] == 'relay':
        d['nexthop'] = '[127.0.0.1]:2625'
out = {
    'mailnode_inventory': inv,
    'mailnode_binary_src': f'{T}/mailnode.build',
    'mailnode_binary_path': f'{T}/bin/mailnode',
    'mailnode_etc_dir': f'{T}/etc',
    'mailnode_staging_dir': f'{T}/staging',
    'mailnode_state_dir': f'{T}/state',
    'mailnode_log_dir': f'{T}/log',
    'mailnode_unbound_conf': f'{T}/unbound.conf',
    'mailnode_service_manager': 'direct',
    'mailnode_mta_sts_daemon_conf': f'{T}/etc/mta-sts-daemon.yml',
    'mailnode_mta_sts_webroot': f'{T}/www',
}
yaml.safe_dump(out, sys.stdout, sort_keys=False)
PY
mkdir -p "$T/bin"

cat >"$T/play.yml" <<PLAY
---
- name: Deploy a mailnode node on this machine
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: $top/ansible/roles/mailnode
PLAY

# run_play [VARS] [ansible-playbook args]: VARS defaults to the mail node's.
run_play() {
  local vars=$T/vars.yml
  if [[ ${1:-} == *.yml ]]; then vars=$1; shift; fi
  in_ns env ANSIBLE_CONFIG="$top/ansible/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
    ansible-playbook -i localhost, -c local -e "@$vars" "$T/play.yml" "$@"
}

# verify_dkim MSG KEYFILE...: every DKIM signature of MSG verifies with the
# TXT records of the KEYFILEs (zone files, or mailnode dkim keygen's output);
# prints "d/s" of each.
verify_dkim() {
  /usr/bin/python3 -I - "$@" <<'PY'
import sys, re, dkim
msg = open(sys.argv[1], 'rb').read()
# smtp-sink -d adds X-Client-*/X-*-Args lines on top; no signature covers them.
keys = {}
for z in sys.argv[2:]:
    text = open(z).read()
    for m in re.finditer(r'^(\S+)\s+(?:\d+\s+)?IN\s+TXT\s+\(?\s*((?:"[^"]*"\s*)+)', text, re.M):
        keys[m.group(1).rstrip('.')] = ''.join(re.findall(r'"([^"]*)"', m.group(2))).encode()
def dnsfunc(name, timeout=5):
    return keys.get(name.decode().rstrip('.'), b'')
d = dkim.DKIM(msg)
n = len([l for l in msg.split(b'\n') if l.startswith(b'DKIM-Signature:')])
for i in range(n):
    if not d.verify(idx=i, dnsfunc=dnsfunc):
        sys.exit(f"signature {i} failed")
    print(f"{d.domain.decode()}/{d.selector.decode()}")
if n == 0:
    sys.exit("no DKIM signature")
PY
}

log "first run"
run_play >"$T/run1.log" 2>&1 || { tail -60 "$T/run1.log"; fail "first run failed"; }
grep -E '^localhost' "$T/run1.log"

log "unbound: its root trust anchor seeded as Debian does, and it answers"
anchor=$T/unbound-anchor/root.key
[[ $(stat -c %U "$anchor" 2>/dev/null) == unbound && $(stat -c %U "$(dirname "$anchor")") == unbound ]] ||
  fail "the root trust anchor $anchor (and its directory) is not the unbound user's: $(ls -ld "$anchor" "$(dirname "$anchor")" 2>&1)"
cmp -s "$anchor" /usr/share/dns/root.key || fail "the root trust anchor was not seeded from dns-root-data's root.key"
[[ $(unbound-checkconf -o auto-trust-anchor-file "$T/unbound.conf") == "$anchor" ]] || fail "the installed unbound.conf does not keep $anchor as its auto-trust-anchor-file"
in_ns /usr/bin/python3 -I - <<'PY' || fail "unbound does not answer on 127.0.0.1:53"
import socket, struct, time
# localhost. A: unbound answers it itself, no network needed.
q = struct.pack('>HHHHHH', 0x4d4e, 0x0100, 1, 0, 0, 0) + b'\x09localhost\x00' + struct.pack('>HH', 1, 1)
for _ in range(50):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(q, ('127.0.0.1', 53))
        r = s.recv(512)
        if r[:2] == q[:2] and r[3] & 0x0f == 0 and struct.unpack('>H', r[6:8])[0] > 0:
            raise SystemExit(0)
    except OSError:
        pass
    time.sleep(0.2)
raise SystemExit('no answer for localhost. A')
PY

log "second run (must change nothing)"
run_play >"$T/run2.log" 2>&1 || { tail -60 "$T/run2.log"; fail "second run failed"; }
recap=$(grep -E '^localhost' "$T/run2.log")
echo "$recap"
[[ $recap =~ changed=0 ]] || { grep -B2 -E '^changed:' "$T/run2.log" | head -40; fail "second run changed something"; }

log "check mode"
run_play --check --diff >"$T/run3.log" 2>&1 || { tail -40 "$T/run3.log"; fail "check mode failed"; }
grep -E '^localhost' "$T/run3.log" | grep -q 'changed=0' || fail "check mode reports changes on an unchanged node"

log "smoke: outside -> outside relay attempt"
out=$(in_ns swaks --server 127.0.0.1:2525 --from someone@outside.test --to victim@elsewhere.test --quit-after RCPT 2>&1 || true)
echo "$out" | grep -Eq '<\*\* 550 5\.7\.1 .*Sorry, relay for <victim@elsewhere\.test> not permitted' || { echo "$out"; fail "relay attempt not refused with the matrix reply"; }

log "smoke: authenticated local user -> relay domain, DKIM-signed"
out=$(in_ns swaks --server 127.0.0.1:2587 --tls --auth PLAIN --auth-user alice@example.com --auth-password alicepass \
  --from alice@example.com --to carol@partner.org --header "Subject: ansible smoke" --body "signed by the deployed node" 2>&1) || { echo "$out"; fail "submission failed"; }
for i in $(seq 1 100); do ls "$T"/sink/* >/dev/null 2>&1 && break; sleep 0.1; done
msg=$(ls "$T"/sink/* 2>/dev/null | head -1)
[[ -n $msg ]] || { tail -20 "$T/maillog"; fail "nothing reached the relay domain's next hop"; }
grep -q '^DKIM-Signature:' "$msg" || fail "message at next hop is not DKIM-signed"
sigs=$(verify_dkim "$msg" "$T"/staging/dns/*.zone) || fail "DKIM signature does not verify with the zone's keys"
echo "DKIM signatures verified: $sigs"

log "smoke: outside -> local mailbox lands in Maildir"
in_ns swaks --server 127.0.0.1:2525 --from sender@outside.test --to bob@example.com --header "Subject: to bob" >/dev/null 2>&1 || fail "delivery to bob refused"
for i in $(seq 1 100); do ls "$T"/vmail/example.com/bob/new/* >/dev/null 2>&1 && break; sleep 0.1; done
ls "$T"/vmail/example.com/bob/new/* >/dev/null 2>&1 || { tail -20 "$T/maillog"; fail "message did not reach bob's Maildir"; }

log "MTA-STS: the resolver answers Postfix, the policy is in the web root"
out=$(in_ns postmap -c "$T/postfix" -q 127.0.0.1 socketmap:inet:127.0.0.1:8461:postfix 2>&1; echo "rc=$?")
[[ $out == rc=1 ]] || { echo "$out"; fail "postfix-mta-sts-resolver does not answer Postfix's socketmap (want not found for an address)"; }
in_ns postconf -c "$T/postfix" -h smtp_tls_policy_maps | grep -qx 'socketmap:inet:127.0.0.1:8461:postfix' || fail "smtp_tls_policy_maps is not the resolver"
cmp "$T/www/example.com/.well-known/mta-sts.txt" "$T/staging/mta-sts/example.com/.well-known/mta-sts.txt" || fail "the MTA-STS policy is not in the web root"

# A null client beside the node: the role applied to examples/nullclient.yaml,
# relaying through the node's submission service with alice's login.
N=$T/nc
mkdir -p "$N"
printf 'alicepass\n' >"$N/relayhost.secret"
chmod 600 "$N/relayhost.secret"
/usr/bin/python3 -I - "$top/examples/nullclient.yaml" "$T" "$N" >"$N/vars.yml" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(sys.argv[1]))
T, N = sys.argv[2], sys.argv[3]
inv['node']['trusted_networks'] = ['127.0.0.1/32']
inv['postfix'] = {
    'config_directory': f'{N}/postfix', 'queue_directory': f'{N}/queue', 'data_directory': f'{N}/data',
    'smtp_listen': ['2725'], 'inet_protocols': 'ipv4',
    'maillog_file': f'{N}/maillog', 'instance_name': 'postfix-ansible-nc',
    'relayhost': '[127.0.0.1]:2587',
    'relayhost_auth': {'username': 'alice@example.com', 'password_file': f'{N}/relayhost.secret'},
}
inv['milter'] = {'listen': f'unix:{N}/queue/mailnode/milter.sock'}
inv['dkim'] = {'key_dir': f'{N}/dkim'}
out = {
    'mailnode_inventory': inv,
    'mailnode_binary_src': f'{T}/mailnode.build',
    'mailnode_binary_path': f'{T}/bin/mailnode',
    'mailnode_etc_dir': f'{N}/etc',
    'mailnode_staging_dir': f'{N}/staging',
    'mailnode_state_dir': f'{N}/state',
    'mailnode_log_dir': f'{N}/log',
    'mailnode_unbound_conf': f'{N}/unbound.conf',
    'mailnode_manage_unbound': False,
    # A user of its own: the node's sidecars run as mailnode, whose home is
    # the node's state directory (one host, two deployments).
    'mailnode_user': 'mailnode-nc', 'mailnode_group': 'mailnode-nc',
    'mailnode_service_manager': 'direct',
}
yaml.safe_dump(out, sys.stdout, sort_keys=False)
PY

log "null client: first run"
run_play "$N/vars.yml" >"$N/run1.log" 2>&1 || { tail -60 "$N/run1.log"; fail "null client: first run failed"; }
grep -E '^localhost' "$N/run1.log"
log "null client: second run (must change nothing)"
run_play "$N/vars.yml" >"$N/run2.log" 2>&1 || { tail -60 "$N/run2.log"; fail "null client: second run failed"; }
recap=$(grep -E '^localhost' "$N/run2.log")
echo "$recap"
[[ $recap =~ changed=0 ]] || { grep -B2 -E '^changed:' "$N/run2.log" | head -40; fail "null client: second run changed something"; }
[[ ! -e $N/staging/dovecot && ! -e $N/state/policyd.pid ]] || fail "null client: Dovecot configuration or policyd deployed"

log "smoke: sendmail on the null client -> bob's Maildir on the node, signed by both"
before=$(ls "$T"/vmail/example.com/bob/new/ | wc -l)
printf 'From: alice@example.com\nTo: bob@example.com\nSubject: via the null client\n\nsent with sendmail on app1\n' |
  in_ns /usr/sbin/sendmail -C "$N/postfix" -i -f alice@example.com bob@example.com || fail "null client: sendmail failed"
for i in $(seq 1 200); do (( $(ls "$T"/vmail/example.com/bob/new/ | wc -l) > before )) && break; sleep 0.1; done
msg=$(grep -l '^Subject: via the null client' "$T"/vmail/example.com/bob/new/* 2>/dev/null | head -1)
[[ -n $msg ]] || { tail -20 "$N/maillog"; tail -20 "$T/maillog"; fail "null client: nothing reached bob's Maildir"; }
"$T/bin/mailnode" dkim keygen --inventory "$N/etc/inventory.yaml" >"$N/dkim.txt"
sigs=$(verify_dkim "$msg" "$N/dkim.txt" "$T"/staging/dns/*.zone) || fail "null client: a DKIM signature does not verify"
echo "DKIM signatures verified: $sigs"
grep -qx 'example.com/app1e' <<<"$sigs" && grep -qx 'example.com/app1r' <<<"$sigs" || fail "null client: not signed with its own selectors"

# A tier: two nodes from one inventory (tier.nodes), each in network and
# mount namespaces of its own: its own address on a bridge in the test's
# namespace (192.0.2.11, .12: documentation addresses, nothing routes
# them), and its own tree at the same path $TI/node (a bind mount of
# $TI/mx1 or $TI/mx2) and a /run of its own (unbound's default pid file
# is /run/unbound.pid), as two machines would have. One ansible-playbook run
# deploys both; each host's python runs inside its node (nsenter), so the
# role's tasks, the daemons they start and the files they write are that
# node's. host_vars pick the node (mailnode_node). The inventory asks for
# policyd's state in Redis behind Sentinel, a sentinel on each node: the
# role runs the master Redis on mx1 (the first node), a replica of it on
# mx2 and a sentinel on both, and both policyds find the master through
# the sentinels. Then mx1's Redis is killed: the sentinels promote mx2's
# and mail still flows through both nodes.
log "tier: two nodes and a bridge"
mkdir -p "$TI/mx1" "$TI/mx2" "$TI/node" "$TI/sink"
chmod 755 "$TI" "$TI/mx1" "$TI/mx2" "$TI/node"
chmod 777 "$TI/sink"
in_ns ip link add tbr type bridge
in_ns ip addr add 192.0.2.1/24 dev tbr
in_ns ip link set tbr up
for i in 1 2; do
  ip netns add "$NS-$i"
  ip -n "$NS-$i" link set lo up
  mkdir -p "/etc/netns/$NS-$i"
  echo "nameserver 127.0.0.1" >"/etc/netns/$NS-$i/resolv.conf"
  in_ns ip link add "tv${i}h" type veth peer name "tv${i}n" netns "$NS-$i"
  in_ns ip link set "tv${i}h" master tbr up
  ip -n "$NS-$i" addr add "192.0.2.1$i/24" dev "tv${i}n"
  ip -n "$NS-$i" link set "tv${i}n" up
  echo "mx$i" >"$TI/mx$i/.node"
  ip netns exec "$NS-$i" unshare -m --propagation private \
    sh -c "mount --bind '$TI/mx$i' '$TI/node' && mount -t tmpfs -o mode=0755 tier-run /run && exec sleep infinity" </dev/null >/dev/null 2>&1 &
  echo $! >"$TI/holder$i.pid"
  for _ in $(seq 1 50); do [[ $(node_exec "$i" cat "$TI/node/.node" 2>/dev/null) == "mx$i" ]] && break; sleep 0.1; done
  [[ $(node_exec "$i" cat "$TI/node/.node" 2>/dev/null) == "mx$i" ]] || fail "tier: node $i's namespaces did not come up"
  printf '#!/bin/sh\nexec nsenter -t %s -m -n /usr/bin/python3 "$@"\n' "$(cat "$TI/holder$i.pid")" >"$TI/mx$i.python"
  chmod 755 "$TI/mx$i.python"
done
# The relay domain's next hop, on the bridge: both nodes relay to it.
in_ns smtp-sink -u postfix -d "$TI/sink/%M." -h sink.test 192.0.2.1:2625 64 &
echo $! >"$TI/sink.pid"

/usr/bin/python3 -I - "$top/examples/inventory.yaml" "$T" "$TI" >"$TI/vars.yml" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(sys.argv[1]))
T, TI = sys.argv[2], sys.argv[3]
N = f'{TI}/node'  # the same path on both nodes, each with its own tree there
# One inventory for the whole tier: no node.hostname, each host says which node it is.
del inv['node']['hostname'], inv['node']['addresses']
inv['node']['resolver'] = '127.0.0.1:53'
inv['node']['resolver_anchor_file'] = f'{N}/unbound-anchor/root.key'
inv['node']['trusted_networks'] = ['127.0.0.2/32']
inv['tier'] = {'nodes': [{'hostname': 'mx1.example.com', 'addresses': ['192.0.2.11']},
                         {'hostname': 'mx2.example.com', 'addresses': ['192.0.2.12']}]}
inv['postfix'].update({
    'config_directory': f'{N}/postfix', 'queue_directory': f'{N}/queue', 'data_directory': f'{N}/data',
    'smtp_listen': ['2525'], 'submission_listen': ['2587'], 'submissions_listen': ['2465'],
    'tls': {'cert_file': f'{T}/tls.crt', 'key_file': f'{T}/tls.key'},
    'inet_protocols': 'ipv4', 'maillog_file': f'{N}/maillog', 'instance_name': 'postfix-tier',
})
inv['policy'].update({'listen': f'unix:{N}/queue/mailnode/policy.sock',
                      'state': {'backend': 'redis',
                                'sentinel': {'master': 'mailnode',
                                             'addresses': ['192.0.2.11:26379', '192.0.2.12:26379']}}})
inv['policy'].pop('greylist', None)
inv['milter'] = {'listen': f'unix:{N}/queue/mailnode/milter.sock'}
inv['forwarding']['srs_secret_file'] = f'{N}/etc/srs.secret'
inv['dovecot'].update({'config_directory': f'{N}/dovecot', 'base_dir': f'{N}/dovecot-run',
                       'mail_location': f'maildir:{N}/vmail/%d/%n', 'log_path': f'{N}/dovecot.log',
                       'imap_listen': ['127.0.0.1:2143'], 'pop3_listen': ['127.0.0.1:2110']})
inv['dkim'] = {'key_dir': f'{N}/dkim'}
for d in inv['domains']:
    if d['class'] == 'relay':
        d['nexthop'] = '[192.0.2.1]:2625'
out = {
    'mailnode_inventory': inv,
    'mailnode_binary_src': f'{T}/mailnode.build',
    'mailnode_binary_path': f'{N}/bin/mailnode',
    'mailnode_etc_dir': f'{N}/etc',
    'mailnode_staging_dir': f'{N}/staging',
    'mailnode_state_dir': f'{N}/state',
    'mailnode_log_dir': f'{N}/log',
    'mailnode_unbound_conf': f'{N}/unbound.conf',
    'mailnode_redis_dir': f'{N}/redis',
    'mailnode_user': 'mailnode-tier', 'mailnode_group': 'mailnode-tier',
    'mailnode_service_manager': 'direct',
}
yaml.safe_dump(out, sys.stdout, sort_keys=False)
PY
cat >"$TI/hosts.yml" <<HOSTS
---
all:
  hosts:
    tier-a:
      ansible_connection: local
      ansible_python_interpreter: $TI/mx1.python
      mailnode_node: mx1.example.com
    tier-b:
      ansible_connection: local
      ansible_python_interpreter: $TI/mx2.python
      mailnode_node: mx2.example.com
HOSTS
cat >"$TI/play.yml" <<PLAY
---
- name: Deploy a tier of mailnode nodes
  hosts: all
  gather_facts: false
  roles:
    - role: $top/ansible/roles/mailnode
PLAY
for i in 1 2; do mkdir -p "$TI/mx$i/bin"; done
# --forks 1: the two "machines" share this one's /etc/passwd, which two
# useradd at once would race on.
run_tier() {
  in_ns env ANSIBLE_CONFIG="$top/ansible/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
    ansible-playbook --forks 1 -i "$TI/hosts.yml" -e "@$TI/vars.yml" "$TI/play.yml" "$@"
}

log "tier: first run (both nodes)"
run_tier >"$TI/run1.log" 2>&1 || { tail -80 "$TI/run1.log"; fail "tier: first run failed"; }
grep -E '^tier-' "$TI/run1.log"
for i in 1 2; do
  [[ $(stat -c %U "$TI/mx$i/unbound-anchor/root.key" 2>/dev/null) == unbound ]] || fail "tier: mx$i's root trust anchor was not seeded in its own tree"
done
log "tier: second run (must change nothing)"
run_tier >"$TI/run2.log" 2>&1 || { tail -60 "$TI/run2.log"; fail "tier: second run failed"; }
recap=$(grep -E '^tier-' "$TI/run2.log")
echo "$recap"
[[ $(grep -c 'changed=0 ' <<<"$recap") == 2 ]] || { grep -B2 -E '^changed:' "$TI/run2.log" | head -40; fail "tier: second run changed something"; }

log "tier: check mode"
run_tier --check --diff >"$TI/run3.log" 2>&1 || { tail -40 "$TI/run3.log"; fail "tier: check mode failed"; }
[[ $(grep -E '^tier-' "$TI/run3.log" | grep -c 'changed=0 ') == 2 ]] || fail "tier: check mode reports changes on unchanged nodes"

log "tier: one inventory, each node its own myhostname, the same keys and zones"
cmp -s "$TI/mx1/etc/inventory.yaml" "$TI/mx2/etc/inventory.yaml" || fail "tier: the nodes got different inventories"
for i in 1 2; do
  h=$(postconf -c "$TI/mx$i/postfix" -h myhostname)
  [[ $h == "mx$i.example.com" ]] || fail "tier: node $i renders myhostname $h"
done
keys1=$(cd "$TI/mx1/dkim" && find . -type f -name '*.key' | sort)
[[ $(wc -l <<<"$keys1") == 3 ]] || fail "tier: mx1 has these DKIM keys: $keys1"
for k in $keys1; do
  cmp -s "$TI/mx1/dkim/$k" "$TI/mx2/dkim/$k" || fail "tier: DKIM key $k differs between the nodes"
  for i in 1 2; do
    m=$(stat -c '%a %U' "$TI/mx$i/dkim/$k")
    [[ $m == "600 mailnode-tier" ]] || fail "tier: mx$i's $k is $m, want 600 mailnode-tier"
  done
done
for z in "$TI"/mx1/staging/dns/*.zone; do
  cmp -s "$z" "$TI/mx2/staging/dns/$(basename "$z")" || fail "tier: $(basename "$z") differs between the nodes"
done
cmp -s "$TI/mx1/etc/srs.secret" "$TI/mx2/etc/srs.secret" || fail "tier: the nodes got different SRS secrets"
for i in 1 2; do
  m=$(stat -c '%a %U %G' "$TI/mx$i/etc/srs.secret")
  [[ $m == "640 root mailnode-tier" ]] || fail "tier: mx$i's SRS secret is $m, want 640 root mailnode-tier"
done
[[ $(grep -cE '^example\.com\.\s+[0-9]+\s+IN\s+MX\s+10 mx[12]\.example\.com\.$' "$TI/mx1/staging/dns/example.com.zone") == 2 ]] ||
  fail "tier: the zone does not list both nodes as MX of preference 10"

log "tier: sentinels on both nodes agree on mx1's Redis as master, mx2's replicates it"
node_exec 1 redis-cli -h 192.0.2.11 ping | grep -qx PONG || fail "tier: no Redis on mx1's address"
# sentinel_field I FIELD: FIELD of SENTINEL MASTER mailnode, asked of node I's sentinel.
sentinel_field() { node_exec "$1" redis-cli -p 26379 SENTINEL master mailnode | sed -n "/^$2\$/{n;p;q}"; }
for i in 1 2; do
  m=$(node_exec "$i" redis-cli -p 26379 SENTINEL get-master-addr-by-name mailnode | paste -sd:)
  [[ $m == 192.0.2.11:6379 ]] || fail "tier: mx$i's sentinel names $m as master, want 192.0.2.11:6379"
  # Sentinels find each other and the replica through the master (hello every 2 s, INFO every 10 s).
  for _ in $(seq 1 150); do
    [[ $(sentinel_field "$i" num-other-sentinels) == 1 && $(sentinel_field "$i" num-slaves) == 1 ]] && break
    sleep 0.2
  done
  [[ $(sentinel_field "$i" num-other-sentinels) == 1 ]] || fail "tier: mx$i's sentinel does not know the other one"
  [[ $(sentinel_field "$i" num-slaves) == 1 ]] || fail "tier: mx$i's sentinel does not know mx2's replica"
  echo "mx$i's sentinel: master $m, 1 other sentinel, 1 replica"
done
for _ in $(seq 1 50); do node_exec 2 redis-cli INFO replication | grep -q '^master_link_status:up' && break; sleep 0.2; done
repl=$(node_exec 2 redis-cli INFO replication | tr -d '\r')
grep -qx 'role:slave' <<<"$repl" && grep -qx 'master_host:192.0.2.11' <<<"$repl" && grep -qx 'master_link_status:up' <<<"$repl" ||
  { echo "$repl"; fail "tier: mx2's Redis does not replicate mx1's"; }
echo "mx2's Redis: replica of 192.0.2.11, link up"

sigs_of=()
for i in 1 2; do
  log "tier: alice submits through mx$i -> relay domain, signed with the tier's keys"
  out=$(in_ns swaks --server "192.0.2.1$i:2587" --tls --auth PLAIN --auth-user alice@example.com --auth-password alicepass \
    --from alice@example.com --to carol@partner.org --header "Subject: tier via mx$i" --body "through node $i" 2>&1) ||
    { echo "$out"; fail "tier: submission through mx$i failed"; }
  msg=
  for _ in $(seq 1 100); do
    msg=$(grep -l "^Subject: tier via mx$i" "$TI"/sink/* 2>/dev/null | head -1) && [[ -n $msg ]] && break
    sleep 0.1
  done
  [[ -n $msg ]] || { tail -20 "$TI/mx$i/maillog"; fail "tier: nothing from mx$i reached the relay domain's next hop"; }
  grep -q "by mx$i\.example\.com" "$msg" || fail "tier: the message through mx$i has no Received line of mx$i"
  sigs=$(verify_dkim "$msg" "$TI/mx$i/staging/dns/example.com.zone") || fail "tier: mx$i's DKIM signature does not verify with the tier's zone"
  echo "mx$i: DKIM signatures verified: $sigs"
  sigs_of[i]=$sigs

  log "tier: outside -> bob through mx$i lands in mx$i's Maildir"
  in_ns swaks --server "192.0.2.1$i:2525" --from sender@outside.test --to bob@example.com --header "Subject: to bob via mx$i" >/dev/null 2>&1 ||
    fail "tier: delivery to bob through mx$i refused"
  for _ in $(seq 1 100); do ls "$TI/mx$i"/vmail/example.com/bob/new/* >/dev/null 2>&1 && break; sleep 0.1; done
  grep -lq "^Subject: to bob via mx$i" "$TI/mx$i"/vmail/example.com/bob/new/* 2>/dev/null ||
    { tail -20 "$TI/mx$i/maillog"; fail "tier: the message through mx$i did not reach bob's Maildir there"; }
done
[[ ${sigs_of[1]} == "${sigs_of[2]}" ]] || fail "tier: the nodes sign with different selectors: ${sigs_of[1]} / ${sigs_of[2]}"
# Both policyds count alice's messages in the one Redis: seen from mx2, as
# an operator there would look.
node_exec 2 "$TI/node/bin/mailnode" state list --rate --inventory "$TI/node/etc/inventory.yaml" --node mx2.example.com >"$TI/rate.txt" ||
  fail "tier: mailnode state list on mx2 failed"
cat "$TI/rate.txt"
grep -Eq '^rate/u/alice@example\.com .* 2 message\(s\)' "$TI/rate.txt" ||
  fail "tier: alice's two messages, one through each node, are not counted together in the shared Redis"

log "tier: mx1's Redis dies, the sentinels promote mx2's, mail flows through both nodes"
kill "$(cat "$TI/mx1/redis/redis.pid")"
t0=$(date +%s)
for _ in $(seq 1 300); do
  a=$(node_exec 1 redis-cli -p 26379 SENTINEL get-master-addr-by-name mailnode | head -1)
  b=$(node_exec 2 redis-cli -p 26379 SENTINEL get-master-addr-by-name mailnode | head -1)
  [[ $a == 192.0.2.12 && $b == 192.0.2.12 ]] && break
  sleep 0.2
done
[[ $a == 192.0.2.12 && $b == 192.0.2.12 ]] || fail "tier: the sentinels name $a / $b as master after mx1's Redis died, want 192.0.2.12"
node_exec 2 redis-cli INFO replication | tr -d '\r' | grep -qx 'role:master' || fail "tier: mx2's Redis was not promoted"
echo "sentinels promoted mx2's Redis after $(( $(date +%s) - t0 )) s (down-after-milliseconds 5000)"
for i in 1 2; do
  out=$(in_ns swaks --server "192.0.2.1$i:2587" --tls --auth PLAIN --auth-user alice@example.com --auth-password alicepass \
    --from alice@example.com --to carol@partner.org --header "Subject: tier after failover via mx$i" --body "through node $i" 2>&1) ||
    { echo "$out"; fail "tier: submission through mx$i after the failover failed"; }
  msg=
  for _ in $(seq 1 100); do
    msg=$(grep -l "^Subject: tier after failover via mx$i" "$TI"/sink/* 2>/dev/null | head -1) && [[ -n $msg ]] && break
    sleep 0.1
  done
  [[ -n $msg ]] || { tail -20 "$TI/mx$i/maillog"; fail "tier: nothing from mx$i reached the next hop after the failover"; }
done
# The count survived the failover (replicated) and goes on in the new master.
node_exec 1 "$TI/node/bin/mailnode" state list --rate --inventory "$TI/node/etc/inventory.yaml" --node mx1.example.com >"$TI/rate2.txt" ||
  fail "tier: mailnode state list on mx1 after the failover failed"
cat "$TI/rate2.txt"
grep -Eq '^rate/u/alice@example\.com .* 4 message\(s\)' "$TI/rate2.txt" ||
  fail "tier: alice's four messages are not counted together after the failover"

echo "ansible: mail node (apply, idempotent, check mode, 3 smoke checks), null client (apply, idempotent, 1 smoke check) and a two-node tier (apply, idempotent, one inventory, same keys and zones, Redis master and replica behind a sentinel on each node, mail signed and delivered through each node, shared count, failover to mx2 with mail through both) passed"
