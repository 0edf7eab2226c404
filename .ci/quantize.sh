#!/usr/bin/env bash
# Quantization toolkit (issue 7): install the optional extra into the project's venv, run the
# offline demonstration (digits -> MobileNetV2 -> six variants -> comparison) and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
if ! "$PY" -c "import edgedetect, tensorflow, tf_keras, tensorflow_model_optimization, sklearn, matplotlib, pytest" \
        >/dev/null 2>&1; then
    echo "quantize: installing edgedetect[quantize,test] into $VENV"
    "$PY" -m pip install -q -e '.[quantize,test]'
fi

OUT=${QUANTIZE_DEMO_OUT:-$(mktemp -d)/quantize-demo}
echo "quantize: demonstration into $OUT"
start=$(date +%s)
"$PY" -m edgedetect.quantize.demo "$OUT"
echo "quantize: demonstration took $(( $(date +%s) - start ))s"
for v in float32 dynamic float16 int8 int8-per-tensor qat; do
    test -s "$OUT/models/$v.tflite" || { echo "quantize: $v.tflite missing" >&2; exit 1; }
done
test -s "$OUT/models/comparison.md"

"$PY" -m pytest -q -p no:cacheprovider tests/test_quantize.py
