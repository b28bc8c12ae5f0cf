"""Array, image and text data: npz archives, image folders, the `image` and `tokenize` steps, and
the shipped example data (examples/data)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from compilers.data.load import apply_array_prep, apply_prep, load_dataset
from compilers.data.prep import PrepContext, tokens
from compilers.data.split import split_sizes
from dsl.errors import DataError, SpecError
from dsl.parse import parse_spec
from dsl.registry import PREP, SOURCES

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"layers": [{"dense": 2}]}


def spec(data: dict, **top):
    return parse_spec({"data": data, "model": MODEL, **top})


def load(data: dict, cwd: Path = ROOT, **top):
    return load_dataset(spec(data, **top), cwd)


def data_error(data: dict, cwd: Path = ROOT, **top) -> DataError:
    with pytest.raises(DataError) as info:
        load(data, cwd, **top)
    assert "\n" not in str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------
# Registration

def test_registered():
    assert {"npz", "image_folder"} <= set(SOURCES.names())
    assert {"image", "tokenize"} <= set(PREP.names())
    for entry in (SOURCES.get("npz"), SOURCES.get("image_folder"), PREP.get("image"), PREP.get("tokenize")):
        assert entry.doc
        for f in entry.fields():
            assert f.metadata.get("doc"), (entry.name, f.name)
    assert SOURCES.get("npz").meta.get("file") and SOURCES.get("image_folder").meta.get("file")


def test_registering_modules_import_nothing_heavy():
    code = ("import sys, compilers.data.sources, compilers.data.prep, compilers.data.load;"
            "print(sorted(m for m in ('pandas', 'sklearn', 'jax', 'pyarrow', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parse_source_kinds(tmp_path, monkeypatch):
    assert spec({"source": "a/b.npz"}).data.source.kind == "npz"
    assert spec({"source": "a/B.NPZ", "options": {"x_key": "images"}}).data.source.options.x_key == "images"
    assert spec({"source": "no/such/folder/"}).data.source.kind == "image_folder"
    (tmp_path / "pics").mkdir()
    assert spec({"source": str(tmp_path / "pics")}).data.source.kind == "image_folder"
    monkeypatch.chdir(tmp_path)
    item = spec({"source": "pics", "options": {"size": [8, 6], "grayscale": True}}).data.source
    assert item.kind == "image_folder" and item.options.size == (8, 6) and item.options.grayscale
    with pytest.raises(SpecError, match=r"data.source: cannot read 'x.txt': expected a .csv, .parquet or .npz"):
        spec({"source": "x.txt"})
    with pytest.raises(SpecError, match=r"size must be \[height, width\], got \[8\]"):
        spec({"source": "pics/", "options": {"size": [8]}})
    with pytest.raises(SpecError, match="size entries must be positive"):
        spec({"source": "pics/", "prep": [{"image": [0, 4]}]})
    with pytest.raises(SpecError, match="unknown option 'sep'"):
        spec({"source": "pics/", "options": {"sep": ";"}})


# ---------------------------------------------------------------------------------------------
# npz

def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_round_trip(tmp_path):
    n = 40
    x = np.repeat(np.arange(n, dtype=np.float64), 30).reshape(n, 6, 5, 1)     # example i is all i
    write_npz(tmp_path / "d.npz", x=x, y=np.arange(n) % 4)
    data = load({"source": "d.npz"}, tmp_path)
    assert data.task == "classification" and data.class_names == ["0", "1", "2", "3"]
    assert data.input_shape == (6, 5, 1) and data.feature_names == [f"x{i}" for i in range(30)]
    assert data.raw is None and data.target == "y" and data.vocabulary is None
    assert data.sizes() == split_sizes(n, 0.2, 0.1)
    seen = []
    for split in ("train", "val", "test"):
        xs, ys = data.x[split], data.y[split]
        assert xs.dtype == np.float32 and xs.shape == (len(ys), 6, 5, 1) and ys.dtype == np.int32
        ids = xs[:, 0, 0, 0].astype(int)
        assert np.all(xs == ids[:, None, None, None])                        # examples stay whole
        assert np.array_equal(ys, ids % 4)                                    # and keep their labels
        seen += ids.tolist()
    assert sorted(seen) == list(range(n))
    assert data.description == "d.npz: 40 examples of 6x5x1, 4 classes"
    # the same seed, the same split
    again = load({"source": "d.npz"}, tmp_path)
    assert all(np.array_equal(data.x[k], again.x[k]) for k in data.x)


def test_npz_keys_labels_shape_and_task(tmp_path):
    rng = np.random.default_rng(0)
    write_npz(tmp_path / "k.npz", images=rng.random((30, 4, 4)), labels=np.array(["cat", "dog", "ant"] * 10))
    data = load({"source": "k.npz", "options": {"x_key": "images", "y_key": "labels"}}, tmp_path)
    assert data.class_names == ["ant", "cat", "dog"] and data.input_shape == (4, 4) and data.target == "labels"
    assert load({"source": "k.npz", "shape": [-1, 2, 1], "options": {"x_key": "images", "y_key": "labels"}},
                tmp_path).input_shape == (8, 2, 1)
    write_npz(tmp_path / "r.npz", x=rng.random((50, 3)), y=rng.normal(size=50))
    reg = load({"source": "r.npz"}, tmp_path)
    assert reg.task == "regression" and reg.y["train"].dtype == np.float32 and reg.class_names is None
    write_npz(tmp_path / "one.npz", x=np.arange(20.0), y=np.arange(20) % 2)           # [n] -> [n, 1]
    assert load({"source": "one.npz"}, tmp_path).input_shape == (1,)
    write_npz(tmp_path / "col.npz", x=rng.random((20, 2)), y=(np.arange(20) % 2)[:, None])   # y [n, 1]
    assert load({"source": "col.npz"}, tmp_path).n_classes == 2
    write_npz(tmp_path / "bytes.npz", x=rng.random((20, 2)), y=np.array([b"a", b"b"] * 10))
    assert load({"source": "bytes.npz"}, tmp_path).class_names == ["a", "b"]
    assert load({"source": "r.npz", "target": "y"}, tmp_path, task="regression").task == "regression"


def test_array_prep(tmp_path):
    rng = np.random.default_rng(1)
    write_npz(tmp_path / "p.npz", x=rng.normal(5.0, 3.0, (200, 4, 4, 2)), y=np.arange(200) % 2)
    data = load({"source": "p.npz", "prep": ["standardize"]}, tmp_path)
    train = data.x["train"].astype(np.float64)
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1.0) < 1e-4
    saved = json.loads(json.dumps(data.prep_state, allow_nan=False))
    assert saved[0]["kind"] == "standardize" and set(saved[0]["state"]) == {"over", "mean", "std"}
    items = spec({"source": "p.npz", "prep": ["standardize"]}).data.prep
    raw = load({"source": "p.npz"}, tmp_path).x["test"]
    assert np.allclose(apply_array_prep(items, raw, saved), data.x["test"], atol=1e-6)

    data = load({"source": "p.npz", "prep": ["min_max", "standardize"]}, tmp_path)
    assert [s["kind"] for s in data.prep_state] == ["min_max", "standardize"]
    mm = data.prep_state[0]["state"]
    assert mm["min"] < mm["max"]
    assert abs(float(data.x["train"].mean())) < 1e-5


@pytest.mark.parametrize("arrays,options,message", [
    ({"a": np.zeros((4, 2)), "y": np.zeros(4)}, {},
     "n.npz: no array 'x' in the archive (arrays: a, y); name another with data.options.x_key"),
    ({"x": np.zeros((4, 2)), "b": np.zeros(4)}, {},
     "n.npz: no array 'y' in the archive (arrays: x, b); name another with data.options.y_key"),
    ({"x": np.zeros((5, 2)), "y": np.zeros(4)}, {},
     "n.npz: array 'x' has 5 examples but 'y' has 4 values; they must match"),
    ({"x": np.zeros((4, 2)), "y": np.zeros((4, 2))}, {},
     "n.npz: array 'y' has shape [4, 2]; it needs one value per example, shape [n]"),
    ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, {}, "n.npz: no examples (array 'x' is empty)"),
    ({"x": np.array(5.0), "y": np.zeros(1)}, {}, "n.npz: array 'x' is a single value"),
    ({"x": np.array([["a"], ["b"]]), "y": np.zeros(2)}, {},
     "n.npz: array 'x' holds <U1 values; examples must be numbers"),
    ({"x": np.array([[1.0], [np.nan], [np.inf]]), "y": np.zeros(3)}, {},
     "n.npz: array 'x' has 2 values that are NaN or infinite"),
    ({"x": np.zeros((3, 1)), "y": np.array([0.0, np.nan, 1.0])}, {},
     "n.npz: array 'y' has 1 missing or infinite value"),
    ({"x": np.zeros((3, 1)), "y": np.array([1 + 2j, 0, 0])}, {}, "n.npz: array 'y' holds complex128 values"),
    ({"x": np.zeros((3, 1)), "y": np.array([{}, {}, {}], dtype=object)}, {},
     "n.npz: array 'y' holds Python objects; save numbers or strings (pickled arrays are not loaded)"),
    ({"img": np.zeros((3, 1)), "y": np.zeros(3)}, {"x_key": "images"},
     "n.npz: no array 'images' in the archive (arrays: img, y)"),
])
def test_npz_errors(tmp_path, arrays, options, message):
    write_npz(tmp_path / "n.npz", **arrays)
    error = data_error({"source": "n.npz", "options": options}, tmp_path)
    assert error.path == "data.source" and error.message.startswith(message), error.message


def test_npz_file_errors(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive at all")
    assert data_error({"source": "junk.npz"}, tmp_path).message.startswith("junk.npz: cannot read as .npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    assert data_error({"source": "single.npz"}, tmp_path).message.startswith(
        "single.npz: a single .npy array, not an .npz archive")
    assert data_error({"source": "missing.npz"}, tmp_path).message.startswith("file not found: missing.npz")


def test_array_data_errors(tmp_path):
    write_npz(tmp_path / "d.npz", x=np.random.default_rng(0).random((30, 3)), y=np.arange(30) % 3)
    write_npz(tmp_path / "s.npz", x=np.zeros((30, 3)), y=np.array(["a", "b", "c"] * 10))
    write_npz(tmp_path / "c.npz", x=np.zeros((30, 3)), y=np.zeros(30, int))

    def message(data, path, **top):
        error = data_error(data, tmp_path, **top)
        assert error.path == path, (error.path, error.message)
        return error.message

    assert message({"source": "d.npz", "features": ["x0"]}, "data.features").startswith(
        "npz data has no columns to choose; leave data.features out")
    assert message({"source": "d.npz", "target": "label"}, "data.target") == \
        "npz data has one target, 'y'; name another array with data.options.y_key"
    assert message({"source": "s.npz"}, "task", task="regression") == \
        "regression needs a numeric target, but 'y' holds text; set task: classification"
    assert message({"source": "c.npz"}, "data.target") == \
        "classification needs at least two classes; 'y' has 1 ('0')"
    assert message({"source": "d.npz", "prep": [{"standardize": ["x0"]}]}, "data.prep[0].standardize").startswith(
        "array data has no columns to name; leave out `columns`")
    assert message({"source": "d.npz", "prep": ["standardize", "one_hot"]}, "data.prep[1].one_hot") == \
        "one_hot works on table columns; array data (npz) takes only standardize, min_max"
    assert message({"source": "d.npz", "prep": ["tokenize"]}, "data.prep[0].tokenize").startswith(
        "tokenize works on table columns")
    assert message({"source": "d.npz", "prep": [{"image": [4, 4]}]}, "data.prep[0].image") == \
        ("image applies only to image folders (data.source: a folder with one sub-folder of images per class); "
         "data.source is npz data")
    assert message({"source": "d.npz", "shape": [2, 2]}, "data.shape") == \
        "[2, 2] holds 4 values, but an example has 3 features"


# ---------------------------------------------------------------------------------------------
# Image folders

def write_image(path: Path, color, size=(8, 8), mode="RGB", fmt=None) -> Path:
    """A solid image of `color` (height, width = size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size[1], size[0]), color).save(path, format=fmt)
    return path


