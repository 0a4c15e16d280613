"""Secure aggregation cost: server time, node time and bytes a node uploads, beside the
insecure plain sum of the same quantized vectors; and a DP-SGD step (Opacus) beside the
same step without DP.

Every node of a configuration runs in this process (the protocol without transport), so
node time is the mean over nodes of the time each spent in its own protocol steps, and
bytes are what a node would post over HTTP: JSON bodies for its key, share and unmasking
messages, and its masked vector bit-packed at the modulus's width as a binary body with its
signed message in a header (``--json-inputs``: base64 in JSON, the first clients' form).
Server time is split into receiving the masked inputs (check the signature and digest,
decode, add to the running sum) and unmasking (rebuild secrets from shares and derive the
dropped nodes' pair keys, then regenerate and remove masks); the baseline is summing the
same quantized vectors without masks. Unmasking and the baseline are each the best of 7, in
wall time and in this process's CPU time (both single-threaded; CPU time leaves out the
time other processes on a shared machine held the core).

The consistency round (each survivor signs the survivor set; before revealing shares a node
checks the relayed signatures) is timed apart in the same run: ``secagg_consistency``
reports the round's node and server time with it against the same round without it (the
same work less the signing, the server's checks of the signatures and the nodes' checks of
the relayed ones), and the bytes it adds (``--consistency-nodes 100 --consistency-dim
100000 --consistency-dropout 0.1`` by default; the goal is at most 1.2x).

    .venv/bin/python benchmarks/secagg.py [--nodes 10 50 100] [--dims 10000 100000]
        [--dropouts 0 0.1 0.3] [--modes secagg secagg+] [--skip-dp] [--json-inputs]
        [--skip-grid] [--skip-consistency] [--consistency-nodes 100]

Prints one JSON object per configuration (name, config, baseline, figures, ratio).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from federated import BinaryMessage, InProcessRound, RoundAbortedError, packed_size
from federated._inprocess import upload_bytes
from federated._messages import canonical

BITS = 16
REPEATS = 7


def plan(n: int, mode: str) -> tuple[int, int | None]:
    """Threshold and neighbours: t just over half of the share holders; k ~ 4 log2 n (with
    fewer neighbours, 30% random dropouts often leave some neighbourhood below t)."""
    if mode == "secagg":
        return n // 2 + 1, None
    k = min(n - 1, 4 * math.ceil(math.log2(n)))
    k -= k % 2
    return (k + 1) // 2 + 1, k


def best_of(work: Callable[[], Any], repeats: int = REPEATS) -> tuple[float, float, Any]:
    """The least wall time and the least CPU time of ``repeats`` calls, and the last result."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = work()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def run_config(n: int, d: int, dropout: float, mode: str, seed: int = 0,
               json_inputs: bool = False) -> dict[str, Any]:
    threshold, k = plan(n, mode)
    modulus_bits = BITS + math.ceil(math.log2(n + 1))
    rng = np.random.default_rng(seed)
    vectors = {i: rng.integers(0, 1 << BITS, d, dtype=np.uint64) for i in range(1, n + 1)}
    round_ = InProcessRound.create(n, threshold=threshold, neighbours=k, vector_length=d,
                                   modulus_bits=modulus_bits)
    dropped = sorted(rng.choice(np.arange(1, n + 1), int(round(dropout * n)), replace=False))
    node_time = {i: 0.0 for i in vectors}
    server = round_.server
    receive_s = server_stages_s = 0.0
    vector_upload = {i: 0 for i in vectors}
    consistency = {"node_s": 0.0, "server_s": 0.0, "upload_bytes": 0, "download_bytes": 0}

    def stage(nodes: list[int], make: Any) -> None:
        nonlocal receive_s, server_stages_s
        for i in nodes:
            start = time.perf_counter()
            message = make(i)
            node_time[i] += time.perf_counter() - start
            sent = upload_bytes(message)
            round_.sent_bytes[i] = round_.sent_bytes.get(i, 0) + sent
            start = time.perf_counter()
            if isinstance(message, BinaryMessage):
                server.receive(message.message, message.body)
            else:
                server.receive(message)
            spent = time.perf_counter() - start
            server_stages_s += spent
            if server.stage == "masked_input":  # check, decode and add a masked vector
                receive_s += spent
                vector_upload[i] = sent
            elif server.stage == "consistency":  # check a signature of the survivor set
                consistency["server_s"] += spent
                consistency["upload_bytes"] += sent
        start = time.perf_counter()
        server.close_stage()
        server_stages_s += time.perf_counter() - start

    def sign(i: int) -> Any:
        start = time.perf_counter()
        message = round_.clients[i].consistency(server.view_for(i))
        consistency["node_s"] += time.perf_counter() - start
        return message

    def unmask(i: int) -> Any:
        client, view = round_.clients[i], server.view_for(i)
        consistency["download_bytes"] += len(canonical(view["signatures"]))
        start = time.perf_counter()
        client._valid_signers(view["signatures"])  # the check unmask() makes before revealing
        spent = time.perf_counter() - start
        consistency["node_s"] += spent
        node_time[i] -= spent  # timed apart here; the node's time counts it once, in unmask
        return client.unmask(view)

    def masked_input(i: int) -> Any:
        client, view = round_.clients[i], server.view_for(i)
        if json_inputs:
            return client.masked_input(view, vectors[i])
        return client.masked_input_binary(view, vectors[i])

    alive = sorted(vectors)
    stage(alive, lambda i: round_.clients[i].advertise())
    stage(alive, lambda i: round_.clients[i].share_keys(server.view_for(i)))
    alive = [i for i in alive if i not in set(dropped)]  # dropped after sharing their keys
    stage(alive, masked_input)
    stage(alive, sign)
    stage(alive, unmask)
    # aggregate() does not change the round, so it is timed like the baseline: best of
    # REPEATS, in wall time and in this process's CPU time (the machine may be shared)
    unmask_s, unmask_cpu_s, total = best_of(server.aggregate)
    rebuild_s, _, removals = best_of(server.removals)  # the same work in its two parts
    masks_s, _, _ = best_of(lambda: server.vector_sum.unmask(removals))

    def plain_sum() -> np.ndarray:
        plain = np.zeros(d, dtype=np.uint64)
        for i in alive:
            plain += vectors[i]
        plain &= np.uint64((1 << modulus_bits) - 1)
        return plain

    plain_s, plain_cpu_s, plain = best_of(plain_sum)
    assert np.array_equal(total, plain), "secure sum differs from the plain sum"
    quantized_bytes = d * BITS // 8
    field_bytes = packed_size(d, modulus_bits)  # the vector at the modulus's width
    upload = float(np.mean([round_.sent_bytes[i] for i in alive]))
    vector_sent = float(np.mean([vector_upload[i] for i in alive]))
    node_total = float(sum(node_time.values()))
    server_total = server_stages_s + unmask_s
    with_round = node_total + server_total
    without_round = with_round - consistency["node_s"] - consistency["server_s"]
    downloads = consistency["download_bytes"] / len(alive)
    consistency_figures = {
        "node_s_sum": round(node_total, 4), "server_s": round(server_total, 4),
        "consistency_node_s_sum": round(consistency["node_s"], 4),
        "consistency_server_s": round(consistency["server_s"], 4),
        "consistency_upload_bytes_per_node": int(consistency["upload_bytes"] / len(alive)),
        "consistency_download_bytes_per_node": int(downloads)}
    consistency_ratio = {
        "round_with_vs_without_consistency": round(with_round / without_round, 4),
        "server_with_vs_without": round(server_total / (server_total
                                                        - consistency["server_s"]), 4),
        "node_with_vs_without": round(node_total / (node_total - consistency["node_s"]), 4),
        "upload_with_vs_without": round(upload / (upload - consistency["upload_bytes"]
                                                  / len(alive)), 4)}
    return {
        "name": "secagg",
        "config": {"nodes": n, "dim": d, "dropout": dropout, "mode": mode,
                   "threshold": threshold, "neighbours": k, "quantization_bits": BITS,
                   "modulus_bits": modulus_bits, "survivors": len(alive),
                   "inputs": "json" if json_inputs else "binary"},
        "baseline": {"plain_sum_s": round(plain_s, 5), "plain_sum_cpu_s": round(plain_cpu_s, 5),
                     "quantized_vector_bytes":
                     quantized_bytes, "vector_bytes_at_modulus_width": field_bytes},
        "figures": {"server_unmask_s": round(unmask_s, 4),
                    "server_unmask_cpu_s": round(unmask_cpu_s, 4),
                    "server_unmask_rebuild_secrets_s": round(rebuild_s, 4),
                    "server_unmask_remove_masks_s": round(masks_s, 4),
                    "server_receive_inputs_s": round(receive_s, 4),
                    "node_s_mean": round(float(np.mean(list(node_time.values()))), 4),
                    "upload_bytes_per_node": int(upload),
                    "upload_bytes_masked_input": int(vector_sent),
                    "upload_bytes_keys_and_shares": int(upload - vector_sent)},
        "ratio": {"server_unmask_vs_plain_sum": round(unmask_s / plain_s, 1),
                  "server_unmask_vs_plain_sum_cpu": round(unmask_cpu_s / plain_cpu_s, 1),
                  "server_total_vs_plain_sum": round((unmask_s + receive_s) / plain_s, 1),
                  "upload_vs_vector_at_modulus_width": round(upload / field_bytes, 3),
                  "upload_vs_quantized_16bit": round(upload / quantized_bytes, 3)},
        "consistency": {"figures": consistency_figures, "ratio": consistency_ratio},
    }


