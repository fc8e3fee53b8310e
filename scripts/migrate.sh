#!/usr/bin/env bash
#
# migrate.sh - move one file to another file server and switch the proxy to it.
#
#   scripts/migrate.sh --name NAME --from SRC_FOLDER --to DEST \
#       --backend HOST:PORT --routes routes.json --pidfile proxy.pid
#
# Copies SRC_FOLDER/NAME to DEST with rsync (DEST is any rsync destination:
# a local folder, host:folder, rsync://host/module/folder, host::module/folder),
# recreating NAME's sub-folders there; checks the copy against the source by
# checksum; points NAME at HOST:PORT in the routes file (rewritten atomically,
# the other routes kept as they are); then sends SIGHUP to the proxy whose pid
# is in the pidfile so that it re-reads its routes.
#
# Steps, in order.  Each one either succeeds, printing one line on stdout, or
# stops the script with its own exit code and one line on stderr.  Whatever
# step fails, the routes file is left untouched (it is only replaced, in one
# rename, by step 6 itself):
#
#   1. arguments parsed and checked, rsync and python3 found
#   2. SRC_FOLDER/NAME exists and is a regular file
#   3. the pidfile names a live process (checked before anything is copied)
#   4. rsync copy
#   5. checksum comparison of the copy against the source
#   6. routes file rewritten (temporary file in its folder, fsync, rename)
#   7. SIGHUP sent to the proxy
#
# Exit codes:
#   0  success: copied, verified, routes updated, proxy signalled
#   2  usage error: unknown or missing option, option without a value,
#      option given twice, stray argument, bad NAME (must be a relative path
#      with no empty, '.' or '..' component, no whitespace or control
#      characters, valid UTF-8) or bad --backend (host:port or [v6addr]:port,
#      port 1-65535)
#   3  the source is missing or is not a regular file (symlinks are refused)
#   4  the pidfile is missing or unreadable, does not hold a pid, or that
#      process is not alive (or cannot be signalled by this user)
#   5  the rsync copy failed
#   6  the copy does not match the source (or the check itself failed)
#   7  the routes file cannot be read, is not JSON, is not a JSON object, or
#      cannot be rewritten; it is left as it was
#   8  sending SIGHUP to the proxy failed (the routes file is already updated;
#      the proxy picks it up on its next SIGHUP or backend error)
#   9  a required program (rsync, python3) is not installed
#   1  any other, unexpected failure
#
# Notes:
#   - DEST's parent must exist; rsync creates only the last folder of DEST
#     and NAME's sub-folders inside it.
#   - As with rsync itself, a local DEST containing ':' before any '/' is read
#     as a remote destination; write it as ./name:with:colon to avoid that.

set -euo pipefail

# The repository this script belongs to, for the routes rules in reloc/.
script_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

readonly PROG=migrate.sh

readonly EXIT_USAGE=2
readonly EXIT_SOURCE=3
readonly EXIT_PIDFILE=4
readonly EXIT_COPY=5
readonly EXIT_VERIFY=6
readonly EXIT_ROUTES=7
readonly EXIT_SIGNAL=8
readonly EXIT_MISSING_TOOL=9

usage() {
    cat <<'EOF'
usage: migrate.sh --name NAME --from SRC_FOLDER --to DEST --backend HOST:PORT
                  --routes ROUTES_JSON --pidfile PIDFILE

Copy SRC_FOLDER/NAME to DEST with rsync, check the copy by checksum, route
NAME to HOST:PORT in ROUTES_JSON (atomic rewrite) and send SIGHUP to the
proxy whose pid is in PIDFILE.

  --name NAME         file to move, relative to SRC_FOLDER (may hold sub-folders)
  --from SRC_FOLDER   local folder that holds NAME now
  --to DEST           rsync destination folder: /local/folder, host:folder,
                      rsync://host/module/folder
  --backend HOST:PORT file server that serves DEST ([v6addr]:port for IPv6)
  --routes FILE       the proxy's routes file (a JSON object)
  --pidfile FILE      the proxy's pidfile
  -h, --help          show this help and exit

Exit codes: 0 ok, 2 usage, 3 source, 4 pidfile, 5 copy, 6 verify,
7 routes file, 8 signal, 9 rsync or python3 missing.
EOF
}