def image_folder(root: Path, per_class: int = 4) -> Path:
    for i in range(per_class):
        write_image(root / "red" / f"{i}.png", (255, 0, 0))
        write_image(root / "white" / f"{i}.png", (255, 255, 255))
    return root


def test_image_folder_rgb_and_gray(tmp_path):
    image_folder(tmp_path / "pics")
    (tmp_path / "pics" / "red" / "notes.txt").write_text("not an image")        # skipped
    write_image(tmp_path / "pics" / "red" / ".hidden.png", (0, 0, 0))            # skipped
    (tmp_path / "pics" / ".cache").mkdir()                                       # skipped
    data = load({"source": "pics/", "split": {"test": 0.25, "val": 0.0}}, tmp_path)
    assert data.task == "classification" and data.class_names == ["red", "white"]
    assert data.input_shape == (8, 8, 3) and sum(data.sizes().values()) == 8
    assert data.target == "label" and data.raw is None and len(data.feature_names) == 192
    assert data.description == "pics/: 8 examples of 8x8x3, 2 classes"
    for split in ("train", "test"):
        x, y = data.x[split], data.y[split]
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
        assert np.allclose(x[y == 0], [1.0, 0.0, 0.0]) and np.allclose(x[y == 1], 1.0)
    gray = load({"source": "pics/", "options": {"grayscale": True}}, tmp_path)
    assert gray.input_shape == (8, 8, 1)
    red = np.concatenate([gray.x[k][gray.y[k] == 0] for k in gray.x])
    assert np.allclose(red, round(255 * 0.299) / 255, atol=1 / 255)              # ITU-R 601-2 luma
    assert load({"source": str(tmp_path / "pics")}, ROOT).input_shape == (8, 8, 3)   # absolute, no slash


