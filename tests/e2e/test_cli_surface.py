"""The command line as scripts and CI use it: usage errors are exit 2 without a traceback, outputs land
where the command says, stdout carries only results."""
import pytest

from cosface.cli import main
from test_eval_cli import write_checkpoint


@pytest.mark.parametrize("argv", [
    ["verify", "--model", "{ckpt}", "a.jpg", "b.jpg"],
    ["embed", "--model", "{ckpt}", "a.jpg", "-o", "e.npy"],
    ["eval", "--ckpt", "{ckpt}", "--lfw", "lfw"],
    ["infer", "--model", "m.onnx", "--lfw", "lfw"],
    ["compare", "{ckpt}", "{ckpt}", "--suite", "suite"],
    ["gallery", "identify", "--db", "g.sqlite", "--model", "{ckpt}", "a.jpg"],
    ["serve", "--model", "{ckpt}"],
], ids=lambda a: a[0] if a[0] != "gallery" else "gallery-identify")
def test_a_bad_device_is_a_usage_error(argv, tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "c.pt")
    with pytest.raises(SystemExit) as e:
        main([a.format(ckpt=ckpt) for a in argv] + ["--device", "gpu0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].endswith("argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu0'"), err


def test_plots_land_under_the_name_given(tmp_path, capsys):
    """matplotlib adds .png to a name without a suffix; the commands print the name they were given."""
    import numpy as np

    from test_eval_cli import write_lfw

    ckpt = write_checkpoint(tmp_path / "c.pt")
    lfw = write_lfw(tmp_path / "lfw", np.random.default_rng(0))
    roc = tmp_path / "roc"
    assert main(["eval", "--ckpt", str(ckpt), "--lfw", str(lfw), "--no-progress", "--device", "cpu",
                 "--plot", str(roc)]) == 0
    assert f"ROC curve written to {roc}" in capsys.readouterr().err
    assert roc.read_bytes()[:4] == b"\x89PNG" and not roc.with_suffix(".png").exists()


def test_progress_bars_only_on_a_terminal(tmp_path):
    """In a pipe or a CI log a bar is a stream of carriage returns; on a terminal it stays."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "cosface", "synth", "--identities", "2", "--images-per-identity", "2",
            "--lfw-identities", "20", "--lfw-images-per-identity", "2", "--workers", "1"]
    piped = subprocess.run([*argv, str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "synth:" not in piped.stderr and "\r" not in piped.stderr
    import fcntl
    import struct
    import termios

    primary, replica = os.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # a new pty is 0 columns wide
    try:
        tty = subprocess.run([*argv, str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=replica, env=env, timeout=120)
        os.close(replica)
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:      # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(primary)
    assert tty.returncode == 0 and b"synth:" in drawn


@pytest.mark.parametrize("extra,named", [(["--target", "IJBC"], "--target"), (["--no-flip"], "--no-flip"),
                                         (["--normalize-images", "--no-detector-score"], "--no-detector-score")])
@pytest.mark.parametrize("model", ["--ckpt", "--model"])
def test_ijb_options_without_ijb_are_refused(model, extra, named, tmp_path, capsys):
    """An IJB option on an LFW run was silently ignored with --ckpt (and refused with --model for --target)."""
    ckpt = write_checkpoint(tmp_path / "c.pt")
    with pytest.raises(SystemExit) as e:
        main(["eval", model, str(ckpt), "--lfw", str(tmp_path), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and named in err.splitlines()[-1], err


def test_serve_on_a_port_in_use_is_one_line(tmp_path, capfd):
    """uvicorn logged the bind failure among its start-up lines and exited 3, after the model had loaded."""
    import socket

    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    ckpt = write_checkpoint(tmp_path / "c.pt")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        capfd.readouterr()
        try:
            rc = main(["serve", "--model", str(ckpt), "--port", str(port), "--device", "cpu"])
        except SystemExit as e:
            rc = e.code
    err = capfd.readouterr().err
    assert rc == 2 and err.strip() == f"cosface serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_identify_names_what_it_could_not_do(tmp_path, capsys):
    import numpy as np

    from test_eval_cli import jpeg

    ckpt = write_checkpoint(tmp_path / "c.pt")
    face = tmp_path / "a.jpg"
    face.write_bytes(jpeg(np.random.default_rng(0), np.full((4, 4, 3), 120)))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    db = str(tmp_path / "g.sqlite")
    assert main(["gallery", "enroll", "--db", db, "--model", str(ckpt), "--device", "cpu", "ada", str(face)]) == 0
    capsys.readouterr()
    assert main(["gallery", "identify", "--db", db, "--model", str(ckpt), "--device", "cpu", str(face), str(junk)]) == 1
    out, err = capsys.readouterr()
    assert "ada" in out and "were not identified" in err and "enrolled" not in err
