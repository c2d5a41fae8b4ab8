"""Time courses on the fMRI TR grid: word -> TR resampling, per-run z-scoring and trimming,
FIR delays that respect run boundaries, and the NeuronTimecourses contract."""

from brainalign.timecourse.delays import DEFAULT_DELAYS, Delayer, delay_features, delays_in_trs
from brainalign.timecourse.resample import hrf_matrix, lanczos_kernel, lanczos_matrix, tr_times
from brainalign.timecourse.runs import (check_runs, run_slices, runs_from_lengths, trim_mask,
                                        trim_runs, zscore_runs)
from brainalign.timecourse.timecourses import (NeuronTimecourses, TrResampling, recording_to_tr,
                                               tr_grid, words_to_tr)

__all__ = [
    "DEFAULT_DELAYS", "Delayer", "NeuronTimecourses", "TrResampling", "check_runs", "delay_features", "delays_in_trs", "hrf_matrix",
    "lanczos_kernel", "lanczos_matrix", "recording_to_tr", "run_slices", "runs_from_lengths",
    "tr_grid", "tr_times", "trim_mask", "trim_runs", "words_to_tr", "zscore_runs",
]