def test_image_sizes_and_image_step(tmp_path):
    root = image_folder(tmp_path / "pics")
    write_image(root / "red" / "9_big.png", (255, 0, 0), size=(12, 20))
    write_image(root / "red" / "0.png", (255, 0, 0), size=(10, 6))                # the first image read
    assert load({"source": "pics/"}, tmp_path).input_shape == (10, 6, 3)          # first image's size
    data = load({"source": "pics/", "options": {"size": [5, 7]}}, tmp_path)
    assert data.input_shape == (5, 7, 3)
    assert np.allclose(np.concatenate([data.x[k][data.y[k] == 0] for k in data.x]), [1.0, 0.0, 0.0])
    assert np.allclose(np.concatenate([data.x[k][data.y[k] == 1] for k in data.x]), 1.0)   # resized, same color
    # the image step decides size and channels; null keeps data.options
    data = load({"source": "pics/", "prep": [{"image": {"size": [4, 4], "grayscale": True}}]}, tmp_path)
    assert data.input_shape == (4, 4, 1)
    assert data.prep_state == [{"kind": "image", "state": {"size": [4, 4], "grayscale": True}}]
    data = load({"source": "pics/", "options": {"size": [6, 6], "grayscale": True}, "prep": ["image"]}, tmp_path)
    assert data.input_shape == (6, 6, 1)
    data = load({"source": "pics/", "options": {"grayscale": True}, "prep": [{"image": [3, 3]}, "standardize"]},
                tmp_path)
    assert data.input_shape == (3, 3, 1) and [s["kind"] for s in data.prep_state] == ["image", "standardize"]
    assert load({"source": "pics/", "shape": [-1], "prep": [{"image": [3, 3]}]}, tmp_path).input_shape == (27,)


