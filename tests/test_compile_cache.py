"""JAX's persistent compilation cache (apps/compile_cache.py): where it lives, the off switches, and
that the `attrvis` command writes it, reads it back in a second process, and runs on when the
folder is unusable or its entries are damaged.

The command runs in subprocesses (the cache is per process, opened at the first compile) on the
tests' tiny network, so each run is mostly interpreter start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import platformdirs
import pytest

from attrvis_jax.apps import compile_cache
from attrvis_jax.apps.cli import build_parser
from attrvis_jax.apps.compile_cache import ENV

TESTS = Path(__file__).resolve().parent
CLASSIFY = ["classify", "chelsea", "--model", "tiny:tiny_model", "--top", "1"]  # tests/tiny.py

# The command, counting the compilations that asked the cache and those it answered (JAX's events).
COUNTING = """
import json, sys
import jax.monitoring
from attrvis_jax.apps.cli import main
counts = {"requests": 0, "hits": 0}
names = {"/jax/compilation_cache/compile_requests_use_cache": "requests", "/jax/compilation_cache/cache_hits": "hits"}
def listen(event, **kwargs):
    if event in names:
        counts[names[event]] += 1
jax.monitoring.register_event_listener(listen)
code = main(sys.argv[1:])
print(json.dumps(counts))
sys.exit(code)
"""


def _attrvis(args, cache, counting: bool = False) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in [str(TESTS), os.environ.get("PYTHONPATH", "")] if p)
    env = dict(os.environ, PYTHONPATH=path, **{ENV: str(cache)})
    command = ["-c", COUNTING] if counting else ["-m", "attrvis_jax"]
    res = subprocess.run([sys.executable, *command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _entries(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.glob("*-cache")} if folder.is_dir() else {}


# ---- where, and the switches -------------------------------------------------------------------
def test_the_folder_follows_the_environment(tmp_path, monkeypatch):
    assert compile_cache.folder({ENV: str(tmp_path / "mine")}) == tmp_path / "mine"
    monkeypatch.chdir(tmp_path)
    assert compile_cache.folder({ENV: "rel"}) == tmp_path / "rel"  # absolute: a child elsewhere agrees
    assert compile_cache.folder({"ATTRVIS_CACHE": str(tmp_path)}) == tmp_path / "xla"  # beside the weights
    assert compile_cache.folder({ENV: " ", "ATTRVIS_CACHE": str(tmp_path)}) == tmp_path / "xla"
    assert compile_cache.folder({}) == Path(platformdirs.user_cache_dir("attrvis_jax")).absolute() / "xla"


@pytest.mark.parametrize("value", ["0", "off", "OFF", "false", "no", "none", " 0 "])
def test_the_off_switch(value, tmp_path):
    assert compile_cache.folder({ENV: value, "ATTRVIS_CACHE": str(tmp_path)}) is None


def test_the_suite_keeps_its_cache_out_of_the_private_weight_cache():
    value = os.environ[ENV]  # conftest names it for the subprocesses
    private = Path(os.environ["ATTRVIS_CACHE"])
    if value != "0" and private.name.startswith("attrvis-test-cache-"):  # conftest's own, deleted at the end
        assert Path(value).is_absolute() and not Path(value).is_relative_to(private)
        assert jax.config.jax_compilation_cache_dir == value


def test_the_flag_is_global_and_also_follows_the_command():
    parse = build_parser().parse_args
    assert parse(CLASSIFY).no_compile_cache is False
    assert parse(["--no-compile-cache", *CLASSIFY]).no_compile_cache is True
    assert parse([*CLASSIFY, "--no-compile-cache"]).no_compile_cache is True


@pytest.fixture
def settings(monkeypatch):
    """The options `enable` sets, recorded instead of applied (this process keeps its own)."""
    seen = {}

    def update(name, value):
        assert name in jax.config.values, f"this jax has no option {name}"
        seen[name] = value

    monkeypatch.setattr(jax.config, "update", update)
    return seen


def test_enable_sets_the_folder_and_the_thresholds(settings, tmp_path):
    path = compile_cache.enable({ENV: str(tmp_path / "new" / "xla")})
    assert path == (tmp_path / "new" / "xla").resolve() and path.is_dir() and not any(path.iterdir())
    assert settings["jax_enable_compilation_cache"] is True
    assert settings["jax_compilation_cache_dir"] == str(path)
    assert settings["jax_persistent_cache_min_compile_time_secs"] == compile_cache.MIN_COMPILE_TIME_S
    assert "jax_compilation_cache_max_size" not in settings  # JAX's cap rescans the folder at every write


def test_prune_deletes_the_least_recently_used_down_to_three_quarters(tmp_path):
    for i in range(10):  # entry i was last used at time 1000 + i
        entry = tmp_path / f"jit_f-{i:02d}-cache"
        entry.write_bytes(b"x" * 100)
        os.utime(entry, (1000 + i, 1000 + i))
    (tmp_path / "jit_f-00-atime").write_bytes(b"t")  # JAX's access record of entry 0 (when it keeps one)
    (tmp_path / "notes.txt").write_bytes(b"y" * 5000)  # not an entry: not counted, never deleted
    assert compile_cache.prune(tmp_path, limit=1000) == 0  # 1000 bytes of entries: within the limit
    assert compile_cache.prune(tmp_path, limit=940) == 300  # down to 700 <= 3/4 of 940
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"jit_f-{i:02d}-cache" for i in range(3, 10)] + ["notes.txt"]
    os.utime(tmp_path / "jit_f-03-cache", (2000, 2000))  # read again: now the most recent
    assert compile_cache.prune(tmp_path, limit=600) == 300
    assert sorted(p.name for p in tmp_path.glob("*-cache")) == [f"jit_f-{i:02d}-cache" for i in (3, 7, 8, 9)]


def test_enable_switched_off(settings, tmp_path):
    assert compile_cache.enable({ENV: "off"}) is None
    assert settings == {"jax_enable_compilation_cache": False}  # off even where JAX's own variables set a folder
    settings.clear()
    assert compile_cache.enable({ENV: str(tmp_path / "xla")}, off=True) is None
    assert settings == {"jax_enable_compilation_cache": False} and not (tmp_path / "xla").exists()


def test_an_unusable_folder_leaves_it_off_with_one_note(settings, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for _ in range(2):
        assert compile_cache.enable({ENV: str(blocker / "xla")}) is None
    assert settings == {"jax_enable_compilation_cache": False}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compilation cache is off" in err and str(blocker / "xla") in err


def test_a_jax_without_an_option_leaves_it_off(monkeypatch, tmp_path, capsys):
    seen = {}

    def update(name, value):
        if name == "jax_persistent_cache_min_compile_time_secs":
            raise AttributeError(f"Unrecognized config option: {name}")
        seen[name] = value

    monkeypatch.setattr(jax.config, "update", update)
    assert compile_cache.enable({ENV: str(tmp_path / "xla")}) is None
    assert seen["jax_enable_compilation_cache"] is False and "Unrecognized" in capsys.readouterr().err


# ---- the command -------------------------------------------------------------------------------
def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    first = _attrvis(CLASSIFY, cache)  # the installed entry point
    written = _entries(cache)
    assert written, "the first run wrote no cache entries"
    second = _attrvis(CLASSIFY, cache, counting=True)
    *table, counts = second.stdout.strip().splitlines()
    counts = json.loads(counts)
    assert counts["requests"] > 0 and counts["hits"] == counts["requests"], counts  # nothing compiled again
    assert _entries(cache) == written
    assert table[1:] == first.stdout.strip().splitlines()[1:]  # the same answer (line 0 holds the time)

    for name in written:  # damaged entries: JAX warns and compiles instead
        (cache / name).write_bytes(b"not an executable")
    third = _attrvis(CLASSIFY, cache)
    assert third.stdout.strip().splitlines()[1:] == table[1:]


def test_no_compile_cache_reads_and_writes_nothing(tmp_path):
    cache = tmp_path / "xla"
    res = _attrvis(["--no-compile-cache", *CLASSIFY], cache, counting=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"requests": 0, "hits": 0}
    assert not cache.exists()
    _attrvis([*CLASSIFY, "--no-compile-cache"], cache)  # the installed entry point, the flag after the command
    assert not cache.exists()


def test_an_unusable_folder_does_not_stop_the_command(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = _attrvis(CLASSIFY, blocker / "xla")
    assert "tiny (random)" in res.stdout
    notes = [line for line in res.stderr.splitlines() if line.startswith("attrvis: note:")]
    assert len(notes) == 1 and "compilation cache is off" in notes[0]
