import json
import pickle

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from aquaml import DataInfo, SpecError


def test_single_shape_for_single_name_and_per_name_dtypes():
    info = DataInfo(names=("obs",), shapes=((3,)), dtypes=np.float32)
    assert info.shape("obs") == (3,)
    two = DataInfo(("pos", "img"), ((2,), (4, 4, 3)), (np.float32, np.uint8))
    assert two.names == ("pos", "img")
    assert two.dtype("img") == np.uint8 and two.shape("img") == (4, 4, 3)


def test_constructor_rejects_mismatched_counts_and_repeats():
    with pytest.raises(SpecError, match="2 names .* 1 shapes"):
        DataInfo(("a", "b"), ((1,),))
    with pytest.raises(SpecError, match="repeat"):
        DataInfo(("a", "a"), ((1,), (1,)))
    with pytest.raises(SpecError, match="2 names but 3 dtypes"):
        DataInfo(("a", "b"), ((1,), (1,)), (np.float32,) * 3)


def test_validate_names_field_expected_and_actual():
    info = DataInfo(("obs", "pos"), ((3,), (2,)))
    with pytest.raises(SpecError) as err:
        info.validate({"obs": np.zeros(4), "pos": np.zeros(2)}, what="reset()")
    msg = str(err.value)
    assert "reset()['obs']" in msg and "(3,)" in msg and "(4,)" in msg and "float32" in msg
    with pytest.raises(SpecError, match=r"missing \['pos'\]"):
        info.validate({"obs": np.zeros(3)})
    with pytest.raises(SpecError, match=r"unexpected keys \['vel'\]"):
        info.validate({"obs": np.zeros(3), "pos": np.zeros(2), "vel": 1.0})


def test_validate_casts_within_kind_and_refuses_float_into_int():
    info = DataInfo(("x", "k"), ((2,), ()), (np.float32, np.int64))
    out = info.validate({"x": np.array([1.0, 2.0], np.float64), "k": 3})
    assert out["x"].dtype == np.float32 and out["k"].dtype == np.int64
    with pytest.raises(SpecError, match=r"\['k'\]: expected dtype int64, got float64"):
        info.validate({"x": [0.0, 0.0], "k": 2.5})


def test_validate_batch_dims_and_reference_leading_one():
    info = DataInfo("obs", (3,))
    assert info.validate({"obs": np.zeros((5, 3))}, batch_dims=1)["obs"].shape == (5, 3)
    assert info.validate({"obs": np.zeros((1, 3))}, squeeze_leading_one=True)["obs"].shape == (3,)
    with pytest.raises(SpecError, match=r"\(batch\.\.\., \(3,\)\)"):
        info.validate({"obs": np.zeros(3)}, batch_dims=1)


def test_spaces_round_trip():
    box = gym.spaces.Box(-2.0, 2.0, (3,), np.float32)
    info = DataInfo.from_space(box)
    assert info.names == ("obs",) and info.shape("obs") == (3,)
    back = info.to_space()
    assert isinstance(back, gym.spaces.Box) and np.allclose(back.low, -2) and np.allclose(back.high, 2)

    disc = DataInfo.from_space(gym.spaces.Discrete(4), "action")
    assert disc.shape("action") == () and disc.dtype("action") == np.int64
    assert disc.to_space() == gym.spaces.Discrete(4)

    mb = DataInfo.from_space(gym.spaces.MultiBinary(5))
    assert isinstance(mb.to_space(), gym.spaces.MultiBinary) and mb.shape("obs") == (5,)

    dict_space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "mode": gym.spaces.Discrete(3)})
    d = DataInfo.from_space(dict_space)
    assert set(d.names) == {"pos", "mode"}
    back = d.to_space()
    assert isinstance(back, gym.spaces.Dict) and back["mode"] == gym.spaces.Discrete(3)

    with pytest.raises(SpecError, match="Text.*not supported"):
        DataInfo.from_space(gym.spaces.Text(5))


def test_bounds_repeated_over_a_box_are_stored_once():
    image = gym.spaces.Box(0, 255, (84, 84, 3), np.uint8)
    info = DataInfo.from_space(image)
    assert len(info.to_json()) < 300  # not 21,168 values per bound
    assert DataInfo.from_json(info.to_json()).to_space() == image
    mixed = gym.spaces.Box(np.array([-1.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    assert DataInfo.from_space(mixed).meta("obs") == {"low": [-1.0, -2.0], "high": [1.0, 2.0]}
    assert DataInfo.from_space(mixed).to_space() == mixed


def test_tensor_specs_json_pickle_and_add_info():
    info = DataInfo(("obs", "k"), ((3,), ()), (np.float32, np.int64))
    specs = info.tensor_specs()
    assert specs["obs"] == tf.TensorSpec((None, 3), tf.float32, name="obs")
    assert specs["k"].dtype == tf.int64
    assert DataInfo.from_json(info.to_json()) == info
    assert json.loads(info.to_json())["names"] == ["obs", "k"]
    assert pickle.loads(pickle.dumps(info)) == info
    more = info.add_info("hidden1", (32,))
    assert more.names == ("obs", "k", "hidden1") and info.names == ("obs", "k")
    with pytest.raises(SpecError, match="already"):
        more.add_info("obs", (3,))
    assert info.prefixed("next_").names == ("next_obs", "next_k")
    assert info.select(["k"]).names == ("k",)


def test_immutable():
    info = DataInfo("obs", (3,))
    with pytest.raises(AttributeError, match="immutable"):
        info.names = ("x",)
    shapes = info.shapes
    shapes["obs"] = (9,)
    assert info.shape("obs") == (3,)
