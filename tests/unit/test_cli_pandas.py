"""The agent daemon refuses pandas, and pyarrow still converts Python lists without it."""

import subprocess
import sys

CODE = """
import sys
from agent.cli import refuse_pandas
refuse_pandas()
refuse_pandas()  # idempotent
import pyarrow as pa
t = pa.Table.from_pydict({"path": ["/a", "/b"], "seq": [0, 1]})  # pyarrow's first look for pandas
assert t.num_rows == 2 and pa.array([1, 2]).to_pylist() == [1, 2]
# The daemon's own reads of its store: a nanosecond timestamp has no Python form without pandas.
import tempfile
from agent.store import TraceStore
from agent.trace import schema
store = TraceStore(tempfile.mkdtemp())
run = {name: None for name in schema.RUNS.names}
run.update({f"flag_{f}": False for f in schema.RUN_FLAGS})
run.update(run_id="r", service="s", image_ref_normalized="docker.io/x/a:1", image_digest="sha256:a",
           started_at=1796380400980283655, window_ns=1, complete=True)
store.write_run(run, [])
print(store.recent_images())
try:
    import pandas  # noqa: F401
except ModuleNotFoundError as e:
    print("refused:", e)
print(sorted(m for m in sys.modules if m.split(".")[0] == "pandas"))
"""


def test_pyarrow_works_and_pandas_stays_out():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[('s', 'docker.io/x/a:1', 'sha256:a')]", "refused: the agent daemon does not load pandas", "[]"]
