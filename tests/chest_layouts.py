"""Tiny chest X-ray datasets in CheXpert's and ChestX-ray14's real layouts, for tests.

The CSVs have the real column names; the images are 16x16 gray JPEGs (CheXpert) or PNGs
(ChestX-ray14) in the real folder structure. Import with ``from chest_layouts import ...``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

CHEXPERT_COLUMNS = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
CHESTXRAY14_COLUMNS = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
    "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
    "OriginalImagePixelSpacing[x", "y]", "",
]


def gray_image(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def _write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), gray_image(seed))


def chexpert_row(path: str, view: str = "Frontal", **values: str) -> dict[str, str]:
    """One train.csv row: ``values`` maps a finding (spaces as underscores) to its text."""
    row = dict.fromkeys(CHEXPERT_COLUMNS, "")
    row.update({"Path": path, "Sex": "Female", "Age": "60", "Frontal/Lateral": view,
                "AP/PA": "AP" if view == "Frontal" else ""})
    row.update({name.replace("_", " "): value for name, value in values.items()})
    return row


def chexpert_rows(folder: str) -> tuple[list[dict], list[dict]]:
    """train.csv and valid.csv rows: patient 1 has two studies and a lateral view; the
    first three frontal rows are the ones the tests check by hand."""
    train = [
        chexpert_row(f"{folder}/train/patient00001/study1/view1_frontal.jpg",
                     Cardiomegaly="1.0", Edema="-1.0", Atelectasis="0.0"),
        chexpert_row(f"{folder}/train/patient00001/study1/view2_lateral.jpg", "Lateral",
                     Cardiomegaly="1.0"),
        chexpert_row(f"{folder}/train/patient00001/study2/view1_frontal.jpg",
                     Consolidation="-1.0", Pleural_Effusion="1.0", Support_Devices="1.0"),
        chexpert_row(f"{folder}/train/patient00002/study1/view1_frontal.jpg",
                     No_Finding="1.0", Edema="0.0"),
    ]
    for patient in range(3, 15):
        for study in (1, 2) if patient % 4 == 0 else (1,):
            base = f"{folder}/train/patient{patient:05d}/study{study}"
            train.append(chexpert_row(f"{base}/view1_frontal.jpg",
                                      Edema="1.0" if patient % 2 else "0.0",
                                      Cardiomegaly="-1.0" if patient % 3 == 0 else "1.0",
                                      Atelectasis="1.0" if patient % 5 == 0 else ""))
            if patient % 3 == 1:
                train.append(chexpert_row(f"{base}/view2_lateral.jpg", "Lateral", Edema="1.0"))
    valid = [chexpert_row(f"{folder}/valid/patient{p}/study1/view1_frontal.jpg",
                          Edema="1.0", Cardiomegaly="0.0") for p in (64541, 64542)]
    return train, valid


def write_chexpert(root: Path, rows: tuple[list[dict], list[dict]] | None = None,
                   folder: str = "CheXpert-v1.0-small") -> Path:
    """Writes CheXpert-v1.0-small/{train,valid}.csv and an image for every row; returns
    the folder (``--source``)."""
    source = root / folder
    source.mkdir(parents=True)
    train, valid = rows or chexpert_rows(folder)
    for name, table in (("train.csv", train), ("valid.csv", valid)):
        with open(source / name, "w", newline="") as file:
            writer = csv.DictWriter(file, CHEXPERT_COLUMNS)
            writer.writeheader()
            writer.writerows(table)
        for index, row in enumerate(table):
            inner = Path(row["Path"]).parts[1:]
            if ".." not in inner:
                _write_image(source.joinpath(*inner), seed=index)
    return source


def chestxray14_row(name: str, labels: str, patient: int) -> dict[str, str]:
    row = dict.fromkeys(CHESTXRAY14_COLUMNS, "")
    row.update({"Image Index": name, "Finding Labels": labels, "Follow-up #": "0",
                "Patient ID": str(patient), "Patient Age": "58", "Patient Gender": "M",
                "View Position": "PA", "OriginalImage[Width": "2682", "Height]": "2749",
                "OriginalImagePixelSpacing[x": "0.143", "y]": "0.143"})
    return row


CHESTXRAY14_CYCLE = ["Cardiomegaly", "No Finding", "Effusion|Infiltration", "Cardiomegaly|Effusion",
                     "Pleural_Thickening", "Hernia"]


def write_chestxray14(root: Path, test_patients: tuple[int, ...] = (13, 14, 15),
                      extra_rows: list[dict] | None = None) -> Path:
    """Kaggle's layout: Data_Entry_2017.csv, images_001/images and images_002/images, and
    the official train_val_list.txt and test_list.txt; 15 patients with two images each."""
    source = root / "chestxray14"
    rows = []
    for patient in range(1, 16):
        for follow_up in range(2):
            name = f"{patient:08d}_{follow_up:03d}.png"
            rows.append(chestxray14_row(name, CHESTXRAY14_CYCLE[(patient + follow_up) % 6],
                                        patient))
            folder = "images_001" if patient <= 8 else "images_002"
            _write_image(source / folder / "images" / name, seed=patient * 10 + follow_up)
    rows += extra_rows or []
    with open(source / "Data_Entry_2017.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, CHESTXRAY14_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    test = [r["Image Index"] for r in rows if r["Patient ID"] in map(str, test_patients)]
    (source / "test_list.txt").write_text("\n".join(test) + "\n")
    (source / "train_val_list.txt").write_text(
        "\n".join(r["Image Index"] for r in rows if r["Image Index"] not in test) + "\n")
    return source