def test_image_formats(tmp_path):
    root = tmp_path / "pics"
    write_image(root / "a" / "x.jpg", (0, 0, 255), fmt="JPEG")
    write_image(root / "a" / "y.JPEG", (0, 0, 255), fmt="JPEG")
    write_image(root / "b" / "x.bmp", (0, 255, 0), fmt="BMP")
    write_image(root / "b" / "y.gif", 3, mode="P", fmt="GIF")
    write_image(root / "b" / "z.png", (0, 255, 0, 128), mode="RGBA")
    write_image(root / "b" / "w.png", 200, mode="L")
    data = load({"source": "pics/", "split": {"test": 0.0, "val": 0.0}}, tmp_path)
    assert data.sizes()["train"] == 6 and data.input_shape == (8, 8, 3)


def test_broken_images_named(tmp_path):
    root = image_folder(tmp_path / "pics")
    (root / "white" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    error = data_error({"source": "pics/"}, tmp_path)
    assert error.path == "data.source"
    assert error.message == "pics/white/2.png: cannot read image: not an image file, or a damaged one"
    good = (root / "red" / "1.png").read_bytes()
    (root / "white" / "2.png").unlink()
    (root / "red" / "1.png").write_bytes(good[: len(good) // 2])                  # truncated
    assert data_error({"source": "pics/"}, tmp_path).message.startswith("pics/red/1.png: cannot read image: ")


def test_image_folder_errors(tmp_path):
    def message(source, path="data.source", **data):
        error = data_error({"source": source, **data}, tmp_path)
        assert error.path == path, (error.path, error.message)
        return error.message

    assert message("nowhere/") == f"folder not found: nowhere/ (relative to {tmp_path})"
    (tmp_path / "file").write_text("x")
    assert message("file/") == f"file/ is a file, not a folder of images (relative to {tmp_path})"
    (tmp_path / "empty").mkdir()
    assert message("empty/") == "empty/: expected one sub-folder of images per class, but it has no sub-folders"
    write_image(tmp_path / "flat" / "a.png", (0, 0, 0))
    assert message("flat/") == "flat/: expected one sub-folder of images per class, but the images lie directly in it"
    image_folder(tmp_path / "gap")
    (tmp_path / "gap" / "zebra").mkdir()
    (tmp_path / "gap" / "zebra" / "readme.txt").write_text("x")
    assert message("gap/") == "gap/zebra: no images (.png, .jpg, .jpeg, .bmp, .gif) in this class folder"
    write_image(tmp_path / "single" / "only" / "a.png", (0, 0, 0))
    write_image(tmp_path / "single" / "only" / "b.png", (0, 0, 0))
    assert message("single/", "data.target") == "classification needs at least two classes; 'label' has 1 ('only')"
    image_folder(tmp_path / "pics")
    assert data_error({"source": "pics/"}, tmp_path, task="regression").message == \
        "regression needs a numeric target, but 'label' holds class folders; set task: classification"
    assert message("pics/", "data.features", features=["x0"]).startswith("image_folder data has no columns")
    assert message("pics/", "data.prep[0].one_hot", prep=["one_hot"]) == \
        "one_hot works on table columns; array data (image_folder) takes only standardize, min_max, image"
    assert message("pics/", "data.prep[1].image", prep=["image", "image"]) == \
        "only one image step is allowed (another is data.prep[0])"
    assert message("iris", "data.prep[0].image", prep=[{"image": [8, 8]}]) == \
        ("image applies only to image folders (data.source: a folder with one sub-folder of images per class); "
         "data.source is iris data")


def test_image_step_on_a_table_frame():
    item = spec({"source": "iris", "prep": ["image"]}).data.prep[0]
    prep = PREP.get("image").build(item.options)
    with pytest.raises(DataError, match="image applies only to image folders"):
        prep.fit(pd.DataFrame({"a": [1.0], "b": ["x"]}), PrepContext(target="b", path="data.prep[0].image"))


# ---------------------------------------------------------------------------------------------
# Text: tokenize

def fit_tokens(texts, **options):
    item = spec({"source": "iris", "prep": [{"tokenize": {"column": "text", **options}}]}).data.prep[0]
    prep = PREP.get("tokenize").build(item.options)
    frame = pd.DataFrame({"text": texts, "label": ["a"] * len(texts)})
    state = prep.fit(frame, PrepContext(target="label", path="data.prep[0].tokenize"))
    return prep, state, frame


def test_tokenize_vocabulary_order_and_size():
    _, state, _ = fit_tokens(["b a", "c b", "a b", "z y", "y z"])
    assert state["vocabulary"] == ["<pad>", "<unk>", "b", "a", "y", "z", "c"]    # count, then alphabetical
    _, state, _ = fit_tokens(["b a", "c b", "a b"], vocab_size=4)
    assert state["vocabulary"] == ["<pad>", "<unk>", "b", "a"]
    _, state, _ = fit_tokens(["A a"], lowercase=False)
    assert state["vocabulary"] == ["<pad>", "<unk>", "A", "a"]
    _, state, _ = fit_tokens(["ab a"], level="char")
    assert state["vocabulary"] == ["<pad>", "<unk>", "a", " ", "b"]
    assert tokens("Hello, world! Don't stop.", "word", True) == ["hello", ",", "world", "!", "don't", "stop", "."]
    assert tokens(None, "word", True) == [] and tokens(float("nan"), "char", True) == []


def test_tokenize_padding_truncation_and_reapply():
    prep, state, frame = fit_tokens(["a b c d", "a", "", None, "b b"], max_len=3)
    out = prep.apply(frame, state)
    assert out.columns.tolist() == ["t0", "t1", "t2", "label"]
    v = {t: i for i, t in enumerate(state["vocabulary"])}
    assert out[["t0", "t1", "t2"]].to_numpy().tolist() == [
        [v["a"], v["b"], v["c"]], [v["a"], 0, 0], [0, 0, 0], [0, 0, 0], [v["b"], v["b"], 0]]
    assert all(out[c].dtype == np.int32 for c in ("t0", "t1", "t2"))
    saved = json.loads(json.dumps(state))
    new = pd.DataFrame({"text": ["a never seen", "d"], "label": ["a", "a"]})
    again = prep.apply(new, saved)
    assert again[["t0", "t1", "t2"]].to_numpy().tolist() == [[v["a"], 1, 1], [v["d"], 0, 0]]


def write_text_csv(path: Path, n: int = 100) -> Path:
    rows = [{"text": f"w{i} common{' shared' * (i % 3)}", "label": "ab"[i % 2], "number": float(i),
             "note": "x"} for i in range(n)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_text_dataset_vocabulary_from_train_only(tmp_path):
    write_text_csv(tmp_path / "t.csv")
    data = load({"source": "t.csv", "target": "label", "prep": [{"tokenize": {"column": "text", "max_len": 5}}]},
                tmp_path)
    assert data.feature_names == ["t0", "t1", "t2", "t3", "t4"] and data.input_shape == (5,)
    assert data.raw.columns.tolist() == ["text", "label"]                        # other columns dropped
    assert data.vocabulary == data.prep_state[0]["state"]["vocabulary"]
    assert data.vocabulary[:2] == ["<pad>", "<unk>"]
    sizes = data.sizes()
    unique = [t for t in data.vocabulary if t.startswith("w")]
    assert len(unique) == sizes["train"]                                          # only training rows' words
    for split in ("train", "val", "test"):
        x = data.x[split]
        assert x.dtype == np.int32 and x.shape == (sizes[split], 5)
        first = x[:, 0]
        assert np.all(first >= 2) if split == "train" else np.all(first == 1)    # unseen word -> <unk>
    assert data.description == ("t.csv: 100 rows, text 'text' as 5 tokens "
                                f"({len(data.vocabulary)} in the vocabulary), 2 classes")
    # the saved state re-applies to new rows (predict)
    items = spec({"source": "t.csv", "target": "label",
                  "prep": [{"tokenize": {"column": "text", "max_len": 5}}]}).data.prep
    out = apply_prep(items, pd.DataFrame({"text": ["common shared zzz"]}), data.prep_state)
    v = {t: i for i, t in enumerate(data.vocabulary)}
    assert out.iloc[0].tolist() == [v["common"], v["shared"], 1, 0, 0]


def test_text_column_choice(tmp_path):
    write_text_csv(tmp_path / "t.csv")
    # the only text column besides the target... here `text` and `note` are both text
    assert data_error({"source": "t.csv", "target": "label", "prep": ["tokenize"]}, tmp_path).message == \
        "name the column to tokenize with `column:`; text columns: text, note"
    data = load({"source": "t.csv", "target": "label", "features": ["text"], "prep": ["tokenize"]}, tmp_path)
    assert data.input_shape == (64,) and data.prep_state[0]["state"]["column"] == "text"
    data = load({"source": "t.csv", "target": "label", "prep": [{"tokenize": "note"}, "drop_na"]}, tmp_path)
    assert data.raw.columns.tolist() == ["note", "label"] and len(data.vocabulary) == 3
    data = load({"source": "t.csv", "target": "label", "shape": [8, 8], "prep": [{"tokenize": "text"}]}, tmp_path)
    assert data.x["train"].shape[1:] == (8, 8) and data.x["train"].dtype == np.int32


def test_text_errors(tmp_path):
    write_text_csv(tmp_path / "t.csv")

    def message(path, **data):
        error = data_error({"source": "t.csv", "target": "label", **data}, tmp_path)
        assert error.path == path, (error.path, error.message)
        return error.message

    assert message("data.features", features=["text", "number"], prep=[{"tokenize": "text"}]).startswith(
        "mixing text and numeric features is not supported yet")
    assert message("data.features", features=["note"], prep=[{"tokenize": "text"}]) == \
        "tokenize reads 'text', but data.features lists only 'note'"
    assert message("data.prep[0].tokenize", prep=[{"tokenize": "txt"}]) == \
        "no column 'txt' in the data (did you mean 'text'?)"
    assert message("data.prep[0].tokenize", prep=[{"tokenize": "label"}]) == \
        "'label' is the target; tokenize needs a text feature column"
    assert message("data.prep[0].tokenize", prep=[{"tokenize": "number"}]) == \
        "column 'number' holds numbers; tokenize needs text"
    assert message("data.prep[0].tokenize", features=["number"], prep=["tokenize"]) == \
        "name the column to tokenize with `column:`; no feature column holds text (columns: number)"
    assert message("data.prep[1].standardize", prep=[{"tokenize": "text"}, "standardize"]) == \
        "standardize does not apply to text: with tokenize, data.prep takes only drop_na besides"
    assert message("data.prep[1].tokenize", prep=[{"tokenize": "text"}, {"tokenize": "note"}]) == \
        "only one tokenize step is allowed (another is data.prep[0])"
    pd.DataFrame({"a": [1.0, 2.0] * 5, "label": ["x", "y"] * 5}).to_csv(tmp_path / "n.csv", index=False)
    error = data_error({"source": "n.csv", "target": "label", "prep": ["tokenize"]}, tmp_path)
    assert error.message == "name the column to tokenize with `column:`; no column besides the target holds text " \
                            "(columns: a, label)"
    with pytest.raises(SpecError, match="vocab_size must be"):
        spec({"source": "t.csv", "prep": [{"tokenize": {"vocab_size": 2}}]})
    with pytest.raises(SpecError, match="level must be one of word, char"):
        spec({"source": "t.csv", "prep": [{"tokenize": {"level": "sentence"}}]})
    # a clash with the token column names
    pd.DataFrame({"text": ["a b"] * 6, "t1": ["x", "y"] * 3}).to_csv(tmp_path / "c.csv", index=False)
    assert data_error({"source": "c.csv", "target": "t1", "prep": [{"tokenize": {"column": "text", "max_len": 2}}]},
                      tmp_path).message.startswith("column 't1' is in the way of the token columns t0..t1")


# ---------------------------------------------------------------------------------------------
# The shipped example data

def example_data(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())["data"]


def test_shapes_example_data():
    pngs = sorted((ROOT / "examples" / "data" / "shapes").rglob("*.png"))
    assert len(pngs) == 300 and sum(p.stat().st_size for p in pngs) < 300 * 1024
    data = load(example_data("shapes"))
    assert data.class_names == ["circle", "square", "triangle"] and data.input_shape == (16, 16, 1)
    assert sum(data.sizes().values()) == 300 and data.description.startswith("examples/data/shapes/: 300 examples")
    assert [s["kind"] for s in data.prep_state] == ["image", "standardize"]
    assert abs(float(data.x["train"].mean())) < 1e-4
    counts = np.bincount(np.concatenate(list(data.y.values())))
    assert counts.tolist() == [100, 100, 100]


def test_order_example_data():
    frame = pd.read_csv(ROOT / "examples" / "data" / "order.csv")
    assert frame.columns.tolist() == ["text", "label"] and len(frame) == 2000
    assert frame["label"].value_counts().to_dict() == {"alpha_first": 1000, "omega_first": 1000}
    words = frame["text"].str.split()
    assert words.map(lambda w: w.count("alpha") == 1 and w.count("omega") == 1).all()
    assert words.map(len).between(8, 12).all()
    first = words.map(lambda w: "alpha_first" if w.index("alpha") < w.index("omega") else "omega_first")
    assert (first == frame["label"]).all()
    for name in ("order_lstm", "order_transformer"):
        data = load(example_data(name))
        assert data.input_shape == (16,) and data.x["train"].dtype == np.int32
        assert data.class_names == ["alpha_first", "omega_first"]
        assert len(data.vocabulary) == 34 and {"alpha", "omega"} <= set(data.vocabulary)
        assert sum(data.sizes().values()) == 2000


def _script(name: str):
    path = ROOT / "examples" / "data" / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_example_scripts_reproduce_the_shipped_data(tmp_path):
    order = _script("make_order")
    order.OUT = tmp_path / "order.csv"
    order.main()
    assert order.OUT.read_bytes() == (ROOT / "examples" / "data" / "order.csv").read_bytes()
    shapes = _script("make_shapes")
    shapes.OUT = tmp_path / "shapes"
    shapes.main()
    shipped = ROOT / "examples" / "data" / "shapes"
    made = sorted(p.relative_to(shapes.OUT) for p in shapes.OUT.rglob("*.png"))
    assert made == sorted(p.relative_to(shipped) for p in shipped.rglob("*.png"))
    for rel in made[::7]:      # pixels, not bytes: PNG compression may differ between Pillow versions
        assert np.array_equal(np.asarray(Image.open(shapes.OUT / rel)), np.asarray(Image.open(shipped / rel)))
