"""The minimal perfect hash: a vectorized builder and the vectorized query.

PtrHash-style (Groot Koerkamp, 2025), as specified in `shm_layout`: keys fall into buckets by the
top bits of their 64-bit hash; each bucket gets one 8-bit pilot that moves all its keys to free
slots of a table with about n / 0.9 slots; the few keys that land past n are remapped to the
free slots below n, so ordinals are exactly 0..n-1.

The builder places one bucket-size class at a time, largest first, and tries each pilot value on
every still-pending bucket of the class at once, in numpy. A bucket is placed with the first
pilot for which all its slots are free and no other bucket of the same try claims any of them.
The result depends only on the set of hashes, never on their order, which is what makes the
compiled payload identical whatever the input's row order. With about 1.5 keys per bucket and
load 0.9 every bucket finds a pilot without PtrHash's eviction step; when one does not, the
caller retries with another seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from .shm_layout import MAX_BUCKET_BITS, MIX_MULTIPLIER, PILOT_MIX

LOAD_FACTOR: Final = 0.9
KEYS_PER_BUCKET: Final = 1.5
PILOT_MIX_ARRAY: Final = np.array(PILOT_MIX, dtype=np.uint64)
_MIX_MULTIPLIER = np.uint64(MIX_MULTIPLIER)
_U64_32 = np.uint64(32)


class DuplicateHash(Exception):
    """Two inputs share one 64-bit hash (equal keys, or a 1-in-1.8e19 collision)."""

    def __init__(self, value: int) -> None:
        super().__init__(f"two inputs share the hash {value:#018x}")
        self.value = value


class NoPilot(Exception):
    """A bucket found no free slots with any of the 256 pilots; retry with another seed."""


@dataclass(frozen=True)
class PerfectHash:
    bucket_bits: int
    slot_count: int
    pilots: NDArray[np.uint8]
    remap: NDArray[np.uint32]
    ordinals: NDArray[np.uint32]
    """The ordinal of each input hash, in input order."""


def shape_for(n: int) -> tuple[int, int]:
    """(bucket_bits, slot_count) for n keys."""
    bits = max(1, math.ceil(math.log2(max(n / KEYS_PER_BUCKET, 1.0))))
    if bits > MAX_BUCKET_BITS:
        raise ValueError(f"{n} keys is more than this layout's hash can hold")
    # An odd slot count: with a power of two, (h ^ pilot) % S would keep the low bits of two
    # keys' difference for every pilot, and two keys of one bucket that share them would
    # collide whatever the pilot.
    return bits, max(n, math.ceil(n / LOAD_FACTOR)) | 1


def build(hashes: NDArray[np.uint64]) -> PerfectHash:
    """Place n distinct 64-bit hashes on ordinals 0..n-1.

    Raises DuplicateHash if two hashes are equal and NoPilot if a bucket cannot be placed.
    """
    n = len(hashes)
    if n == 0:
        raise ValueError("a perfect hash needs at least one key")
    bits, slot_count = shape_for(n)
    ordered = np.sort(hashes)
    equal = np.flatnonzero(ordered[1:] == ordered[:-1])
    if equal.size:
        raise DuplicateHash(int(ordered[equal[0]]))

    # Sorted by hash means grouped by bucket, since the bucket is the hash's top bits.
    buckets = ordered >> np.uint64(64 - bits)
    sizes = np.bincount(buckets.astype(np.intp), minlength=1 << bits)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    taken = np.zeros(slot_count, dtype=bool)
    pilots = np.zeros(1 << bits, dtype=np.uint8)
    modulus = np.uint64(slot_count)
    first_writer = np.empty(slot_count, dtype=np.int32)
    last_writer = np.empty(slot_count, dtype=np.int32)

    for size in range(int(sizes.max()), 0, -1):
        class_buckets = np.flatnonzero(sizes == size)
        if class_buckets.size == 0:
            continue
        members = starts[class_buckets][:, None] + np.arange(size)
        class_hashes = ordered[members]
        pending = np.arange(len(class_buckets))
        for pilot in range(256):
            slots = (class_hashes[pending] ^ PILOT_MIX_ARRAY[pilot]) % modulus
            free = ~taken[slots].any(axis=1)
            candidates = np.flatnonzero(free)
            if candidates.size:
                # A slot claimed twice in this try (by two buckets, or twice by one bucket)
                # rejects every bucket that claims it; they try the next pilot. Scattering the
                # claimant's number forwards and backwards finds those slots without a sort:
                # the first and last writer of a slot agree only if it was claimed once.
                claimed = slots[candidates].ravel().astype(np.intp)
                claimant = np.arange(claimed.size, dtype=np.int32)
                last_writer[claimed] = claimant
                first_writer[claimed[::-1]] = claimant[::-1]
                alone = (last_writer[claimed] == claimant) & (first_writer[claimed] == claimant)
                placed = candidates[alone.reshape(-1, size).all(axis=1)]
                taken[slots[placed]] = True
                pilots[class_buckets[pending[placed]]] = pilot
                keep = np.ones(len(pending), dtype=bool)
                keep[placed] = False
                pending = pending[keep]
            if pending.size == 0:
                break
        else:
            raise NoPilot(f"{pending.size} buckets of size {size} found no pilot")

    remap = np.zeros(slot_count - n, dtype=np.uint32)
    remap[np.flatnonzero(taken[n:])] = np.flatnonzero(~taken[:n])
    # Querying the finished function is cheaper than carrying a permutation through the build.
    ordinals = query(hashes, pilots, bits, slot_count, remap).astype(np.uint32)
    return PerfectHash(bits, slot_count, pilots, remap, ordinals)


def query(
    hashes: NDArray[np.uint64],
    pilots: NDArray[np.uint8],
    bucket_bits: int,
    slot_count: int,
    remap: NDArray[np.uint32],
) -> NDArray[np.intp]:
    """The ordinal each hash lands on (``slot_to_ordinal`` of the spec), for a whole array.

    One working array is reused in place and gathers use ``take``: on 1M hashes this is
    about 15% cheaper than the expression form, which allocates (and page-faults) a fresh
    8 MB array per operation (bench/profile.py, keys() steps).
    """
    n = slot_count - len(remap)
    work = np.right_shift(hashes, np.uint64(64 - bucket_bits))
    np.bitwise_xor(hashes, PILOT_MIX_ARRAY.take(pilots.take(work)), out=work)
    np.remainder(work, np.uint64(slot_count), out=work)
    ordinals = work.view(np.intp)  # slots < 2**32, so the bits are the same number
    flat = ordinals.reshape(-1)  # flatnonzero's indexes are flat, whatever the shape
    high = np.flatnonzero(flat >= n)
    if high.size:
        flat[high] = remap.take(flat[high] - n)
    return ordinals


def int_token_hash(tokens: NDArray[np.uint64], seed: int) -> NDArray[np.uint64]:
    """``mix(t ^ seed)`` for an array of integer tokens (numpy wraps uint64 products)."""
    mixed = np.bitwise_xor(tokens, np.uint64(seed))
    mixed *= _MIX_MULTIPLIER
    mixed ^= mixed >> _U64_32
    return mixed
