"""Session 17's audit of `alto profile --backbone NAME:layers=N` (and --layers N): a depth of 0
profiled nothing and ended in a target_modules error after the progress bar; a depth past the
shape's own (llama-3.1-70b:layers=100000) built the model in host memory until the kernel killed
the process. Both are one line before anything is built."""

from __future__ import annotations

import pytest

from tests._hostile import assert_input_error, cli

GRID = ("--adapters", "1", "--ranks", "2", "--batches", "1", "--seqs", "8", "--steps", "1", "--warmup", "0",
        "--evals", "0", "--quiet")


@pytest.mark.parametrize("argv, words", [
    (("--backbone", "tiny:layers=0"), ("layers must be in [1, 64]",)),
    (("--backbone", "llama-3.1-70b:layers=100000"), ("layers must be in [1, 80]",)),
    (("--backbone", "llama-3.1-8b", "--layers", "33"), ("layers must be in [1, 32]",)),
    (("--backbone", "tiny:layers=" + "9" * 5000), ("bad option",)),  # int() of 5000 digits: a bare ValueError
    (("--backbone", "tiny:layers=\u00b2"), ("bad option",)),  # '²'.isdigit(), and int('²') a bare ValueError
])
def test_a_backbone_depth_outside_the_model_is_one_line(tmp_path, argv, words):
    rc, _, err = cli("profile", *argv, *GRID, "--device", "cpu", "--out", str(tmp_path / "p.csv"))
    assert_input_error(rc, err, "backbone", *words)
    assert list(tmp_path.iterdir()) == []


def test_a_depth_within_the_model_still_profiles(tmp_path):
    rc, _, err = cli("profile", "--backbone", "tiny:layers=1", *GRID, "--device", "cpu", "--out", str(tmp_path / "p.csv"))
    assert rc == 0, err
    assert (tmp_path / "p.csv").is_file()


@pytest.mark.parametrize("argv, words", [
    (("--backbone", "tiny", "--adapters", "1,,2"), ("--adapters", "'1,,2'")),  # was read as 1,2
    (("--backbone", "tiny", "--gguf", "{gguf}"), ("--gguf", "read only with --backbone smollm2")),  # was ignored
    (("--backbone", "smollm2", "--gguf", "{other}"), ("--gguf", "not a .gguf")),  # was a hub-id message
    (("--backbone", ""), ("<args>: --backbone", "unknown ''")),
    (("--backbone", "tiny", "--device", "cpu:99"), ("--device", "cpu:99")),  # was taken as the CPU
])
def test_flags_found_by_the_session_20_probe_are_one_line(tmp_path, argv, words):
    (tmp_path / "w.gguf").write_bytes(b"")
    (tmp_path / "w.bin").write_bytes(b"")
    argv = [a.format(gguf=tmp_path / "w.gguf", other=tmp_path / "w.bin") for a in argv]
    rc, _, err = cli("profile", *GRID, "--device", "cpu", *argv, "--out", str(tmp_path / "o" / "p.csv"))  # last wins
    assert_input_error(rc, err, *words)
    assert not (tmp_path / "o").exists()
