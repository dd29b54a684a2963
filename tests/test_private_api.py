"""Private TensorFlow / Keras API is used only where BUILD_NOTES.md lists it (package, benchmarks).

A new private import or hook elsewhere fails here, so the list an upgrader reads stays complete.
Plain text search over the package's sources: no TensorFlow needed.
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]

# pattern -> the only files (relative to the repository) that may contain it.
ALLOWED = {
    r"_all_reduce_sum_gradients": {"vae_dist/train/optimizers.py"},
    r"\._iterations\b": {"vae_dist/train/optimizers.py"},
    r"\bdef _moments\b|_reduction_axes": {"vae_dist/model/networks.py"},
    r"tf\.__internal__\.distribute": {"vae_dist/train/steps.py"},
    r"tf\.__internal__\.tracking|_serialize_to_tensors|_trackable_children|"
    r"_gather_saveables_for_checkpoint": {"vae_dist/checkpointing/snapshot.py"},
    r"from tensorflow\.python|import tensorflow\.python|from tensorflow\.compiler": {
        "vae_dist/train/distribution.py"},
    r"from tensorflow\.core": {"vae_dist/checkpointing/restore_check.py"},
    r"get_default_graph\(\)\.seed": {"vae_dist/data/input_pipeline.py"},
    r"tf\.compat\.v1\.profiler": {"benchmarks/flops.py"},
}
# Any of these outside ALLOWED's files is a private API the list does not know yet.
SUSPECT = re.compile(r"tf\.__internal__|from tensorflow\.(python|core|compiler)|"
                     r"import tensorflow\.(python|core|compiler)|keras\.src\b|"
                     r"tf\.compat\.v1\.")


def _sources():
  for path in sorted([*(ROOT / "vae_dist").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
    yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_each_private_api_is_used_only_where_listed():
  for pattern, allowed in ALLOWED.items():
    users = {name for name, text in _sources() if re.search(pattern, text)}
    assert users <= allowed, f"{pattern!r} used in {sorted(users - allowed)}; list it in " \
        "BUILD_NOTES.md 'Private TensorFlow and Keras API' and here"
    assert users, f"{pattern!r} is no longer used: remove it from the list and BUILD_NOTES.md"


def test_no_unlisted_private_api():
  listed = set().union(*ALLOWED.values())
  for name, text in _sources():
    for line in text.splitlines():
      if SUSPECT.search(line) and not line.lstrip().startswith("#"):
        assert name in listed and any(re.search(p, line) for p in ALLOWED), \
            f"{name}: {line.strip()} is private TensorFlow API missing from the list"


def test_build_notes_names_every_module_of_the_list():
  notes = (ROOT / "BUILD_NOTES.md").read_text()
  section = notes.split("## Private TensorFlow and Keras API", 1)[1].split("\n## ", 1)[0]
  for allowed in ALLOWED.values():
    for name in allowed:
      assert f"`{name}`" in section, name
