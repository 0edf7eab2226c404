"""The article's claims, checked against one comparison's numbers (written by the demo)."""

from __future__ import annotations

from dataclasses import dataclass

from edgedetect.quantize.compare import VariantResult


@dataclass(frozen=True, slots=True)
class Claim:
    text: str
    verdict: str  # "holds", "does not hold", or a qualified "partly: ..."
    evidence: str


def check_claims(results: list[VariantResult], eval_images: int) -> list[Claim]:
    r = {x.name: x for x in results}
    need = {"float32", "int8", "int8-per-tensor", "qat"}
    if not need <= r.keys():
        return []
    f, i8, pt, qat = r["float32"], r["int8"], r["int8-per-tensor"], r["qat"]
    one = 100.0 / max(eval_images, 1)  # one eval image, in accuracy points

    def pts(x: float) -> str:
        return f"{x * 100:.2f}%"

    return [
        Claim("int8 is about 4x smaller than float32",
              _size_verdict(i8, pt),
              f"int8 {i8.smaller_than_float:.2f}x, int8-per-tensor {pt.smaller_than_float:.2f}x smaller"),
        Claim("int8 is faster than float32 on this CPU",
              _yes(i8.median_ms < f.median_ms),
              f"median invoke {i8.median_ms:.3f} ms vs {f.median_ms:.3f} ms ({f.median_ms / i8.median_ms:.2f}x)"),
        Claim("full-integer PTQ stays close to float (within 1 point, >= 98% agreement)",
              _yes(abs(i8.accuracy - f.accuracy) * 100 <= 1.0 and i8.agreement >= 0.98),
              f"top-1 {pts(i8.accuracy)} vs {pts(f.accuracy)}, agreement {pts(i8.agreement)}"),
        Claim("QAT is at least as accurate as PTQ (tolerance: one eval image)",
              _yes(qat.accuracy * 100 >= i8.accuracy * 100 - one - 1e-9),
              f"top-1 qat {pts(qat.accuracy)} vs int8 {pts(i8.accuracy)}"),
        Claim("per-tensor scales are worse than per-channel",
              _per_tensor_verdict(pt, i8, one),
              f"top-1 {pts(pt.accuracy)} vs {pts(i8.accuracy)}, mean abs diff to float "
              f"{pt.mean_abs_diff:.5f} vs {i8.mean_abs_diff:.5f}"),
    ]


def _yes(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def _size_verdict(pc: VariantResult, pt: VariantResult) -> str:
    if 3.5 <= pc.smaller_than_float <= 4.5:
        return "holds"
    if 3.5 <= pt.smaller_than_float <= 4.5:
        return "partly: per-tensor is; per-channel scales and zero points cost the rest"
    return "does not hold"


def _per_tensor_verdict(pt: VariantResult, pc: VariantResult, one: float) -> str:
    gap = (pc.accuracy - pt.accuracy) * 100
    if gap > one + 1e-9:
        return "holds"
    if pt.mean_abs_diff > pc.mean_abs_diff:
        return "partly: same top-1 (within one image), larger output error"
    return "does not hold"


def claims_markdown(claims: list[Claim]) -> str:
    lines = ["| claim | on these numbers | evidence |", "|---|---|---|"]
    lines += [f"| {c.text} | {c.verdict} | {c.evidence} |" for c in claims]
    return "\n".join(lines) + "\n"
