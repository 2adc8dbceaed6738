# Every path kdp reads or writes, given wrongly on the command line: a missing
# directory, an existing file where a directory goes, a directory where a file
# goes, a place no directory can be made. Each is `kdp: error: PATH: reason`
# with exit status 2, never a traceback, and is reported before any work.
import pytest

from .kdp_cli import clean_error, kdp

CLIENT = "pod/default/client"


@pytest.mark.parametrize("args, path, reason", [
    (("topology", "demo", "--svg", "/nonexistent/dir/x.svg"), "/nonexistent/dir/x.svg",
     "/nonexistent/dir does not exist"),
    (("topology", "demo", "--svg", "/tmp"), "/tmp", "is a directory"),
    (("demo", "--out", "/proc/kdp"), "/proc/kdp", "cannot create the directory"),
    (("demo", "--out", "/etc/passwd"), "/etc/passwd", "existing file"),
    (("run", "demo", "--pcap", "PCAP", "--at", CLIENT, "--out", "/etc/passwd"), "/etc/passwd",
     "existing file"),
    (("run", "demo", "--pcap", "PCAP", "--at", CLIENT, "--out", "/proc/kdp/out"), "/proc/kdp/out",
     "cannot create the directory"),
    (("run", "demo", "--pcap", "/nonexistent.pcap", "--at", CLIENT), "/nonexistent.pcap", "no such file"),
    (("run", "demo", "--pcap", "/tmp", "--at", CLIENT), "/tmp", "is a directory"),
    (("trace", "demo", "--from", CLIENT, "--to", "ext/1.1.1.1", "--rules", "/nonexistent.rules"),
     "/nonexistent.rules", "no such file"),
    (("trace", "demo", "--from", CLIENT, "--to", "ext/1.1.1.1", "--rules", "/tmp"), "/tmp",
     "is a directory"),
    (("oracle", "demo", "--keep-pcaps", "/etc/passwd"), "/etc/passwd", "existing file"),
    (("validate", "/nonexistent/cluster.yaml"), "/nonexistent/cluster.yaml", "no such file"),
])
def test_bad_paths_are_one_line_errors_with_status_2(args, path, reason, tmp_path):
    pcap = tmp_path / "in.pcap"
    pcap.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    r = kdp(*[str(pcap) if a == "PCAP" else a for a in args])
    err = clean_error(r)
    assert r.returncode == 2, (r.returncode, err)
    assert err.startswith(f"kdp: error: {path}: ") and reason in err.lower(), err
    assert len(err.strip().splitlines()) == 1


def test_bad_svg_path_is_reported_before_the_cluster_is_even_built(tmp_path):
    # the path check comes first: a broken cluster file is not read at all
    (tmp_path / "broken.yaml").write_text("kind: [\n")
    r = kdp("topology", tmp_path / "broken.yaml", "--svg", tmp_path / "no" / "x.svg")
    assert r.returncode == 2 and "--svg" in clean_error(r)


def test_out_dir_that_does_not_exist_yet_is_created(tmp_path):
    out = tmp_path / "a" / "b"
    r = kdp("demo", "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "traces.json").exists() and any((out / "pcap").iterdir())


def test_a_file_kdp_cannot_write_inside_a_good_out_dir_is_a_clear_error(tmp_path):
    # the directory is fine, but the file kdp writes there is in the way (a directory)
    (tmp_path / "traces.json").mkdir()
    r = kdp("demo", "--out", tmp_path)
    assert r.returncode == 2
    assert clean_error(r).strip().splitlines()[-1] == f"kdp: error: {tmp_path / 'traces.json'}: Is a directory"

