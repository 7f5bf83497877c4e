"""EmoGen's original pair sampling (cumulative across emotions), kept beside the within-emotion pairs."""

from __future__ import annotations


def test_cumulative_pairs_follow_the_original_scripts_growing_image_list():
    from emocli.metrics.common import cumulative_pairs, within_group_pairs

    sizes = {"amusement": 4, "awe": 3, "contentment": 5}
    cross = cumulative_pairs(sizes, 6, seed=0)
    within = within_group_pairs(sizes, 6, seed=0)
    assert cross["amusement"] == [(("amusement", i), ("amusement", j)) for i, j in within["amusement"]]
    allowed = {"amusement": {"amusement"}, "awe": {"amusement", "awe"},
               "contentment": {"amusement", "awe", "contentment"}}
    for emotion, pairs in cross.items():
        assert len(pairs) == 6 and len(set(pairs)) == 6  # distinct pairs
        for a, b in pairs:
            assert a != b and {a[0], b[0]} <= allowed[emotion] and a[1] < sizes[a[0]] and b[1] < sizes[b[0]]
    # the later emotions reach across: with 12 images in the pool, some pair of the last emotion leaves it
    assert any("contentment" not in (a[0], b[0]) or a[0] != b[0] for a, b in cross["contentment"])
