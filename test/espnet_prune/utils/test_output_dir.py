"""Output directories a command owns: a foreign directory is refused with every byte left as it
was, a command's own directory may be written again, and no file is written through a symlink."""

import os

import pytest

from espnet_prune.utils.output_dir import (
    OWNER_FILE,
    OutputDirError,
    check_output_dir,
    claim_output_dir,
    owner_of,
    replace_file,
)

COMMAND = "espnet_prune.bin.example"


def snapshot(directory):
    """Every entry under ``directory``: file bytes, symlink targets, directories."""
    state = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                state[path] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                state[path] = ("dir",)
            else:
                with open(path, "rb") as f:
                    state[path] = ("file", f.read())
    return state


def espnet_experiment(path):
    """An ESPnet experiment as asr_train leaves it, with the averaged model a symlink chain."""
    path.mkdir()
    (path / "config.yaml").write_text("frontend: s3prl\n")
    (path / "2epoch.pth").write_bytes(b"epoch two")
    os.symlink("2epoch.pth", path / "valid.loss.ave_1best.pth")
    os.symlink("valid.loss.ave_1best.pth", path / "valid.loss.ave.pth")
    os.symlink("2epoch.pth", path / "latest.pth")
    return path


def test_a_new_or_empty_directory_is_claimed_and_may_be_written_again(tmp_path):
    new = claim_output_dir(tmp_path / "a" / "b", COMMAND)
    assert new.is_dir() and owner_of(new) == COMMAND and os.listdir(new) == [OWNER_FILE]
    (new / "model.pth").write_bytes(b"x")
    assert claim_output_dir(new, COMMAND) == new  # the rerun of the same command
    (tmp_path / "empty").mkdir()
    assert owner_of(claim_output_dir(tmp_path / "empty", COMMAND)) == COMMAND


def test_another_experiment_is_refused_and_left_byte_for_byte(tmp_path):
    experiment = espnet_experiment(tmp_path / "asr_other")
    before = snapshot(experiment)
    for call in (check_output_dir, claim_output_dir):
        with pytest.raises(OutputDirError) as error:
            call(experiment, COMMAND)
        message = str(error.value)
        assert str(experiment) in message and "ESPnet experiment" in message
        assert "config.yaml" in message and "valid.loss.ave.pth" in message
    assert snapshot(experiment) == before


def test_other_commands_and_foreign_files_are_refused(tmp_path):
    other = claim_output_dir(tmp_path / "other", "espnet_prune.bin.lm_prune")
    with pytest.raises(OutputDirError, match="written by espnet_prune.bin.lm_prune"):
        check_output_dir(other, COMMAND)
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(12):
        (notes / f"note{i:02d}.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"note00.txt.*and 4 more"):
        check_output_dir(notes, COMMAND)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="not a directory"):
        check_output_dir(tmp_path / "file", COMMAND)


def test_a_marker_file_proves_ownership(tmp_path):
    run = tmp_path / "demo"
    run.mkdir()
    (run / "settings.json").write_text("{}")
    (run / "data").mkdir()
    assert check_output_dir(run, COMMAND, marker="settings.json") == run
    with pytest.raises(OutputDirError):
        check_output_dir(run, COMMAND)
    claim_output_dir(run, COMMAND, marker="settings.json")
    assert not (run / OWNER_FILE).exists()


def test_replace_file_never_writes_through_a_symlink(tmp_path):
    experiment = espnet_experiment(tmp_path / "exp")
    before = snapshot(experiment)
    with pytest.raises(OutputDirError, match="symlink"):
        with replace_file(experiment / "valid.loss.ave.pth") as f:
            f.write(b"compact model")
    assert snapshot(experiment) == before


def test_replace_file_replaces_whole_files_or_nothing(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replace_file(target, "w") as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]
    with replace_file(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) != oct(0o600)
