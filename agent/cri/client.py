"""Looks up image digests through containerd's CRI ImageService, off the NRI handlers' path."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import grpc

from agent.cri import cri_pb2

log = logging.getLogger(__name__)

_IMAGE_STATUS = "/runtime.v1.ImageService/ImageStatus"


def digest_of(image: cri_pb2.Image) -> str | None:
    """The image id (its config digest): the one digest every copy of the image has.

    Not a repo digest: an image imported without a registry has none, one pulled later by digest
    gains one, and a multi-arch pull's is the index's, so the same bytes would be keyed two ways.
    """
    return image.id or None


class ImageDigestClient:
    """Synchronous CRI client; one lookup is one unary gRPC call with a deadline."""

    def __init__(self, cri_socket: str, timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._channel = grpc.insecure_channel(f"unix://{cri_socket}")
        self._image_status = self._channel.unary_unary(
            _IMAGE_STATUS,
            request_serializer=cri_pb2.ImageStatusRequest.SerializeToString,
            response_deserializer=cri_pb2.ImageStatusResponse.FromString,
        )

    def image_digest(self, image_ref: str) -> str | None:
        request = cri_pb2.ImageStatusRequest(image=cri_pb2.ImageSpec(image=image_ref))
        response = self._image_status(request, timeout=self._timeout_s)
        if not response.HasField("image"):
            return None
        return digest_of(response.image)

    def close(self) -> None:
        self._channel.close()


class DigestResolver:
    """Queues lookups and answers them on a worker thread, with a short-lived cache per ref.

    A handler only enqueues; the answer arrives later through the callback. Failures are logged
    and the run keeps a null digest rather than delaying anything.
    """

    def __init__(
        self,
        lookup: Callable[[str], str | None],
        cache_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._queue: queue.SimpleQueue[tuple[str, Callable[[str], None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="cri-digest", daemon=True)
        self._thread.start()

    def resolve(self, image_ref: str, on_digest: Callable[[str], None]) -> None:
        self._queue.put((image_ref, on_digest))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            image_ref, on_digest = item
            try:
                digest = self._cached(image_ref)
                if digest:
                    on_digest(digest)
                else:
                    log.warning("event=digest_unknown image=%s", image_ref)
            except Exception as exc:  # a broken runtime must not kill the worker
                log.warning("event=digest_lookup_failed image=%s error=%s", image_ref, exc)

    def _cached(self, image_ref: str) -> str | None:
        now = self._clock()
        hit = self._cache.get(image_ref)
        if hit and now - hit[0] < self._ttl:
            return hit[1]
        digest = self._lookup(image_ref)
        if digest:
            self._cache[image_ref] = (now, digest)
        return digest

    def close(self, timeout_s: float = 2.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)
