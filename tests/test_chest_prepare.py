"""Multi-label datasets: the bundled digits_pairs, CheXpert, ChestX-ray14, multi-label csv
and MedMNIST layouts, grouped splits, and the multi-label shard format."""

import csv

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from chest_layouts import (
    chestxray14_row,
    chexpert_row,
    chexpert_rows,
    gray_image,
    write_chestxray14,
    write_chexpert,
)

from medtransfer.data import shards
from medtransfer.data.prepare import prepare_dataset
from medtransfer.data.prepared import load_prepared
from medtransfer.data.sources import CHESTXRAY14_FINDINGS, CHEXPERT_FINDINGS
from medtransfer.errors import MedtransferError


def read_rejected(folder):
    frame = pd.read_csv(folder / "rejected.csv", dtype=str, keep_default_na=False)
    return dict(zip(frame["id"], frame["reason"], strict=True))


def shard_labels(dataset, split):
    """(id, label vector) of every record of ``split``, read through the shard format."""
    records = tf.data.TFRecordDataset([str(p) for p in dataset.shard_paths(split)])
    parse = lambda r: shards.parse_example(r, dataset.num_classes)  # noqa: E731
    return [(e["id"].numpy().decode(), e["label"].numpy(), e["image"].numpy())
            for e in records.map(parse)]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return load_prepared("digits_pairs", tmp_path_factory.mktemp("data"))


def test_digits_pairs_is_multi_label_and_keeps_groups_in_one_split(pairs):
    assert pairs.task == "multi_label" and pairs.multi_label
    assert pairs.manifest["format_version"] == 3
    assert pairs.class_names == [str(d) for d in range(10)]
    assert len(pairs.split) == 1797
    assert list(pairs.split.columns) == ["id", "label", "split", "masked", "group"]
    # 599 groups of three pairs, each group in one split.
    assert pairs.split.groupby("group").size().eq(3).all()
    assert pairs.split.groupby("group")["split"].nunique().eq(1).all()
    images = pairs.manifest["images"]
    assert sum(images.values()) == 1797
    # 8:1:1 of 599 groups: 479 / 60 / 60 groups, within a few groups.
    assert abs(images["train"] / 3 - 479) <= 3 and abs(images["test"] / 3 - 60) <= 3
    # Every digit has positives in every split, so there is nothing to warn about.
    assert pairs.manifest["split_warnings"] == []
    assert all(n > 0 for counts in pairs.manifest["counts"].values() for n in counts.values())


def test_digits_pairs_shards_hold_the_label_matrix_and_the_two_digits(pairs):
    from sklearn.datasets import load_digits

    digits = load_digits()
    source = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    frame = pairs.split_frame("test")
    matrix = pairs.label_matrix(frame)
    stored = shard_labels(pairs, "test")
    assert [image_id for image_id, _, _ in stored] == frame["id"].tolist()
    np.testing.assert_array_equal(np.stack([label for _, label, _ in stored]), matrix)
    assert set(matrix.sum(axis=1)) <= {1, 2}
    for _, label, encoded in stored[:5]:
        pixels = shards.decode_image(encoded).numpy()[..., 0]
        assert pixels.shape == (16, 16) and not pixels[:4].any() and not pixels[12:].any()
        shown = set()
        for half in (pixels[4:12, :8], pixels[4:12, 8:]):
            match = np.flatnonzero((source == half).all(axis=(1, 2)))
            assert len(match) >= 1
            shown.add(int(digits.target[match[0]]))
        assert {int(i) for i in np.flatnonzero(label)} == shown


# --- CheXpert --------------------------------------------------------------------------------

CHEXPERT_HAND = {
    # train.csv: Cardiomegaly 1.0, Edema -1.0, Atelectasis 0.0, the rest blank.
    "train/patient00001/study1/view1_frontal": {
        "ones": [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        "zeros": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "ignore": [0, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0],
    },
    # Consolidation -1.0, Pleural Effusion 1.0, Support Devices 1.0.
    "train/patient00001/study2/view1_frontal": {
        "ones": [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1],
        "zeros": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1],
        "ignore": [0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 1, 0, 0, 1],
    },
    # No Finding 1.0, Edema 0.0.
    "train/patient00002/study1/view1_frontal": {
        policy: [1] + [0] * 13 for policy in ("ones", "zeros", "ignore")
    },
}


