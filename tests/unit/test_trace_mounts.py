"""mountinfo parsing: escapes, overlay options, lower dir lists."""

from agent.trace.mounts import parse_mountinfo, split_lowerdirs, split_options, unescape

LINE = (
    b"812 700 0:123 / / rw,relatime master:1 - overlay overlay "
    b"rw,lowerdir=/var/lib/c/snapshots/3/fs:/var/lib/c/snapshots/2/fs,"
    b"upperdir=/var/lib/c/snapshots/4/fs,workdir=/var/lib/c/snapshots/4/work,uuid=on\n"
    b"813 812 0:5 /null /dev/null rw,nosuid - devtmpfs udev rw,size=10k\n"
    b"900 28 0:123 / /run/containerd/k8s.io/abc/root\\040fs rw - overlay overlay rw,upperdir=/x\n"
    b"garbage line\n"
)


def test_parse_mountinfo_fields_and_escapes():
    entries = parse_mountinfo(LINE)
    assert len(entries) == 3  # the garbage line is skipped
    root = entries[0]
    assert (root.mount_id, root.parent_id, root.dev, root.root, root.mount_point, root.fstype) == (
        812, 700, "0:123", b"/", b"/", "overlay")
    assert entries[1].mount_point == b"/dev/null" and entries[1].fstype == "devtmpfs"
    assert entries[2].mount_point == b"/run/containerd/k8s.io/abc/root fs"


def test_overlay_options_and_layers():
    opts = split_options(parse_mountinfo(LINE)[0].super_options)
    assert opts[b"upperdir"] == b"/var/lib/c/snapshots/4/fs"
    assert split_lowerdirs(opts[b"lowerdir"]) == [b"/var/lib/c/snapshots/3/fs", b"/var/lib/c/snapshots/2/fs"]


def test_escaped_separators_stay_inside_values():
    assert unescape(b"a\\040b\\134c") == b"a b\\c"
    assert split_options(b"lowerdir=/a\\,b:/c,upperdir=/u") == {b"lowerdir": b"/a,b:/c", b"upperdir": b"/u"}
    assert split_lowerdirs(b"/a\\:b:/c::/data-only") == [b"/a:b", b"/c", b"/data-only"]
