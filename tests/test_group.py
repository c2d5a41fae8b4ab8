"""Group maps with FWE control: exact against direct MNE / nilearn calls, planted effects
found, null data quiet, bad input refused, maps saved and exported."""

from __future__ import annotations

import json

import mne
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, sparse, stats

from brainalign.brain import RoiTableMasker, SurfaceMasker, VolumeMasker
from brainalign.export import load_map
from brainalign.group import GroupMap, group_map, save_group_map, surface_adjacency
from brainalign.group.mesh import MESH_VERTICES, fsaverage_faces

pytestmark = pytest.mark.usefixtures("single_thread")

N3 = MESH_VERTICES["fsaverage3"]  # 642 vertices per hemisphere


def sphere(n_vertices: int) -> np.ndarray:
    """Unit-sphere coordinates of the first ``n_vertices`` fsaverage vertices (left)."""
    from nilearn import datasets

    coordinates = np.asarray(datasets.load_fsaverage("fsaverage5")["sphere"].parts["left"]
                             .coordinates[:n_vertices], dtype=float)
    return coordinates / np.linalg.norm(coordinates, axis=1, keepdims=True)


def left_patch(n_vertices: int, centre: int = 100, degrees: float = 25.0) -> np.ndarray:
    """Left-hemisphere vertices within ``degrees`` of vertex ``centre`` on the sphere."""
    xyz = sphere(n_vertices)
    return np.flatnonzero(np.degrees(np.arccos(np.clip(xyz @ xyz[centre], -1, 1))) < degrees)


def mesh_adjacency(space: str) -> sparse.coo_matrix:
    """Both hemispheres' adjacency built straight from the triangles, as an MNE user would."""
    n = MESH_VERTICES[space]
    return mne.spatial_tris_adjacency(np.vstack([fsaverage_faces(space, "L"),
                                                 fsaverage_faces(space, "R") + n]),
                                      remap_vertices=False, verbose=False)


def smooth(values: np.ndarray, adjacency, n_iter: int = 3) -> np.ndarray:
    """Neighbour averaging on the mesh (rows of ``values`` are maps)."""
    graph = sparse.csr_matrix(adjacency, dtype=float)
    degree = np.asarray(graph.sum(axis=1)).ravel()
    for _ in range(n_iter):
        values = (graph @ values.T).T / degree
    return values


def small_volume():
    mask = np.zeros((9, 9, 9), dtype=np.uint8)
    mask[1:8, 1:8, 1:8] = 1
    masker = VolumeMasker(mask_img=nib.Nifti1Image(mask, np.diag([4.0, 4.0, 4.0, 1.0])),
                          space="MNI152NLin2009cAsym").fit()
    return masker, mask.astype(bool)


# --------------------------------------------------------------------------- meshes

