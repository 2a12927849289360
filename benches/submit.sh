#!/usr/bin/env bash
# Submission benchmark: per-message latency of `sendmail -i USER < 2KB message`, one
# process per message (median of SUBMITS), and the wall time of PARALLEL_TOTAL messages
# from 4 parallel submitters. Runs mailroom from BIN_DIR against a temporary queue
# (`-odq`: only queue, so delivery does not compete), and Postfix's /usr/sbin/sendmail
# side by side when Postfix is installed and running.
#
#   benches/submit.sh [BIN_DIR]      (default target/release; build with cargo build --release)
set -euo pipefail
# shellcheck source=benches/world.sh
source "$(dirname "$0")/world.sh"
BIN=$(cd "${1:-target/release}" && pwd)
SUBMITS=${SUBMITS:-300}; PARALLEL_TOTAL=${PARALLEL_TOTAL:-2000}
world_dir mr-submit
mkdir -p "$T/config"
printf 'myhostname = bench.localdomain\nqueue_directory = %s/queue\n' "$T" > "$T/config/main.cf"
world_message "$T/msg" root

postfix_ok=no
if command -v postconf >/dev/null 2>&1 && postfix status >/dev/null 2>&1; then postfix_ok=yes; fi

python3 - "$BIN" "$T" "$SUBMITS" "$PARALLEL_TOTAL" "$postfix_ok" <<'PY'
import os, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
bin_dir, tmp, submits, total, postfix_ok = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "yes"
msg = open(os.path.join(tmp, "msg"), "rb").read()
env = dict(os.environ, MAIL_CONFIG=os.path.join(tmp, "config"))
mailroom = ([os.path.join(bin_dir, "sendmail"), "-odq", "-i", "root"], env)
postfix = (["/usr/sbin/sendmail", "-i", "root"], dict(os.environ))

def once(cmd):
    t = time.perf_counter()
    subprocess.run(cmd[0], input=msg, env=cmd[1], check=True)
    return time.perf_counter() - t

def latency(cmds):
    samples = {name: [] for name in cmds}
    for _ in range(submits):          # interleaved, so both see the same machine
        for name, cmd in cmds.items():
            samples[name].append(once(cmd))
    return {name: statistics.median(s) * 1000 for name, s in samples.items()}

def parallel(cmd):
    t = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: once(cmd), range(total)))
    return time.perf_counter() - t

cmds = {"mailroom": mailroom}
if postfix_ok:
    cmds["postfix"] = postfix
lat = latency(cmds)
par = {name: parallel(cmd) for name, cmd in cmds.items()}
print(f"{'workload':<42} {'postfix':>10} {'mailroom':>10} {'ratio':>7}")
def row(name, p, m, unit):
    ratio = f"{p / m:7.2f}" if p else "      -"
    ps = f"{p:8.2f}{unit}" if p else "         -"
    print(f"{name:<42} {ps:>10} {m:8.2f}{unit} {ratio}")
row(f"submit latency, median of {submits} (ms)", lat.get("postfix", 0), lat["mailroom"], "")
row(f"{total} msgs, 4 parallel submitters (s)", par.get("postfix", 0), par["mailroom"], "")
rate_p = total / par["postfix"] if "postfix" in par else 0
rate_m = total / par["mailroom"]
print(f"{'  = messages per second':<42} {rate_p:10.1f} {rate_m:10.1f} {(rate_m / rate_p if rate_p else 0):7.2f}")
PY
