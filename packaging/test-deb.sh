#!/usr/bin/env bash
# The Debian package, checked the way a node gets it: lintian (no error),
# the units through systemd-analyze (verify clean, exposure 2.5 or lower),
# then installed on this machine, run, removed and purged, twice: without
# an inventory (the units stay disabled) and with one (they are enabled;
# the administrator's inventory survives the purge). After each purge
# nothing of the package may be left. Needs root. Usage: test-deb.sh DEB
set -euo pipefail
deb=${1:?usage: test-deb.sh mailnode_VERSION_ARCH.deb}
[[ $(id -u) == 0 ]] || { echo "test-deb: needs root (dpkg -i)" >&2; exit 1; }
for c in lintian systemd-analyze dpkg-deb; do
  command -v "$c" >/dev/null || { echo "test-deb: $c not found (run make deps)" >&2; exit 1; }
done
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
units=(mailnode-policyd.service mailnode-milterd.service)
version=$(dpkg-deb -f "$deb" Version)

log "lintian $deb"
lintian --fail-on error "$deb" || fail "lintian reports errors"

log "systemd-analyze security (exposure must be 2.5 or lower)"
for u in "${units[@]}"; do
  out=$(systemd-analyze security --offline=true --no-pager "$here/systemd/$u") || fail "systemd-analyze security $u"
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
  echo "$u: $score"
  awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.5) }' || { echo "$out"; fail "$u: exposure $score > 2.5"; }
done

if dpkg-query -W -f='${Status}' mailnode 2>/dev/null | grep -q 'installed\|config-files'; then
  log "purging a mailnode package left from before"
  dpkg -P mailnode >/dev/null
fi
[[ -e /etc/mailnode/inventory.yaml ]] && fail "/etc/mailnode/inventory.yaml exists: this test would enable units on a configured node"
# Directories of an earlier deployment (the Ansible role makes the same
# ones) are moved aside for the test and put back afterwards.
T=$(mktemp -d /tmp/mailnode-test-deb.XXXXXX)
saved=(/etc/mailnode /var/lib/mailnode /var/spool/postfix/mailnode)
restore() {
  set +e
  dpkg-query -W -f='${Status}' mailnode 2>/dev/null | grep -q 'installed\|config-files' && dpkg -P mailnode >/dev/null
  rm -f /etc/mailnode/inventory.yaml
  rmdir /etc/mailnode/dkim /etc/mailnode 2>/dev/null
  local i
  for i in "${!saved[@]}"; do
    [[ -e $T/$i ]] && { rm -rf "${saved[$i]}"; mv "$T/$i" "${saved[$i]}"; }
  done
  rm -rf "$T"
}
trap restore EXIT
for i in "${!saved[@]}"; do
  [[ -e ${saved[$i]} ]] && mv "${saved[$i]}" "$T/$i"
done
files=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's|^\./|/|' | grep -v '/$')

# leftovers lists what of the package is still on the machine.
leftovers() {
  local f
  for f in $files /var/lib/mailnode /var/spool/postfix/mailnode /etc/mailnode; do
    [[ -e $f || -L $f ]] && echo "$f"
  done
  find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
    -name '*mailnode*' 2>/dev/null || true
}
enabled() { [[ -L /etc/systemd/system/multi-user.target.wants/$1 ]]; }