def prepare_chexpert(tmp_path, name="chexpert", rows=None, **options):
    source = write_chexpert(tmp_path / "download", rows)
    settings = {"workers": 1, "progress": False}
    layout_options = {k: options.pop(k) for k in ("views", "uncertain") if k in options}
    result = prepare_dataset("chexpert", source, tmp_path / name, **settings, **options,
                             layout_options=layout_options)
    return result, load_prepared(name, tmp_path)


@pytest.mark.parametrize("uncertain", ["ones", "zeros", "ignore"])
def test_chexpert_label_matrix_by_hand_for_each_uncertain_policy(uncertain, tmp_path):
    result, dataset = prepare_chexpert(tmp_path, uncertain=uncertain)
    assert dataset.class_names == list(CHEXPERT_FINDINGS)
    assert dataset.manifest["options"]["uncertain"] == uncertain
    assert dataset.manifest["options"]["views"] == "frontal"
    frame = dataset.split
    matrix = dataset.label_matrix(frame)
    for image_id, expected in CHEXPERT_HAND.items():
        row = frame.index[frame["id"] == image_id][0]
        assert matrix[row].tolist() == expected[uncertain], image_id
    # The shards hold the same vectors as split.csv says.
    for split in shards.SPLITS:
        part = dataset.split_frame(split)
        stored = shard_labels(dataset, split)
        assert [i for i, _, _ in stored] == part["id"].tolist()
        if stored:
            np.testing.assert_array_equal(np.stack([v for _, v, _ in stored]),
                                          dataset.label_matrix(part))
    # ignore masks: Edema of patient 1 study 1 and Consolidation of study 2, plus the
    # Cardiomegaly -1.0 of patients 3, 6, 9, 12 (12 has two studies): 2 + 5 masked labels.
    masked = sum(sum(per.values()) for per in dataset.manifest["masked"].values())
    assert masked == (7 if uncertain == "ignore" else 0)


def test_chexpert_views_pools_valid_and_groups_by_patient(tmp_path):
    result, dataset = prepare_chexpert(tmp_path)
    # 18 frontal rows in train.csv + 2 in valid.csv; the 6 lateral rows are excluded.
    assert sum(dataset.manifest["totals"][s] for s in shards.SPLITS) == 20
    assert result.num_excluded == 6 and result.num_rejected == 0
    assert dataset.split["id"].str.contains("valid/patient64541").any()
    assert dataset.split.groupby("group")["split"].nunique().eq(1).all()
    assert set(dataset.split["group"]) == {f"patient{p:05d}" for p in range(1, 15)} | {
        "patient64541", "patient64542"}
    assert dataset.manifest["group_column"] == "patient (from Path)"
    assert "pooled" in dataset.manifest["split"]
    _, everything = prepare_chexpert(tmp_path / "all", views="all")
    assert len(everything.split) == 26
    assert everything.split["id"].str.endswith("_lateral").sum() == 6


def test_chexpert_grouped_split_is_seeded_and_ignores_row_order(tmp_path):
    train, valid = chexpert_rows("CheXpert-v1.0-small")
    _, first = prepare_chexpert(tmp_path / "a", rows=(train, valid))
    _, again = prepare_chexpert(tmp_path / "b", rows=(train[::-1], valid[::-1]))
    _, other = prepare_chexpert(tmp_path / "c", rows=(train, valid), seed=1)
    by_id = lambda d: dict(zip(d.split["id"], d.split["split"], strict=True))  # noqa: E731
    assert by_id(first) == by_id(again)
    assert first.split["id"].tolist() == again.split["id"].tolist()
    assert by_id(first) != by_id(other)


