#!/usr/bin/env bash
# xgrad-lab all across MPI ranks (CTest: lab_all_mpi). Checks, on `all --tiny` (every experiment):
#   1. 2 ranks write the same metrics.csv, byte for byte, as one process, and every experiment was spread
#      (rank 1 ran cells of each one);
#   2. 3 ranks: the same bytes again;
#   3. a rank that fails (here rank 1 cannot record its cell: a folder stands where the cell file goes) ends the
#      job with a message naming the rank and the file, and no report.md / metrics.csv / summary.json is written;
#   4. once the cause is removed, the same command resumes (the cells rank 0 finished are skipped) and its
#      metrics.csv is again the one-process one.
#   usage: lab_all.sh <mpirun> <xgrad-lab> <work folder>
set -euo pipefail
MPIRUN=$1 LAB=$2 W=$3
mpi() { "$MPIRUN" --allow-run-as-root --oversubscribe "$@"; }
rm -rf "$W" && mkdir -p "$W"
run=(all --tiny --seed 3)
experiments=(convergence lr-sweep noisy-bn landscape ics dln lp-norm batch-size inference regularisation)

echo "== one process"
"$LAB" "${run[@]}" --out "$W/one" 2> "$W/one.log"
echo "== 2 ranks"
mpi -np 2 "$LAB" "${run[@]}" --out "$W/two" 2> "$W/two.log"
cmp "$W/one/metrics.csv" "$W/two/metrics.csv"
test -s "$W/two/report.md"
for ex in "${experiments[@]}"; do
  n=$(sed -n "s/^xgrad-lab: rank 1 of 2: \([0-9]*\) $ex cell(s) run, sent to rank 0$/\1/p" "$W/two.log")
  if [ -z "$n" ] || [ "$n" -lt 1 ]; then
    echo "FAIL: rank 1 ran no cell of $ex (${n:-no line}); its log:"
    grep "rank 1 of 2" "$W/two.log" || true
    exit 1
  fi
  echo "$ex: rank 1 ran $n cell(s)"
done
echo "== 3 ranks"
mpi -np 3 "$LAB" "${run[@]}" --out "$W/three" 2> "$W/three.log"
cmp "$W/one/metrics.csv" "$W/three/metrics.csv"

echo "== rank 1 fails"
# The convergence experiment has two cells (plain, bn; one seed in --tiny): the second, bn, is rank 1's. Cell
# files are named by their key, which does not contain --out: take the name from the 2-rank run.
test ! -e "$W/one/cells"  # one process records no cells (it resumes from checkpoints: --resume)
cell=$(grep -l "^key convergence mlp-sigmoid sgd bn " "$W/two/cells/convergence/"*.cell)
mkdir -p "$W/fail/cells/convergence/$(basename "$cell")"
if mpi -np 2 "$LAB" "${run[@]}" --out "$W/fail" 2> "$W/fail.log"; then
  echo "FAIL: the job succeeded although rank 1 could not write its cell"
  exit 1
fi
grep -q "xgrad-lab: error on rank 1 of 2: .*$(basename "$cell").*Is a directory" "$W/fail.log" \
  || { echo "FAIL: no clear message naming rank 1 and the file:"; cat "$W/fail.log"; exit 1; }
grep -q "no report was written" "$W/fail.log"
for f in report.md metrics.csv summary.json; do
  test ! -e "$W/fail/$f" || { echo "FAIL: $f written by a failed job"; exit 1; }
done
echo "== the cause removed: the same command resumes"
rmdir "$W/fail/cells/convergence/$(basename "$cell")"
mpi -np 2 "$LAB" "${run[@]}" --out "$W/fail" 2> "$W/resume.log"
grep -q "convergence: 2 cell(s) over 2 rank(s), 1 recorded before and skipped" "$W/resume.log" \
  || { echo "FAIL: rank 0's finished cell was not skipped:"; grep "recorded before" "$W/resume.log"; exit 1; }
cmp "$W/one/metrics.csv" "$W/fail/metrics.csv"
echo "lab_all.sh: all passed"
