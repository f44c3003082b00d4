"""Human text for ``modeldepot identify --explain``: the verdict, each field's reason, every rule tried."""

from __future__ import annotations

from modeldepot.identify._result import Identification


def _value(v: object) -> str:
    return "-" if v is None else str(getattr(v, "value", v))


def explain(ident: Identification) -> str:
    """Multi-line explanation of ``ident``: verdict, reasons per field, and why other rules lost."""
    lines = [
        f"Verdict: {_value(ident.type)} / {_value(ident.format)} / base {_value(ident.base)}"
        f"  (confidence {ident.confidence:.2f})",
        f"  compatible bases: {', '.join(sorted(_value(b) for b in ident.compatible_bases)) or '-'}",
        f"  variant: {_value(ident.variant)}   prediction type: {_value(ident.prediction_type)}"
        f"   repo variant: {_value(ident.repo_variant)}",
    ]
    if ident.submodels:
        parts = ", ".join(f"{_value(k)}={v}" for k, v in sorted(ident.submodels.items(), key=lambda kv: kv[0].value))
        lines.append(f"  submodels: {parts}")
    if ident.overridden:
        lines.append(f"  set by user: {', '.join(sorted(ident.overridden))}")
    details = {k: v for k, v in sorted(ident.extra.items()) if not isinstance(v, dict)}  # dicts: see --json
    if details:
        lines.append("  details: " + ", ".join(f"{k}={_value(v)}" for k, v in details.items()))
    lines.append("Why:")
    lines += [f"  - {r}" for r in ident.reasons] or ["  - (no reasons recorded)"]
    if ident.candidates:
        lines.append("Rules tried (in priority order):")
        for c in ident.candidates:
            if c.rule == "declared_metadata":
                mark, status = "#", "declared in metadata" if c.matched else "nothing usable declared"
            elif c.matched and c.lost_to is None:
                mark, status = "*", "WON"
            elif c.matched:
                mark, status = "+", f"matched, lost to {c.lost_to}"
            else:
                mark, status = "-", "no match"
            what = " / ".join(_value(x) for x in (c.type, c.format, c.base)) if c.matched else ""
            lines.append(f"  {mark} {c.rule}: {status}{'  -> ' + what if what else ''}")
            lines += [f"      {r}" for r in c.reasons]
    return "\n".join(lines)
