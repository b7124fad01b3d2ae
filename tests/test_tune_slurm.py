"""hpc_jobs/tune.sbatch on the real one-node SLURM of hpc_jobs/local_slurm.sh (as tests/test_slurm.py):
the tasks of a job array all join one study through its shared journal file."""
import json
from pathlib import Path

import optuna

from aquaml.tuning.study import open_storage
from test_slurm import assert_state, cluster, job_log  # noqa: F401  (cluster: the module's fixture)

SPACE = {"search": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
                    "gamma": {"type": "float", "low": 0.9, "high": 0.999}},
         "fixed": {"rollout_steps": 128, "update_epochs": 2, "eval_interval": 128, "calculate_episodes": 1,
                   "hidden": [16, 16]}}


def test_job_array_tasks_share_one_study(cluster, tmp_path):  # noqa: F811
    """--array=0-1, one rank each: both tasks COMPLETED, the journal holds exactly 6 distinct
    completed trials, and both tasks ran some of them."""
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    job = cluster.submit("tune.sbatch", tmp_path, "t-tune",
                         {"AQUAML_ENV": "CartPole-v1", "AQUAML_ALGO": "ppo", "AQUAML_STEPS": 256,
                          "AQUAML_SPACE": "space.json", "AQUAML_TRIALS": 6, "AQUAML_GROUP_SIZE": 1,
                          "AQUAML_EXTRA_ARGS": "--pruner none --no-tensorboard"},
                         "--array=0-1", "--ntasks=1")
    infos = cluster.wait(job, tasks=2)
    for info in infos:
        assert_state(info, "COMPLETED", "0:0")
    storage = tmp_path / "runs" / "t-tune.log"
    trials = optuna.load_study(study_name="t-tune", storage=open_storage(str(storage), 20, 60, 0)).get_trials()
    logs = "\n".join(job_log(i) for i in infos)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6, ([t.state.name for t in trials], logs)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
    tasks = {t.user_attrs["launch"].rsplit("_", 1)[-1] for t in trials}
    assert tasks == {"0", "1"}, (tasks, logs)
    for t in trials:
        assert Path(tmp_path / t.user_attrs["run_dir"] / "policy").is_dir()
    assert (tmp_path / "runs" / "t-tune" / "best.json").is_file()
