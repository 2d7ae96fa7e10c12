"""Which output paths `export` and `compare` refuse before any work: the same file named twice by
any spelling or by any two options, a file at any depth inside a result folder, and what does not
make a folder a result folder. (Devices, the cache and the rest: tests/test_hostile_input.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer

from tests.test_hostile_input import one_line_error, run, saved_result


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return saved_result(tmp_path_factory.mktemp("saved"))


def test_one_file_spelled_two_ways_is_the_same_file(saved, tmp_path):
    (tmp_path / "sub").mkdir()
    plain = tmp_path / "out.txt"
    dotted = tmp_path / "sub" / ".." / "out.txt"
    message = one_line_error(run("compare", saved, saved, "--csv", dotted, "--json", plain))
    assert message == f"error: {dotted} and {plain} are the same file; give each output its own"
    link = tmp_path / "link.txt"
    link.symlink_to(plain)
    message = one_line_error(run("compare", saved, saved, "--markdown", link, "--latex", plain))
    assert message == f"error: {link} and {plain} are the same file; give each output its own"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "sub"]


def test_export_refuses_its_csv_and_html_in_one_file(saved, tmp_path):
    same = tmp_path / "table"
    message = one_line_error(run("export", saved, "--csv", same, "--html", same))
    assert message == f"error: {same} and {same} are the same file; give each output its own"
    assert not same.exists()


def test_compare_refuses_its_plot_and_another_output_in_one_file(saved, tmp_path):
    same = tmp_path / "figure.png"
    message = one_line_error(run("compare", saved, saved, "--csv", same, "--plot", same))
    assert message == f"error: {same} and {same} are the same file; give each output its own"
    assert not same.exists()


def test_a_file_deep_inside_a_result_folder_is_refused(saved):
    """A result folder holds subfolders (its run files): an output there would replace one."""
    run_file = next((saved / "runs").iterdir())
    before = run_file.read_bytes()
    assert one_line_error(run("export", saved, "--csv", run_file)) == (
        f"error: cannot write {run_file}: it lies inside {saved}, a result folder"
    )
    assert run_file.read_bytes() == before


def test_a_manifest_alone_makes_no_result_folder(saved, tmp_path):
    """A `manifest.json` alone may be a web app's: writing beside it is fine."""
    app_folder = tmp_path / "webapp"
    app_folder.mkdir()
    (app_folder / "manifest.json").write_text("{}")
    out = app_folder / "table.csv"
    result = run("export", saved, "--csv", out)
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("model,suite,dataset,")


# -- the one-line error policy of every command --------------------------------------------------


def wrapped(raised: BaseException):
    """A command under the error policy that raises `raised`."""
    from rerank_eval.cli.app import user_errors

    @user_errors
    def command() -> None:
        raise raised

    return command


def test_ctrl_c_in_a_command_exits_130_with_the_resume_line(capsys):
    with pytest.raises(typer.Exit) as exiting:
        wrapped(KeyboardInterrupt())()
    assert exiting.value.exit_code == 130
    assert " ".join(capsys.readouterr().err.split()) == (  # (the console wraps it)
        "stopped at once; the scores, corpus shards and indexes finished so far are kept: "
        "run the same command again to resume"
    )


def test_a_symlink_loop_met_by_path_resolve_is_one_line_and_other_runtime_errors_pass(capsys):
    """Path.resolve() on Python < 3.13 raises RuntimeError("Symlink loop from ...")."""
    with pytest.raises(typer.Exit) as exiting:
        wrapped(RuntimeError("Symlink loop from '/x/a'"))()
    assert exiting.value.exit_code == 2
    assert capsys.readouterr().err.strip() == "error: symlink loop: '/x/a'"
    with pytest.raises(RuntimeError, match=r"^boom$"):
        wrapped(RuntimeError("boom"))()


def test_the_command_alone_prints_the_help_and_no_error_line():
    result = run()
    assert "Usage:" in result.output and "error:" not in result.output


def test_a_plot_is_written_in_the_format_its_extension_names(saved, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(saved, other)
    for name, start in (("figure.svg", b"<?xml"), ("figure.pdf", b"%PDF"), ("figure.png", b"\x89PNG")):
        result = run("compare", saved, other, "--plot", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).read_bytes().startswith(start), name
