"""The map writer against real maps: batch and single updates, reading back,
invalid input refused before anything is written."""

import pytest

from argoctl import maps
from conftest import mark, paths


def test_batch_programming_round_trips(dp):
    sets = {i: paths(1, 2, down={2}) for i in range(1, 1001)}
    dp.maps.set_pathsets(sets)
    dp.maps.set_prefixes([(f"10.{i >> 8}.{i & 255}.0/24", i) for i in range(1, 1001)])
    assert dp.maps.dest_ids() == list(range(1, 1001))
    assert dp.maps.pathset(500) == (0, sets[500])
    pre = dp.maps.prefixes()
    assert len(pre) == 1000 and pre["10.1.244.0/24"] == 500


def test_generation_kept_unless_reset(dp):
    dp.maps.set_pathset(7, paths(1))
    dp.maps.set_pathset(7, paths(1, 1), reset_flows=True)
    dp.maps.set_pathsets({7: paths(3, 1)})
    assert dp.maps.pathset(7) == (1, paths(3, 1))
    dp.maps.set_pathsets({7: paths(3, 1)}, reset_flows=True)
    assert dp.maps.pathset(7)[0] == 2


@pytest.mark.parametrize("bad", [dict(weight=70000), dict(path_id=300), dict(mark=1 << 32),
                                 dict(weight=-1)])
def test_invalid_paths_are_refused_at_construction(bad):
    with pytest.raises(ValueError):
        maps.Path(**{"path_id": 1, "mark": mark(1), **bad})


def test_invalid_pathsets_write_nothing(dp):
    nine = [maps.Path(path_id=i, mark=mark(i)) for i in range(1, 10)]
    with pytest.raises(ValueError):
        dp.maps.set_pathsets({1: paths(1), 2: nine})
    assert dp.maps.dest_ids() == []


def test_remove_prefixes_and_destinations(dp):
    dp.maps.set_pathsets({1: paths(1), 2: paths(1)})
    dp.maps.set_prefixes([("198.51.100.0/24", 1), ("2001:db8::/32", 2)])
    epoch = dp.maps.settings().lpm_epoch
    dp.maps.remove_prefixes(["2001:db8::/32"])
    dp.maps.remove_destination(2)
    assert dp.maps.prefixes() == {"198.51.100.0/24": 1}
    assert dp.maps.dest_ids() == [1]
    assert dp.maps.settings().lpm_epoch == epoch + 1