def consistency_cost(n: int, d: int, dropout: float) -> dict[str, Any]:
    """The consistency round's cost in one full-SecAgg round: node and server time with it
    against the same round without it, and the bytes it adds."""
    result = run_config(n, d, dropout, "secagg")
    return {"name": "secagg_consistency", "config": result["config"],
            "baseline": {"round_without_consistency_s": round(
                result["consistency"]["figures"]["node_s_sum"]
                + result["consistency"]["figures"]["server_s"]
                - result["consistency"]["figures"]["consistency_node_s_sum"]
                - result["consistency"]["figures"]["consistency_server_s"], 4)},
            "figures": result["consistency"]["figures"],
            "ratio": result["consistency"]["ratio"]}


def dp_step_times(steps: int = 40) -> dict[str, Any]:
    """Median step time of the client model with and without Opacus DP-SGD."""
    import warnings

    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from cluster.zoo import build_model

    torch.set_num_threads(1)
    results = {}
    for private in (False, True):
        torch.manual_seed(0)
        model = build_model({"type": "mlp", "config": {"in_features": 64, "num_classes": 10,
                                                       "hidden_sizes": [128], "dropout": 0.0}})
        data = TensorDataset(torch.randn(64 * steps, 64), torch.randint(0, 10, (64 * steps,)))
        loader = DataLoader(data, batch_size=64)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        if private:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, optimizer, loader = PrivacyEngine(accountant="rdp").make_private(
                    module=model, optimizer=optimizer, data_loader=loader,
                    noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)
        times = []
        for features, labels in loader:
            start = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(features), labels).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        results["dp" if private else "plain"] = float(np.median(times[5:]))
    return {"name": "dp_sgd_step",
            "config": {"model": "mlp 64-128-10", "batch": 64, "steps": steps, "threads": 1},
            "baseline": {"plain_step_ms": round(results["plain"] * 1000, 3)},
            "figures": {"dp_step_ms": round(results["dp"] * 1000, 3)},
            "ratio": {"dp_vs_plain": round(results["dp"] / results["plain"], 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--dims", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--modes", nargs="+", default=["secagg", "secagg+"])
    parser.add_argument("--skip-dp", action="store_true")
    parser.add_argument("--json-inputs", action="store_true",
                        help="send masked vectors as base64 JSON (the first clients' form)")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-consistency", action="store_true")
    parser.add_argument("--consistency-nodes", type=int, default=100)
    parser.add_argument("--consistency-dim", type=int, default=100_000)
    parser.add_argument("--consistency-dropout", type=float, default=0.1)
    args = parser.parse_args()
    if not args.skip_consistency:
        print(json.dumps(consistency_cost(args.consistency_nodes, args.consistency_dim,
                                          args.consistency_dropout)), flush=True)
    for n in [] if args.skip_grid else args.nodes:
        for d in args.dims:
            for dropout in args.dropouts:
                for mode in args.modes:
                    try:
                        result = run_config(n, d, dropout, mode,
                                            json_inputs=args.json_inputs)
                    except RoundAbortedError as exc:  # a neighbourhood fell below t
                        result = {"name": "secagg", "config": {"nodes": n, "dim": d,
                                  "dropout": dropout, "mode": mode}, "aborted": exc.message}
                    print(json.dumps(result), flush=True)
    if not args.skip_dp:
        print(json.dumps(dp_step_times()), flush=True)


if __name__ == "__main__":
    main()
