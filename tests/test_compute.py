"""GPU/CPU paths are chosen by config: DDP backend, actor-pool GPUs, AMP only on CUDA."""
import torch

from inetseg.config import ComputeConfig
from inetseg.stages.common import actor_pool, torch_device
from inetseg.train import worker
from inetseg.train.trainer import backend


def test_backend_follows_devices():
    assert backend(ComputeConfig()) == "gloo"
    assert backend(ComputeConfig(use_gpu=True)) == "nccl"
    assert backend(ComputeConfig(use_gpu=True, backend="gloo")) == "gloo"


def test_actor_pools_ask_for_gpus_only_when_configured():
    cpu = actor_pool(ComputeConfig(num_actors=3, inference_batch_size=7))
    assert cpu["num_gpus"] == 0 and cpu["batch_size"] == 7 and cpu["compute"].min_size == 3
    assert actor_pool(ComputeConfig(use_gpu=True))["num_gpus"] == 1


def test_amp_is_a_no_op_on_cpu():
    cpu = torch.device("cpu")
    assert torch_device(use_gpu=False) == cpu
    with worker.autocast(cpu, enabled=True):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert not worker.make_scaler(cpu, enabled=True).is_enabled()
