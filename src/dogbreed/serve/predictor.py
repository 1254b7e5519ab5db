"""A loaded model: metadata, classes, preprocessing and a backend, checked by a warm-up run."""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from dogbreed.model.artifact import ArtifactError, read_classes, read_metadata
from dogbreed.serve.backends import load_backend
from dogbreed.serve.errors import InvalidImage, ServeError
from dogbreed.serve.preprocess import Preprocessor
from dogbreed.serve.settings import ServeSettings

log = logging.getLogger(__name__)
# Images per forward pass; a bigger request is run in chunks to bound activation memory.
MAX_FORWARD_BATCH = 64


class Predictor:
    def __init__(
        self, model_dir: str | Path, settings: ServeSettings, device_id: int | None = None
    ) -> None:
        model_dir = Path(model_dir)
        self.meta = read_metadata(model_dir)
        self.classes = read_classes(model_dir, self.meta.num_classes)
        self.preprocessor = Preprocessor(self.meta, settings.max_pixels)
        threads = settings.threads or 1
        self.backend = load_backend(
            model_dir, settings.backend, threads, settings.precision, device_id
        )
        # PIL releases the GIL while decoding and resizing: a batch decodes in parallel.
        self._pool = ThreadPoolExecutor(threads, "decode") if threads > 1 else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        chunks = [
            self.backend.run(batch[i : i + MAX_FORWARD_BATCH])
            for i in range(0, len(batch), MAX_FORWARD_BATCH)
        ]
        logits = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        if logits.shape != (len(batch), len(self.classes)):
            raise ArtifactError(
                f"model returned logits of shape {logits.shape}, expected "
                f"{(len(batch), len(self.classes))}"
            )
        return logits.astype(np.float32, copy=False)

    def decode_all(self, images: list[bytes]) -> list[np.ndarray | ServeError]:
        """Decode + crop each image; a bad one gives its ServeError instead of pixels."""

        def decode(data: bytes) -> np.ndarray | ServeError:
            try:
                return self.preprocessor.decode(data)
            except ServeError as exc:
                return exc
            except Exception as exc:  # anything else: one bad image must not fail the batch
                log.warning("unexpected error decoding an image", exc_info=True)
                return InvalidImage(f"cannot process the image: {type(exc).__name__}: {exc}")

        if self._pool is None or len(images) < 2:
            return [decode(d) for d in images]
        return list(self._pool.map(decode, images))

    def batch(self, pixels: list[np.ndarray]) -> np.ndarray:
        out = self.preprocessor.empty_batch(len(pixels))
        for slot, hwc in zip(out, pixels, strict=True):
            self.preprocessor.normalise(hwc, out=slot)
        return out

    def warm_up(self, batch_size: int = 1) -> None:
        """Decode a real JPEG and run a full batch: proves the model is usable before serving.

        Raises ArtifactError (or the backend's error) when it is not.
        """
        buffer = io.BytesIO()
        Image.new("RGB", (320, 240), (120, 90, 60)).save(buffer, "JPEG")
        pixels = self.decode_all([buffer.getvalue()] * batch_size)
        if isinstance(pixels[0], ServeError):
            raise ArtifactError(f"preprocessing a test image failed: {pixels[0].message}")
        logits = self.logits(self.batch(pixels))  # type: ignore[arg-type]
        if not np.isfinite(logits).all():
            raise ArtifactError("model produced non-finite logits on a test image")
        log.info(
            "model %s (%d classes, input %d px) ready on %s",
            self.meta.architecture,
            len(self.classes),
            self.meta.image_size,
            self.backend.description,
        )
