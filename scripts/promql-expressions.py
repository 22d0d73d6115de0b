#!/usr/bin/env python3
"""Print every PromQL expression of the eros-mcp dashboard and alert rules.

One expression per line, each a JSON-encoded string, in file order (dashboard
panel targets first, then alerting/recording rules), duplicates dropped.
Grafana variables are replaced so that each line is a plain PromQL query a
real Prometheus can evaluate:

    $__rate_interval, $__interval, $__range (and their ${...} forms) -> 1m
    $instance, ${instance}, ${instance:regex}, [[instance]]        -> .*

The dashboard writes every instance matcher as instance=~"$instance", so the
substitution yields instance=~".*". Any other Grafana variable left in an
expression is an error (exit 1), so a new variable cannot slip through
unsubstituted.

Usage:
    scripts/promql-expressions.py [--dashboard FILE] [--rules FILE] [--with-source]

--with-source prints one JSON object per line instead:
    {"source": "dashboard: panel \"Pool utilization\" A", "expr": "..."}

Only the Python standard library is required: PyYAML is used for the rules
file when installed, otherwise a small reader that understands the `expr:`
forms used there (plain, quoted, and | / > block scalars).
"""

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DASHBOARD = os.path.join(ROOT, "grafana", "dashboards", "eros-mcp.json")
DEFAULT_RULES = os.path.join(ROOT, "grafana", "alerts", "eros-mcp-rules.yaml")

# Values substituted for Grafana's variables.
SUBSTITUTIONS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1m",
    "instance": ".*",
}

# $name, ${name}, ${name:format}, [[name]]
VARIABLE = re.compile(
    r"\$\{(?P<b>[A-Za-z0-9_]+)(?::[^}]*)?\}"
    r"|\[\[(?P<s>[A-Za-z0-9_]+)(?::[^\]]*)?\]\]"
    r"|\$(?P<p>[A-Za-z_][A-Za-z0-9_]*)"
)


class ExtractError(Exception):
    pass


def substitute(expr, source):
    def repl(m):
        name = m.group("b") or m.group("s") or m.group("p")
        if name not in SUBSTITUTIONS:
            raise ExtractError("%s: unknown Grafana variable %r in %r" % (source, m.group(0), expr))
        return SUBSTITUTIONS[name]

    return VARIABLE.sub(repl, expr)


def walk_panels(panels):
    for panel in panels or []:
        yield panel
        # Collapsed rows keep their panels inside the row.
        yield from walk_panels(panel.get("panels"))


def dashboard_expressions(path):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    for panel in walk_panels(dash.get("panels")):
        for target in panel.get("targets") or []:
            expr = (target.get("expr") or "").strip()
            if not expr or target.get("hide"):
                continue
            source = "dashboard: panel %s %s" % (json.dumps(panel.get("title", "")), target.get("refId", "?"))
            yield source, substitute(expr, source)


# ----------------------------------------------------------------- rules file


def _rules_with_pyyaml(text):
    import yaml  # noqa: PLC0415 (optional dependency)

    doc = yaml.safe_load(text) or {}
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record") or "?"
            expr = rule.get("expr")
            if expr is None:
                continue
            yield "rules: %s/%s" % (group.get("name", "?"), name), str(expr).strip()


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _rules_without_pyyaml(text):
    """Enough YAML for `alert:`/`record:` names and `expr:` values."""
    lines = text.splitlines()
    name = "?"
    i = 0
    key = re.compile(r"^(?P<ind>\s*(?:-\s+)?)(?P<key>alert|record|expr):\s*(?P<val>.*)$")
    while i < len(lines):
        m = key.match(lines[i])
        i += 1
        if not m:
            continue
        val = m.group("val")
        if m.group("key") in ("alert", "record"):
            name = val.split(" #")[0].strip().strip("'\"")
            continue
        key_indent = len(m.group("ind"))
        if val[:1] in ("|", ">"):
            block = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > key_indent):
                block.append(lines[i])
                i += 1
            if val[0] == "|":
                common = min((_indent(ln) for ln in block if ln.strip()), default=0)
                expr = "\n".join(ln[common:].rstrip() for ln in block)
            else:
                expr = " ".join(ln.strip() for ln in block if ln.strip())
        elif val[:1] == '"':
            expr = json.loads(val[: val.rindex('"') + 1])
        elif val[:1] == "'":
            expr = val[1: val.rindex("'")].replace("''", "'")
        else:
            parts = [val.split(" #")[0].strip()]
            # A plain scalar may continue on more-indented lines.
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > key_indent \
                    and not key.match(lines[i]) and not lines[i].strip().startswith("#"):
                parts.append(lines[i].split(" #")[0].strip())
                i += 1
            expr = " ".join(p for p in parts if p)
        yield "rules: %s" % name, expr.strip()


def rules_expressions(path, use_yaml=True):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if use_yaml:
        try:
            import yaml  # noqa: F401, PLC0415
        except ImportError:
            use_yaml = False
    reader = _rules_with_pyyaml if use_yaml else _rules_without_pyyaml
    for source, expr in reader(text):
        # Rules have no Grafana variables; substitute anyway so a stray one is
        # reported rather than sent to Prometheus.
        yield source, substitute(expr, source)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard", default=DEFAULT_DASHBOARD)
    ap.add_argument("--rules", default=DEFAULT_RULES)
    ap.add_argument("--with-source", action="store_true",
                    help="print {\"source\", \"expr\"} objects instead of bare strings")
    ap.add_argument("--no-yaml", action="store_true",
                    help="read the rules without PyYAML even when it is installed (tests the fallback)")
    args = ap.parse_args(argv)

    try:
        found = list(dashboard_expressions(args.dashboard))
        found += list(rules_expressions(args.rules, use_yaml=not args.no_yaml))
    except (OSError, ValueError, ExtractError) as e:
        print("promql-expressions: %s" % e, file=sys.stderr)
        return 1
    if not found:
        print("promql-expressions: no expressions found", file=sys.stderr)
        return 1

    seen = set()
    for source, expr in found:
        if expr in seen:
            continue
        seen.add(expr)
        if args.with_source:
            print(json.dumps({"source": source, "expr": expr}))
        else:
            print(json.dumps(expr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
