"""A GIfTI time series in one 2-D data array is oriented by the vertex count: nilearn's
(n_vertices, n_tr) layout, or the transposed (n_tr, n_vertices) one when the mask, the
space or the fsaverage mesh sizes show it; a shape that fits both is an error."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brainalign.brain.surface import SurfaceMasker, read_gifti_series


def write_single_array(path, data):
    """One 2-D data array, stored as given (no transposition)."""
    nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(
        np.ascontiguousarray(data, dtype=np.float32))]), path)
    return str(path)


def series(rng, n_tr, n_vertices):
    return rng.standard_normal((n_tr, n_vertices)).astype(np.float32)


def test_masker_fitted_on_time_by_vertex_files_reads_them_the_right_way_round(tmp_path):
    rng = np.random.default_rng(0)
    n_tr, n_vertices = 20, 642  # fsaverage3
    data = {h: series(rng, n_tr, n_vertices) for h in "LR"}
    files = {h: write_single_array(tmp_path / f"{h}.func.gii", data[h]) for h in "LR"}
    masker = SurfaceMasker().fit(files)
    assert masker.n_vertices_ == {"L": n_vertices, "R": n_vertices}
    assert masker.space_ == "fsaverage3"
    np.testing.assert_array_equal(masker.transform(files), np.hstack([data["L"], data["R"]]))
    assert masker.count_volumes([files]) == [n_tr]
    np.testing.assert_array_equal(read_gifti_series(files["L"]), data["L"])


def test_nilearn_layout_is_still_read_as_vertices_by_time(tmp_path):
    rng = np.random.default_rng(1)
    data = series(rng, 20, 642)
    path = write_single_array(tmp_path / "lh.func.gii", data.T)  # (n_vertices, n_tr)
    np.testing.assert_array_equal(read_gifti_series(path), data)
    masker = SurfaceMasker().fit({"L": path})
    assert masker.n_vertices_ == {"L": 642}
    np.testing.assert_array_equal(masker.transform({"L": path}), data)
    # both axes fsaverage counts, the first the longer: 2562 vertices x 642 volumes
    long_run = series(rng, 642, 2562)
    path = write_single_array(tmp_path / "long.func.gii", long_run.T)
    np.testing.assert_array_equal(read_gifti_series(path), long_run)


def test_mask_orients_a_mesh_outside_the_fsaverage_family(tmp_path):
    rng = np.random.default_rng(2)
    n_tr, n_vertices = 30, 50
    data = {h: series(rng, n_tr, n_vertices) for h in "LR"}
    files = {h: write_single_array(tmp_path / f"{h}.func.gii", data[h]) for h in "LR"}
    keep = np.ones(n_vertices, bool)
    keep[:5] = False
    masker = SurfaceMasker(mask={"L": keep, "R": np.ones(n_vertices, bool)}).fit(files)
    assert masker.n_vertices_ == {"L": n_vertices, "R": n_vertices}
    np.testing.assert_array_equal(masker.transform(files),
                                  np.hstack([data["L"][:, 5:], data["R"]]))
    # without the count, a 30 x 50 array is nilearn's layout: 30 vertices, 50 volumes
    assert read_gifti_series(files["L"]).shape == (n_vertices, n_tr)


def test_an_ambiguous_shape_is_an_error_unless_the_space_gives_the_count(tmp_path):
    rng = np.random.default_rng(3)
    data = series(rng, 642, 2562)  # fsaverage4 with 642 volumes, stored (n_tr, n_vertices)
    path = write_single_array(tmp_path / "lh.func.gii", data)
    with pytest.raises(ValueError, match=r"lh.func.gii: cannot tell which axis of its "
                                         r"642 x 2562 data array holds the vertices.*"
                                         r"fsaverage4.*space= or mask="):
        SurfaceMasker().fit({"L": path})
    masker = SurfaceMasker(space="fsaverage4").fit({"L": path})
    assert masker.n_vertices_ == {"L": 2562}
    np.testing.assert_array_equal(masker.transform({"L": path}), data)
    np.testing.assert_array_equal(read_gifti_series(path, 2562), data)
    # a longer first axis that is no fsaverage count: 700 volumes of fsaverage3, or a
    # 700-vertex mesh with 642 volumes
    other = write_single_array(tmp_path / "other.func.gii", series(rng, 700, 642))
    with pytest.raises(ValueError, match="700 x 642 data array.*fsaverage3"):
        read_gifti_series(other)
    image = nib.load(other)
    with pytest.raises(ValueError, match="^GIfTI image: cannot tell"):
        read_gifti_series(image)
