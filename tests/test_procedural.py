"""The procedural face renderer (numpy only)."""

import numpy as np

from input_pipeline import procedural


def test_faces_are_a_function_of_seed_and_index_alone():
  faces = procedural.render_faces([3, 7, 3], 32)
  assert faces.shape == (3, 32, 32, 3) and faces.dtype == np.uint8
  np.testing.assert_array_equal(faces[0], faces[2])
  assert not np.array_equal(faces[0], faces[1])
  # Whatever it is drawn with (chunk, order, threads), a face is the same.
  many = procedural.render_faces(np.arange(40), 32, workers=2)
  np.testing.assert_array_equal(many[3], faces[0])
  np.testing.assert_array_equal(many[7], faces[1])
  assert not np.array_equal(procedural.render_faces([3], 32, seed=1)[0],
                            faces[0])


def test_a_face_does_not_depend_on_the_faces_drawn_with_it():
  # Features are drawn inside boxes shared by a chunk: a box too small for
  # one face would clip it differently in different company.
  together = procedural.render_faces(np.arange(96), 32)
  for index in range(96):
    np.testing.assert_array_equal(
        procedural.render_faces([index], 32)[0], together[index])


def test_faces_are_distinct():
  faces = procedural.render_faces(np.arange(200), 32)
  assert len({face.tobytes() for face in faces}) == 200


def test_resolutions_draw_the_same_face():
  small = procedural.render_faces([5], 32)[0].astype(np.float32)
  large = procedural.render_faces([5], 64)[0].astype(np.float32)
  downsampled = large.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
  other = procedural.render_faces([6], 32)[0].astype(np.float32)
  same_error = np.abs(downsampled - small).mean()
  assert same_error < 6
  assert same_error * 4 < np.abs(other - small).mean()


def test_faces_have_a_skin_coloured_middle_and_eyes():
  faces = procedural.render_faces(np.arange(64), 64).astype(np.float32)
  middle = faces[:, 36:42, 28:36].mean(axis=(1, 2))  # Cheeks and nose.
  # Skin: red above green above blue, for every tone from light to dark.
  assert np.mean((middle[:, 0] > middle[:, 1]) &
                 (middle[:, 1] > middle[:, 2])) > 0.9
  # Eyes: a dark pupil somewhere in the eye band of nearly every face.
  eye_band = faces[:, 22:36, 8:56].min(axis=(1, 2, 3))
  assert np.mean(eye_band < 40) > 0.9


def test_attributes_are_uniform_in_unit_interval():
  values = procedural.face_attributes(0, np.arange(2000), 8)
  assert values.shape == (2000, 8)
  assert values.min() >= 0 and values.max() < 1
  np.testing.assert_allclose(values.mean(axis=0), 0.5, atol=0.03)