# die CODE MESSAGE: one line on stderr, then exit with CODE.
die() {
    local code=$1
    shift
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit "$code"
}

# oneline TEXT: TEXT's non-empty lines joined with " | ", for error messages.
oneline() {
    local line out=""
    while IFS= read -r line || [[ -n $line ]]; do
        [[ -n ${line//[[:space:]]/} ]] || continue
        out+="${out:+ | }$line"
    done <<<"$1"
    printf '%s' "$out"
}

# ---------------------------------------------------------------------------
# Step 1: arguments and tools.

name="" src="" dest="" backend="" routes="" pidfile=""
seen=" "

while (($# > 0)); do
    opt=$1
    case $opt in
    -h | --help)
        usage
        exit 0
        ;;
    --name | --from | --to | --backend | --routes | --pidfile)
        (($# >= 2)) || die "$EXIT_USAGE" "option $opt needs a value (see --help)"
        value=$2
        shift 2
        ;;
    --name=* | --from=* | --to=* | --backend=* | --routes=* | --pidfile=*)
        value=${opt#*=}
        opt=${opt%%=*}
        shift
        ;;
    --)
        shift
        (($# == 0)) || die "$EXIT_USAGE" "unexpected argument: $1 (see --help)"
        break
        ;;
    -*)
        die "$EXIT_USAGE" "unknown option: $opt (see --help)"
        ;;
    *)
        die "$EXIT_USAGE" "unexpected argument: $opt (see --help)"
        ;;
    esac
    [[ $seen != *" $opt "* ]] || die "$EXIT_USAGE" "option $opt given twice"
    seen+="$opt "
    case $opt in
    --name) name=$value ;;
    --from) src=$value ;;
    --to) dest=$value ;;
    --backend) backend=$value ;;
    --routes) routes=$value ;;
    --pidfile) pidfile=$value ;;
    esac
done

for opt in --name --from --to --backend --routes --pidfile; do
    [[ $seen == *" $opt "* ]] || die "$EXIT_USAGE" "missing option $opt (see --help)"
done
[[ -n $src ]] || die "$EXIT_USAGE" "--from is empty"
[[ -n $dest ]] || die "$EXIT_USAGE" "--to is empty"
[[ -n $routes ]] || die "$EXIT_USAGE" "--routes is empty"
[[ -n $pidfile ]] || die "$EXIT_USAGE" "--pidfile is empty"

for tool in rsync python3; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$EXIT_MISSING_TOOL" "$tool is not installed"
done

# NAME: the same rules the file server and the proxy apply to names.
[[ -n $name ]] || die "$EXIT_USAGE" "--name is empty"
[[ $name != /* ]] || die "$EXIT_USAGE" "--name must be a relative path: $name"
if [[ $name =~ [[:space:][:cntrl:]] ]]; then
    die "$EXIT_USAGE" "--name holds whitespace or control characters"
fi
IFS=/ read -r -a parts <<<"$name"
[[ $name != */ ]] || die "$EXIT_USAGE" "--name has an empty component: $name"
for part in "${parts[@]}"; do
    case $part in
    "" | . | ..) die "$EXIT_USAGE" "--name has an empty, . or .. component: $name" ;;
    esac
done
if ! python3 - "$name" <<'EOF' 2>/dev/null; then
import os
import sys

name = os.fsencode(sys.argv[1]).decode("utf-8")
for char in name:
    if char.isspace() or ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
        sys.exit(1)
EOF
    die "$EXIT_USAGE" "--name is not valid UTF-8 or holds whitespace/control characters"
fi

