"""Quantization with a guard: calibrate, quantize, measure against float32 on the
teacher-forced twin, and the accuracy measures it reports."""

from waveopt.quant.accuracy import (
    class_agreement,
    log_mel,
    log_mel_distance,
    logit_powers,
    logit_snr_db,
    sample_agreement,
    snr_db,
)
from waveopt.quant.guard import (
    DEFAULT_MIN_SNR_DB,
    QuantAccuracy,
    calibrate_ranges,
    default_calibration_mels,
    ort_loop_kernels,
    quantize_checked,
)
from waveopt.quant.teacher_forcing import PREV_SAMPLES, teacher_forced_variant

__all__ = ["DEFAULT_MIN_SNR_DB", "PREV_SAMPLES", "QuantAccuracy", "calibrate_ranges", "class_agreement",
           "default_calibration_mels", "log_mel", "log_mel_distance", "logit_powers", "logit_snr_db",
           "ort_loop_kernels", "quantize_checked", "sample_agreement", "snr_db", "teacher_forced_variant"]
