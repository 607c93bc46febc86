"""py-report: renders a report from a YAML spec with jinja2, optionally with a pandas table.

Ready = spec parsed and templates compiled; then it renders, writes and exits 0.
Knobs: FORMAT=md|html, SECTIONS, TABLE=0|1 (pandas summary table), SPEC=yaml|json,
RECIPIENTS (personalised copies rendered after ready), DELIVERY=tar|zip|dir (how copies are packed),
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
    ext = knob("FORMAT", "md")
    with open(f"/tmp/report.{ext}", "w") as f:
        f.write(out)
    # The job's main work: a personalised copy per recipient, compressed and packed for delivery.
    import gzip
    import hashlib

    os.makedirs("/tmp/out", exist_ok=True)
    manifest = []
    for i in range(int(knob("RECIPIENTS", "20"))):
        body = tmpl.render(title=f"{spec['title']} for team {i}", sections=sections).encode() * 200
        path = f"/tmp/out/report-{i:03d}.{ext}.gz"
        with open(path, "wb") as f:
            f.write(gzip.compress(body, compresslevel=9))
        manifest.append(f"{hashlib.sha256(body).hexdigest()}  {os.path.basename(path)}")
    with open("/tmp/out/SHA256SUMS", "w") as f:
        f.write("\n".join(manifest) + "\n")
    delivery = knob("DELIVERY", "dir")
    if delivery == "tar":
        import tarfile

        with tarfile.open("/tmp/reports.tar", "w") as tar:
            tar.add("/tmp/out", arcname="reports")
    elif delivery == "zip":
        import zipfile

        with zipfile.ZipFile("/tmp/reports.zip", "w") as z:
            for name in sorted(os.listdir("/tmp/out")):
                z.write(os.path.join("/tmp/out", name), name)
    print(f"wrote {len(out)} bytes and {len(manifest)} copies ({delivery})", flush=True)


if __name__ == "__main__":
    main()
