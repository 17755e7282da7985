"""`helm lint` and `helm template` for tests/deploy_manifests.rs, without the helm binary.

Helm is not packaged by Debian, PyPI or npm as a binary; PyPI's `helm-python-sdk` ships
Helm's own Go SDK (the code `helm` runs) compiled into a library, with Python bindings.
This script drives it the way the two commands do:

    python3 tests/deploy/helm.py lint CHART_DIR [VALUES_JSON]
        Lints the chart strictly (warnings fail, as `helm lint --strict`) with the values,
        and checks them against values.schema.json. Prints each finding; exit 1 on any
        warning or error.
    python3 tests/deploy/helm.py template CHART_DIR [VALUES_JSON]
        Checks the values against values.schema.json, then renders the chart offline as
        release `ferroserve` in namespace `serving`, printing every manifest as
        `helm template` does (`---`, `# Source: PATH`, the manifest); NOTES.txt is printed
        to stderr. Exit 1 with Helm's error when it refuses the values or a template fails.

VALUES_JSON is the user's values (as `-f` / `--set`), merged over values.yaml by Helm.
"""

import json
import sys

import helm_python as helm


def lint(chart, values):
    report = helm.lint(chart, values, strict=True)
    bad = False
    for message in report.get("messages") or []:
        severity = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}.get(
            message.get("severity"), "UNKNOWN"
        )
        print(f"[{severity}] {message.get('path')}: {message.get('error')}")
        bad = bad or severity in ("WARNING", "ERROR", "UNKNOWN")
    for error in report.get("errors") or []:
        print(f"[ERROR] {error}")
        bad = True
    with helm.Chart.load(chart) as loaded:
        # As `helm install` does before rendering.
        loaded.validate_schema(values)
    print(f"{report.get('total_charts_linted')} chart(s) linted, {'failed' if bad else 'ok'}")
    return 1 if bad else 0


def template(chart, values):
    with helm.Chart.load(chart) as loaded:
        loaded.validate_schema(values)
        manifests = loaded.render(
            values, name="ferroserve", namespace="serving", is_install=True
        )
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt"):
            sys.stderr.write(text)
            continue
        # Skip what renders to nothing (a template switched off), as helm does.
        if not text.strip() or path.rsplit("/", 1)[-1].startswith("_"):
            continue
        sys.stdout.write(f"---\n# Source: {path}\n{text.strip()}\n")
    return 0


def main(argv):
    if len(argv) not in (3, 4) or argv[1] not in ("lint", "template"):
        sys.stderr.write(__doc__)
        return 2
    values = json.loads(argv[3]) if len(argv) == 4 else None
    try:
        return {"lint": lint, "template": template}[argv[1]](argv[2], values)
    except helm.HelmError as error:
        sys.stderr.write(f"Error: {type(error).__name__}: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
