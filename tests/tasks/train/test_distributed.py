"""DDP over two CPU processes (gloo) optimises the same objective as one process on the global batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from tasks.train.distributed import DistInfo, all_reduce_mean, init_distributed, shutdown
from tasks.train.loop import Trainer
from tasks.train.model import create_clip, get_tokenizer
from tasks.train.stage import seed_everything
from tests.tasks.train.synthetic import SyntheticPairs

GLOBAL_BATCH = 16


def _config():
    from schemas.train import TrainParams
    from tasks.train.presets import resolve_config

    return resolve_config(TrainParams(preset="tiny", steps=2, batch_size=GLOBAL_BATCH, device="cpu", warmup_steps=0))


def _first_step(info: DistInfo) -> tuple[float, dict[str, torch.Tensor]]:
    cfg = _config()
    seed_everything(cfg.seed)
    created = create_clip(cfg, info.device)
    trainer = Trainer(created.model, cfg, info, mean=created.preprocess_cfg["mean"], std=created.preprocess_cfg["std"])
    source = SyntheticPairs(get_tokenizer(cfg.model), n=64, batch_size=GLOBAL_BATCH // info.world_size, seed=5,
                            rank=info.rank, world_size=info.world_size)
    loss = trainer.train_step(next(iter(source)), 0)
    # Gradients, not weights: Adam's first step is about lr * sign(grad), so weights magnify
    # rounding differences of near-zero gradients. DDP leaves the all-reduced mean in .grad.
    grads = {n: p.grad.clone() for n, p in created.model.named_parameters() if p.grad is not None}
    return float(all_reduce_mean(loss, info)), grads


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    info = init_distributed("cpu")
    try:
        loss, state = _first_step(info)
        if rank == 0:
            torch.save({"loss": loss, "state": state}, os.path.join(out_dir, "ddp.pt"))
    finally:
        shutdown(info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    loss, grads = _first_step(DistInfo())
    assert abs(ddp["loss"] - loss) < 1e-5, (ddp["loss"], loss)
    assert ddp["state"].keys() == grads.keys() and len(grads) > 10
    for key, value in grads.items():
        assert torch.allclose(ddp["state"][key], value, rtol=1e-3, atol=1e-6), key