def test_too_few_patients_for_a_grouped_split_is_refused(tmp_path):
    # The lateral views come from 5 patients: too few for train, validation and test.
    with pytest.raises(MedtransferError, match="at least 10 groups.*from 5"):
        prepare_chexpert(tmp_path, views="lateral")


def test_chexpert_bad_rows_are_listed_with_their_reason(tmp_path):
    folder = "CheXpert-v1.0-small"
    train, valid = chexpert_rows(folder)
    train += [
        chexpert_row(f"{folder}/train/patient00020/study1/view1_frontal.jpg", Edema="2.0"),
        chexpert_row(f"{folder}/../outside/view1_frontal.jpg"),
        chexpert_row(f"{folder}/train/patient00021/study1/view1_frontal.jpg", "Oblique"),
        chexpert_row(f"{folder}/train/nobody/study1/view1_frontal.jpg"),
    ]
    source = write_chexpert(tmp_path / "download", (train, valid))
    (source / "train/patient00020/study1/view1_frontal.jpg").unlink()
    missing = chexpert_row(f"{folder}/train/patient00022/study1/view1_frontal.jpg")
    unreadable = chexpert_row(f"{folder}/train/patient00023/study1/view1_frontal.jpg")
    with open(source / "train.csv", "a", newline="") as file:
        csv.DictWriter(file, list(missing)).writerows([missing, unreadable])
    (source / "train/patient00023/study1").mkdir(parents=True)
    (source / "train/patient00023/study1/view1_frontal.jpg").write_text("not a jpeg")
    result = prepare_dataset("chexpert", source, tmp_path / "out", workers=1, progress=False,
                             max_reject=0.5)
    reasons = read_rejected(result.path)
    assert reasons["train/patient00020/study1/view1_frontal"] == (
        "label value '2.0' in column 'Edema' is not 1, 0, -1 or blank")
    assert reasons["../outside/view1_frontal"].startswith("path '")
    assert "outside the source" in reasons["../outside/view1_frontal"]
    assert reasons["train/patient00021/study1/view1_frontal"] == (
        "Frontal/Lateral value 'Oblique' is not Frontal or Lateral")
    assert "no patientNNNNN folder" in reasons["train/nobody/study1/view1_frontal"]
    assert reasons["train/patient00022/study1/view1_frontal"] == "missing file"
    assert reasons["train/patient00023/study1/view1_frontal"].startswith("not an image")
    assert reasons["train/patient00001/study1/view2_lateral"] == "lateral view (--views frontal)"
    assert result.num_rejected == 6 and result.num_excluded == 6


# --- ChestX-ray14 ----------------------------------------------------------------------------


def test_chestxray14_labels_groups_and_official_test_list(tmp_path):
    source = write_chestxray14(tmp_path / "download")
    result = prepare_dataset("chestxray14", source, tmp_path / "nih", workers=1, progress=False)
    dataset = load_prepared("nih", tmp_path)
    assert dataset.class_names == list(CHESTXRAY14_FINDINGS) and dataset.multi_label
    frame = dataset.split
    matrix = dict(zip(frame["id"], dataset.label_matrix(frame).tolist(), strict=True))
    assert matrix["00000001_000"] == [0] * 14  # No Finding
    assert matrix["00000001_001"] == [0, 0, 1, 1] + [0] * 10  # Effusion|Infiltration
    assert matrix["00000002_001"] == [0, 1, 1] + [0] * 11  # Cardiomegaly|Effusion
    assert matrix["00000004_001"] == [0] * 13 + [1]  # Hernia
    # test_list.txt is the test split; the other 12 patients are split 8:1, grouped.
    test = set(frame[frame["split"] == "test"]["group"])
    assert test == {"13", "14", "15"} and (frame["split"] == "test").sum() == 6
    assert frame.groupby("group")["split"].nunique().eq(1).all()
    assert (frame["split"] == "validation").sum() >= 2
    assert "test_list.txt kept" in dataset.manifest["split"]
    assert result.num_rejected == 0 and len(frame) == 30


