"""The datasets (source layouts) medtransfer knows, registered under their CLI names.

Each :class:`DatasetSpec` says how to read the layout, how its images are checked and
preprocessed, and the study's defaults for training on it (learning rate,
augmentation). ``medtransfer list`` and the tests iterate :data:`DATASETS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medtransfer.data import sources
from medtransfer.data.fundus import crop_fundus
from medtransfer.data.images import ANY, COLOR, GRAY
from medtransfer.registry import Registry


@dataclass(frozen=True)
class AugmentDefaults:
    """Which train-time augmentations are on by default for a dataset."""

    flips: bool = True
    noise: bool = True
    color: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """One source layout and its study defaults.

    Attributes:
        name: the CLI name.
        description: one paragraph: what the images are, and how they are checked.
        num_classes: fixed number of classes, or None when it depends on the data.
        default_lr: the study's learning rate for this dataset (``--lr`` overrides).
        augment: which augmentations are on by default.
        download: where to get the data and the exact Kaggle CLI command; "" if bundled.
        needs_source: whether ``prepare`` needs ``--source``.
        reader: ``reader(source, *, min_class_count) -> SourceScan``.
        channels: the channel rule for single image files (``COLOR``: exactly 3,
            ``ANY``: 1, 3 or 4; ``GRAY``: exactly 1, as each protein stain).
        preprocess: the layout's own step on each RGB image before downsizing, or None.
        preprocessing: that step in words, for ``manifest.json``.
        native_size: the longer side of every image of the source when it is fixed
            (digits: 8), so that the default input size fits it before the dataset is
            prepared; None when it varies (a prepared dataset's manifest then tells).
        options: the layout's own ``prepare`` options, as keyword arguments of its
            reader (``views``, ``uncertain``, ...).
        default_findings: a multi-label layout's findings a run predicts without
            ``--findings`` (CheXpert: its five competition findings); None: all of them.
    """

    name: str
    description: str
    num_classes: int | None
    default_lr: float
    augment: AugmentDefaults
    download: str
    needs_source: bool
    reader: Callable[..., sources.SourceScan]
    channels: str = ANY
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None
    preprocessing: str = ""
    native_size: int | None = None
    options: tuple[str, ...] = ()
    default_findings: tuple[str, ...] | None = None


DATASETS = Registry[DatasetSpec]("dataset")


def get_dataset(name: str) -> DatasetSpec:
    """Returns the spec registered as ``name``; an unknown name fails with a did-you-mean."""
    return DATASETS.get(name)


def _register(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name, spec)


_register(
    DatasetSpec(
        name="digits",
        description=(
            "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), "
            "stored as gray replicated to RGB. For smoke tests and demos: prepared "
            "automatically on first use. Flips are off (a flipped 2 is not a 2) and so is "
            "colour jitter (the images are gray)."
        ),
        num_classes=10,
        default_lr=1e-3,
        augment=AugmentDefaults(flips=False, noise=True, color=False),
        download="",
        needs_source=False,
        reader=sources.read_digits,
        native_size=8,
    )
)
_register(
    DatasetSpec(
        name="cancer",
        description=(
            "Histopathologic cancer detection: 96x96 RGB TIFF patches of lymph node "
            "sections, label 1 when the centre holds tumour tissue (classes '0', '1'). "
            "Decoded with OpenCV (tf.io cannot read TIFF); a file without exactly 3 "
            "channels is rejected ('wrong channels')."
        ),
        num_classes=2,
        default_lr=1e-5,
        augment=AugmentDefaults(),
        download=(
            "Kaggle competition 'histopathologic-cancer-detection' (accept its rules on "
            "kaggle.com first): 'kaggle competitions download -c "
            "histopathologic-cancer-detection', then 'unzip histopathologic-cancer-detection.zip "
            "-d histopathologic-cancer-detection'. The folder holds train_labels.csv and "
            "train/<id>.tif."
        ),
        needs_source=True,
        reader=sources.read_cancer,
        channels=COLOR,
    )
)
_register(
    DatasetSpec(
        name="retina",
        description=(
            "APTOS 2019 blindness detection: colour fundus photographs of many sizes, graded "
            "0-4 for diabetic retinopathy (classes '0'..'4', in grade order). The black "
            "border around the eye is cropped before downsizing; a file without exactly 3 "
            "channels is rejected ('wrong channels')."
        ),
        num_classes=5,
        default_lr=1e-4,
        augment=AugmentDefaults(),
        download=(
            "Kaggle competition 'aptos2019-blindness-detection' (accept its rules on "
            "kaggle.com first): 'kaggle competitions download -c "
            "aptos2019-blindness-detection', then 'unzip aptos2019-blindness-detection.zip "
            "-d aptos2019-blindness-detection'. The folder holds train.csv and "
            "train_images/<id_code>.png."
        ),
        needs_source=True,
        reader=sources.read_retina,
        channels=COLOR,
        preprocess=crop_fundus,
        preprocessing="fundus crop (the black border around the eye removed)",
    )
)
_register(
    DatasetSpec(
        name="proteins",
        description=(
            "Human Protein Atlas: 512x512 fluorescence microscopy, one single-channel PNG "
            "per stain; RGB is built from the red (microtubules), green (protein) and blue "
            "(nucleus) stains, each of which must be single-channel. The study's "
            "single-label subset: images with exactly one class, and classes with at least "
            f"--min-class-count (default {sources.DEFAULT_MIN_CLASS_COUNT}) such images (17 "
            "classes in the study). Class names are the atlas's location names. Colour "
            "jitter is off by default: a hue shift moves signal between stains."
        ),
        num_classes=None,
        default_lr=1e-4,
        augment=AugmentDefaults(flips=True, noise=True, color=False),
        download=(
            "Kaggle competition 'human-protein-atlas-image-classification' (accept its "
            "rules on kaggle.com first): 'kaggle competitions download -c "
            "human-protein-atlas-image-classification', then 'unzip "
            "human-protein-atlas-image-classification.zip -d "
            "human-protein-atlas-image-classification'. The folder holds train.csv and "
            "train/<Id>_{red,green,blue,yellow}.png."
        ),
        needs_source=True,
        reader=sources.read_proteins,
        channels=GRAY,
        preprocessing="RGB from the red, green and blue stain PNGs (yellow unused)",
    )
)
_register(
    DatasetSpec(
        name="cats_vs_dogs",
        description=(
            "Cats vs dogs photographs (classes 'cat', 'dog'), JPEG, either Kaggle's "
            "train/cat.<n>.jpg layout or Microsoft's PetImages/Cat, PetImages/Dog. Gray "
            "images are replicated to RGB and alpha dropped; PetImages' zero-byte and "
            "unreadable files are rejected and listed in rejected.csv."
        ),
        num_classes=2,
        default_lr=1e-5,
        augment=AugmentDefaults(),
        download=(
            "Kaggle competition 'dogs-vs-cats' (accept its rules on kaggle.com first): "
            "'kaggle competitions download -c dogs-vs-cats', unzip it, then unzip the "
            "train.zip inside, giving train/cat.<n>.jpg and train/dog.<n>.jpg. Or "
            "Microsoft's PetImages release (the Microsoft Download Center 'Kaggle Cats and "
            "Dogs Dataset', also 'kaggle datasets download -d "
            "shaunthesheep/microsoft-catsvsdogs-dataset'), which unzips to PetImages/Cat "
            "and PetImages/Dog."
        ),
        needs_source=True,
        reader=sources.read_cats_vs_dogs,
        channels=ANY,
    )
)
_register(
    DatasetSpec(
        name="folder",
        description=(
            "Your own images, one subfolder per class (class name = folder name): jpg, "
            "png, tif, bmp or webp, 8 or 16 bit, with 1, 3 or 4 channels (gray replicated "
            "to RGB, alpha dropped). Prepare under a name of your choice with --out "
            "datasets/NAME, then train with --dataset NAME."
        ),
        num_classes=None,
        default_lr=1e-4,
        augment=AugmentDefaults(),
        download="",
        needs_source=True,
        reader=sources.read_folder,
        channels=ANY,
    )
)
_register(
    DatasetSpec(
        name="csv",
        description=(
            "Your own images listed in a CSV with the columns path and label (and "
            "optionally id); paths are relative to the CSV's folder unless absolute. Same "
            "image rules as folder. Multi-label with --label-columns A,B,C (1, 0, -1 "
            "unknown, blank negative) or --labels-column X --labels-sep '|'; --group-column "
            "keeps each patient in one split. Prepare under a name of your choice with --out "
            "datasets/NAME, then train with --dataset NAME."
        ),
        num_classes=None,
        default_lr=1e-4,
        augment=AugmentDefaults(),
        download="",
        needs_source=True,
        reader=sources.read_csv_layout,
        channels=ANY,
        options=("label_columns", "labels_column", "labels_sep", "group_column"),
    )
)
_register(
    DatasetSpec(
        name="medmnist",
        description=(
            "A 2D MedMNIST .npz (PathMNIST, DermaMNIST, BloodMNIST, ...; multi-label "
            "ChestMNIST with its 14 findings), keeping its official train/val/test splits; "
            "gray subsets are replicated to RGB. Colour jitter stays on by default: on gray "
            "images hue and saturation change nothing while brightness and contrast still "
            "apply. Prepare under a name of your choice with --out datasets/NAME."
        ),
        num_classes=None,
        default_lr=1e-4,
        augment=AugmentDefaults(),
        download=(
            "MedMNIST (https://medmnist.com): download one subset's .npz, e.g. "
            "pathmnist.npz, from the Zenodo record linked there, or with the medmnist "
            "package: 'pip install medmnist', then in Python 'medmnist.PathMNIST(split=\"train\", "
            'download=True, root=".")\', which saves ./pathmnist.npz.'
        ),
        needs_source=True,
        reader=sources.read_medmnist,
    )
)
_register(
    DatasetSpec(
        name="digits_pairs",
        description=(
            "Multi-label, bundled: two of scikit-learn's 8x8 digits side by side (16x16, "
            "1,797 images), findings '0'..'9' = the digits shown. Split by groups of three "
            "source digits, so no source digit image is in two splits. Prepared "
            "automatically on first use; flips and colour jitter are off."
        ),
        num_classes=10,
        default_lr=1e-3,
        augment=AugmentDefaults(flips=False, noise=True, color=False),
        download="",
        needs_source=False,
        reader=sources.read_digits_pairs,
        native_size=16,
    )
)
_register(
    DatasetSpec(
        name="chexpert",
        description=(
            "CheXpert chest radiographs (Stanford), multi-label: 14 observations from "
            "train.csv and valid.csv (pooled, then split 8:1:1 grouped by patient). "
            "--views frontal (default), lateral or all; --uncertain ones (default), zeros "
            "or ignore (masked) for the -1.0 labels; blank counts as negative. Gray JPEGs, "
            "replicated to RGB. Flips are off (the heart is on the left) and so is colour "
            "jitter."
        ),
        num_classes=14,
        default_lr=1e-4,
        augment=AugmentDefaults(flips=False, noise=True, color=False),
        download=(
            "Stanford AIMI (register at https://stanfordmlgroup.github.io/competitions/"
            "chexpert/ and accept the research use agreement; the link comes by e-mail): "
            "download CheXpert-v1.0-small.zip (11 GB) and 'unzip CheXpert-v1.0-small.zip'. "
            "The folder holds train.csv, valid.csv, train/ and valid/."
        ),
        needs_source=True,
        reader=sources.read_chexpert,
        options=("views", "uncertain"),
        # The CheXpert competition's five findings (Irvin et al. 2019), as Transfusion.
        default_findings=("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                          "Pleural Effusion"),
    )
)
_register(
    DatasetSpec(
        name="chestxray14",
        description=(
            "NIH ChestX-ray14, multi-label: 14 findings from Data_Entry_2017.csv's Finding "
            "Labels ('No Finding' = none), grouped by Patient ID; test_list.txt, when "
            "present, is kept as the test split and the rest split 8:1 into train and "
            "validation. Gray PNGs replicated to RGB. Flips and colour jitter are off."
        ),
        num_classes=14,
        default_lr=1e-4,
        augment=AugmentDefaults(flips=False, noise=True, color=False),
        download=(
            "NIH (https://nihcc.app.box.com/v/ChestXray-NIHCC): Data_Entry_2017_v2020.csv, "
            "train_val_list.txt, test_list.txt and images_001.tar.gz ... images_012.tar.gz, "
            "each unpacked in one folder ('for f in images_*.tar.gz; do tar xzf $f; done', "
            "giving images/). Or Kaggle's copy: 'kaggle datasets download -d "
            "nih-chest-xrays/data', then 'unzip data.zip -d chestxray14' (images_NNN/images/)."
        ),
        needs_source=True,
        reader=sources.read_chestxray14,
    )
)
