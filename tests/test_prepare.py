"""``prepare`` on tiny datasets written in every real layout, and ``load_prepared``."""

import io
import json
import re
import shutil
import threading

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from layouts import WRITERS, write_cancer, write_folder, write_proteins

from medtransfer.data import images, shards
from medtransfer.data.prepare import _AHEAD_PER_THREAD, _map_in_threads, _Progress, prepare_dataset
from medtransfer.data.prepared import load_prepared
from medtransfer.data.registry import DATASETS
from medtransfer.errors import MedtransferError
from medtransfer.options import IMAGE_FORMATS

PROTEIN_NAMES = {"0": "Nucleoplasm", "25": "Cytosol", "2": "Nucleoli"}


def prepare(case, tmp_path, **options):
    """Writes the layout ``case`` under tmp_path/source and prepares it to tmp_path/out."""
    layout = case.split("-")[0]
    written = WRITERS[case](tmp_path / "source")
    options = {"workers": 1, "progress": False, "min_class_count": 10, **options}
    result = prepare_dataset(layout, written.source, tmp_path / "out" / case, **options)
    return written, result


def read_rejected(result):
    frame = pd.read_csv(result.path / "rejected.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["path", "id", "reason"]
    return dict(zip(frame["id"], frame["reason"], strict=True))


def read_shards(dataset, split):
    """(id, label index, RGB array) of every record of a split, via tf.data."""
    records = tf.data.TFRecordDataset([str(p) for p in dataset.shard_paths(split)])
    out = []
    for example in records.map(shards.parse_example):
        pixels = shards.decode_image(example["image"]).numpy()
        out.append((example["id"].numpy().decode(), int(example["label"]), pixels))
    return out


def test_every_registered_dataset_has_a_layout_test():
    # The multi-label layouts have their own tests in test_chest_prepare.py.
    tested = {case.split("-")[0] for case in WRITERS} | {"digits", "digits_pairs", "chexpert",
                                                          "chestxray14"}
    assert set(DATASETS.names()) == tested


@pytest.mark.parametrize("case", WRITERS)
def test_every_layout_prepares_and_loads(case, tmp_path):
    written, result = prepare(case, tmp_path)
    layout = case.split("-")[0]
    expected_counts = written.counts
    if layout == "proteins":  # the class below --min-class-count is left out
        expected_counts = {PROTEIN_NAMES[c]: n for c, n in written.counts.items() if n >= 10}
    assert not result.skipped
    assert result.num_rejected == 0
    assert sorted(result.class_names) == sorted(expected_counts)
    per_class = {
        name: sum(result.counts[s][name] for s in shards.SPLITS) for name in expected_counts
    }
    assert per_class == expected_counts

    dataset = load_prepared(case, tmp_path / "out")
    assert dataset.name == case and dataset.spec.name == layout
    assert dataset.num_classes == len(expected_counts)
    assert set(dataset.split.columns) == {"id", "label", "split"}
    assert len(dataset.split) == sum(expected_counts.values())
    if layout != "proteins":
        assert dict(zip(dataset.split["id"], dataset.split["label"], strict=True)) == written.labels
    for split in shards.SPLITS:
        frame = dataset.split_frame(split)
        assert [p.name for p in dataset.shard_paths(split)] == [f"{split}-00000.tfrecord"]
        assert len(frame) == sum(result.counts[split].values())
        if layout != "medmnist":  # medmnist keeps its own splits
            for name, total in expected_counts.items():
                share = {"train": 0.8, "validation": 0.1, "test": 0.1}[split]
                assert abs(result.counts[split][name] - total * share) < 1
    assert read_rejected(result) == {} or layout == "proteins"
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["format_version"] == shards.FORMAT_VERSION
    assert manifest["layout"] == layout and manifest["name"] == case
    assert manifest["class_names"] == result.class_names


def expected_pixels(case, written, image_id):
    """The RGB pixels prepare should store for ``image_id``, read independently of it."""
    if case == "proteins":
        planes = [
            cv2.imread(str(written.files[image_id]).replace("_red", f"_{stain}"), -1)
            for stain in ("red", "green", "blue")
        ]
        return np.stack(planes, axis=-1)
    if case == "medmnist":
        split, index = image_id.split("-")
        with np.load(written.source) as archive:
            return archive[f"{split}_images"][int(index)]
    image = cv2.imread(str(written.files[image_id]), cv2.IMREAD_UNCHANGED)
    conversion = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    return cv2.cvtColor(image, conversion[1 if image.ndim == 2 else image.shape[2]])


@pytest.mark.parametrize("case", ["cancer", "proteins", "folder", "medmnist"])
def test_shards_round_trip_ids_labels_and_pixels(case, tmp_path):
    written, result = prepare(case, tmp_path)
    dataset = load_prepared(case, tmp_path / "out")
    seen = []
    for split in shards.SPLITS:
        records = read_shards(dataset, split)
        frame = dataset.split_frame(split)
        assert [r[0] for r in records] == list(frame["id"])  # split.csv order = shard order
        for (image_id, label, pixels), class_name in zip(records, frame["label"], strict=True):
            assert dataset.class_names[label] == class_name
            np.testing.assert_array_equal(pixels, expected_pixels(case, written, image_id))
            seen.append(image_id)
    assert len(seen) == len(set(seen)) == len(dataset.split)


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_both_storage_formats_are_lossless_and_read_back_exactly(image_format):
    # Odd sizes: BMP pads each row to 4 bytes, and stores rows bottom-up in BGR.
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    encoded = images.encode_image(rgb, image_format)
    assert images.sniff_format(encoded) == image_format
    np.testing.assert_array_equal(shards.decode_image(encoded).numpy(), rgb)


def test_image_format_is_stored_recorded_and_part_of_the_fingerprint(tmp_path):
    write_folder(tmp_path / "src", n_per_class=12, size=21)
    formats = {}
    for image_format in ("png", "bmp"):
        out = tmp_path / image_format
        result = prepare_dataset("folder", tmp_path / "src", out, image_format=image_format,
                                 progress=False, workers=1)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["options"]["image_format"] == image_format
        assert f"stored as {image_format.upper()}" in manifest["preprocessing"]
        formats[image_format] = (manifest["fingerprint"], read_shards(load_prepared(
            result.path.name, tmp_path), "train"))
        record = next(iter(tf.data.TFRecordDataset(str(out / manifest["shards"]["train"][0]))))
        assert images.sniff_format(shards.parse_example(record)["image"].numpy()) == image_format
    assert formats["png"][0] != formats["bmp"][0]
    for (id_png, label_png, png), (id_bmp, label_bmp, bmp) in zip(
            formats["png"][1], formats["bmp"][1], strict=True):
        assert (id_png, label_png) == (id_bmp, label_bmp)
        np.testing.assert_array_equal(png, bmp)


def test_unknown_image_format_is_refused_before_any_work(tmp_path):
    write_folder(tmp_path / "src")
    expected = (r"Unknown image format 'jpg'\. Did you mean 'png'\? "
                r"Valid image formats: bmp, png\..*lossless")
    with pytest.raises(MedtransferError, match=expected):
        prepare_dataset("folder", tmp_path / "src", tmp_path / "out", image_format="jpg",
                        progress=False)
    assert not (tmp_path / "out").exists()


def test_split_is_identical_when_prepared_again(tmp_path):
    written, result = prepare("cancer", tmp_path, seed=5)
    first = (result.path / "split.csv").read_text()
    shutil.rmtree(result.path)
    again = prepare_dataset("cancer", written.source, result.path, seed=5, progress=False)
    assert (again.path / "split.csv").read_text() == first
    other = prepare_dataset(
        "cancer", written.source, tmp_path / "seed6", seed=6, workers=1, progress=False
    )
    assert (other.path / "split.csv").read_text() != first


def test_parallel_decoding_gives_the_same_dataset_as_one_process(tmp_path):
    serial = prepare_dataset("digits", None, tmp_path / "one", workers=1, progress=False)
    parallel = prepare_dataset("digits", None, tmp_path / "two", workers=2, progress=False)
    for name in ["split.csv", *parallel.manifest["shards"]["train"]]:
        assert (serial.path / name).read_bytes() == (parallel.path / name).read_bytes()


def truncate(path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_bad_cancer_files_are_rejected_with_their_reasons(tmp_path):
    written = write_cancer(tmp_path / "source", n_per_class=12)
    train = tmp_path / "source" / "train"
    labels = tmp_path / "source" / "train_labels.csv"
    (train / "0a000f.tif").write_bytes(b"")
    (train / "0a001f.tif").write_text("id,label\nthis is a text file, not a TIFF\n")
    cv2.imwrite(str(train / "1a000f.tif"), np.full((32, 32), 128, np.uint8))
    (train / "1a001f.tif").unlink()
    rows = labels.read_text()
    shutil.copy(train / "1a002f.tif", train / "ff00ff.tif")
    labels.write_text(rows + "ff00ff,2\n1a003f,1\n")  # an unknown label, a duplicate id

    result = prepare_dataset(
        "cancer", written.source, tmp_path / "out", max_reject=0.5, workers=1, progress=False
    )
    rejected = read_rejected(result)
    assert rejected.pop("0a000f") == "zero-byte file"
    assert rejected.pop("0a001f") == "not an image"
    assert rejected.pop("1a000f") == "wrong channels: expected 3, got 1"
    assert rejected.pop("1a001f") == "missing file"
    assert rejected.pop("ff00ff") == "unknown label '2' (valid: 0, 1)"
    assert re.fullmatch(
        r"duplicate id \(first seen at train_labels\.csv line \d+\)", rejected.pop("1a003f")
    )
    assert rejected == {}
    assert result.num_rejected == 6
    kept = load_prepared("out", tmp_path).split
    assert len(kept) == 24 - 4 and "1a003f" in set(kept["id"])  # the first 1a003f stays


def test_truncated_and_broken_files_in_own_folder_are_rejected(tmp_path):
    written = write_folder(tmp_path / "source", n_per_class=16)
    benign = tmp_path / "source" / "benign"
    truncate(benign / "img05.jpg")
    truncate(benign / "img04.png")
    truncate(benign / "img02.tif")
    (benign / "img03.bmp").write_bytes(b"")
    (benign / "notes.txt").write_text("scanned 2021")
    (benign / "Thumbs.db").write_bytes(b"\x00" * 64)  # ignored: not an image of the class
    # A JPEG header, then garbage that still ends in a complete-looking scan.
    garbage = b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xda" + b"\x11" * 99 + b"\xff\xd9"
    (benign / "img09.jpg").write_bytes(garbage)

    result = prepare_dataset(
        "folder", written.source, tmp_path / "out", max_reject=0.3, workers=1, progress=False
    )
    assert read_rejected(result) == {
        "benign/img05.jpg": "truncated",
        "benign/img04.png": "truncated",
        "benign/img02.tif": "unreadable",  # OpenCV fails on a cut TIFF
        "benign/img03.bmp": "zero-byte file",
        "benign/notes.txt": "not an image",
        "benign/img09.jpg": "unreadable",
    }
    assert result.num_rejected == 6
    assert len(load_prepared("out", tmp_path).split) == 16 - 5 + 16


def test_protein_stain_with_three_channels_is_rejected(tmp_path):
    written = write_proteins(tmp_path / "source", {0: 11, 25: 11}, multi_label=0)
    image_id = sorted(written.labels)[0]
    green = tmp_path / "source" / "train" / f"{image_id}_green.png"
    cv2.imwrite(str(green), np.zeros((24, 24, 3), np.uint8))
    result = prepare_dataset(
        "proteins",
        written.source,
        tmp_path / "out",
        min_class_count=10,
        max_reject=0.1,
        workers=1,
        progress=False,
    )
    frame = pd.read_csv(result.path / "rejected.csv")
    assert frame.to_dict("records") == [
        {"path": str(green), "id": image_id, "reason": "wrong channels: expected 1, got 3"}
    ]


def test_too_many_rejections_fail_without_a_manifest(tmp_path):
    written = write_cancer(tmp_path / "source", n_per_class=11)
    (tmp_path / "source" / "train" / "0a000f.tif").write_bytes(b"")
    (tmp_path / "source" / "train" / "1a000f.tif").write_text("not a TIFF")
    out = tmp_path / "out"
    with pytest.raises(MedtransferError) as error:
        prepare_dataset("cancer", written.source, out, workers=1, progress=False)
    message = str(error.value)
    assert "2 of 22 images (9.1%) were rejected, more than --max-reject 0.01" in message
    assert str(out / "rejected.csv") in message
    assert not (out / "manifest.json").exists()
    assert len(pd.read_csv(out / "rejected.csv")) == 2
    assert sorted(p.name for p in out.iterdir()) == ["rejected.csv"]

    # Accepting the loss prepares the same folder; load_prepared then finds it.
    prepare_dataset("cancer", written.source, out, max_reject=0.1, workers=1, progress=False)
    assert len(load_prepared("out", tmp_path).split) == 20


def test_too_many_missing_files_fail_before_decoding(tmp_path):
    written = write_cancer(tmp_path / "source", n_per_class=11)
    for name in ("0a000f.tif", "0a001f.tif", "1a005f.tif"):
        (tmp_path / "source" / "train" / name).unlink()
    with pytest.raises(MedtransferError, match=r"3 of 22 images \(13\.6%\) were rejected before"):
        prepare_dataset("cancer", written.source, tmp_path / "out", max_reject=0.1)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert set(rejected["reason"]) == {"missing file"} and len(rejected) == 3
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_second_call_does_nothing_and_says_so(tmp_path, capsys):
    written, first = prepare("retina", tmp_path)
    manifest = (first.path / "manifest.json").read_text()
    capsys.readouterr()
    again = prepare_dataset(
        "retina", written.source, first.path, min_class_count=10, workers=1, progress=False
    )
    err = capsys.readouterr().err
    assert again.skipped
    assert f"{first.path} is already prepared (50 images, 5 classes" in err
    assert "nothing to do. Use --force to prepare it again." in err
    assert (first.path / "manifest.json").read_text() == manifest
    assert again.counts == first.counts

    forced = prepare_dataset(
        "retina", written.source, first.path, force=True, workers=1, progress=False
    )
    assert not forced.skipped


def test_other_options_on_a_prepared_folder_need_force(tmp_path):
    written, result = prepare("cancer", tmp_path)
    with pytest.raises(MedtransferError, match=r"max_size 512 \(now 16\).*--force"):
        prepare_dataset("cancer", written.source, result.path, max_size=16, progress=False)
    (written.files["0a000f"]).write_bytes(written.files["0a001f"].read_bytes() + b"\x00")
    with pytest.raises(MedtransferError, match="source files changed"):
        prepare_dataset("cancer", written.source, result.path, progress=False)


def test_interrupted_prepare_is_cleaned_and_redone(tmp_path):
    written = write_cancer(tmp_path / "source")
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [
        "train-00007.tfrecord",
        "split.csv",
        ".prepare-staging.bin",
        ".manifest.json.9.tmp",
    ]
    for name in leftovers:
        (out / name).write_bytes(b"partial")
    (out / "notes.txt").write_text("the user's own file")
    prepare_dataset("cancer", written.source, out, workers=1, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["manifest.json", "notes.txt", "rejected.csv", "split.csv"]
        + [f"{s}-00000.tfrecord" for s in shards.SPLITS]
    )


def test_images_are_shrunk_to_max_size_but_never_enlarged(tmp_path):
    written, result = prepare("cancer", tmp_path)  # 32x32 TIFFs, max_size 512
    assert result.manifest["image_size"] == {
        "min_height": 32,
        "max_height": 32,
        "min_width": 32,
        "max_width": 32,
    }
    small = prepare_dataset(
        "cancer", written.source, tmp_path / "small", max_size=20, progress=False
    )
    assert small.manifest["image_size"]["max_height"] == 20
    assert "longer side ≤ 20 px" in small.manifest["preprocessing"]


def test_retina_images_are_cropped_to_the_eye(tmp_path):
    written, result = prepare("retina", tmp_path)
    assert "fundus crop" in result.manifest["preprocessing"]
    dataset = load_prepared("retina", tmp_path / "out")
    for image_id, _, pixels in read_shards(dataset, "train"):
        height, width = pixels.shape[:2]
        source = cv2.imread(str(written.files[image_id]))
        assert abs(height - width) <= 2  # the disk's square, whatever the photo's shape
        assert max(height, width) <= min(source.shape[:2])
        assert pixels[height // 2, width // 2].sum() > 100  # the eye fills the middle


def test_protein_single_label_selection_is_recorded(tmp_path):
    written, result = prepare("proteins", tmp_path)  # 12 x class 0, 11 x 25, 3 x 2, 4 multi
    assert result.class_names == ["Nucleoplasm", "Cytosol"]
    assert result.num_rejected == 0 and result.num_excluded == 7
    selection = result.manifest["selection"]
    assert selection["min_class_count"] == 10
    assert selection["rows"] == 30
    assert selection["multi_label"] == 4 and selection["single_label"] == 26
    assert selection["single_label_per_class"] == {"Nucleoplasm": 12, "Nucleoli": 3, "Cytosol": 11}
    assert selection["kept_classes"] == {"Nucleoplasm": 0, "Cytosol": 25}
    assert selection["dropped_classes"] == {"Nucleoli": 3}
    assert selection["prepared_per_class"] == {"Nucleoplasm": 12, "Cytosol": 11}
    assert "exactly one class id" in selection["rule"]
    assert "classes with at least 10 such images" in result.manifest["preprocessing"]
    reasons = sorted(read_rejected(result).values())
    assert reasons.count("multi-label (not in the single-label subset)") == 4
    assert reasons.count("class 'Nucleoli' below --min-class-count (3 < 10)") == 3


def test_medmnist_keeps_its_official_splits(tmp_path):
    written, result = prepare("medmnist-gray", tmp_path)
    assert result.counts == {
        "train": {"0": 7, "1": 7, "2": 6},
        "validation": {"0": 2, "1": 2, "2": 2},
        "test": {"0": 2, "1": 2, "2": 2},
    }
    frame = load_prepared("medmnist-gray", tmp_path / "out").split
    official = {"train": "train", "val": "validation", "test": "test"}
    assert all(
        official[i.split("-")[0]] == s for i, s in zip(frame["id"], frame["split"], strict=True)
    )
    assert result.manifest["split"] == "official splits of the source"


def test_progress_lines_show_count_rate_and_eta(tmp_path, capsys):
    written = write_folder(tmp_path / "source", n_per_class=10)
    prepare_dataset("folder", written.source, tmp_path / "mine", workers=1)
    lines = capsys.readouterr().err.strip().splitlines()
    pattern = r"prepare mine: [\d,]+/20 images \(\d+\.\d%\), [\d,]+ img/s, ETA \d+:\d\d"
    assert lines and all(re.fullmatch(pattern, line) for line in lines)
    assert lines[-1].startswith("prepare mine: 20/20 images (100.0%)")
    assert len(lines) <= 21  # every 5% at most, not one per image per call

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    progress = _Progress("cancer", enabled=True, stream=terminal)
    progress.start(220_025)
    progress.done = 1_199
    progress.advance()
    assert re.match(r"\rprepare cancer: 1,200/220,025 images \(0\.5%\)", terminal.getvalue())


def test_a_class_too_small_to_split_is_named(tmp_path):
    written = write_folder(tmp_path / "source", classes=("common", "rare"), n_per_class=12)
    for path in sorted((tmp_path / "source" / "rare").iterdir())[4:]:
        path.unlink()
    with pytest.raises(MedtransferError, match=r"'rare' has 4 images"):
        prepare_dataset("folder", written.source, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_csv_without_the_needed_columns_says_which(tmp_path):
    (tmp_path / "labels.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(MedtransferError, match=r"no column 'path', 'label' \(its columns: file"):
        prepare_dataset("csv", tmp_path / "labels.csv", tmp_path / "out", progress=False)


def test_wrong_source_layout_explains_the_expected_one(tmp_path):
    (tmp_path / "download").mkdir()
    with pytest.raises(MedtransferError, match=r"has no train_labels\.csv.*train/<id>\.tif"):
        prepare_dataset("cancer", tmp_path / "download", tmp_path / "out", progress=False)
    with pytest.raises(MedtransferError, match=r"needs --source"):
        prepare_dataset("retina", None, tmp_path / "out", progress=False)
    with pytest.raises(MedtransferError, match=r"--out .* is inside --source"):
        prepare_dataset("folder", tmp_path / "download", tmp_path / "download" / "out")


@pytest.mark.parametrize("name", ["cancer", "retina", "proteins", "cats_vs_dogs"])
def test_unprepared_dataset_error_gives_download_and_prepare_commands(name, tmp_path):
    with pytest.raises(MedtransferError) as error:
        load_prepared(name, tmp_path)
    message = str(error.value)
    assert "kaggle competitions download -c " in message
    assert f"medtransfer prepare {name} --source DIR" in message
    if name == "retina":
        assert "kaggle competitions download -c aptos2019-blindness-detection" in message


def test_unknown_dataset_suggests_registered_and_prepared_names(tmp_path):
    written = write_folder(tmp_path / "source")
    prepare_dataset("folder", written.source, tmp_path / "data" / "mynodules", progress=False)
    with pytest.raises(MedtransferError, match="Did you mean 'retina'"):
        load_prepared("retnia", tmp_path / "data")
    with pytest.raises(MedtransferError, match="Did you mean 'mynodules'") as error:
        load_prepared("mynodule", tmp_path / "data")
    assert "cats_vs_dogs" in str(error.value)
    with pytest.raises(MedtransferError, match="layout for your own data"):
        load_prepared("folder", tmp_path / "data")


def test_digits_prepare_themselves_on_first_use(tmp_path, capsys):
    dataset = load_prepared("digits", tmp_path)
    assert "preparing it from scikit-learn's bundled digits" in capsys.readouterr().err
    assert len(dataset.split) == 1797
    assert dataset.num_classes == 10 and dataset.class_names == [str(d) for d in range(10)]
    assert dataset.manifest["source"] == "sklearn.datasets.load_digits"
    assert load_prepared("digits", tmp_path).manifest == dataset.manifest
    assert capsys.readouterr().err == ""


def test_other_format_version_asks_to_prepare_again(tmp_path):
    written, result = prepare("cancer", tmp_path)
    manifest = json.loads((result.path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (result.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MedtransferError, match=r"format version 99.*Prepare it again.*--force"):
        load_prepared("cancer", tmp_path / "out")


def test_conversion_threads_keep_the_order_and_compute_a_bounded_number_ahead():
    pulled = []

    def items():
        for item in range(100):
            pulled.append(item)
            yield item

    results = _map_in_threads(lambda x: x * x, items(), 3)
    assert next(results) == 0
    assert len(pulled) == _AHEAD_PER_THREAD * 3  # not all 100 submitted at once
    assert list(results) == [x * x for x in range(1, 100)]


def test_conversion_threads_stop_starting_items_when_the_caller_stops():
    started = []
    lock = threading.Lock()

    def convert(item):
        with lock:
            started.append(item)
        return item

    results = _map_in_threads(convert, range(1000), 2)
    next(results)
    results.close()  # as when storing an image fails, or Ctrl-C
    assert len(started) <= _AHEAD_PER_THREAD * 2  # the rest were cancelled, not started
    # close() shut the pool down: its threads have ended, so none can start another item.
    assert not [t for t in threading.enumerate() if t.name.startswith("medtransfer-prepare")]


def test_an_error_in_a_conversion_thread_reaches_the_caller():
    def convert(item):
        if item == 5:
            raise ValueError("boom at 5")
        return item

    with pytest.raises(ValueError, match="boom at 5"):
        list(_map_in_threads(convert, range(20), 2))


def test_opencv_runs_on_the_calling_thread_while_prepare_converts_and_is_restored():
    before = cv2.getNumThreads()
    with images.opencv_for_our_threads():
        assert cv2.getNumThreads() == 1
        assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT
    assert cv2.getNumThreads() == before
