"""The `attrvis` command: output, exit codes 0/1/2, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attrvis_jax.apps.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_bundled_photo(capsys):
    code, out, err = run(capsys, "classify", "chelsea", "--top", "3")
    assert code == 0, err
    assert "cat" in out and out.count("%") == 3


def test_classify_json(capsys):
    import json

    code, out, _ = run(capsys, "classify", "coffee", "--json", "--top", "2")
    data = json.loads(out)
    assert code == 0 and data["top"][0]["name"] == "espresso" and len(data["top"]) == 2


def test_layers_lists_name_then_shape(capsys):
    code, out, _ = run(capsys, "layers")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("stem\t112x112x32")
    assert any(l.startswith("blocks.15\t7x7x320") and "stage7" in l for l in lines)


def test_classes_search(capsys):
    code, out, _ = run(capsys, "classes", "--search", "tabby")
    assert code == 0 and out.strip() == "281\ttabby, tabby cat"
    code, _, err = run(capsys, "classes", "--search", "zzzz")
    assert code == 1 and "no class name" in err


def test_weights_list_and_verify(capsys):
    code, out, _ = run(capsys, "weights", "list")
    assert code == 0 and "efficientnet_lite0\tpackage" in out and "resnet50\turl" in out
    code, out, _ = run(capsys, "weights", "verify", "efficientnet_lite0")
    assert code == 0 and out.startswith("ok")


def test_usage_errors_exit_2_with_one_line(capsys):
    code, _, err = run(capsys, "layers", "--model", "resnet5O")
    assert code == 2 and err.count("\n") == 1 and "closest: 'resnet50'" in err


def test_runtime_errors_exit_1_with_one_line(capsys, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    code, _, err = run(capsys, "classify", str(bad))
    assert code == 1 and err.startswith("attrvis: error:") and err.count("\n") == 1


def test_debug_before_or_after_the_command():
    from attrvis_jax.apps.cli import build_parser

    parse = build_parser().parse_args
    assert [parse(a).debug for a in (["layers"], ["--debug", "layers"], ["layers", "--debug"])] == [False, True, True]


def test_seed_batch_flag_reaches_the_run_options():
    # --seed-batch is RunOptions.seed_batch (a speed setting); left out, the preset's (None: chosen
    # per backend) stays
    from attrvis_jax import configs
    from attrvis_jax.apps.cli import _render_settings, build_parser

    parse = build_parser().parse_args
    for command, preset in ((["run", "chelsea", "--out", "o"], "paper"), (["demo"], "demo")):
        _, given = _render_settings(parse(command + ["--seed-batch", "3", "--seeds", "6"]), configs.get(preset))
        _, default = _render_settings(parse(command), configs.get(preset))
        assert (given.seed_batch, given.seeds) == (3, 6)
        assert default.seed_batch == configs.get(preset).run.seed_batch is None


def test_console_script_help_and_bad_flag():
    res = subprocess.run([sys.executable, "-m", "attrvis_jax.apps.cli", "classify", "--help"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "examples:" in res.stdout
    res = subprocess.run([sys.executable, "-m", "attrvis_jax.apps.cli", "classify"], capture_output=True, text=True)
    assert res.returncode == 2 and "required" in res.stderr


def test_run_target_top1_means_the_top_class_and_other_specs_are_classes(lite0):
    # `attrvis run/figures --target` go on as given to the library's one rule (resolve_targets, which
    # pipeline.run and the figures' context call once): the sweeps' "top1" (the image's top class)
    # is accepted too, and an unknown or out-of-range class is an UnknownNameError (exit 2)
    from attrvis_jax.attribution.api import resolve_targets
    from attrvis_jax.data import read_source
    from attrvis_jax.errors import UnknownNameError

    x = lite0.load_image(read_source("chelsea"))[None]
    top = int(resolve_targets(lite0, x, None)[0])
    assert int(resolve_targets(lite0, x, "top1")[0]) == top
    assert int(resolve_targets(lite0, x, "tabby")[0]) == 281 and int(resolve_targets(lite0, x, "282")[0]) == 282
    with pytest.raises(UnknownNameError, match="closest"):
        resolve_targets(lite0, x, "top-1")
    with pytest.raises(UnknownNameError, match="class index 1000 out of range"):
        resolve_targets(lite0, x, "1000")


def test_a_reader_that_goes_away_is_no_error(monkeypatch, capsys):
    """`attrvis classes | head`: the pipe closes under the command, which then stops quietly with
    the shell's code for it (141), no traceback, no error line."""
    import builtins

    from attrvis_jax.apps.cli import main

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(builtins, "print", closed)
    assert main(["classes", "--weights", "random"]) == 141
    out, err = capsys.readouterr()
    assert err == "" and "Traceback" not in out
