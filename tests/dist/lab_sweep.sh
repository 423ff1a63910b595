#!/usr/bin/env bash
# xgrad-lab lr-sweep across MPI ranks (CTest: lab_sweep_mpi). Checks, on a --tiny sweep of 16 cells:
#   1. 2 ranks write the same metrics.csv, byte for byte, as one process;
#   2. a restart of a finished sweep (3 ranks) skips every cell and writes the same bytes again;
#   3. a rank killed (SIGKILL) half-way ends the job without a report, leaving the finished cells;
#   4. the restart finishes the rest and its metrics.csv is again the one-process one;
#   5. the same after Ctrl-C (SIGINT to mpirun, which stops the ranks): a message says how to continue.
#   usage: lab_sweep.sh <mpirun> <xgrad-lab> <work folder>
set -euo pipefail
MPIRUN=$1 LAB=$2 W=$3
mpi() { "$MPIRUN" --allow-run-as-root --oversubscribe "$@"; }
rm -rf "$W" && mkdir -p "$W"
sweep=(lr-sweep --tiny --models mlp --lrs 0.1,1,3,30 --seeds 2)
ncells=16  # 4 learning rates x 2 arms x 2 seeds

echo "== one process"
"$LAB" "${sweep[@]}" --out "$W/one" 2> "$W/one.log"
echo "== 2 ranks"
mpi -np 2 "$LAB" "${sweep[@]}" --out "$W/two" 2> "$W/two.log"
cmp "$W/one/metrics.csv" "$W/two/metrics.csv"
test -s "$W/two/report.md"
test "$(ls "$W/two/cells/lr-sweep" | wc -l)" -eq "$ncells"
echo "== restart with 3 ranks: every cell recorded"
mpi -np 3 "$LAB" "${sweep[@]}" --out "$W/two" 2> "$W/again.log"
grep -q "$ncells cell(s) over 3 rank(s), $ncells recorded before and skipped" "$W/again.log"
cmp "$W/one/metrics.csv" "$W/two/metrics.csv"

echo "== a rank killed half-way"
long=(--mlp-steps 1500)
"$LAB" "${sweep[@]}" "${long[@]}" --out "$W/one-long" 2> "$W/one-long.log"
mpi -np 2 "$LAB" "${sweep[@]}" "${long[@]}" --out "$W/kill" 2> "$W/kill.log" &
job=$!
for _ in $(seq 600); do  # until 3 cells are on disk (at most 60 s)
  n=$(ls "$W/kill/cells/lr-sweep" 2> /dev/null | grep -c '\.cell$' || true)
  [ "$n" -ge 3 ] && break
  sleep 0.1
done
descendants() { for c in $(pgrep -P "$1" || true); do echo "$c"; descendants "$c"; done; }
victim=""  # the last xgrad-lab process below the job started above: one of its ranks
for p in $(descendants "$job"); do
  [ "$(cat "/proc/$p/comm" 2> /dev/null)" = xgrad-lab ] && victim=$p
done
[ -n "$victim" ] || { echo "FAIL: no rank found below job $job"; exit 1; }
echo "killing rank process $victim"
kill -9 "$victim"
if wait "$job"; then echo "FAIL: the job survived a killed rank"; exit 1; fi
test ! -e "$W/kill/report.md"
test ! -e "$W/kill/metrics.csv"
done_cells=$(ls "$W/kill/cells/lr-sweep" | grep -c '\.cell$')
echo "cells finished before the kill: $done_cells of $ncells"
test "$done_cells" -lt "$ncells"
echo "== resume"
mpi -np 2 "$LAB" "${sweep[@]}" "${long[@]}" --out "$W/kill" 2> "$W/resume.log"
grep -q "recorded before and skipped" "$W/resume.log"
cmp "$W/one-long/metrics.csv" "$W/kill/metrics.csv"
echo "== Ctrl-C on mpirun half-way"
( exec "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 "$LAB" "${sweep[@]}" "${long[@]}" --out "$W/int" ) \
  2> "$W/int.log" &
job=$!  # mpirun itself
for _ in $(seq 600); do
  n=$(ls "$W/int/cells/lr-sweep" 2> /dev/null | grep -c '\.cell$' || true)
  [ "$n" -ge 3 ] && break
  sleep 0.1
done
kill -INT "$job"
if wait "$job"; then echo "FAIL: the job survived Ctrl-C"; exit 1; fi
test ! -e "$W/int/report.md"
test ! -e "$W/int/metrics.csv"
grep -q "continue by running the same mpirun command again" "$W/int.log" \
  || { echo "FAIL: no message saying how to continue:"; tail -5 "$W/int.log"; exit 1; }
echo "cells finished before Ctrl-C: $(ls "$W/int/cells/lr-sweep" | grep -c '\.cell$') of $ncells"
mpi -np 2 "$LAB" "${sweep[@]}" "${long[@]}" --out "$W/int" 2> "$W/int-resume.log"
grep -q "recorded before and skipped" "$W/int-resume.log"
cmp "$W/one-long/metrics.csv" "$W/int/metrics.csv"
echo "lab_sweep.sh: all passed"
