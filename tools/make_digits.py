"""Write dtrain/datasets_data/digits.npz from scikit-learn's bundled 8x8 digits (run once).

scikit-learn is not a dependency of dtrain: it is only needed to run this script, which
produced the committed file. Run from the repository root:

    /work/venv/bin/python tools/make_digits.py

The file holds the 1797 images as uint8 pixels 0..16 flattened to (1797, 64), the labels as
uint8, and a fixed stratified split (seeded, 1347 train / 450 test) as sorted int16 indices.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = pathlib.Path(__file__).resolve().parent.parent / "dtrain" / "datasets_data" / "digits.npz"
TEST_SIZE = 450
SEED = 0


def main() -> None:
    """Load sklearn's digits, split them, and write the compressed npz."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT, help="where to write the npz")
    out = parser.parse_args().out
    digits = load_digits()
    images = digits.data.astype(np.uint8)
    if not np.array_equal(images, digits.data) or images.max() > 16:
        raise SystemExit("unexpected pixel values: expected integers 0..16")
    target = digits.target.astype(np.uint8)
    index = np.arange(len(target))
    train, test = train_test_split(index, test_size=TEST_SIZE, stratify=target,
                                   random_state=SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images, target=target,
                        train_index=np.sort(train).astype(np.int16),
                        test_index=np.sort(test).astype(np.int16))
    print(f"wrote {out} ({out.stat().st_size} bytes): {len(train)} train, {len(test)} test")


if __name__ == "__main__":
    main()
