"""`pyramidal bench`: training and inference speed, FLOPs, peak memory, matmul peak and data-pipeline rate.

Timings are medians over steps after warm-up. With a plain reference, its steps alternate with the fast
path's (A, B, A, B, ...), so that a busy machine slows both alike; the speed-up is the ratio of the median
step times, and the median of the per-pair ratios is reported next to it. A short matmul burst runs after
every step too, so the fraction of the matmul peak compares rates measured under the same load.

`--mode restore` times `pyramidal restore` itself (`inference.files.restore_files` on a photo of `--megapixels`,
through `prepare_for_inference`, with restore's tiling defaults): MP/s, peak RSS and fraction of peak.

The package's parts: `config` (BenchConfig: what to time, checked before anything is allocated), `measure`
(peak memory, FLOPs, the matmul peak, the machine, interleaved timing), `run` (`run_bench` and `run_sweep`:
training and inference steps, with the plain reference), `restore` (`--mode restore`), `pipeline` (the data
pipeline's damaged pairs per second) and `report` (the human-readable summaries).
"""