def test_chestxray14_bad_rows_are_listed_with_their_reason(tmp_path):
    extra = [chestxray14_row("00000016_000.png", "Cardiomegally", 16),
             chestxray14_row("00000017_000.png", "Edema", 17),
             chestxray14_row("00000018_000.png", "Edema", 18)]
    extra[1]["Patient ID"] = ""
    source = write_chestxray14(tmp_path / "download", extra_rows=extra)
    (source / "images_002" / "images" / "00000017_000.png").write_bytes(b"\x89PNG")
    result = prepare_dataset("chestxray14", source, tmp_path / "nih", workers=1,
                             progress=False, max_reject=0.5)
    reasons = read_rejected(result.path)
    assert reasons["00000016_000"].startswith("unknown finding 'Cardiomegally' in Finding Labels")
    assert reasons["00000017_000"] == "empty Patient ID"
    assert reasons["00000018_000"] == "missing file"
    assert result.num_rejected == 3


# --- csv and medmnist, multi-label ---------------------------------------------------------------


def write_chest_csv(folder, rows, header):
    folder.mkdir(parents=True)
    for index, row in enumerate(rows):
        cv2.imwrite(str(folder / row[0]), gray_image(index))
    with open(folder / "labels.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return folder / "labels.csv"


def test_csv_label_columns_mask_unknowns_group_and_warn_of_rare_findings(tmp_path, capsys):
    rows = [(f"img{i:02d}.png", ["1", "0", ""][i % 3], ["0", "1", "-1"][i % 3],
             "1" if i == 0 else "0", f"p{i // 2}") for i in range(24)]
    rows.append(("img24.png", "yes", "0", "0", "p12"))
    rows.append(("img25.png", "1", "0", "0", ""))
    source = write_chest_csv(tmp_path / "mine", rows, ["path", "Edema", "Effusion", "Rare", "pid"])
    result = prepare_dataset(
        "csv", source, tmp_path / "mine_prepared", workers=1, progress=False, max_reject=0.2,
        layout_options={"label_columns": ["Edema", "Effusion", "Rare"], "group_column": "pid"})
    dataset = load_prepared("mine_prepared", tmp_path)
    assert dataset.class_names == ["Edema", "Effusion", "Rare"]
    matrix = dict(zip(dataset.split["id"], dataset.label_matrix(dataset.split).tolist(),
                      strict=True))
    assert matrix["img00.png"] == [1, 0, 1]
    assert matrix["img01.png"] == [0, 1, 0]
    assert matrix["img02.png"] == [0, -1, 0]  # blank Edema is negative, -1 unknown
    assert dataset.split.groupby("group")["split"].nunique().eq(1).all()
    assert dataset.manifest["options"]["label_columns"] == ["Edema", "Effusion", "Rare"]
    reasons = read_rejected(result.path)
    assert reasons["img24.png"] == "label value 'yes' in column 'Edema' is not 1, 0, -1 or blank"
    assert reasons["img25.png"] == "empty group id in column 'pid'"
    # One image has Rare: two splits have none, which prepare says.
    [warning] = dataset.manifest["split_warnings"]
    assert warning.startswith("'Rare' has too few positive images for every split")
    assert "warning: 'Rare'" in capsys.readouterr().err


def test_csv_labels_column_and_single_label_groups(tmp_path):
    names = ["Edema|Effusion", "", "Effusion", "Edema"]
    rows = [(f"img{i:02d}.png", names[i % 4], "cat" if i % 2 else "dog", f"p{i // 3}")
            for i in range(36)]
    source = write_chest_csv(tmp_path / "mine", rows, ["path", "findings", "label", "patient"])
    prepare_dataset("csv", source, tmp_path / "multi", workers=1, progress=False,
                    layout_options={"labels_column": "findings"})
    multi = load_prepared("multi", tmp_path)
    assert multi.class_names == ["Edema", "Effusion"] and "group" not in multi.split
    assert multi.label_matrix(multi.split[multi.split["id"] == "img00.png"]).tolist() == [[1, 1]]
    assert multi.label_matrix(multi.split[multi.split["id"] == "img01.png"]).tolist() == [[0, 0]]
    prepare_dataset("csv", source, tmp_path / "single", workers=1, progress=False,
                    layout_options={"group_column": "patient"})
    single = load_prepared("single", tmp_path)
    assert single.task == "single_label" and single.manifest["format_version"] == 2
    assert single.split.groupby("group")["split"].nunique().eq(1).all()
    assert single.split.groupby("group").size().eq(3).all()


def test_layout_options_are_checked(tmp_path):
    source = write_chest_csv(tmp_path / "mine", [("a.png", "x", "1")], ["path", "label", "A"])
    with pytest.raises(MedtransferError, match="pass one"):
        prepare_dataset("csv", source, tmp_path / "o", layout_options={
            "label_columns": ["A"], "labels_column": "label"})
    with pytest.raises(MedtransferError, match="--labels-column, which is not given"):
        prepare_dataset("csv", source, tmp_path / "o", layout_options={"labels_sep": ";"})
    with pytest.raises(MedtransferError, match="--views does not apply to the csv layout"):
        prepare_dataset("csv", source, tmp_path / "o", layout_options={"views": "all"})
    chexpert = write_chexpert(tmp_path / "download")
    with pytest.raises(MedtransferError, match="Did you mean 'ignore'"):
        prepare_dataset("chexpert", chexpert, tmp_path / "o",
                        layout_options={"uncertain": "ignor"})


def test_medmnist_multi_label_keeps_official_splits_and_names(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 3), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n * 14).reshape(n, 14) % 5 == 0).astype(np.uint8)
    arrays["train_labels"][1, 3] = 2
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    result = prepare_dataset("medmnist", tmp_path / "chestmnist.npz", tmp_path / "chest",
                             workers=1, progress=False, max_reject=0.2)
    dataset = load_prepared("chest", tmp_path)
    assert dataset.class_names[:3] == ["atelectasis", "cardiomegaly", "effusion"]
    assert dataset.manifest["images"] == {"train": 11, "validation": 3, "test": 3}
    assert read_rejected(result.path)["train-000001"].startswith("label values [")
    test = dataset.split_frame("test")
    np.testing.assert_array_equal(dataset.label_matrix(test), arrays["test_labels"])


