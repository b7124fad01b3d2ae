import pytest

from aquaml import SAC2_parameter, SACParameters


def test_unknown_field_lists_valid_ones():
    with pytest.raises(TypeError) as err:
        SACParameters(batchsize=64)
    msg = str(err.value)
    assert "'batchsize'" in msg and "batch_size" in msg and "replay_ratio" in msg


def test_reference_names_map_to_fields():
    p = SAC2_parameter(epoch_length=200, n_epochs=10, batch_size=32, discount=0.98, alpha=0.2, tau=0.01,
                       buffer_size=100000, mini_buffer_size=1000, update_interval=50, update_times=25,
                       display_interval=2, calculate_episodes=3, alpha_learning_rate=3e-3)
    assert p.total_steps == 2000 and p.gamma == 0.98 and p.learning_starts == 1000
    assert p.replay_ratio == 0.5 and p.update_interval == 50
    assert SAC2_parameter(episode_length=100, n_epochs=3).total_steps == 300


def test_conflicting_names_rejected():
    with pytest.raises(TypeError, match="not both"):
        SACParameters(total_steps=100, n_epochs=2)
    with pytest.raises(TypeError, match="both set 'gamma'"):
        SACParameters(gamma=0.9, discount=0.9)


@pytest.mark.parametrize("field,value,expected", [
    ("batch_size", 0, "a positive int"), ("gamma", 1.5, "in \\[0, 1\\]"), ("tau", 0.0, "in \\(0, 1\\]"),
    ("replay_ratio", -1.0, "a finite number > 0"), ("total_steps", 2.5, "a positive int"), ("alpha", 0.0, "> 0"),
    ("updates_per_call", 0, "a positive int"),
])
def test_bad_values_name_the_field(field, value, expected):
    with pytest.raises(ValueError, match=f"{field} must be {expected}"):
        SACParameters(**{field: value})


def test_positional_arguments_refused():
    with pytest.raises(TypeError, match="keyword"):
        SACParameters(100)
