#!/usr/bin/env bash
# GPU check, prepared for a short device session (not CI, not a test). From the repository root of a
# CUDA machine where `python3` holds a CUDA build of PyTorch:
#
#   bash benchmarks/device_check.sh [GRAMMAR] [SECONDS]
#
# 1. smoke: tiny CUDA runs of parity-mlp-small, pcfg-mlm-small (fp32 and bf16) and pcfg-ar-small;
#    each must finish with a report;
# 2. benchmark: step times of pcfg-mlm-paper's teacher and student, fp32 vs bf16 side by side
#    (benchmarks/bench_precision.py), with what the recipe's steps would take at that pace;
# 3. paper: pcfg-mlm-paper on GRAMMAR (cfg3b) in bf16, a TEACHER_STEPS-step teacher (default 4000; the
#    recipe's is 16000) and one student of each method at the 2k-step budget, seed 0, under what is left
#    of SECONDS (default 540). A run stopped by the time limit resumes when the script runs again on
#    the same (still warm) machine.
# Logs, summary.json and report.md are copied to $OUT (or ./device-check) for the README.
# DEVICE (default cuda) and EXTRA (overrides added to stages 2 and 3) let the script be tried on a CPU at
# toy sizes first, e.g. DEVICE=cpu EXTRA="teacher.batch_size=8 students.batch_size=8 task.eval_size=32".
#
# The machine has no network. If `import pydantic` fails there, bring wheels: here, with the versions
# of `pip show pydantic pydantic-core annotated-types typing-inspection`,
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl pydantic==A pydantic-core==B annotated-types==C typing-inspection==D
# and put the grammar in a folder git ignores: mkdir -p .grammars && cp ../shared/grammars/cfg3b.txt .grammars/
# (echo /.whl/ >> .git/info/exclude; echo /.grammars/ >> .git/info/exclude), then carry .whl and .grammars.
set -uo pipefail

GRAMMAR=${1:-.grammars/cfg3b.txt}
BUDGET=${2:-540}
TEACHER_STEPS=${TEACHER_STEPS:-4000}
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA <<< "${EXTRA:-}"
OUT=${OUT:-device-check}
RUNS=runs/device-check
START=$SECONDS
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c "import pydantic" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    else
        echo "pydantic is missing and there is no .whl folder (see the top of this script)"; exit 1
    fi
fi
pd() { python3 -m progdistill "$@"; }

{
    nvidia-smi -L 2>/dev/null
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()
                and torch.cuda.get_device_name(0))"

    echo "== smoke"
    tiny_grammar=(task.eval_size=128 teacher.steps=100 teacher.checkpoint_every=25 'students.steps=[50]'
                  'students.seeds=[0]' probe.nonterminal.steps=20 probe.nonterminal.train_sentences=64
                  probe.nonterminal.test_sentences=32)
    smoke=0
    for p in fp32 bf16; do
        pd run pcfg-mlm-small --out "$RUNS/smoke-mlm-$p" --quiet device=$DEVICE precision=$p "${tiny_grammar[@]}" \
            students.sweep=null probe.ngram.sentences=16 probe.oracle=false || smoke=1
    done
    pd run pcfg-ar-small --out "$RUNS/smoke-ar" --quiet device=$DEVICE precision=bf16 "${tiny_grammar[@]}" || smoke=1
    pd run parity-mlp-small --out "$RUNS/smoke-parity" --quiet device=$DEVICE precision=bf16 teacher.steps=400 \
        teacher.checkpoint_every=100 students.steps=200 'students.seeds=[0]' probe.monomials.samples=4096 \
        'students.methods=[ce, one-shot, progressive, {name: two-shot, checkpoint: 200, switch: 100}, adaptive]' || smoke=1
    echo "smoke: $([ $smoke = 0 ] && echo passed || echo FAILED) ($((SECONDS - START)) s)"

    echo "== benchmark"
    python3 benchmarks/bench_precision.py pcfg-mlm-paper "task.grammar.path=$GRAMMAR" device=$DEVICE "${EXTRA[@]}" \
        --steps 20
    echo "($((SECONDS - START)) s)"

    echo "== paper: pcfg-mlm-paper, teacher $TEACHER_STEPS steps, students at 2000 steps, seed 0, bf16"
    left=$((BUDGET - (SECONDS - START) - 20))
    if [ $left -gt 60 ]; then
        timeout "$left" python3 -m progdistill run pcfg-mlm-paper --out "$RUNS/paper" --quiet \
            "task.grammar.path=$GRAMMAR" precision=bf16 teacher.steps="$TEACHER_STEPS" 'students.steps=[2000]' \
            'students.seeds=[0]' students.sweep=null probe.every=5 device=$DEVICE "${EXTRA[@]}"
        rc=$?
        [ $rc = 124 ] && echo "stopped at the time limit; run the script again to resume" || echo "exit $rc"
    else
        echo "no time left for it"
    fi
    echo "done ($((SECONDS - START)) s)"
} 2>&1 | tee "$OUT/device-check.log"

for f in summary.json report.md teacher_phases.json; do
    [ -f "$RUNS/paper/$f" ] && cp "$RUNS/paper/$f" "$OUT/paper-$f"
done
[ -f "$RUNS/paper/teacher/curve.json" ] && cp "$RUNS/paper/teacher/curve.json" "$OUT/paper-teacher-curve.json"
exit 0
