"""A detector's table sent as JSON (a PILATUS' pixel mask on the STINS stream: lists of equal rows)
is written as the 2-D dataset it was, the pixel mask as NeXus' uint32 bits; what is not a table
of numbers stays JSON text, so no value can make the file fail."""

import json

import h5py
import numpy as np

from photonflow.recording.nexus_writer import write_detector_description

MASK = np.array([[0, 1, 0], [2, 0, 1]], dtype=np.uint32)


def test_a_pixel_mask_sent_as_json_lists_is_the_2d_uint32_mask(tmp_path):
    sent = json.loads(json.dumps({"pixel_mask": MASK.tolist(), "flatfield": [[1.0, 0.5], [0.25, 2.0]]}))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        write_detector_description(f.create_group("detector"), sent)
        mask = f["detector/pixel_mask"]
        assert mask.dtype == np.uint32
        np.testing.assert_array_equal(mask[()], MASK)
        np.testing.assert_array_equal(f["detector/flatfield"][()], [[1.0, 0.5], [0.25, 2.0]])


def test_rows_of_different_lengths_or_text_stay_json_text(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        write_detector_description(f.create_group("detector"), {"pixel_mask": [[0, 1], [2]],
                                                                "flatfield": [["a", "b"], ["c", "d"]]})
        assert json.loads(f["detector/pixel_mask"][()]) == [[0, 1], [2]]
        assert json.loads(f["detector/flatfield"][()]) == [["a", "b"], ["c", "d"]]