def test_prepare_command_passes_the_layout_options(tmp_path, capsys):
    from medtransfer.cli import main

    source = write_chexpert(tmp_path / "download")
    out = tmp_path / "cx"
    assert main(["prepare", "chexpert", "--source", str(source), "--out", str(out),
                 "--uncertain", "zeros", "--views", "all", "--workers", "1",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    totals = load_prepared("cx", tmp_path).manifest["totals"]
    assert f"train {totals['train']}, validation {totals['validation']}" in printed
    assert totals["all"] == 26
    options = load_prepared("cx", tmp_path).manifest["options"]
    assert (options["uncertain"], options["views"]) == ("zeros", "all")
    # The same command again does nothing; another policy is refused without --force.
    assert main(["prepare", "chexpert", "--source", str(source), "--out", str(out),
                 "--uncertain", "ignore", "--views", "all", "--no-progress"]) == 2
    assert "uncertain zeros (now ignore)" in capsys.readouterr().err


def test_chestxray14_without_test_list_splits_8_1_1_by_patient(tmp_path):
    source = write_chestxray14(tmp_path / "download")
    (source / "test_list.txt").unlink()
    (source / "train_val_list.txt").unlink()
    prepare_dataset("chestxray14", source, tmp_path / "nih", workers=1, progress=False)
    dataset = load_prepared("nih", tmp_path)
    frame = dataset.split
    assert set(frame["split"]) == set(shards.SPLITS)
    assert frame.groupby("group")["split"].nunique().eq(1).all()
    # 15 patients of two images: 8:1:1 of the patients is 12 / 1.5 / 1.5.
    assert frame.groupby("split")["group"].nunique()["train"] in (11, 12, 13)
    assert "grouped by Patient ID" in dataset.manifest["split"]
