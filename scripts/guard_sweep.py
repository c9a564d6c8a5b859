"""How the guard's measures move together: int8 native on the demo model with its calibrated
activation ranges scaled down (clipping relu(fc1)/relu(fc2) more and more), to choose the
default --min-snr.

    .venv/bin/python scripts/guard_sweep.py [--mode raw] [--scales 1,0.5,0.2,0.1,0.05]
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="raw")
    parser.add_argument("--scales", default="1,0.5,0.2,0.1,0.05")
    args = parser.parse_args(argv)

    from waveopt.models import HParams, demo_model, export_wavernn

    import waveopt
    from waveopt.model_info import wavernn_info
    from waveopt.quant.guard import (
        calibrate_ranges,
        default_calibration_mels,
        quantize_checked,
    )

    model = waveopt.optimize(export_wavernn(demo_model(HParams(mode=args.mode))), preset="native").model
    mels = default_calibration_mels(wavernn_info(model))
    ranges = calibrate_ranges(model, mels)
    print(f"command: python scripts/guard_sweep.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"calibrated act_ranges: {ranges[0]:.4g}, {ranges[1]:.4g}\n")
    print("| ranges x | logit SNR | agreement | log-mel dist. | fp32 vs fp32 (other noise) |")
    print("|---|---|---|---|---|")
    for scale in [float(s) for s in args.scales.split(",")]:
        _, acc, _ = quantize_checked(model, 8, mels, act_ranges=[r * scale for r in ranges])
        print(f"| {scale:g} | {acc.logit_snr_db:.1f} dB | {100 * acc.agreement:.2f} % | {acc.log_mel_db:.2f} dB | "
              f"{acc.log_mel_noise_db:.2f} dB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
