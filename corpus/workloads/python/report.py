"""py-report: renders a report from a YAML spec with jinja2, optionally with a pandas table.

Ready = spec parsed and templates compiled; then it renders, writes and exits 0.
Knobs: FORMAT=md|html, SECTIONS, TABLE=0|1 (pandas summary table), SPEC=yaml|json,
CRASH=0|1 (template syntax error before ready).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import fail_early, flag, knob, mark_ready  # noqa: E402

APP = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    import jinja2

    n = int(knob("SECTIONS", "4"))
    if knob("SPEC", "yaml") == "yaml":
        import yaml

        spec = yaml.safe_load(open(os.path.join(APP, "conf", "report.yaml")))
    else:
        spec = json.load(open(os.path.join(APP, "conf", "report.json")))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(APP, "templates")))
    name = "report.html.j2" if knob("FORMAT", "md") == "html" else "report.md.j2"
    try:
        if flag("CRASH"):
            env.from_string("{% for x in %}")
        tmpl = env.get_template(name)
    except jinja2.TemplateSyntaxError as exc:
        fail_early(f"template error: {exc}")
    table = None
    if flag("TABLE"):
        import pandas as pd

        df = pd.DataFrame({"metric": [s["name"] for s in spec["sections"]],
                           "value": list(range(len(spec["sections"])))})
        table = df.to_html() if name.endswith("html.j2") else df.to_string()
    mark_ready(f"sections={n} template={name}")
    sections = [dict(s, table=table if i == 0 else None) for i, s in
                enumerate((spec["sections"] * 4)[:n])]
    out = tmpl.render(title=spec["title"], sections=sections)
    with open(f"/tmp/report.{knob('FORMAT', 'md')}", "w") as f:
        f.write(out)
    print(f"wrote {len(out)} bytes", flush=True)


if __name__ == "__main__":
    main()
