import numpy as np
import pytest

from cosface.errors import CosfaceError
from cosface.faces.align import (
    ARCFACE_112,
    COSFACE_96x112,
    align_face,
    alignment_matrix,
    invert_affine,
    template_points,
    transform_points,
    umeyama,
    warp,
)


def similarity(scale, degrees, tx, ty):
    a = np.radians(degrees)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def synthetic_face(seed=3):
    from cosface.data.synthetic.identity import sample_identity
    from cosface.data.synthetic.render import Nuisances, render

    rng = np.random.default_rng(seed)
    nz = Nuisances(rotation=0.0, shift=0.0, occlusion=0.0, blur=0.0, gray=0.0)
    pixels, _ = render(sample_identity(rng), rng, 1, nz)[0]
    return np.ascontiguousarray(pixels)


def test_templates_are_the_published_points_and_scale():
    assert ARCFACE_112[0].tolist() == [38.2946, 51.6963]
    assert ARCFACE_112[4].tolist() == [70.7299, 92.2041]
    np.testing.assert_allclose(COSFACE_96x112[:, 0], ARCFACE_112[:, 0] - 8)
    np.testing.assert_allclose(COSFACE_96x112[:, 1], ARCFACE_112[:, 1])
    pts, w, h = template_points("arcface", 224)
    assert (w, h) == (224, 224)
    np.testing.assert_allclose(pts, ARCFACE_112 * 2)
    pts, w, h = template_points("cosface", 112)
    assert (w, h) == (96, 112)
    np.testing.assert_allclose(pts, COSFACE_96x112)
    with pytest.raises(CosfaceError, match="unknown alignment template 'sphere'"):
        template_points("sphere")


def test_umeyama_hand_computed():
    # (0,0)->(1,1) and (1,0)->(1,3): a quarter turn, scale 2, shift (1, 1), worked out on paper.
    m = umeyama([[0, 0], [1, 0]], [[1, 1], [1, 3]])
    np.testing.assert_allclose(m, [[0, -2, 1], [2, 0, 1]], atol=1e-12)
    # The best similarity from a unit square onto a 2:1 rectangle (no exact fit): the centroids map onto
    # each other and the scale is sum|d_c|.|s_c| / sum|s_c|^2 = (4 * 1.25 / 4) / 0.5 = 1.5, no rotation.
    m = umeyama([[0, 0], [1, 0], [1, 1], [0, 1]], [[0, 0], [2, 0], [2, 1], [0, 1]])
    np.testing.assert_allclose(m, [[1.5, 0, 0.25], [0, 1.5, -0.25]], atol=1e-12)


def test_umeyama_recovers_an_exact_similarity_and_never_mirrors():
    m_true = similarity(1.7, 23.0, -40.5, 12.25)
    dst = transform_points(m_true, ARCFACE_112)
    np.testing.assert_allclose(umeyama(ARCFACE_112, dst), m_true, atol=1e-9)
    mirrored = ARCFACE_112 * [-1, 1]
    m = umeyama(mirrored, ARCFACE_112)
    assert np.linalg.det(m[:, :2]) > 0


