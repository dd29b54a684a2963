"""No tool writes over, into or around a training run; --overwrite replaces only its own output.

Each case runs the real tool on a copy of a trained run and checks the one error line and that
every file of the run (and the folder around it) is byte for byte unchanged.
"""
import os

import pytest

from faults_helpers import copy_run, files, one_error, run_tool
import trained_run_fixture


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  shared = trained_run_fixture.shared_run(tmp_path_factory)
  root = tmp_path_factory.mktemp("never_destroy")
  return copy_run(shared["workdir"], root / "run")


# (tool, arguments with {W} for the workdir and {P} for its parent, words of the refusal)
CASES = {
    "export_over_the_workdir": ("export", ["--out={W}", "--overwrite"],
                                "is a training run's workdir"),
    "export_over_checkpoints": ("export", ["--out={W}/checkpoints", "--overwrite"],
                                "is {W}/checkpoints, the run's checkpoints"),
    "export_into_a_step": ("export", ["--out={W}/checkpoints/60/model"],
                           "is inside {W}/checkpoints, the run's checkpoints"),
    "export_into_tensorboard": ("export", ["--out={W}/tensorboard/model"],
                                "is inside {W}/tensorboard"),
    "export_over_the_parent": ("export", ["--out={P}", "--overwrite"],
                               "is not an export written by vae_dist.export"),
    "export_through_a_symlink": ("export", ["--out={P}/link_to_run", "--overwrite"],
                                 "is a training run's workdir"),
    "evaluate_over_config": ("evaluate", ["--out={W}/config.json", "--num_samples=2"],
                             "is {W}/config.json, the run's config"),
    "evaluate_over_metrics": ("evaluate", ["--out={W}/metrics.jsonl", "--num_samples=2"],
                              "is {W}/metrics.jsonl, the run's metrics"),
    "generate_into_checkpoints": ("generate", ["--what=samples", "--out={W}/checkpoints/x.png"],
                                  "is inside {W}/checkpoints"),
    "generate_into_a_relative_path": ("generate", ["--what=samples",
                                                   "--out={W}/generated/../tensorboard/x.png"],
                                      "is inside {W}/tensorboard"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_tool_writes_over_into_or_around_a_run(run, case):
  tool, args, words = CASES[case]
  parent = os.path.dirname(run)
  link = os.path.join(parent, "link_to_run")
  if not os.path.islink(link):
    os.symlink(run, link)
  fill = lambda text: text.format(W=run, P=parent)  # noqa: E731
  before_run = files(run)
  before_parent = sorted(os.listdir(parent))
  proc = run_tool(tool, f"--workdir={run}", *map(fill, args))
  error = one_error(proc)
  assert fill(words) in error, error
  # --overwrite would not help, so it is not suggested.
  assert "pass --overwrite" not in error
  assert files(run) == before_run
  assert sorted(os.listdir(parent)) == before_parent


def test_export_overwrite_replaces_only_its_own_export(run, tmp_path):
  out = str(tmp_path / "exported")
  proc = run_tool("export", f"--workdir={run}", f"--out={out}", "--step=40")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 40" in proc.stdout
  error = one_error(run_tool("export", f"--workdir={run}", f"--out={out}"))
  assert error == f"error: --out={out} already holds an export; pass --overwrite to replace it, " \
                  "or choose another --out."
  # Something the export did not write makes it not ours to replace.
  with open(os.path.join(out, "notes.txt"), "w") as f:
    f.write("mine")
  error = one_error(run_tool("export", f"--workdir={run}", f"--out={out}", "--overwrite"))
  assert "also holds files an export does not write (notes.txt)" in error
  assert open(os.path.join(out, "notes.txt")).read() == "mine"
