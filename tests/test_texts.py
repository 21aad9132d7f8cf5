"""The degenerate-input families: every family makes members, a seed gives the same members, and the
held-out seeds give members the export never saw."""

from __future__ import annotations

from dmeta_embed.texts import (
    CALIBRATION_SEED,
    FAMILIES,
    GUARDED,
    HELD_OUT_SEED,
    PROBE_SEED,
    SEARCH_SKIPS,
    calibration_texts,
    degenerate_texts,
    probe_texts,
    search_texts,
)


def test_every_family_makes_the_members_asked_for():
    got = degenerate_texts(4, HELD_OUT_SEED, max_length=128)
    assert len(got) == 4 * len(FAMILIES)
    by_family: dict[str, list[str]] = {}
    for family, text in got:
        by_family.setdefault(family, []).append(text)
    assert set(by_family) == set(FAMILIES) and all(len(v) == 4 for v in by_family.values())
    assert all(isinstance(t, str) and t for t in by_family["punct_cjk"])
    assert all(len(t) >= 128 for t in by_family["max_length"])  # at the model's limit or past it


def test_a_seed_gives_the_same_members_and_seeds_differ():
    assert degenerate_texts(3, CALIBRATION_SEED) == degenerate_texts(3, CALIBRATION_SEED)
    seen = {t for _, t in degenerate_texts(3, CALIBRATION_SEED) + degenerate_texts(3, PROBE_SEED)}
    held_out = [t for _, t in degenerate_texts(3, HELD_OUT_SEED)]
    # families with few possible members (single characters) may repeat one; the rest are new
    assert sum(t not in seen for t in held_out) >= len(held_out) - 6


def test_unguarded_members_leave_out_the_guarded_families():
    got = {f for f, _ in degenerate_texts(2, PROBE_SEED, guarded=False)}
    assert got == set(FAMILIES) - GUARDED and GUARDED <= set(FAMILIES)


def test_the_export_validates_and_calibrates_on_unguarded_members_it_does_not_share():
    probes, search = probe_texts(128), search_texts(128)
    probed = [t for f, t in degenerate_texts(2, PROBE_SEED, 128, guarded=False)]
    searched = [(f, t) for f, t in degenerate_texts(1, CALIBRATION_SEED, 128, guarded=False)]
    assert all(t in probes for t in probed)
    assert search == calibration_texts() + [t for f, t in searched if f not in SEARCH_SKIPS]
    assert {f for f, _ in searched} - SEARCH_SKIPS == set(FAMILIES) - GUARDED - {"max_length"}
    # the members the export sees are not the ones the suite checks held out
    held_out = {t for _, t in degenerate_texts(3, HELD_OUT_SEED, 128)}
    assert len(held_out & set(probed + [t for _, t in searched])) <= 6


def test_activation_statistics_batches_hold_a_token_budget():
    import numpy as np

    from dmeta_embed.export.int8_calibration import token_batches

    lengths = np.array([5, 300, 12, 300, 7, 40, 300, 300, 2, 600])
    batches = token_batches(lengths, batch_size=4, max_tokens=700)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(lengths)))  # each text once
    for b in batches:
        assert len(b) <= 4
        assert len(b) * lengths[b].max() <= 700 or len(b) == 1  # a 600-token text fits only alone
    assert [list(lengths[b]) for b in batches] == [[2, 5, 7, 12], [40, 300], [300, 300], [300], [600]]
