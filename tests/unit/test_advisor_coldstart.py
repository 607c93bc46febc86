"""advisor.coldstart: exact paths first, then paths that differ only in version numbers."""

from __future__ import annotations

import pandas as pd

from advisor.coldstart import map_paths, version_key


def test_version_key_collapses_versions_not_names():
    assert version_key("/usr/lib/python3.11/os.py") == version_key("/usr/lib/python3.12/os.py")
    assert version_key("/usr/lib/libfoo.so.1.2") == version_key("/usr/lib/libfoo.so.1.3")
    assert version_key("/x/__pycache__/a.cpython-311.pyc") == version_key("/x/__pycache__/a.cpython-312.pyc")
    assert version_key("/usr/lib/pkg/mod3.py") != version_key("/usr/lib/pkg/mod4.py")


def test_map_paths_exact_then_renamed_then_unmapped():
    old = ["/etc/app.conf", "/usr/lib/python3.11/pkg0/mod3.py", "/usr/lib/x86_64-linux-gnu/libx_12.so.2.3", "/gone"]
    new = ["/etc/app.conf", "/usr/lib/python3.12/pkg0/mod3.py", "/usr/lib/python3.12/pkg0/mod4.py",
           "/usr/lib/python3.12/pkg1/mod3.py", "/usr/lib/x86_64-linux-gnu/libx_12.so.2.4",
           "/usr/lib/x86_64-linux-gnu/libx_13.so.2.3"]
    m = map_paths(old, new).set_index("old_path")
    assert m.loc["/etc/app.conf", "how"] == "exact"
    assert m.loc["/usr/lib/python3.11/pkg0/mod3.py", "new_path"] == "/usr/lib/python3.12/pkg0/mod3.py"
    assert m.loc["/usr/lib/x86_64-linux-gnu/libx_12.so.2.3", "new_path"] == "/usr/lib/x86_64-linux-gnu/libx_12.so.2.4"
    assert m.loc["/usr/lib/x86_64-linux-gnu/libx_12.so.2.3", "how"] == "renamed"
    assert m.loc["/gone", "how"] == "unmapped" and pd.isna(m.loc["/gone", "new_path"])


def test_an_exact_match_is_never_taken_by_a_rename():
    m = map_paths(["/usr/lib/libz.so.1.2"], ["/usr/lib/libz.so.1.2", "/usr/lib/libz.so.1.3"])
    assert m["new_path"].tolist() == ["/usr/lib/libz.so.1.2"]