# BACKEND: host:port or [v6addr]:port, port 1-65535, as in reloc/routes.py.
v6_form='^\[([^]]*)\]:([^:]*)$'
host_form='^([^]:/[[:space:][:cntrl:]]+):([^:]*)$'
if [[ $backend =~ $v6_form ]]; then
    host=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[2]}
    if ! python3 -c 'import ipaddress, sys; ipaddress.IPv6Address(sys.argv[1])' \
        "$host" 2>/dev/null; then
        die "$EXIT_USAGE" "--backend: not an IPv6 address: $host"
    fi
elif [[ $backend =~ $host_form ]]; then
    host=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[2]}
else
    die "$EXIT_USAGE" "--backend must be host:port or [v6addr]:port: $backend"
fi
if [[ ! $port =~ ^0*([0-9]{1,5})$ ]] || ((10#${BASH_REMATCH[1]} < 1)) ||
    ((10#${BASH_REMATCH[1]} > 65535)); then
    die "$EXIT_USAGE" "--backend: port must be 1-65535: $port"
fi

# rsync reads a destination without a trailing slash as a file name when a
# single file is sent; with one, it is always the folder to copy into.  An
# empty remote path ("host:") means the remote home folder and stays as is.
case $dest in
*/ | *:) ;;
*) dest+=/ ;;
esac

echo "arguments ok: $name from $src to $dest, route to $backend"

# ---------------------------------------------------------------------------
# Step 2: the source.

[[ -d $src ]] || die "$EXIT_SOURCE" "source folder not found: $src"
# An absolute, normalised folder: rsync --relative splits the source path at
# its first "/./", so SRC itself must not contain one.
src=$(CDPATH='' cd -P -- "$src" && pwd) ||
    die "$EXIT_SOURCE" "cannot enter source folder: $src"
source_file=$src/$name
if [[ -L $source_file || ! -f $source_file ]]; then
    die "$EXIT_SOURCE" "source is missing or not a regular file: $source_file"
fi
[[ -r $source_file ]] || die "$EXIT_SOURCE" "source is not readable: $source_file"
echo "source ok: $source_file ($(wc -c <"$source_file" | tr -d ' ') bytes)"

# ---------------------------------------------------------------------------
# Step 3: the proxy must be alive before anything is copied.

[[ -f $pidfile && -r $pidfile ]] || die "$EXIT_PIDFILE" "cannot read pidfile: $pidfile"
pid=$(head -c 64 -- "$pidfile" | tr -d '[:space:]') ||
    die "$EXIT_PIDFILE" "cannot read pidfile: $pidfile"
if [[ ! $pid =~ ^[0-9]{1,10}$ ]] || ((10#$pid < 2)); then
    die "$EXIT_PIDFILE" "pidfile does not hold a pid: $pidfile"
fi
pid=$((10#$pid))
kill -0 "$pid" 2>/dev/null ||
    die "$EXIT_PIDFILE" "process $pid (from $pidfile) is not alive or cannot be signalled"
# A mixed-up pidfile naming a file server would make the move a silent no-op.
if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' </proc/"$pid"/cmdline | grep -qw relocfs; then
    die "$EXIT_PIDFILE" "process $pid (from $pidfile) is a relocfs file server, not the proxy"
fi
echo "proxy ok: pid $pid is alive"

# ---------------------------------------------------------------------------
# Step 4: copy.
#
# "SRC/./NAME" with --relative recreates NAME's sub-folders under DEST.
# --checksum compares by content rather than size and mtime, so that a stale
# copy with the same size and mtime is replaced rather than kept.
#
# rsync's default is kept on purpose: it writes into a hidden temporary file
# (.NAME.XXXXXX) beside the target and renames it into place only once the
# whole file has arrived, so a file server never serves a half-copied file
# under the real name.  Never add --inplace, --append or --partial here.
rsync_opts=(--archive --relative --checksum)

if ! copy_err=$(rsync "${rsync_opts[@]}" -- "$src/./$name" "$dest" \
    2>&1 >/dev/null); then
    die "$EXIT_COPY" "rsync copy to $dest failed: $(oneline "$copy_err")"
fi
echo "copied: $name to $dest"

# ---------------------------------------------------------------------------
# Step 5: verify.  A dry run with --checksum lists every file whose contents
# differ (or that is missing) at the destination; with --itemize-changes each
# such line reads "YXcstpoguax NAME", X being "f" for a file.  Y "." means only
# attributes (owner, group, permissions) differ, which is not a content
# mismatch; anything else (">", "<", "c", "h") means the file would be sent
# again, so the copy is not identical.  Only one file is in the transfer, so
# any such file line is about NAME: the line is not matched against NAME,
# which rsync escapes ("\#303\#251") when the locale is not UTF-8.  Lines for
# NAME's parent folders ("d"), "created directory" notes and daemon greetings
# are ignored.
verify_err_file=$(mktemp)
trap 'rm -f -- "$verify_err_file"' EXIT
if ! listing=$(rsync "${rsync_opts[@]}" --dry-run --itemize-changes \
    -- "$src/./$name" "$dest" 2>"$verify_err_file"); then
    die "$EXIT_VERIFY" "checksum check against $dest failed:" \
        "$(oneline "$(cat -- "$verify_err_file")")"
fi
file_changed='^[^.]f[^[:space:]]{9} '
while IFS= read -r line; do
    if [[ $line =~ $file_changed ]]; then
        die "$EXIT_VERIFY" "copy at $dest differs from the source: $line"
    fi
done <<<"$listing"
echo "verified: $name at $dest matches the source by checksum"

# ---------------------------------------------------------------------------
# Step 6: routes.  Values reach Python through argv only.  The new table is
# written to a temporary file in the routes file's own folder (so the rename
# stays on one file system), fsynced, given the old file's permissions and
# renamed over the old file; the folder is fsynced afterwards.  A symlinked
# routes file is followed: its target is replaced and the link kept.
# The new table is checked with the proxy's own rules (reloc.routes, found
# beside this script), so that a table the proxy would refuse on SIGHUP is
# never written.
if ! routes_err=$(PYTHONPATH="$script_root${PYTHONPATH:+:$PYTHONPATH}" \
    python3 - "$routes" "$name" "$backend" 2>&1 <<'EOF'
import json
import os
import sys
import tempfile

from reloc.routes import RoutesError, parseRoutes

path, name, backend = sys.argv[1:4]


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


real = os.path.realpath(path)
try:
    with open(real, "rb") as f:
        raw = f.read()
    mode = os.stat(real).st_mode & 0o7777
except OSError as e:
    fail(f"cannot read {path}: {e.strerror}")
try:
    table = json.loads(raw.decode("utf-8"))
except (UnicodeDecodeError, ValueError, RecursionError) as e:
    fail(f"{path} is not JSON: {e}")
if not isinstance(table, dict):
    fail(f"{path} is not a JSON object")
table[name] = backend
try:
    parseRoutes(json.dumps(table).encode("utf-8"))
except RoutesError as e:
    fail(f"the proxy would refuse the new table: {e}")

folder, base = os.path.split(real)
try:
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
except OSError as e:
    fail(f"cannot create a temporary file in {folder}: {e.strerror}")
try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())
    os.replace(tmp, real)
except OSError as e:
    try:
        os.unlink(tmp)
    except OSError:
        pass
    fail(f"cannot rewrite {path}: {e.strerror}")
try:
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
except OSError:
    pass  # The rename is done; a folder fsync is a best effort.
EOF
); then
    die "$EXIT_ROUTES" "routes not updated: $(oneline "$routes_err")"
fi
echo "routes updated: $name -> $backend in $routes"

# ---------------------------------------------------------------------------
# Step 7: tell the proxy.
if ! kill -HUP "$pid" 2>/dev/null; then
    die "$EXIT_SIGNAL" "cannot send SIGHUP to pid $pid (routes already updated)"
fi
echo "proxy signalled: SIGHUP sent to pid $pid"