def test_coarse_fsaverage_edges_are_the_parents_of_the_finer_midpoints():
    def edges(faces):
        pairs = np.sort(np.vstack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        return set(map(tuple, np.unique(pairs, axis=0)))

    for coarse, fine in (("fsaverage3", "fsaverage4"), ("fsaverage4", "fsaverage5")):
        n_coarse = MESH_VERTICES[coarse]
        graph = mne.spatial_tris_adjacency(fsaverage_faces(fine, "L"), verbose=False).tocsr()
        parents = set()
        for vertex in range(n_coarse, MESH_VERTICES[fine]):
            neighbours = graph.indices[graph.indptr[vertex]:graph.indptr[vertex + 1]]
            old = np.sort(neighbours[neighbours < n_coarse])
            assert len(old) == 2, f"{fine} vertex {vertex} is not an edge midpoint"
            parents.add(tuple(old))
        assert parents == edges(fsaverage_faces(coarse, "L"))
        assert len(parents) == 3 * (n_coarse - 2)  # a triangulated sphere


def test_surface_adjacency_keeps_the_masked_vertices_and_no_edge_across_hemispheres():
    keep = np.ones(N3, bool)
    keep[:50] = False  # e.g. a medial wall
    masker = SurfaceMasker(mask={"L": keep, "R": np.ones(N3, bool)}, space="fsaverage3").fit()
    graph = surface_adjacency(masker)
    full = mesh_adjacency("fsaverage3").tocsr()
    kept = np.concatenate([keep, np.ones(N3, bool)])
    assert graph.shape == (masker.n_targets_, masker.n_targets_)
    assert (graph != full[kept][:, kept].astype(bool)).nnz == 0
    n_left = int(keep.sum())
    assert graph[:n_left, n_left:].nnz == 0


# --------------------------------------------------------------------------- exactness

def mne_max_statistic(maps, adjacency, threshold, tail):
    """MNE's largest cluster mass (or TFCE) of ``maps`` themselves: no permutations."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no cluster: MNE warns
        _, _, _, h0 = mne.stats.permutation_cluster_1samp_test(
            maps, threshold=threshold, n_permutations=1, tail=tail, adjacency=adjacency,
            out_type="mask", verbose=False)
    return float(np.abs(h0).max()) if len(h0) else 0.0


def every_flip(n_subjects):
    return np.array([[1.0 - 2.0 * ((code >> s) & 1) for s in range(n_subjects)]
                     for code in range(2 ** n_subjects)])


@pytest.mark.parametrize("method", ["cluster", "tfce"])
def test_one_sided_surface_test_counts_every_flip_once(method):
    """Seven subjects, every one of the 128 flips (the negated maps too, the identity once):
    p_FWE is the share of flips whose largest statistic (MNE's, for each flipped copy
    separately) reaches the observed one, down to 1 / 128."""
    rng = np.random.default_rng(4)
    adjacency = mesh_adjacency("fsaverage3")
    maps = smooth(rng.normal(0, 1, (7, 2 * N3)), adjacency)
    maps[:, left_patch(N3)] += 1.5
    threshold = (stats.t.isf(0.01, df=6) if method == "cluster"
                 else dict(start=0, step=0.5))
    group = group_map(maps, "fsaverage3", method=method, n_perm=500, fisher_z=False,
                      cluster_p=0.01, tfce_step=0.5, random_state=0)
    assert group.parameters["exact"] and group.parameters["n_draws"] == 128
    null = np.array([mne_max_statistic(flip[:, None] * maps, adjacency, threshold, 1)
                     for flip in every_flip(7)])
    observed = null[0]  # the identity: the patch's cluster
    best = group.p_fwe.min()
    assert best == pytest.approx(np.mean(null >= observed * (1 - 1e-9))) == 1 / 128
    assert (group.p_fwe[left_patch(N3)] < 0.05).mean() > 0.8
    assert group.parameters["smallest_attainable_p"] == 1 / 128


def test_an_adjacency_stored_in_one_triangle_gives_the_same_clusters(tmp_path):
    """Each edge stored once (lower or upper triangle, the usual sparse conventions) is
    the same graph as the symmetric matrix; the p_FWE sidecar names the flips used."""
    rng = np.random.default_rng(4)
    adjacency = mesh_adjacency("fsaverage3").tocsr()
    maps = smooth(rng.normal(0, 1, (7, 2 * N3)), adjacency)
    maps[:, left_patch(N3)] += 1.5
    groups = {name: group_map(maps, "fsaverage3", method="cluster", n_perm=500, fisher_z=False,
                              cluster_p=0.01, adjacency=graph, random_state=0)
              for name, graph in (("full", adjacency), ("lower", sparse.tril(adjacency, k=-1)),
                                  ("upper", sparse.triu(adjacency, k=1)))}
    for name in ("lower", "upper"):
        np.testing.assert_array_equal(groups[name].p_fwe, groups["full"].p_fwe)
    assert (groups["lower"].p_fwe[left_patch(N3)] < 0.05).mean() > 0.8
    paths = save_group_map(groups["full"], "fsaverage3", tmp_path)
    sidecar = json.loads(paths["pfwe"].with_name(paths["pfwe"].name.split(".")[0] + ".json")
                         .read_text())
    assert "128 sign flips (every possible flip)" in sidecar["description"]


def test_two_sided_surface_tests_equal_mne_when_every_flip_is_used():
    """Two-sided, MNE's exact test is right (a flip and its negation are one draw): the same
    p-values for clusters and TFCE, with 64 of 64 distinct flips for 7 subjects."""
    rng = np.random.default_rng(1)
    adjacency = mesh_adjacency("fsaverage3")
    maps = smooth(rng.normal(0, 1, (7, 2 * N3)), adjacency)
    maps[:, left_patch(N3)] -= 0.8
    for method, threshold in (("cluster", stats.t.isf(0.005, df=6)),
                              ("tfce", dict(start=0, step=0.5))):
        group = group_map(maps, "fsaverage3", method=method, tail=0, n_perm=200,
                          fisher_z=False, cluster_p=0.01, tfce_step=0.5, random_state=3)
        assert group.parameters["exact"] and group.parameters["n_draws"] == 64
        _, clusters, p_values, _ = mne.stats.permutation_cluster_1samp_test(
            maps, threshold=threshold, n_permutations=1000, tail=0, adjacency=adjacency,
            out_type="mask", verbose=False)
        expected = np.ones(2 * N3)
        for mask, p_value in zip(clusters, p_values):
            expected[mask] = p_value
        assert expected.min() < 0.05
        np.testing.assert_allclose(group.p_fwe, expected, err_msg=method)
    np.testing.assert_allclose(group.t, mne.stats.ttest_1samp_no_p(maps), rtol=1e-10)


def test_random_surface_flips_are_distinct_and_leave_the_identity_alone():
    from brainalign.group.surface import sign_flips

    flips, exact = sign_flips(10, 300, False, random_state=0)
    assert not exact and flips.shape == (301, 10)
    assert (flips[0] == 1).all() and not (flips[1:] == 1).all(axis=1).any()
    assert len(np.unique(flips, axis=0)) == 301
    flips, exact = sign_flips(10, 300, True, random_state=0)
    assert (flips[:, -1] == 1).all() and len(np.unique(flips, axis=0)) == 301
    assert sign_flips(10, 300, False, 5)[0].tolist() == sign_flips(10, 300, False, 5)[0].tolist()
    every, exact = sign_flips(4, 15, False, None)
    assert exact and len(np.unique(every, axis=0)) == 16
    many, exact = sign_flips(80, 50, False, 0)  # beyond enumeration: drawn bit by bit
    assert not exact and many.shape == (51, 80) and (many[0] == 1).all()
    # a huge effect: p_FWE at the floor, 1 / (n_perm + 1)
    rng = np.random.default_rng(0)
    maps = 1 + 0.01 * rng.normal(size=(10, 2 * N3))
    group = group_map(maps, "fsaverage3", method="cluster", n_perm=99, fisher_z=False,
                      random_state=0)
    assert group.p_fwe.min() == pytest.approx(1 / 100)
    assert group.parameters["smallest_attainable_p"] == pytest.approx(1 / 100)


def test_roi_maxt_equals_nilearn_permuted_ols_on_fisher_z():
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(2)
    r = np.tanh(rng.normal(0.02, 0.1, (9, 30)))
    group = group_map(r, "roi", n_perm=300, tail=0, random_state=5)
    reference = permuted_ols(np.ones((9, 1)), np.arctanh(r), model_intercept=True, n_perm=300,
                             two_sided_test=True, random_state=5, output_type="dict")
    np.testing.assert_allclose(group.p_fwe, 10.0 ** -reference["logp_max_t"][0])
    np.testing.assert_allclose(group.t, reference["t"][0], rtol=1e-10)
    np.testing.assert_allclose(group.mean, np.tanh(np.arctanh(r).mean(axis=0)))
    assert group.method == "maxt" and group.fisher_z


@pytest.mark.filterwarnings("ignore:Data array used to create a new image contains 64-bit ints")
@pytest.mark.parametrize("method, output", [("maxt", None), ("cluster", "logp_max_mass")])
def test_volume_equals_nilearn_non_parametric_inference(method, output):
    from nilearn.glm.second_level import non_parametric_inference
    from nilearn.masking import apply_mask

    masker, mask = small_volume()
    rng = np.random.default_rng(3)
    maps = rng.normal(0, 1, (8, masker.n_targets_))
    maps[:, :40] += 1.5
    group = group_map(maps, masker, method=method, n_perm=100, fisher_z=False, cluster_p=0.01,
                      random_state=11)
    images = []
    for row in maps:
        volume = np.zeros(mask.shape, np.float32)
        volume[mask] = row
        images.append(nib.Nifti1Image(volume, masker.mask_img_.affine))
    outputs = non_parametric_inference(
        images, design_matrix=pd.DataFrame({"intercept": np.ones(8)}), mask=masker.mask_img_,
        n_perm=100, random_state=11, threshold=0.01 if method == "cluster" else None)
    log_p = apply_mask(outputs if output is None else outputs[output], masker.mask_img_)
    np.testing.assert_allclose(group.p_fwe, 10.0 ** -log_p, rtol=1e-6)
    assert group.significant().any()


# --------------------------------------------------------------------------- planted effects

@pytest.mark.parametrize("method", ["cluster", "tfce", "maxt"])
def test_planted_surface_patch_is_found_there_and_nowhere_else(method):
    rng = np.random.default_rng(0)
    patch = left_patch(N3)
    r = rng.normal(0, 0.1, (12, 2 * N3))
    r[:, patch] += 0.3
    group = group_map(r, "fsaverage3", method=method, n_perm=100, random_state=0)
    found = group.significant()
    assert found[patch].mean() >= 0.8, f"{method}: {found[patch].mean():.2f} of the patch"
    # a cluster may take in a neighbour whose noise crosses the cluster-forming threshold
    # (it says that the effect lies somewhere in it), nothing farther
    allowed = np.zeros(2 * N3, bool)
    allowed[patch] = True
    if method == "cluster":
        allowed |= np.asarray(mesh_adjacency("fsaverage3").tocsr()[patch].sum(axis=0)).ravel() > 0
    assert not found[~allowed].any(), f"{method}: {found[~allowed].sum()} targets outside"


@pytest.mark.parametrize("n_subjects, tail, smallest", [(3, 1, 1 / 8), (4, 0, 1 / 8),
                                                         (12, 1, 1 / 501)])
def test_too_few_subjects_are_flagged_with_the_smallest_attainable_p(caplog, n_subjects, tail,
                                                                     smallest):
    """Every subject far above zero in every ROI: p_FWE still cannot go much below 1 / 2**n
    (2 / 2**n two-sided; random flips drawn with replacement estimate it), nor below
    1 / (n_perm + 1); the log says when .05 is out of reach."""
    rng = np.random.default_rng(0)
    r = 0.5 + 0.01 * rng.standard_normal((n_subjects, 6))
    with caplog.at_level("WARNING", logger="brainalign.group.inference"):
        group = group_map(r, RoiTableMasker(names=[f"roi{i}" for i in range(6)]).fit(),
                          n_perm=500, tail=tail, random_state=0)
    assert group.parameters["smallest_attainable_p"] == pytest.approx(smallest)
    assert group.p_fwe.min() >= 0.6 * smallest
    flagged = "smallest attainable p_FWE" in caplog.text
    assert flagged == (smallest >= 0.05)
    assert group.significant().any() == (smallest < 0.05)


def test_planted_rois_are_found_and_only_they():
    rng = np.random.default_rng(5)
    r = rng.normal(0, 0.1, (12, 40))
    r[:, [3, 17, 28]] += 0.2
    group = group_map(np.tanh(r), RoiTableMasker(names=[f"roi{i}" for i in range(40)]).fit(),
                      n_perm=500, random_state=0)
    assert np.flatnonzero(group.significant()).tolist() == [3, 17, 28]


@pytest.mark.parametrize("method", ["maxt", "cluster"])
def test_planted_volume_cube_is_found_there_and_nowhere_else(method):
    masker, mask = small_volume()
    cube = np.zeros(mask.shape, bool)
    cube[2:5, 2:5, 2:5] = True
    inside = cube[mask]
    rng = np.random.default_rng(6)
    r = rng.normal(0, 0.1, (12, masker.n_targets_))
    r[:, inside] += 0.3
    found = group_map(r, masker, method=method, n_perm=200, random_state=0).significant()
    assert found[inside].mean() >= 0.8
    # as on surfaces, a cluster may take in face neighbours of the cube, nothing farther
    allowed = (ndimage.binary_dilation(cube) if method == "cluster" else cube)[mask]
    assert not found[~allowed].any()


def test_negative_effect_needs_the_lower_tail():
    rng = np.random.default_rng(7)
    r = rng.normal(0, 0.1, (10, 30))
    r[:, :2] -= 0.2
    lower = group_map(r, "roi", tail=-1, n_perm=500, random_state=0)
    upper = group_map(r, "roi", tail=1, n_perm=500, random_state=0)
    assert np.flatnonzero(lower.significant()).tolist() == [0, 1]
    assert not upper.significant().any()
    assert (lower.t[:2] < 0).all() and (lower.mean[:2] < 0).all()


# --------------------------------------------------------------------------- null data

def test_null_maps_give_few_family_wise_errors():
    rng = np.random.default_rng(8)
    adjacency = mesh_adjacency("fsaverage3")
    roi_errors = sum(group_map(rng.normal(0, 0.1, (10, 50)), "roi", n_perm=200,
                               random_state=seed).significant().any() for seed in range(40))
    surface_errors = sum(group_map(np.tanh(0.1 * smooth(rng.normal(0, 1, (10, 2 * N3)),
                                                        adjacency)),
                                   "fsaverage3", n_perm=100, cluster_p=0.01,
                                   random_state=seed).significant().any() for seed in range(20))
    assert roi_errors <= 6, f"{roi_errors} of 40 null ROI sets had a significant ROI"
    assert surface_errors <= 4, f"{surface_errors} of 20 null surfaces had a significant cluster"


# --------------------------------------------------------------------------- masks and NaN

def test_masked_and_missing_vertices_are_left_out_of_the_family():
    keep = np.ones(N3, bool)
    keep[400:] = False  # a large "medial wall" on the left, away from the patch
    masker = SurfaceMasker(mask={"L": keep, "R": np.ones(N3, bool)}, space="fsaverage3").fit()
    rng = np.random.default_rng(9)
    full = rng.normal(0, 0.1, (12, 2 * N3))
    full[:, left_patch(N3)] += 0.3
    r = full[:, np.concatenate([keep, np.ones(N3, bool)])]
    r[3, -5:] = np.nan            # a subject without data at five right-hemisphere vertices
    r[:, -10:-5] = 0.0            # five vertices with the same value in every subject
    with pytest.raises(ValueError, match="NaN at 5 of"):
        group_map(r, masker)
    group = group_map(r, masker, nan_policy="omit", n_perm=100, random_state=0)
    assert group.n_targets == masker.n_targets_
    assert not group.tested[-10:].any() and group.tested[:-10].all()
    assert np.isnan(group.p_fwe[-10:]).all() and np.isnan(group.t[-10:]).all()
    assert group.parameters["n_tested"] == masker.n_targets_ - 10
    patch = left_patch(N3)
    assert group.significant()[patch[patch < 400]].mean() >= 0.8


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("maps, space, options, message", [
    (np.zeros((1, 30)), "roi", {}, "at least 2 subjects"),
    (np.zeros(30), "roi", {}, r"shape \(n_subjects, n_targets\)"),
    (None, "fsaverage3", {}, "the maps have 30 targets"),
    (np.full((4, 30), 1.2), "roi", {}, r"correlations in \(-1, 1\)"),
    (np.full((4, 30), np.inf), "roi", {"fisher_z": False}, "infinite"),
    (np.zeros((4, 30)), "roi", {}, "no target can be tested"),
    (None, "roi", {"method": "cluster"}, "not available for RoiTableMasker"),
    (None, "roi", {"method": "fdr"}, "method must be one of"),
    (None, "roi", {"tail": 2}, "tail must be one of"),
    (None, "roi", {"n_perm": 0}, "n_perm must be an integer"),
    (None, "roi", {"cluster_p": 1.5}, "cluster_p must lie"),
    (None, "roi", {"subjects": ["a"]}, "1 labels for 4 maps"),
    (None, "roi", {"nan_policy": "drop"}, "nan_policy must be one of"),
    (None, "roi", {"adjacency": sparse.eye(30)}, "adjacency is for surfaces"),
    (None, "MNI152", {}, "unknown space"),
    (None, object(), {}, "fitted brainalign masker"),
])
def test_bad_input_is_refused_with_a_clear_message(maps, space, options, message):
    if maps is None:
        maps = np.random.default_rng(0).normal(0, 0.1, (4, 30))
    with pytest.raises(ValueError, match=message):
        group_map(maps, space, **options)


def test_surface_adjacency_of_the_wrong_shape_is_refused():
    maps = np.random.default_rng(0).normal(0, 0.1, (4, 2 * N3))
    with pytest.raises(ValueError, match=f"shape \\({2 * N3}, {2 * N3}\\)"):
        group_map(maps, "fsaverage3", adjacency=sparse.eye(10))
    with pytest.raises(ValueError, match="no bundled mesh"):
        group_map(np.random.default_rng(0).normal(0, 0.1, (4, 2 * 40962)), "fsaverage6")


# --------------------------------------------------------------------------- storage, export

def test_group_map_saves_and_loads_without_pickles(tmp_path):
    r = np.random.default_rng(10).normal(0, 0.1, (5, 20))
    r[2, 3] = np.nan
    group = group_map(r, "roi", n_perm=50, nan_policy="omit", measure="unique_r:atoms",
                      fisher_z=False, random_state=1, provenance={"model": "tiny"})
    loaded = GroupMap.load(group.save(tmp_path / "g"))
    for name in ("t", "mean", "p_fwe", "tested"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(group, name))
    assert (loaded.method, loaded.n_perm, loaded.tail, loaded.subjects, loaded.measure) == (
        "maxt", 50, 1, ["01", "02", "03", "04", "05"], "unique_r:atoms")
    assert loaded.parameters == json.loads(json.dumps(group.parameters))
    assert loaded.provenance == {"model": "tiny"} and not loaded.fisher_z
    with np.load(tmp_path / "g" / "arrays.npz", allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["mean", "p_fwe", "t", "tested"]
    with pytest.raises(FileNotFoundError, match="not a group map directory"):
        GroupMap.load(tmp_path)


def test_export_writes_gifti_nifti_and_tsv_with_sidecars(tmp_path):
    rng = np.random.default_rng(11)
    surface = group_map(rng.normal(0.05, 0.1, (6, 2 * N3)), "fsaverage3", n_perm=20,
                        random_state=0)
    paths = save_group_map(surface, "fsaverage3", tmp_path, {"model": "tiny"})
    assert paths["t"].name == "space-fsaverage3_hemi-L_desc-group_stat-t_model-tiny_map.func.gii"
    assert paths["pfwe"].with_name(paths["pfwe"].name.replace("hemi-L", "hemi-R")).exists()
    np.testing.assert_allclose(load_map(paths["t"], SurfaceMasker(
        mask={"L": np.ones(N3, bool), "R": np.ones(N3, bool)}).fit()), surface.t, rtol=1e-6)
    sidecar = json.loads(paths["pfwe"].with_name(
        paths["pfwe"].name.replace(".func.gii", ".json")).read_text())
    assert sidecar["group"]["method"] == "cluster" and sidecar["group"]["n_subjects"] == 6
    assert sidecar["statistic"] == "pfwe" and "family-wise" in sidecar["description"]

    masker, _ = small_volume()
    volume = group_map(rng.normal(0.05, 0.1, (6, masker.n_targets_)), masker, n_perm=20,
                       method="maxt", measure="unique_r:atoms", fisher_z=False, random_state=0)
    paths = save_group_map(volume, masker, tmp_path)
    assert paths["mean"].name == ("space-MNI152NLin2009cAsym_res-4_desc-groupuniqueatoms_"
                                  "stat-mean_map.nii.gz")
    np.testing.assert_allclose(load_map(paths["mean"], masker), volume.mean, rtol=1e-6)

    roi = group_map(rng.normal(0.05, 0.1, (6, 7)), "roi", n_perm=20, random_state=0)
    paths = save_group_map(roi, "roi", tmp_path)
    assert paths["pfwe"].suffix == ".tsv"
    np.testing.assert_allclose(pd.read_csv(paths["pfwe"], sep="\t").values[0], roi.p_fwe,
                               rtol=1e-6)
