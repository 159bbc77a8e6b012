"""Which tf.distribute strategy a run uses, and which process is the chief that writes the run folder.

auto: several workers in TF_CONFIG -> MultiWorkerMirroredStrategy; else several local GPUs -> MirroredStrategy;
else the default (one device). Two machines, each with its GPUs, train one model like this:

    # on machine A (the chief: it writes checkpoints, logs and the run folder)
    TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, "task": {"type": "worker", "index": 0}}' \
        scenecap train --config train.toml --out runs/coco
    # on machine B (same data paths, same config; writes nothing but its feature cache)
    TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, "task": {"type": "worker", "index": 1}}' \
        scenecap train --config train.toml --out runs/coco

Each step all-reduces gradients across every GPU of every worker; --batch-size is per replica.
"""

from __future__ import annotations

import logging
import os

from scenecap import ScenecapError
from scenecap.edge.fileio import parse_json

log = logging.getLogger("scenecap.train")


def tf_config() -> dict | None:
    """TF_CONFIG parsed and checked, or None when unset."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    cfg = parse_json(raw.encode("utf-8", "surrogateescape"), "TF_CONFIG", "cluster description")
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ScenecapError('TF_CONFIG: expected {"cluster": {"worker": [...]}, "task": {"type": ..., "index": ...}}')
    ttype, index = task.get("type"), task.get("index")
    members = cluster.get(ttype)
    if not isinstance(members, list) or not isinstance(index, int) or not 0 <= index < len(members):
        raise ScenecapError(f"TF_CONFIG: task {ttype}/{index} is not in the cluster {sorted(cluster)}")
    return cfg


def cluster_size() -> int:
    cfg = tf_config()
    if not cfg:
        return 1
    return sum(len(cfg["cluster"].get(k, [])) for k in ("chief", "worker"))


def is_chief() -> bool:
    """The chief is the 'chief' task, or worker 0 when the cluster has no chief."""
    cfg = tf_config()
    if not cfg:
        return True
    ttype, index = cfg["task"]["type"], cfg["task"]["index"]
    if "chief" in cfg["cluster"]:
        return ttype == "chief"
    return ttype == "worker" and index == 0


def make_strategy(kind: str = "auto"):
    """Create the strategy. Call it before any other TensorFlow op: collectives must be configured first."""
    import tensorflow as tf

    workers = cluster_size()
    if kind == "auto":
        if workers > 1:
            kind = "multi-worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multi-worker":
        if workers < 2:
            raise ScenecapError("strategy multi-worker needs TF_CONFIG naming at least two workers "
                                "(see 'scenecap train --help')")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif kind == "default":
        strategy = tf.distribute.get_strategy()
    else:
        raise ScenecapError(f"strategy {kind!r} unknown; expected auto, default, mirrored or multi-worker")
    label = {"multi-worker": "MultiWorkerMirroredStrategy", "mirrored": "MirroredStrategy", "default": "one device"}
    log.info("distribution: %s, %d replica(s)%s", label[kind], strategy.num_replicas_in_sync,
             f" over {workers} workers" if workers > 1 else "")
    return strategy
