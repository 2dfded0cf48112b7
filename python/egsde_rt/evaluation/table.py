"""``format_table``: the result of ``evaluate_folders`` as the text table ``egsde-rt eval`` prints."""

from __future__ import annotations

from typing import Optional

# (result key, label, format, which way is better)
_ROWS = (
    ("fid", "FID", "{:.4f}", "lower"),
    ("kid", "KID", "{:.6f}", "lower"),
    ("l2", "L2", "{:.4f}", "lower"),
    ("psnr", "PSNR (dB)", "{:.4f}", "higher"),
    ("ssim", "SSIM", "{:.4f}", "higher"),
    ("ms_ssim", "MS-SSIM", "{:.4f}", "higher"),
    ("mse", "MSE", "{:.6f}", "lower"),
)


def _value(result: dict, key: str) -> Optional[float]:
    return result.get(key) if key in ("fid", "kid") else result["means"].get(key)


def format_table(result: dict) -> str:
    """Metric, value, better-direction rows, with a header naming the folders and counts."""
    lines = [f"translated: {result['translated']}  ({result['num_pairs']} images)",
             f"source:     {result['source']}"]
    if result.get("num_untranslated_sources"):
        lines[-1] += f"  ({result['num_untranslated_sources']} source images without a translation, not used)"
    if result.get("target") is not None:
        lines.append(f"target:     {result['target']}  ({result['num_target']} images)")
    elif result.get("target_stats") is not None:
        lines.append(f"target:     {result['target_stats']}  (statistics)")
    lines.append("")
    lines.append(f"{'metric':<10} {'value':>12}  better")
    for key, label, fmt, better in _ROWS:
        value = _value(result, key)
        if value is None:
            continue
        note = ""
        if key == "kid" and result.get("kid_std") is not None:
            note = f"  (std {result['kid_std']:.6f} over subsets)"
        lines.append(f"{label:<10} {fmt.format(value):>12}  {better}{note}")
    if result.get("fid") is None:
        lines.append("(FID and KID: give a target folder or target statistics)")
    return "\n".join(lines)
