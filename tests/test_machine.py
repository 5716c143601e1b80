import os
import subprocess
import sys

import pytest

# Converts one 2000x1500 JPEG as prepare does (decode, RGB, shrink to 512, BMP) five times
# after a first time; prints the page faults each took. argv[1] == "keep" calls
# keep_freed_memory() first.
CONVERT = """
import resource, sys
import cv2, numpy as np
from medtransfer.data.images import downsize, encode_image
from medtransfer.machine import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
cv2.setNumThreads(1)
pixels = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), np.uint8)
jpeg = cv2.imencode(".jpg", pixels)[1]

def convert():
    rgb = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return encode_image(downsize(rgb, 512), "bmp")
convert()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    convert()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def faults_per_conversion(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", CONVERT, mode], capture_output=True,
                          text=True, check=True, timeout=120)
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_freed_memory_spares_the_page_faults_of_converting_large_images():
    pages = 1500 * 2000 * 3 / 4096  # one decoded image, in 4 KiB pages
    default, kept = faults_per_conversion("default"), faults_per_conversion("keep")
    assert default > pages / 2  # glibc hands the image's memory back after each decode
    assert kept < pages / 10


def test_a_heavy_import_runs_without_collection_and_its_objects_are_frozen(
        tmp_path, monkeypatch):
    import gc

    from medtransfer import machine

    # A stand-in for tensorflow (the real one is imported already): it notes whether the
    # collector ran while it was imported, then imports the other heavy name inside.
    (tmp_path / "heavy_outer.py").write_text(
        "import gc\nCOLLECTING = gc.isenabled()\nimport heavy_inner\n")
    (tmp_path / "heavy_inner.py").write_text("import gc\nCOLLECTING = gc.isenabled()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(machine, "_HEAVY_IMPORTS", frozenset({"heavy_outer", "heavy_inner"}))
    machine.import_heavy_libraries_without_collecting()
    machine.import_heavy_libraries_without_collecting()  # once is enough: no second finder
    assert sum(isinstance(finder, machine._CollectLater) for finder in sys.meta_path) == 1
    frozen = gc.get_freeze_count()
    try:
        import heavy_outer

        heavy_inner = sys.modules["heavy_inner"]
    finally:
        for name in ("heavy_outer", "heavy_inner"):
            sys.modules.pop(name, None)
    assert heavy_outer.COLLECTING is False and heavy_inner.COLLECTING is False
    assert gc.isenabled() and gc.get_freeze_count() > frozen
    # Each keeps the loader that found it, not the wrapper.
    assert type(heavy_outer.__loader__).__name__ == "SourceFileLoader"
    assert heavy_outer.__spec__.loader is heavy_outer.__loader__


def test_an_extra_imported_on_first_use_runs_only_when_read(tmp_path, monkeypatch, capsys):
    from medtransfer import machine

    # A stand-in for pyplot: it prints when its code runs, and has one attribute.
    (tmp_path / "extra_probe.py").write_text("print('ran')\nVALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(machine, "_UNUSED_KERAS_EXTRAS", frozenset({"extra_probe"}))
    machine.load_unused_keras_extras_on_first_use()
    machine.load_unused_keras_extras_on_first_use()  # once is enough: no second finder
    assert sum(isinstance(finder, machine._OnFirstUse) for finder in sys.meta_path) == 1
    try:
        import extra_probe

        assert capsys.readouterr().out == ""  # imported, not run
        assert extra_probe.VALUE == 7
        assert capsys.readouterr().out == "ran\n"  # run at the first read, once
        assert extra_probe.VALUE == 7 and capsys.readouterr().out == ""
        assert sys.modules["extra_probe"] is extra_probe
    finally:
        sys.modules.pop("extra_probe", None)
    # Its one module imported, the finder has left.
    assert not any(isinstance(finder, machine._OnFirstUse) for finder in sys.meta_path)


# Keras with the extras deferred: neither scikit-learn nor pyplot runs with it, and both
# are there when asked for.
KERAS_EXTRAS = """
import sys
from medtransfer.machine import load_unused_keras_extras_on_first_use
load_unused_keras_extras_on_first_use()
import keras
print("sklearn" in sys.modules, "matplotlib.figure" in sys.modules)  # pyplot's first import
print(keras.wrappers.SKLearnClassifier.__module__, "sklearn" in sys.modules)
print(callable(sys.modules["matplotlib.pyplot"].figure), "matplotlib.figure" in sys.modules)
"""


def test_importing_keras_runs_neither_scikit_learn_nor_pyplot():
    done = subprocess.run([sys.executable, "-c", KERAS_EXTRAS], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "False False", "keras.src.wrappers.sklearn_wrapper True", "True True"]
