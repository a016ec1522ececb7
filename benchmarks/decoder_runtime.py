"""One PerSAM decoder pass in PyTorch against the same pass compiled by OpenVINO: is a fused runtime faster?

Usage: python benchmarks/decoder_runtime.py [--rounds 7] [--threads 1] [--json FILE]

The re-associated decoder pass (``persam.method.factored.predict_masks`` with PerSAM's attention bias
and target embedding, random-weight MobileSAM, a 64 x 64 grid) is wrapped as a module for each of
PerSAM's two kinds of pass: the first (points only, one mask) and a refinement (points and a box, a
mask prompt, three masks). Each is exported (``torch.export``: the pass's in-place softmax needs its
functional form) and converted by OpenVINO, compiled for the CPU with ``--threads`` inference threads
and fp32 precision, and timed against the PyTorch pass on the same inputs in interleaved rounds
(medians, seconds a pass). The largest differences of the logits and scores are printed beside them.
Nothing here is used by ``persam`` itself: it measures whether the decoder should get a runtime path.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the figures, the command and the machine")
    args = parser.parse_args()

    import openvino as ov
    import torch
    from torch import nn

    from persam.backends import create_backend
    from persam.method import factored, first_block

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backend = create_backend("vit_t", random_weights=True, device="cpu")
    decoder, prompts = backend.mask_decoder, backend.prompt_encoder
    key_pe = backend.dense_pe_cells()
    h, w = backend.grid_hw

    class Pass(nn.Module):
        """(cells (1, N, C), sparse (1, T', C), mask logits (1, 1, 4h, 4w), bias (N,), target (C,)) -> masks, iou."""

        def __init__(self, refinement: bool) -> None:
            super().__init__()
            self.refinement = refinement

        def forward(self, cells, sparse, mask, bias, target):
            first = first_block.FirstBlock(image=cells, key_pe=key_pe, grid_hw=(h, w))
            if self.refinement:
                dense = first_block.mask_rows(prompts, mask)
            else:
                dense = first_block.Dense(vector=prompts.no_mask_embed.weight[0])
            return factored.predict_masks(decoder, first, sparse, dense, self.refinement, bias, target)

    n, c = h * w, key_pe.shape[-1]
    # sparse tokens: 2 points and the official padding point (first pass); 2 points and a box's 2 corners
    kinds = {"first pass": (False, 3), "refinement": (True, 4)}
    core = ov.Core()
    figures: dict[str, dict] = {}
    for name, (refinement, tokens) in kinds.items():
        inputs = (
            torch.randn(1, n, c),
            torch.randn(1, tokens, c),
            torch.randn(1, 1, 4 * h, 4 * w),
            torch.rand(n),
            torch.randn(c),
        )
        module = Pass(refinement).eval()
        with torch.inference_mode():
            expected = module(*inputs)
        start = time.perf_counter()
        converted = ov.convert_model(torch.export.export(module, inputs))
        convert_s = time.perf_counter() - start
        start = time.perf_counter()
        compiled = core.compile_model(
            converted,
            "CPU",
            {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
        )
        compile_s = time.perf_counter() - start
        request = compiled.create_infer_request()
        arrays = [x.numpy() for x in inputs]
        got = request.infer(arrays)
        masks_diff = float((torch.from_numpy(got[0]) - expected[0]).abs().max())
        iou_diff = float((torch.from_numpy(got[1]) - expected[1]).abs().max())
        times: dict[str, list[float]] = {"torch": [], "openvino": []}
        for _ in range(args.rounds):
            start = time.perf_counter()
            with torch.inference_mode():
                module(*inputs)
            times["torch"].append(time.perf_counter() - start)
            start = time.perf_counter()
            request.infer(arrays)
            times["openvino"].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{name}: torch {med['torch']:.4f} s, openvino {med['openvino']:.4f} s a pass "
            f"({med['torch'] / med['openvino']:.2f} x); export and convert {convert_s:.1f} s, compile "
            f"{compile_s:.2f} s; largest difference: logits {masks_diff:.2e}, scores {iou_diff:.2e}"
        )
        figures[name] = {
            "seconds_median": med,
            "seconds_rounds": times,
            "torch_over_openvino": med["torch"] / med["openvino"],
            "convert_s": convert_s,
            "compile_s": compile_s,
            "max_abs_diff": {"logits": masks_diff, "scores": iou_diff},
        }
    if args.json:
        from persam.jobs.machine import write_results

        command = shlex.join(["python", "benchmarks/decoder_runtime.py", *sys.argv[1:]])
        write_results(args.json, command, {"rounds": args.rounds, "threads": args.threads, **figures}, device="cpu")


if __name__ == "__main__":
    main()
