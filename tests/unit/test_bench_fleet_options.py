"""`argoctl bench fleet`: the lab (default) and the simulation (--sim) take
different sizes; an option of the other mode is refused before anything starts."""

from __future__ import annotations

from click.testing import CliRunner

from argoctl.bench.cli import bench


def test_a_sim_option_without_sim_is_refused_before_the_lab_starts():
    out = CliRunner().invoke(bench, ["fleet", "--hosts", "24"])
    assert out.exit_code == 2 and "--hosts is a --sim option" in out.output, out.output


def test_a_lab_option_with_sim_is_refused():
    out = CliRunner().invoke(bench, ["fleet", "--sim", "--tcp-rate", "3"])
    assert out.exit_code == 2 and "--tcp-rate is a --lab option" in out.output, out.output


def test_the_lab_serves_at_most_four_destinations():
    out = CliRunner().invoke(bench, ["fleet", "--destinations", "5"])
    assert out.exit_code == 2 and "--destinations 5: the lab's origin host serves 1 to 4" \
        in out.output, out.output
