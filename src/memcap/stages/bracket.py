"""Bracketing the capacity: extend a grid whose maximum sits at one of its ends
(docs/science.md#bracketing).

The laws stage flags every capacity row the grid does not bracket (`capacity.bracketed`,
`bracket_status`) and names the N to add (`bracket_next_n`: doublings of the grid towards
the predicted capacity α·P). This module turns those rows into a config overlay: the
config's synthetic architectures, each with its own `dataset_sizes` grown by its next N.
Given as the last `--configfile`, the overlay adds only new cells; every cell already
trained keeps its spec and is reused, so Snakemake trains, scores and evaluates the new N
only, then reruns the aggregation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import polars as pl
import yaml

from memcap.config import arch_id
from memcap.io import atomic_path


def read_capacity(database: Path) -> pl.DataFrame:
    """The synthetic rows of the database's capacity table."""
    import duckdb

    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.sql("SELECT * FROM capacity WHERE kind = 'synthetic'").pl()
    finally:
        con.close()


def extend_grid(architectures: list[dict], dataset_sizes: list[int],
                capacity: pl.DataFrame) -> tuple[list[dict], list[str]]:
    """(architectures with the next N added where the grid does not bracket the maximum,
    one line per architecture saying what was done). An architecture without its own
    `dataset_sizes` gets the kind's list plus its new N; the others are returned unchanged.
    The N of every precision's row are added (they share the architecture's list)."""
    out, lines = [], []
    for arch in architectures:
        name = arch_id(arch)
        rows = capacity.filter(pl.col("arch") == name)
        sizes = list(arch.get("dataset_sizes", dataset_sizes))
        new = sorted({int(n) for n in rows["bracket_next_n"].drop_nulls()} - set(sizes))
        entry = copy.deepcopy(arch)
        if new:
            entry["dataset_sizes"] = sorted([*sizes, *new])
        out.append(entry)
        for r in rows.iter_rows(named=True):
            what = (f"bracketed by N {r['bracket_n_below']:,} and {r['bracket_n_above']:,}"
                    if r["bracketed"] else r["bracket_status"])
            if r["bracketed"] and r["bracket_next_n"] is not None:
                what += " (data-limited at the maximum: the capacity lies between it and the "
                what += "N above)"
            todo = (f"add N {r['bracket_next_n']:,}" if r["bracket_next_n"] is not None
                    else "nothing to add" if r["bracketed"]
                    else "no N to add: train the unsaturated runs longer (a larger budget "
                         "for this architecture)")
            lines.append(f"{name} {r['precision']}: maximum {r['capacity_bits']:,.0f} bits at "
                         f"N {r['n_at_max']:,}; {what}; {todo}")
        if rows.is_empty():
            lines.append(f"{name}: no capacity row in the database (not trained yet)")
    return out, lines


def write_overlay(architectures: list[dict], dataset_sizes: list[int], capacity: pl.DataFrame,
                  out: Path) -> list[str]:
    """Write the overlay (the `architectures:` list, extended where some N is to be added;
    the config's own grid when none is) to `out`; returns the report lines, the last one
    saying what to run."""
    extended, lines = extend_grid(architectures, dataset_sizes, capacity)
    body = ("# Written by `memcap bracket` (docs/science.md#bracketing): the synthetic\n"
            "# architectures, each grid grown by the N that brackets its maximum. Give this\n"
            "# file as the last --configfile: only the new cells train.\n"
            + yaml.safe_dump({"architectures": extended}, sort_keys=False))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(body)
    if extended == architectures:
        return [*lines, f"wrote {out}: no N to add (the grid as it is)"]
    return [*lines, f"wrote {out}: rerun Snakemake with it as the last --configfile; only "
                    "the new N train"]
