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


def test_moved_files_follow_a_package_reorganisation():
    old = ["/usr/lib/python3/dist-packages/numpy/core/__pycache__/fromnumeric.cpython-311.pyc",
           "/usr/lib/python3/dist-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
           "/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so"]
    new = ["/usr/lib/python3/dist-packages/numpy/_core/__pycache__/fromnumeric.cpython-313.pyc",
           "/usr/lib/python3/dist-packages/numpy/_core/_multiarray_umath.cpython-313-x86_64-linux-gnu.so",
           "/usr/share/other/_json.cpython-313-x86_64-linux-gnu.so"]
    m = map_paths(old, new).set_index("old_path")
    assert m.iloc[0]["new_path"] == new[0] and m.iloc[0]["how"] == "moved"
    assert m.iloc[1]["new_path"] == new[1] and m.iloc[1]["how"] == "moved"
    # Same name, but only "/usr" in common: not the same file.
    assert m.iloc[2]["how"] == "unmapped"


def test_ambiguous_move_is_left_unmapped():
    old = ["/usr/lib/python3/dist-packages/pkg/a/x.py"]
    new = ["/usr/lib/python3/dist-packages/pkg/b/x.py", "/usr/lib/python3/dist-packages/pkg/c/x.py"]
    assert map_paths(old, new)["how"].tolist() == ["unmapped"]