log "dpkg -i (no inventory)"
dpkg -i "$deb" >/dev/null
got=$(/usr/bin/mailnode --version)
[[ $got == "mailnode version $version" ]] || fail "--version printed \"$got\", want \"mailnode version $version\""
echo "$got"
/usr/bin/mailnode config check --no-host-checks -i /usr/share/doc/mailnode/examples/inventory.yaml || fail "config check of the shipped example"
# policyd's ExecCondition, as the installed unit has it, runs the daemon on a
# mail node and skips it (exit 1, not a failure) on a null client.
cond=$(sed -n 's/^ExecCondition=//p' /lib/systemd/system/mailnode-policyd.service)
[[ $cond == *" --inventory /etc/mailnode/inventory.yaml "* ]] || fail "mailnode-policyd.service: ExecCondition \"$cond\""
ex=/usr/share/doc/mailnode/examples
${cond/\/etc\/mailnode\/inventory.yaml/$ex/inventory.yaml} || fail "ExecCondition refuses the mail node example"
rc=0; ${cond/\/etc\/mailnode\/inventory.yaml/$ex/nullclient.yaml} || rc=$?
[[ $rc == 1 ]] || fail "ExecCondition on the null-client example: exit $rc, want 1 (skip)"
id -nG mailnode | grep -qw postfix || fail "user mailnode is not in group postfix"
[[ $(stat -c %U:%a /var/lib/mailnode) == mailnode:750 ]] || fail "/var/lib/mailnode: $(stat -c %U:%a /var/lib/mailnode)"
[[ $(stat -c %U:%G:%a /var/spool/postfix/mailnode) == mailnode:postfix:750 ]] || fail "/var/spool/postfix/mailnode: $(stat -c %U:%G:%a /var/spool/postfix/mailnode)"
[[ $(stat -c %U:%G:%a /etc/mailnode/srs.secret) == root:mailnode:640 ]] || fail "/etc/mailnode/srs.secret: $(stat -c %U:%G:%a /etc/mailnode/srs.secret)"
[[ $(wc -c </etc/mailnode/srs.secret) -ge 17 ]] || fail "/etc/mailnode/srs.secret is too short"
for u in "${units[@]}"; do
  [[ -f /lib/systemd/system/$u ]] || fail "$u not installed"
  ! enabled "$u" || fail "$u enabled without an inventory"
done
man_check=--man=yes
command -v man >/dev/null || man_check=--man=no
systemd-analyze verify "$man_check" "${units[@]/#//lib/systemd/system/}" || fail "systemd-analyze verify"
echo "units verified ($man_check), not enabled"
for p in mailnode mailnode-policyd mailnode-milterd; do
  [[ -f /usr/share/man/man8/$p.8.gz ]] || fail "no manual page $p(8)"
done
words=$(bash -c 'source /usr/share/bash-completion/completions/mailnode
  COMP_WORDS=(mailnode po); COMP_CWORD=1; _mailnode; echo "${COMPREPLY[*]}"')
[[ $words == policyd ]] || fail "bash completion of \"mailnode po\": \"$words\""
echo "bash completion: mailnode po -> $words"

log "dpkg -r"
dpkg -r mailnode >/dev/null
[[ ! -e /usr/bin/mailnode ]] || fail "/usr/bin/mailnode left after dpkg -r"
[[ -f /etc/default/mailnode ]] || fail "the conffile went on remove (it must stay until purge)"
log "dpkg -P"
dpkg -P mailnode >/dev/null
left=$(leftovers)
[[ -z $left ]] || fail "left after purge: $left"
echo "nothing left"

log "with an inventory: dpkg -i enables the units, dpkg -P keeps the inventory"
install -d -m 0750 /etc/mailnode
cp "$here/../examples/inventory.yaml" /etc/mailnode/inventory.yaml
dpkg -i "$deb" >/dev/null
for u in "${units[@]}"; do enabled "$u" || fail "$u not enabled although the inventory exists"; done
echo "units enabled"
dpkg -P mailnode >/dev/null
[[ -f /etc/mailnode/inventory.yaml ]] || fail "purge removed the administrator's inventory"
[[ ! -e /etc/mailnode/dkim ]] || fail "purge left the empty /etc/mailnode/dkim"
rm -f /etc/mailnode/inventory.yaml
rmdir /etc/mailnode
left=$(leftovers)
[[ -z $left ]] || fail "left after purge: $left"
echo "nothing left"
echo "test-deb: lintian clean, units verified, installed, run, removed and purged twice"
