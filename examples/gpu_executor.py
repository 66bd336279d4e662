# %% [markdown]
# # GPU-tagged electrons
#
# An executor tells Dask which workers may run an electron. GPU work is tagged with a Dask
# *resource*: `DaskExecutor(resources={"GPU": 1})` runs only on workers started with
# `--resources GPU=1`, at most one such task per GPU at a time. Everything else runs on
# any worker.
#
# On a cluster with GPUs, start the GPU workers with the resource and point the dispatcher
# at the scheduler:
#
#     dask scheduler                                          # on one machine
#     dask worker tcp://scheduler:8786 --resources GPU=1      # on each GPU machine
#     dask worker tcp://scheduler:8786                        # on CPU-only machines
#     covalent start --scheduler-address tcp://scheduler:8786
#
# Scripts written for Covalent's GPU executors keep `executor="gpu"` if the config file
# maps that name (`[executors.gpu]` with `resources = {GPU = 1}`, then `covalent restart`).
#
# This example asks the dispatcher which workers advertise a GPU, so it also runs on a
# CPU-only cluster (such as the one `covalent start` makes on a laptop): there the training
# electrons run on the CPU.

# %%
import os

import covalent as ct
from covalent.api import client_config, request_json

GPU = ct.executor.DaskExecutor(resources={"GPU": 1})


def gpu_workers():
    """Names of the cluster's workers that advertise a GPU (``covalent status`` lists them)."""
    workers = request_json(client_config(), "GET", "/status")["workers"]
    return [w["name"] for w in workers if w["resources"].get("GPU")]


def device():
    """What a training function would pass to its framework (``torch.device(...)``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return "cuda" if visible not in ("", "-1") else "cpu"


def train(shard, lr):
    from distributed import get_worker

    loss = sum((x * lr - 1.0) ** 2 for x in shard) / len(shard)
    return {"shard": shard[0], "loss": round(loss, 4), "device": device(),
            "worker": get_worker().name}


@ct.electron
def make_shards(n):
    return [[float(i), float(i + 1)] for i in range(n)]


@ct.electron
def pick(results):
    return min(results, key=lambda r: r["loss"])


# %% [markdown]
# The training electron gets the GPU executor only where a worker can honour it.

# %%
found = gpu_workers()
train_on = ct.electron(train, executor=GPU if found else "dask")
print("GPU workers:", found or "none: training on CPU workers")


@ct.lattice
def tune(n_shards, lr):
    shards = make_shards(n_shards)
    results = [train_on(shards[i], lr) for i in range(n_shards)]
    return {"best": pick(results), "all": results}


# %%
result = ct.dispatch_sync(tune)(4, 0.5)
print(result.status)
for r in result.result["all"]:
    print(r)
print("ran on:", sorted({r["worker"] for r in result.result["all"]}),
      "devices:", sorted({r["device"] for r in result.result["all"]}))
