"""The table readers never crash, whatever the bytes: a table, or a DataError naming the file."""

from __future__ import annotations

import pytest

from hypertweaks.data import DataError, read_table

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TEXT = st.text(alphabet=st.sampled_from(list('ab,"\t\n\r {}[]:1é\ufeff')), max_size=120)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(st.binary(max_size=200), TEXT.map(str.encode)),
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]),
)
def test_any_bytes_either_read_or_are_refused_with_a_message(content, suffix, tmp_path):
    path = tmp_path / f"t{suffix}"
    path.write_bytes(content)
    try:
        table = read_table(path)
    except DataError as error:
        assert str(path) in str(error)
    else:
        assert not table.empty