def test_umeyama_is_the_least_squares_solution():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    dst = transform_points(similarity(0.6, -35.0, 10, 20), src) + rng.normal(0, 3, (5, 2))
    # x' = a x - b y + tx, y' = b x + a y + ty is linear in (a, b, tx, ty): solve it with lstsq.
    rows = np.concatenate([np.stack([src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)], 1),
                           np.stack([src[:, 1], src[:, 0], np.zeros(5), np.ones(5)], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
    np.testing.assert_allclose(umeyama(src, dst), [[a, -b, tx], [b, a, ty]], atol=1e-9)


def test_umeyama_rejects_degenerate_points():
    with pytest.raises(CosfaceError, match="coincide"):
        umeyama(np.ones((5, 2)), ARCFACE_112)
    with pytest.raises(CosfaceError, match="same shape"):
        umeyama(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(CosfaceError, match="five"):
        alignment_matrix(np.ones((4, 2)))


def test_warp_identity_shift_and_half_pixel():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp(img, [[1, 0, 0], [0, 1, 0]], 30, 20), img)
    shifted = warp(img, [[1, 0, 2], [0, 1, 3]], 30, 20)        # source (x, y) lands at (x + 2, y + 3)
    np.testing.assert_array_equal(shifted[3:, 2:], img[:17, :28])
    assert not shifted[:3].any() and not shifted[:, :2].any()    # black border
    half = warp(img, [[1, 0, -0.5], [0, 1, 0]], 29, 20)          # each output pixel sits between two inputs
    expect = np.rint((img[:, :-1].astype(float) + img[:, 1:]) / 2)
    assert np.abs(half.astype(int) - expect).max() <= 1
    gray = warp(img[:, :, 0], [[1, 0, 0], [0, 1, 0]], 30, 20)
    assert gray.shape == (20, 30)


def test_warp_edge_mixes_with_black_like_a_constant_border():
    img = np.full((4, 4, 3), 200, np.uint8)
    out = warp(img, [[1, 0, 0.5], [0, 1, 0]], 5, 4)   # output x = 0 samples source x = -0.5
    assert out[0, 0, 0] == 100 and out[0, 1, 0] == 200 and out[0, 4, 0] == 100


def test_an_aligned_face_comes_back_nearly_unchanged():
    face = synthetic_face()
    out = align_face(face, ARCFACE_112 + 0.0)
    np.testing.assert_array_equal(out, face)
    # Landmarks off by a fraction of a pixel move the crop by about that much, not more.
    out = align_face(face, ARCFACE_112 + [0.3, -0.2])
    assert np.abs(out.astype(int) - face).mean() < 6


def test_a_face_pasted_under_rotation_scale_and_shift_is_recovered():
    face = synthetic_face()
    m_paste = similarity(2.3, 27.0, 190.0, 35.0)
    canvas = warp(face, m_paste, 480, 360)
    landmarks = transform_points(m_paste, ARCFACE_112)
    m = alignment_matrix(landmarks)
    # The recovered transform carries the pasted landmarks onto the template (well within 1 px) ...
    assert np.abs(transform_points(m, landmarks) - ARCFACE_112).max() < 1e-6
    np.testing.assert_allclose(m, invert_affine(m_paste), atol=1e-9)
    # ... and the crop shows the face again, up to two bilinear resamplings.
    out = align_face(canvas, landmarks)
    assert out.shape == (112, 112, 3)
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(out[inner].astype(int) - face[inner]).mean() < 4


def test_cosface_template_crop_is_96_wide_and_the_arcface_crop_shifted():
    face = synthetic_face()
    out = align_face(face, ARCFACE_112, template="cosface")
    assert out.shape == (112, 96, 3)
    np.testing.assert_array_equal(out, face[:, 8:104])
    big = align_face(face, ARCFACE_112 * 1.0, size=224)
    assert big.shape == (224, 224, 3)


def test_align_face_rejects_bad_images():
    with pytest.raises(CosfaceError, match="uint8 RGB"):
        align_face(np.zeros((10, 10), np.float32), ARCFACE_112)


def test_the_crop_equals_scikit_images_similarity_and_bilinear_warp():
    # An independent reference: skimage's SimilarityTransform (Umeyama) and order-1 warp with a black
    # constant border, on its public-domain astronaut, for the arcface template at three sizes and cosface.
    skdata = pytest.importorskip("skimage.data")
    from skimage import transform

    astronaut = skdata.astronaut()
    points = np.array([[204.8, 100.8], [247.4, 103.4], [223.6, 129.2], [202.5, 138.1], [244.2, 140.6]])
    for template, size in [("arcface", 112), ("arcface", 224), ("arcface", 150), ("cosface", 112)]:
        dst, w, h = template_points(template, size)
        if hasattr(transform.SimilarityTransform, "from_estimate"):      # scikit-image >= 0.26
            t = transform.SimilarityTransform.from_estimate(points, dst)
        else:
            t = transform.SimilarityTransform()
            t.estimate(points, dst)
        np.testing.assert_allclose(alignment_matrix(points, size, template), t.params[:2], atol=1e-9)
        ref = transform.warp(astronaut, t.inverse, output_shape=(h, w), order=1, mode="constant", cval=0,
                             preserve_range=True)
        out = align_face(astronaut, points, size, template)
        assert np.abs(out.astype(int) - np.rint(ref)).max() <= 1
    # The photo's right edge inside the crop (source x 420 to 520): black beyond it, mixed with black along
    # the edge, as skimage's constant border does.
    m = similarity(3.0, 0.0, -1260.0, -180.0)
    ref = transform.warp(astronaut, transform.AffineTransform(matrix=np.vstack([m, [0, 0, 1]])).inverse,
                         output_shape=(300, 300), order=1, mode="constant", cval=0, preserve_range=True)
    out = warp(astronaut, m, 300, 300)
    assert not out[:, -20:].any() and out[:, :250].all(axis=2).mean() > 0.9
    assert np.abs(out.astype(int) - np.rint(ref)).max() <= 1
