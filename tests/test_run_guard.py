"""A run owns its out: a second run on the same folder, or an out that cannot be written, is a one-line error
before any work (no Ray start, no training), and a finished or killed run leaves no stale lock."""
import os
import subprocess
import sys
import time

import pytest

from inetseg import storage
from inetseg.cli import main


def test_a_second_run_on_the_same_out_is_refused_with_the_holder_named(tmp_path, capsys):
    with storage.exclusive(str(tmp_path)):
        t0 = time.time()
        assert main(["pipeline", f"out={tmp_path}"]) == 2
        assert time.time() - t0 < 30  # refused before Ray or any stage started
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another run" in err[0] and "pid" in err[0]
    assert not (tmp_path / "images").exists() and not (tmp_path / "config.yaml").exists()


def test_the_lock_goes_with_its_holder_even_when_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from inetseg import storage\n"
                               f"with storage.exclusive({str(tmp_path)!r}):\n"
                               "    print('held', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(storage.BusyError, match=f"pid {holder.pid}"):
            with storage.exclusive(str(tmp_path)):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with storage.exclusive(str(tmp_path)):  # SIGKILL left no stale lock
        pass


def test_with_wait_a_second_holder_takes_its_turn_and_a_sibling_lock_survives_the_folder(tmp_path):
    stage = tmp_path / "stages" / "pseudo" / "abc"
    lock = str(stage) + ".lock"  # beside the folder: a stage may delete and re-create its folder
    stage.mkdir(parents=True)
    (stage / "part-0.parquet").write_text("old")
    holder = subprocess.Popen([sys.executable, "-c", "import shutil, sys, time; from inetseg import storage\n"
                               f"with storage.exclusive({str(stage)!r}, wait=True, lock_file={lock!r}):\n"
                               f"    print('held', flush=True); shutil.rmtree({str(stage)!r})\n"
                               "    time.sleep(3)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        with storage.exclusive(str(stage), wait=True, lock_file=lock):  # waits for the holder, then holds
            waited = time.time() - t0
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert waited > 2.0  # the holder kept it for its 3 s, though its folder was deleted meanwhile
    assert not stage.exists() and os.path.exists(lock)


def test_an_out_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["pipeline", f"out={blocker / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable" in err[0]
